"""The process-supervision study: its statistics on hand-made cases, label buying at a budget,
and the whole study end to end on the tiny model (profile 'test')."""

import json
import math
import random

import pytest

from alignlab.data.chains import Chain, apply_op
from alignlab.experiment.command import ExperimentConfig, run_experiment
from alignlab.experiment.process import (STUDY_STAGES, _judged, best_of_n_gold, buy_labels, get_process_profile,
                                         pair_accuracy)
from alignlab.fileio import read_jsonl, write_jsonl


def _sample(labels, outcome):
    first = next((j for j, x in enumerate(labels) if not x), None)
    return {"steps": [f"step {j}\n" for j in range(len(labels))], "labels": labels, "outcome": outcome,
            "first_wrong": first}


def test_pair_accuracy_counts_right_over_wrong_pairs_within_a_prompt_only():
    # prompt 0: right scored 0.9, wrong 0.2 and 0.95 -> 1 of 2; prompt 1: right 0.5 ties wrong 0.5 -> 1/2
    scores = [0.9, 0.2, 0.95, 0.5, 0.5]
    outcomes = [True, False, False, True, False]
    prompts = [0, 0, 0, 1, 1]
    result = pair_accuracy(scores, outcomes, prompts)
    assert result["pairs"] == 3
    assert result["value"] == pytest.approx((1 + 0 + 0.5) / 3)
    low, high = result["ci"]
    assert 0 <= low <= result["value"] <= high <= 1


def test_best_of_n_gold_uses_every_sample_and_shares_ties():
    # one prompt, 4 samples; best-of-4 takes the top score (right); best-of-1 is the mean outcome
    scores, outcomes, prompts = [0.1, 0.7, 0.3, 0.2, 1.0, 1.0, 0.0, 0.0], [0, 1, 0, 0, 1, 0, 1, 1], [0] * 4 + [1] * 4
    four = best_of_n_gold(scores, [bool(o) for o in outcomes], prompts, 4)
    assert four["by_prompt"] == pytest.approx([1.0, 0.5])  # prompt 1: two samples tie at the top, one right
    one = best_of_n_gold(scores, [bool(o) for o in outcomes], prompts, 1)
    assert one["by_prompt"] == pytest.approx([0.25, 0.75])
    assert four["value"] == pytest.approx(0.75) and four["ci"][0] <= 0.75 <= four["ci"][1]


def test_labels_bought_stay_within_budget_and_nest_across_budgets():
    rng = random.Random(3)
    samples = [_sample([rng.random() < 0.7 for _ in range(rng.randint(2, 4))], rng.random() < 0.5) for _ in range(60)]
    for supervision in ("process", "outcome"):
        small, spent_small = buy_labels(samples, 20.0, supervision, seed=1, step_noise=0.0, outcome_noise=0.0)
        large, spent_large = buy_labels(samples, 60.0, supervision, seed=1, step_noise=0.0, outcome_noise=0.0)
        assert 0 < spent_small <= 20.0 and spent_small < spent_large <= 60.0
        assert large[:len(small)] == small  # the larger budget buys the smaller one's labels, then more
    process, _ = buy_labels(samples, 60.0, "process", seed=1, step_noise=0.0, outcome_noise=0.0)
    outcome, _ = buy_labels(samples, 60.0, "outcome", seed=1, step_noise=0.0, outcome_noise=0.0)
    for i, labels in process:  # noise-free step labels are gold's up to the first wrong, then not judged
        gold = samples[i]["labels"]
        first = samples[i]["first_wrong"]
        stop = len(gold) if first is None else first + 1
        assert labels[:stop] == gold[:stop] and all(x is None for x in labels[stop:])
    for i, labels in outcome:  # an outcome label is carried by every step of its response
        assert labels == [samples[i]["outcome"]] * len(samples[i]["steps"])
    # a step costs less than a whole judgement, so the same budget buys fewer process-labelled responses
    # only when responses have several steps: both buy something, neither overspends
    assert process and outcome


def test_process_profiles_are_named_and_overridable():
    with pytest.raises(ValueError, match="the process study has profiles test, quick, standard"):
        get_process_profile("full")
    assert get_process_profile("quick", seeds=2).seeds == 2


