"""Process reward models (train/prm.py): aggregation, step positions, features read at each
step's end, a planted per-step rule learned on the tiny model, and the commands."""

import json
import random

import pytest
import torch

from alignlab.cli import main
from alignlab.data import PreferencePair, StepLabels, read_feedback, write_feedback
from alignlab.models import load_model
from alignlab.train.prm import (PRMTrainConfig, ProcessRewardModel, aggregate, encode_steps, evaluate_prm, load_prm,
                                train_prm)

BAD = ["awful", "terrible", "dreadful", "boring"]
FILLER = ["the", "film", "was", "a", "story", "with", "actors", "and", "music", "plot", "long", "bright"]


def planted(path, records=80, seed=0):
    """Responses of 3-5 steps; a step is wrong when it holds a word of BAD. Half the records are
    judged to their first wrong step only (null labels after it), as PRM800K labels them."""
    rng = random.Random(seed)
    out = []
    for i in range(records):
        steps, labels = [], []
        for _ in range(rng.randint(3, 5)):
            words = [rng.choice(FILLER) for _ in range(rng.randint(2, 4))]
            bad = rng.random() < 0.35
            if bad:  # twice: the tiny random model's states hold a single word only faintly
                for word in (rng.choice(BAD), rng.choice(BAD)):
                    words.insert(rng.randint(0, len(words)), word)
            steps.append(" ".join(words).capitalize() + ".\n")
            labels.append(not bad)
        steps[-1] = steps[-1].rstrip("\n")
        if i % 2 and False in labels:
            wrong = labels.index(False)
            out.append(StepLabels.first_wrong(f"Task {i}:", steps, wrong))
        else:
            out.append(StepLabels(f"Task {i}:", steps, labels))
    write_feedback(path, out)
    return path


def test_aggregates_on_hand_made_scores():
    probs = [0.9, 0.5, 0.8]
    assert aggregate(probs, "min") == 0.5
    assert aggregate(probs, "product") == pytest.approx(0.36)
    assert aggregate(probs, "last") == 0.8
    assert aggregate(probs, "mean") == pytest.approx(2.2 / 3)
    with pytest.raises(ValueError, match="use one of min, product, last, mean"):
        aggregate(probs, "max")
    with pytest.raises(ValueError, match="no steps"):
        aggregate([], "min")


def test_each_step_is_read_over_its_own_tokens_and_sees_nothing_after_it():
    lm, tokenizer = load_model("tiny")
    steps = ["The film was long.\n", "The plot was bright.\n", "Music."]
    row = encode_steps(tokenizer, "Review:", steps, max_length=512)
    prefix = len(tokenizer("Review:", add_special_tokens=True)["input_ids"])
    assert row.starts[0] == prefix and row.ends[-1] == len(row.ids) - 1
    assert row.ends[0] == prefix + len(tokenizer(steps[0], add_special_tokens=False)["input_ids"]) - 1
    assert [a for a in row.starts[1:]] == [e + 1 for e in row.ends[:-1]]
    body = None
    for pooling in ("last", "mean"):
        prm = ProcessRewardModel(lm, tokenizer, layer=1, pooling=pooling)
        body = prm.body_reader.body
        (features,) = prm.step_features([row])
        for j, (a, e) in enumerate(zip(row.starts, row.ends)):  # a plain forward of the prefix through step j
            states = body(input_ids=torch.tensor([row.ids[:e + 1]]), output_hidden_states=True).hidden_states[1][0]
            expected = states[-1] if pooling == "last" else states[a:e + 1].mean(0)
            assert torch.allclose(features[j], expected.float(), atol=1e-4), (pooling, j)
    with pytest.raises(ValueError, match="pooling 'max'"):
        ProcessRewardModel(lm, tokenizer, pooling="max")
    # over the length limit the start goes (BOS kept); a step ending in the cut has no span
    short = encode_steps(tokenizer, "Review:", steps, max_length=row.ends[-1] - row.ends[0] + 1)
    assert short.ends[0] == short.starts[0] == -1 and short.ends[-1] == len(short.ids) - 1
    assert short.ids[0] == row.ids[0] and short.starts[1] == 1
    (cut,) = prm.step_features([short])
    assert torch.isnan(cut[0]).all() and not torch.isnan(cut[-1]).any()


def test_a_process_reward_model_learns_a_planted_step_rule(tmp_path):
    data = planted(tmp_path / "steps.jsonl", records=300)
    run = train_prm(PRMTrainConfig(data=str(data), model="tiny", layer=1, l2=0.001, eval_fraction=0.2),
                    progress=False)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["eval_records"] >= 25 and 0.4 < summary["share_right"] < 0.9
    # always "right" scores the share of right steps (~0.65 here); measured 0.79 on 380 held-out steps
    assert summary["eval/step_accuracy"] > max(0.72, summary["share_right"] + 0.05), summary
    low, high = summary["eval/step_accuracy_ci"]
    assert low <= summary["eval/step_accuracy"] <= high
    assert summary["eval/outcome_auc"] > 0.7 and summary["eval/first_wrong_step_accuracy"] > 0.4
    # the saved model scores the same as the fitted one, and aggregates by its saved choice
    prm = load_prm(run.id)
    assert prm.aggregate == "min"
    again = evaluate_prm(prm, read_feedback(data).records[:30])
    assert again["steps"] > 0 and 0 <= again["step_accuracy"] <= 1
    good = ["The film was long.\n", "The plot was bright."]
    bad = ["The film was long.\n", "The plot was awful and dreadful."]
    scores = prm.score(["Task 0:", "Task 0:"], [good, bad])
    assert scores[0] > scores[1]


def test_the_commands_train_evaluate_and_score(tmp_path, capsys):
    data = planted(tmp_path / "steps.jsonl", records=60)
    out = tmp_path / "prm"
    assert main(["prm", "train", "--data", str(data), "--model", "tiny", "--layer", "1", "--l2", "0.01",
                 "--out", str(out), "--aggregate", "product"]) == 0
    assert "held-out step accuracy" in capsys.readouterr().out
    assert main(["prm", "eval", "--model", str(out), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["aggregate"] == "product" and result["steps"] > 100
    assert main(["prm", "score", "--model", str(out), "--prompt", "Task 1:", "--response",
                 "The film was long.\nThe plot was awful."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("score (product):") and len(lines) == 3
    # data without step labels, and steps that are all right, are refused with the reason
    pairs = tmp_path / "pairs.jsonl"
    write_feedback(pairs, [PreferencePair("p", "a", "b")])
    assert main(["prm", "train", "--data", str(pairs), "--model", "tiny"]) == 1
    assert "no step-labelled records" in capsys.readouterr().err
    right = tmp_path / "right.jsonl"
    write_feedback(right, [StepLabels(f"p{i}", ["a.\n", "b."], [True, True]) for i in range(10)])
    assert main(["prm", "train", "--data", str(right), "--model", "tiny", "--eval-fraction", "0"]) == 1
    assert "right and wrong steps" in capsys.readouterr().err
