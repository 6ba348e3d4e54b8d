"""The writing-prompts experiment end to end on the tiny model (profile 'test'), killed between
stages and resumed."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from alignlab.cli import main
from alignlab.experiment.command import ExperimentConfig, run_experiment
from alignlab.experiment.pipeline import STAGES
from alignlab.experiment.profiles import get_profile
from alignlab.pressure import read_ledger
from alignlab.runs import find_run, list_runs


def test_best_of_n_points_use_every_sample_so_n_1_is_the_base_policy():
    from alignlab.experiment.summary import _bon_points

    # 2 prompts x 4 samples; base samples are the same responses
    test = [{"proxy": [0.0, 1.0, 0.5, 2.0], "gold": [0.1, 0.9, 0.5, 0.2]},
            {"proxy": [3.0, 1.0, 2.0, 0.0], "gold": [0.4, 0.8, 0.6, 0.0]}]
    points = _bon_points(test, (1, 2, 4), [t["gold"] for t in test])
    assert points[0]["gold"] == pytest.approx((0.425 + 0.45) / 2)  # the plain mean
    assert points[0]["gold_win_rate"] == pytest.approx(0.5)  # the base policy against itself
    assert points[2]["gold"] == pytest.approx((0.2 + 0.4) / 2)  # n = m: the proxy's argmax
    # n = 2 by hand: sorted by proxy the weights are 0, 1/6, 2/6, 3/6
    first = (0.1 * 0 + 0.5 / 6 + 0.9 * 2 / 6 + 0.2 * 3 / 6)
    second = (0.0 * 0 + 0.8 / 6 + 0.6 * 2 / 6 + 0.4 * 3 / 6)
    assert points[1]["gold"] == pytest.approx((first + second) / 2)
    assert points[1]["kl"] == pytest.approx(math.log(2) - 0.5)
    low, high = points[1]["gold_win_rate_ci"]
    assert low <= points[1]["gold_win_rate"] <= high


def test_profiles_refuse_unknown_names_and_take_overrides():
    assert get_profile("quick", model="tiny").model == "tiny"
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("huge")


def _wait_for(path, process, timeout=240):
    start = time.time()
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the experiment ended before {path.name}: {process.stderr.read()[-3000:]}")
        if time.time() - start > timeout:
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.2)


def test_experiment_killed_between_stages_resumes_and_reports(tmp_path, capsys):
    # 1. start the test profile in a process of its own and kill it (SIGKILL) once labels exist
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "alignlab.cli", "experiment", "--profile", "test"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = time.time()
        while not [r for r in list_runs() if r.kind == "experiment"]:
            assert process.poll() is None and time.time() - start < 120, process.stderr.read()[-3000:]
            time.sleep(0.2)
        exp_run = [r for r in list_runs() if r.kind == "experiment"][-1]
        _wait_for(exp_run.path / "stages" / "labels.json", process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    done_before = {p.name: p.stat().st_mtime_ns for p in (exp_run.path / "stages").glob("*.json")}
    assert {"prompts.json", "vocabulary.json", "samples.json", "labels.json"} <= set(done_before)
    assert "report.json" not in done_before

    # 2. resume: finished stages are not run again, the rest run to the report
    exp = run_experiment(ExperimentConfig(resume=exp_run.id), progress=False)
    for name, mtime in done_before.items():
        assert (exp.path / "stages" / name).stat().st_mtime_ns == mtime, name
    assert all((exp.path / "stages" / f"{s}.json").exists() for s in STAGES)

    # 3. what the report promises is there
    summary = json.loads((exp.path / "summary.json").read_text())
    assert set(summary["methods"]) == {"base", "bon", "dpo", "ppo", "rloo", "grpo"}
    for method, points in summary["methods"].items():
        assert points, method
        for p in points:
            assert {"setting", "kl", "proxy", "gold", "gold_win_rate", "gold_win_rate_ci"} <= set(p), (method, p)
            assert all(math.isfinite(p[k]) for k in ("kl", "proxy", "gold", "gold_win_rate"))
            low, high = p["gold_win_rate_ci"]
            assert 0 <= low <= p["gold_win_rate"] <= high <= 1, (method, p)
    bon = summary["methods"]["bon"]
    assert [p["kl"] for p in bon] == pytest.approx([math.log(n) - (n - 1) / n for n in (1, 2, 4)])
    assert summary["fits"]["bon"]["form"] == "bon"
    assert summary["labels"]["labeler_beta"] > 0 and 0 <= summary["labels"]["agreement_with_gold"] <= 1
    assert [c["pairs"] for c in summary["reward"]["curve"]] == sorted(c["pairs"] for c in summary["reward"]["curve"])
    targets = summary["targets"]
    assert set(targets) == {"reward_model_gold_accuracy", "online_rl_gold_win_rate", "online_rl_proxy_gain",
                            "goodhart_drop"}
    for name, target in targets.items():
        assert {"value", "target", "met"} <= set(target), name
    assert targets["reward_model_gold_accuracy"]["ci"][0] <= targets["reward_model_gold_accuracy"]["value"]
    # the headline is the method and setting the profile names, not the best of several
    headline = targets["online_rl_gold_win_rate"]
    assert headline["method"] == "rloo" and headline["setting"] == "kl_coef=0.05"
    assert {"value", "se", "proxy_rise", "proxy_rise_se", "method", "setting"} <= set(targets["goodhart_drop"])
    assert targets["goodhart_drop"]["arm"] == "weak proxy" and targets["goodhart_drop"]["met"] is None
    rloo = summary["methods"]["rloo"]
    assert [(p["step"], p["arm"]) for p in rloo] == [(1, "proxy"), (None, "proxy"), (None, "seed 1"),
                                                     (1, "weak proxy"), (2, "weak proxy"), (None, "weak proxy")]
    # the weak arm runs its own length (weak_proxy_iterations), the others rl_iterations
    rloo_stage = json.loads((exp.path / "stages" / "rloo.json").read_text())
    assert [r["iterations"] for r in rloo_stage["runs"]] == [2, 2, 3]
    seeds = headline["seeds"]  # the headline setting again with seed 1: the spread across seeds
    assert seeds["values"] == [headline["value"], rloo[2]["gold_win_rate"]]
    assert seeds["min"] <= seeds["mean"] <= seeds["max"] and seeds["sd"] >= 0
    assert [p["step"] for p in summary["methods"]["grpo"]] == [None]  # not the headline: its end only
    assert "own_proxy" in rloo[-1] and "own_proxy" not in rloo[0]
    html = (exp.path / "report.html").read_text()
    assert html.count("<img src=\"data:image/png;base64,") >= 4 and "What this run achieved" in html
    assert "preferred by gold to the base policy" in html and "split-half test" in html
    # every policy run keeps its ledger; PPO's has gold at every rollout
    ppo = find_run(summary["methods"]["ppo"][0]["run"])
    ledger = read_ledger(ppo.path)
    assert ledger.has_gold and len(ledger.points) == get_profile("test").ppo_iterations
    assert main(["pressure", ppo.id]) == 0
    assert "reference gold" in capsys.readouterr().out
    # DPO is evaluated along its path: the snapshots every 2 steps, then the final policy
    dpo = summary["methods"]["dpo"]
    assert [p["step"] for p in dpo] == [2, 4, None] and dpo[0]["setting"] == "beta=0.1 step 2"
    dpo_run = find_run(dpo[-1]["run"]).path
    assert (dpo_run / "test_samples.jsonl").exists() and (dpo_run / "test_samples-step-0000002.jsonl").exists()
    assert "dpo" in summary["fits"]


def test_stop_after_names_a_stage(capsys):
    with pytest.raises(ValueError, match="the stages are prompts, vocabulary"):
        run_experiment(ExperimentConfig(profile="test", stop_after="nowhere"), progress=False)


def test_a_gao_fit_through_as_many_points_as_coefficients_is_not_reported():
    # Two coefficients through two points fit exactly (R² 1) and their "peak" is an
    # extrapolation (a quick run once reported a peak at 6,219 nats): no fit is the honest answer.
    from alignlab.experiment.summary import _fit

    points = [{"kl": 2.6, "proxy": 0.5, "gold": 0.545}, {"kl": 8.2, "proxy": 1.2, "gold": 0.647}]
    fit = _fit(points, 0.362, "rl")
    assert "alpha" not in fit and "r2" not in fit and "says nothing" in fit["note"]
    points.append({"kl": 14.0, "proxy": 1.5, "gold": 0.63})
    fit = _fit(points, 0.362, "rl")
    assert fit["points"] == 3 and "alpha" in fit and fit["r2"] < 1


def test_a_fitted_peak_far_past_the_data_is_marked_and_not_reported_as_a_peak():
    # Four rising snapshots (the standard profile's headline arm): the RL form's peak lands at
    # thousands of nats, far past the 11 reached; the report must not state it as where gold peaks.
    from alignlab.experiment.summary import _fit
    from alignlab.report.experiment import _peak

    rising = [{"kl": 1.78, "proxy": 0.46, "gold": 0.518}, {"kl": 6.05, "proxy": 0.89, "gold": 0.642},
              {"kl": 9.38, "proxy": 1.13, "gold": 0.671}, {"kl": 11.35, "proxy": 1.32, "gold": 0.674}]
    fit = _fit(rising, 0.381, "rl")
    assert fit["max_kl"] == 11.35 and fit["peak_kl"] > 100 and fit["peak_beyond_data"] is True
    assert _peak(fit).startswith("no peak within the run") and "11.3" in _peak(fit)
    # gold that rises then falls inside the data: the peak is reported as a number
    turning = [{"kl": 1.0, "proxy": 0.3, "gold": 0.50}, {"kl": 4.0, "proxy": 0.7, "gold": 0.60},
               {"kl": 9.0, "proxy": 1.0, "gold": 0.58}, {"kl": 16.0, "proxy": 1.3, "gold": 0.50}]
    fit = _fit(turning, 0.4, "rl")
    assert fit["peak_beyond_data"] is False and fit["peak_kl"] < 16
    assert _peak(fit) == f"{fit['peak_kl']:.3f}"