def _planted(chain: dict, k: int) -> str:
    """The chain's right solution, or (odd k) one that adds one to the result of step k // 2 and
    carries the slip on, as a person would: the later steps are right and the answer wrong."""
    c = Chain.from_dict(chain)
    if k % 2 == 0:
        return c.solution()
    slip, value, lines = (k // 2) % len(c.ops), c.start, []
    for j, (op, number) in enumerate(c.ops):
        result = apply_op(op, value, number) + (j == slip)
        lines.append(f"{value} {op} {number} = {result}\n")
        value = result
    return "".join(lines) + f"Answer: {value}\n"


def test_process_study_end_to_end_on_the_tiny_model(capsys):
    # The tiny random model never writes a right step, so its base samples are replaced (after
    # the samples stage, through the real gold judge) by right and slipped solutions: every
    # later stage then has right and wrong steps to learn from.
    exp = run_experiment(ExperimentConfig(study="process", profile="test", isolate=False, stop_after="samples"),
                         progress=False)
    for name in ("train", "test"):
        rows = read_jsonl(exp.path / f"{name}_samples.jsonl")
        for row in rows:
            row["samples"] = [_judged(row["chain"], _planted(row["chain"], k)) for k in range(len(row["samples"]))]
        write_jsonl(exp.path / f"{name}_samples.jsonl", rows)
    assert {s["outcome"] for row in rows for s in row["samples"]} == {True, False}
    # the policy was fine-tuned first on worked solutions of chains that are neither train nor test chains
    policy = json.loads((exp.path / "stages" / "policy.json").read_text())
    assert policy["demos"] == get_process_profile("test").sft_demos and policy["sft"]
    demos = read_jsonl(exp.path / "sft_demos.jsonl")
    seen = {r["prompt"] for name in ("train", "test") for r in read_jsonl(exp.path / f"{name}_chains.jsonl")}
    assert len(demos) == policy["demos"] and not {d["prompt"] for d in demos} & seen
    assert all(d["completion"].endswith("\n") and "Answer: " in d["completion"] for d in demos)
    exp = run_experiment(ExperimentConfig(resume=exp.run.id, isolate=False), progress=False)
    assert all((exp.path / "stages" / f"{s}.json").exists() for s in STUDY_STAGES)
    summary = json.loads((exp.path / "summary.json").read_text())
    profile = get_process_profile("test")
    points = summary["process_vs_outcome"]
    assert len(points) == len(profile.budgets) * profile.seeds * 2
    for p in points:
        assert {"budget", "seed", "supervision", "bon_gold", "bon_gold_ci", "rm_accuracy"} <= set(p)
        assert p["supervision"] in ("process", "outcome") and p["spent"] <= p["budget"]
        low, high = p["bon_gold_ci"]
        assert 0 <= low <= p["bon_gold"] <= high <= 1
    assert {"value", "ci", "target", "met"} <= set(summary["prm_step_accuracy"])
    assert all(p["fitted"] for p in points if p["budget"] == max(profile.budgets))
    assert 0 <= summary["prm_step_accuracy"]["value"] <= 1  # fitted: a number, not NaN
    assert [c["budget"] for c in summary["comparison"]] == list(profile.budgets)
    for row in summary["decomposition"]:
        assert {"length", "pairs", "chunked", "chunked_ci", "truncated", "truncated_ci"} <= set(row)
    assert [r["length"] for r in summary["decomposition"]] == list(profile.decomposition_lengths)
    rl = summary["rl"]["runs"]
    assert {"process", "outcome"} <= set(rl) and all(math.isfinite(rl[s]["gold"]) for s in ("process", "outcome"))
    for s in ("process", "outcome"):  # two seeds each; the chains' rates are their mean
        assert [x["seed"] for x in rl[s]["seeds"]] == [exp.seed, exp.seed + 1009]
        by_seed = [x["gold_by_prompt"] for x in rl[s]["seeds"]]
        assert rl[s]["gold_by_prompt"] == pytest.approx([(a + b) / 2 for a, b in zip(*by_seed)])
    html = (exp.path / "report.html").read_text()
    assert "Process against outcome supervision" in html and html.count("data:image/png;base64,") >= 2
    assert summary["headline"] in html.replace("&#x27;", "'")
    assert summary["policy"]["sft"] == policy["sft"] and "fine-tuned on 8 worked solutions" in html
    # resuming a finished study runs nothing again and prints its answer
    run_experiment(ExperimentConfig(resume=exp.run.id, isolate=False), progress=False)
    assert "[fits] cached" in capsys.readouterr().err
