"""The active-query study: the question pool, the held-out pairs, each strategy's next questions,
a planted study on synthetic features, and the whole study end to end on the tiny model."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from alignlab.experiment.active import STUDY_STAGES, Pool, get_active_profile, held_out_pairs, stage_report, stage_rounds
from alignlab.experiment.command import ExperimentConfig, run_experiment
from alignlab.experiment.pipeline import Experiment
from alignlab.feedback.active import next_questions
from alignlab.fileio import atomic_write_json, write_jsonl
from alignlab.runs import Run

ROWS = [{"prompt": "p0", "responses": ["a", "b", "b"], "gold": [0.1, 0.5, 0.5]},
        {"prompt": "p1", "responses": ["c", "d"], "gold": [0.3, 0.3]}]


def test_the_pool_asks_about_distinct_texts_of_one_prompt_and_held_out_pairs_need_a_gold_difference():
    pool = Pool(ROWS)
    # p0: (a, b), (a, b'), not (b, b') (same text); p1: (c, d)
    assert pool.pairs.tolist() == [[0, 1], [0, 2], [3, 4]]
    assert pool.prompt_of.tolist() == [0, 0, 1]
    assert pool.groups.tolist() == [0, 0, 0, 1, 1]
    better, worse, prompt = held_out_pairs(ROWS)
    # p0: b over a twice (b, b' tie in gold); p1: gold ties, no pair
    assert better.tolist() == [1, 2] and worse.tolist() == [0, 0] and prompt.tolist() == [0, 0]


@pytest.mark.parametrize("strategy", ["random", "uncertainty", "information", "thompson"])
def test_every_strategy_asks_new_questions_only(strategy):
    rng = np.random.default_rng(0)
    rows = [{"prompt": f"p{i}", "responses": [f"r{i}-{j}" for j in range(4)], "gold": [0.0] * 4} for i in range(5)]
    pool = Pool(rows)
    z = rng.normal(size=(20, 3))
    samples = rng.normal(size=(6, 3))
    asked = np.zeros(len(pool.pairs), dtype=bool)
    asked[:7] = True
    new = next_questions(strategy, samples @ z.T, pool.pairs, asked, 10, rng, pool.groups)
    assert len(new) == 10 and len(set(new)) == 10 and not asked[new].any()
    everything = next_questions(strategy, samples @ z.T, pool.pairs, asked, 100, rng, pool.groups)  # more than remain: every open one
    assert sorted(everything) == list(range(7, len(pool.pairs)))


def _planted_study(tmp_path, strategies=("random", "information")) -> Experiment:
    """A study on synthetic features whose gold is a linear function of them: the head can learn it."""
    rng = np.random.default_rng(3)
    truth = rng.normal(size=6)
    profile = replace(get_active_profile("test"), rm_prompts=30, samples_per_prompt=4, test_prompts=20,
                      bon_n=(4,), initial_labels=8, per_round=8, rounds=4, seeds=2, strategies=strategies,
                      l2=0.01, agreement=0.9, bootstrap=100)
    exp = Experiment(Run.create("experiment", {"study": "active"}), profile, seed=0, progress=False)
    saved = {}
    for name, prompts in (("rm", profile.rm_prompts), ("test", profile.test_prompts)):
        feats = rng.normal(size=(prompts * profile.samples_per_prompt, 6))
        gold = feats @ truth
        rows = [{"prompt": f"{name}{i}", "responses": [f"{name}{i}-{j}" for j in range(profile.samples_per_prompt)],
                 "gold": gold[i * profile.samples_per_prompt:(i + 1) * profile.samples_per_prompt].tolist()}
                for i in range(prompts)]
        write_jsonl(exp.file(f"{name}_samples.jsonl"), rows)
        saved[name] = torch.tensor(feats, dtype=torch.float32)
    torch.save(saved, exp.file("features.pt"))
    atomic_write_json(exp.path / "stages" / "samples.json", {"rm": {}, "test": {}})
    atomic_write_json(exp.path / "stages" / "features.json", {"layer": 1})
    return exp


def test_a_planted_linear_gold_is_learnt_by_every_strategy_from_the_same_start(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path))
    exp = _planted_study(tmp_path)
    stage_rounds(exp)
    runs = json.loads(exp.file("rounds.json").read_text())["runs"]
    for seed in (0, 1):
        by = {r["strategy"]: r for r in runs if r["seed"] == seed}
        first = {s: by[s]["asked"][:8] for s in by}
        assert first["random"] == first["information"]  # the same start within a seed
        for r in by.values():
            assert len(set(r["asked"])) == len(r["asked"]) == 8 + 8 * 4
            curve = [q["accuracy"] for q in r["curve"]]
            assert curve[-1] > 0.8 and curve[-1] > curve[0]  # the planted signal is learnt as labels grow
            assert r["labels_agreeing_with_gold"] > 0.6
    exp.stage("report", stage_report)
    summary = json.loads(exp.file("summary.json").read_text())
    active = summary["active"]
    for s in ("random", "information"):
        curve = active["strategies"][s]["curve"]
        assert [q["labels"] for q in curve] == [8, 16, 24, 32, 40]
        assert all(q["ci"][0] <= q["accuracy"] <= q["ci"][1] for q in curve)
        assert active["label_savings"][s]["ci"][0] <= active["label_savings"][s]["value"] \
            <= active["label_savings"][s]["ci"][1]
        assert 0.0 <= active["strategies"][s]["calibration"]["error_auroc"] <= 1.0
    assert active["label_savings"]["random"]["value"] == pytest.approx(1.0)
    assert active["target"]["strategy"] == "information"  # named by the profile, not the best
    assert active["best_of_n"]["information"]["gold"] > summary["active"]["base_gold"]  # the head picks better


def test_active_profiles_refuse_unknown_strategies_and_need_random():
    with pytest.raises(ValueError, match="keep 'random'"):
        get_active_profile("test", strategies=("information",))
    with pytest.raises(ValueError, match="choose from random, uncertainty, information, thompson"):
        get_active_profile("test", strategies=("random", "oracle"))
    with pytest.raises(ValueError, match="headline 'random': name one of the strategies other than random"):
        get_active_profile("test", headline="random")
    with pytest.raises(ValueError, match="the active study has profiles test, quick, standard"):
        get_active_profile("full")


def test_active_study_end_to_end_on_the_tiny_model(capsys):
    exp = run_experiment(ExperimentConfig(study="active", profile="test", isolate=False), progress=False)
    assert all((exp.path / "stages" / f"{s}.json").exists() for s in STUDY_STAGES)
    summary = json.loads((exp.path / "summary.json").read_text())
    profile = get_active_profile("test")
    active = summary["active"]
    assert set(active["strategies"]) == set(profile.strategies) == set(active["label_savings"])
    labels = [profile.initial_labels + k * profile.per_round for k in range(profile.rounds + 1)]
    for name, strategy in active["strategies"].items():
        assert [q["labels"] for q in strategy["curve"]] == labels
        assert len(strategy["final_accuracy_by_seed"]) == profile.seeds
        for q in strategy["curve"]:
            assert 0 <= q["ci"][0] <= q["accuracy"] <= q["ci"][1] <= 1
        assert {"value", "ci"} <= set(active["label_savings"][name])
    first = {s: v["curve"][0]["accuracy"] for s, v in active["strategies"].items()}
    assert len(set(first.values())) == 1  # every strategy starts from the same labels
    assert {"strategy", "value", "ci", "target", "met", "ci_excludes_1"} <= set(active["target"])
    html = (exp.path / "report.html").read_text()
    assert "Which comparisons to ask for" in html and html.count("data:image/png;base64,") == 2
    run_experiment(ExperimentConfig(resume=exp.run.id, isolate=False), progress=False)
    assert "[rounds] cached" in capsys.readouterr().err
