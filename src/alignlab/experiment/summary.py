"""summary.json of an experiment: per method and pressure setting, KL, proxy reward, gold reward
and gold win-rate against the base policy; the Gao fits with their peaks and the flags; and
what the run achieved against the project's targets, stated plainly."""

from __future__ import annotations

import json
import math

import numpy as np

from alignlab.fileio import read_jsonl
from alignlab.pressure.fits import fit_gao, past_peak_flags
from alignlab.runs import find_run


def _fit(points: list[dict], reference_gold: float, form: str) -> dict:
    """Gao fit over points (with 'kl', 'proxy', 'gold'), flags written into the points."""
    d = [math.sqrt(max(p["kl"], 0.0)) for p in points]
    try:
        fit = fit_gao(d, [p["gold"] - reference_gold for p in points], form)
    except ValueError as err:
        fit, note = None, str(err)
    if fit is not None and fit.points <= 2:
        # Two coefficients through two points: any curve of the form fits exactly (R² 1), and
        # its peak is an extrapolation (once 6,219 nats): report no fit rather than a false one.
        fit, note = None, (f"only {fit.points} points with KL > 0 for 2 coefficients: every curve of this form "
                           "passes through them, so the fit says nothing (no R², no peak)")
    flags = past_peak_flags(d, [p["proxy"] for p in points], [p["gold"] for p in points], fit) if points else []
    for p, flag in zip(points, flags):
        p["past_peak"] = flag
    if fit is None:
        return {"form": form, "note": note}
    out = fit.to_dict()
    top = max(p["kl"] for p in points)
    out["max_kl"] = top
    # A fitted peak far past the largest KL reached is the form's extrapolation, not a finding
    # (an RL fit over four rising snapshots once put it at 3,479 nats after 11): say so.
    out["peak_beyond_data"] = out["peak_kl"] is not None and out["peak_kl"] > PEAK_REACH * top
    return out


PEAK_REACH = 1.5
"""A fitted peak counts as within the data up to this many times the largest KL reached."""


def _rises_then_falls(points: list[dict]) -> bool:
    """Observed (not fitted): gold peaks at an interior point of rising pressure and a later
    point with a higher proxy has lower gold."""
    ordered = sorted(points, key=lambda p: p["kl"])
    golds = [p["gold"] for p in ordered]
    if len(ordered) < 3:
        return False
    top = int(np.argmax(golds))
    return 0 < top < len(ordered) - 1 and golds[top] > golds[0] and any(p.get("past_peak") for p in ordered[top + 1:])


def _mean_estimate(values) -> dict:
    """A per-prompt quantity's mean with its normal 95% interval over prompts."""
    from alignlab.pressure.stats import paired_difference

    values = [float(v) for v in values]
    if len(values) < 2:
        return {"value": values[0] if values else math.nan, "se": math.nan, "ci": [math.nan, math.nan]}
    estimate = paired_difference(values, [0.0] * len(values))
    return {"value": estimate.value, "se": estimate.se, "ci": list(estimate.ci)}


def _bon_points(test: list[dict], bon_n, base_gold) -> list[dict]:
    """Best-of-n from all of each prompt's base samples by the order-statistic estimator (the
    chance that each sample is the proxy's pick among a random n of them), not the first n only:
    n = 1 is then exactly the base policy."""
    from alignlab.pressure.stats import best_of_n_order_statistic, best_of_n_win_rate
    from alignlab.train.components import best_of_n_kl

    points = []
    for n in bon_n:
        gold = [best_of_n_order_statistic(r["proxy"], r["gold"], n) for r in test]
        proxy = [best_of_n_order_statistic(r["proxy"], r["proxy"], n) for r in test]
        wins = [best_of_n_win_rate(r["proxy"], r["gold"], b, n) for r, b in zip(test, base_gold)]
        win = _mean_estimate(wins)
        points.append({"setting": f"n={n}", "n": n, "kl": best_of_n_kl(n), "proxy": float(np.mean(proxy)),
                       "gold": float(np.mean(gold)), "gold_win_rate": win["value"], "gold_win_rate_ci": win["ci"],
                       "gold_by_prompt": gold, "proxy_by_prompt": proxy})
    return points


def _bootstrap_fit(points: list[dict], reference_by_prompt: list[float], form: str, resamples: int = 500,
                   seed: int = 0) -> dict:
    """A Gao fit of mean gold gain against sqrt(KL), and its coefficients' 95% percentile
    intervals when prompts are resampled (the points' per-prompt gold is resampled together)."""
    usable = [p for p in points if "gold_by_prompt" in p and p["kl"] > 0]
    fit = _fit(points, float(np.mean(reference_by_prompt)), form)
    if len(usable) < 2 or "alpha" not in fit:
        return fit
    d = np.sqrt([max(p["kl"], 0.0) for p in usable])
    gold = np.array([p["gold_by_prompt"] for p in usable])  # (K, P)
    reference = np.asarray(reference_by_prompt)
    rng = np.random.default_rng(seed)
    alphas, betas = [], []
    for _ in range(resamples):
        rows = rng.integers(0, gold.shape[1], gold.shape[1])
        try:
            f = fit_gao(d, gold[:, rows].mean(1) - reference[rows].mean(), form)
        except ValueError:
            continue
        alphas.append(f.alpha), betas.append(f.beta)
    if alphas:
        fit["alpha_ci"] = [float(np.percentile(alphas, 2.5)), float(np.percentile(alphas, 97.5))]
        fit["beta_ci"] = [float(np.percentile(betas, 2.5)), float(np.percentile(betas, 97.5))]
        fit["bootstrap"] = f"{len(alphas)} resamples of the test prompts"
    return fit


def _run_path(points: list[dict], run: str) -> list[dict]:
    """A run's evaluated snapshots, then its final policy, in training order."""
    mine = [p for p in points if p.get("run") == run]
    return sorted(mine, key=lambda p: (p.get("step") is None, p.get("step") or 0))


def build_summary(exp) -> dict:
    from alignlab.pressure.stats import paired_difference

    profile = exp.profile
    stages = {name: exp.done(name) for name in ("prompts", "vocabulary", "samples", "labels", "reward", "bon",
                                                "dpo", "ppo", "rloo", "grpo", "evaluate")}
    test = read_jsonl(exp.file("test_samples.jsonl"))
    base_gold = [row["gold"] for row in test]
    base_gold_by_prompt = [float(np.mean(g)) for g in base_gold]
    base_proxy_by_prompt = [float(np.mean(row["proxy"])) for row in test]
    reference_gold = float(np.mean(base_gold_by_prompt))
    methods: dict[str, list[dict]] = {"base": [{
        "setting": "base policy", "kl": 0.0, "proxy": float(np.mean(base_proxy_by_prompt)), "gold": reference_gold,
        "gold_win_rate": 0.5, "gold_win_rate_ci": [0.5, 0.5]}]}
    bon_points = _bon_points(test, profile.bon_n, base_gold)
    methods["bon"] = bon_points
    for method in ("dpo", "ppo", "rloo", "grpo"):
        methods[method] = []
    for result in stages["evaluate"]["policies"]:
        methods.setdefault(result["method"], []).append(
            {k: result.get(k) for k in ("setting", "step", "arm", "kl", "kl_k3", "proxy", "own_proxy", "gold",
                                        "gold_win_rate", "gold_win_rate_ci", "run", "response_length",
                                        "gold_by_prompt", "proxy_by_prompt", "own_proxy_by_prompt")
             if result.get(k) is not None or k == "step"})

    # Each online run's own trajectory: gold watched every rollout (training prompts, that iteration's policy)
    trajectories = {}
    for method in ("ppo", "rloo", "grpo"):
        for r in (stages[method] or {}).get("runs", []):
            ledger = json.loads((find_run(r["run"]).path / "pressure.json").read_text())
            points = [{"setting": f"step {e['step']}", "kl": e["objective/kl"], "proxy": e["objective/scores"],
                       "gold": e["gold"]} for e in ledger["entries"] if "gold" in e]
            if points:
                fit = _fit(points, points[0]["gold"], "rl")
                name = f"{method} kl_coef={r['kl_coef']:g}" + (f" ({r['arm']})" if r.get("arm", "proxy") != "proxy"
                                                              else "")
                trajectories[name] = {"run": r["run"], "points": points, "fit": fit,
                                      "rises_then_falls": _rises_then_falls(points)}

    fits = {"bon": _bootstrap_fit(bon_points, base_gold_by_prompt, "bon")}
    for method in ("dpo", "ppo", "rloo", "grpo"):
        main_arm = [p for p in methods[method] if p.get("arm", "proxy") == "proxy"]
        if len(main_arm) >= 2:
            fits[method] = _bootstrap_fit(main_arm, base_gold_by_prompt, "rl")

    # The headline, named in the profile before the run: the online method at its first KL coefficient
    headline_runs = [r for r in (stages.get(profile.online_method) or {}).get("runs", []) if r.get("arm") == "proxy"]
    headline = None
    if headline_runs:
        path = _run_path(methods[profile.online_method], headline_runs[0]["run"])
        headline = path[-1] if path else None
    accuracy = stages["reward"]
    targets = {
        "reward_model_gold_accuracy": {
            "value": accuracy["gold_accuracy"], "ci": accuracy.get("gold_accuracy_ci"),
            "pairs": accuracy.get("held_out_pairs"), "target": f">= {profile.target_rm_accuracy}",
            "met": bool(accuracy["gold_accuracy"] >= profile.target_rm_accuracy),
            "estimator": "share of held-out within-prompt pairs ordered as gold orders them; 95% CI "
                         "cluster-robust over prompts (normal)"},
    }
    if headline is not None:
        low = headline["gold_win_rate_ci"][0]
        gain = paired_difference(headline["proxy_by_prompt"], base_proxy_by_prompt)
        targets["online_rl_gold_win_rate"] = {
            "method": profile.online_method, "setting": headline["setting"], "run": headline["run"],
            "value": headline["gold_win_rate"], "ci": headline["gold_win_rate_ci"],
            "target": f">= {profile.target_win_rate} with ci low > {profile.target_win_rate_low}",
            "met": bool(headline["gold_win_rate"] >= profile.target_win_rate and low > profile.target_win_rate_low),
            "estimator": "per prompt, P(gold prefers a policy sample to a base sample), ties 1/2; mean over "
                         "test prompts with a normal 95% CI over prompts"}
        targets["online_rl_proxy_gain"] = {
            "method": profile.online_method, "setting": headline["setting"], "value": gain.value, "se": gain.se,
            "ci": list(gain.ci), "target": "ci low > 0", "met": bool(gain.ci[0] > 0),
            "estimator": "mean over test prompts of (policy's mean proxy - base samples' mean proxy), normal CI"}
    if headline is not None:
        seeds = [headline] + [p for p in methods[profile.online_method]
                              if p.get("arm", "").startswith("seed ") and p.get("step") is None]
        if len(seeds) > 1:
            rates = [p["gold_win_rate"] for p in seeds]
            targets["online_rl_gold_win_rate"]["seeds"] = {
                "values": rates, "mean": float(np.mean(rates)), "sd": float(np.std(rates, ddof=1)),
                "min": float(min(rates)), "max": float(max(rates)),
                "note": "the same setting trained with other seeds (same proxy, same test prompts); the target is "
                        "read from the first seed, named before the run"}
    goodhart = _goodhart(stages, methods, profile)
    if goodhart is not None:
        goodhart["target"] = ("value >= 2 se and proxy_rise >= 2 proxy_rise_se" if profile.require_goodhart
                              else "reported only: this profile is too small to claim it")
        goodhart["met"] = bool(goodhart["significant"]) if profile.require_goodhart else None
        targets["goodhart_drop"] = goodhart
    curves = {"bon": _rises_then_falls(bon_points), **{k: v["rises_then_falls"] for k, v in trajectories.items()}}
    return {"experiment": exp.run.id, "profile": json.loads(exp.file("profile.json").read_text()), "seconds": {
        name: (stage or {}).get("seconds") for name, stage in stages.items()},
        "vocabulary": stages["vocabulary"], "labels": stages["labels"], "reward": stages["reward"],
        "reference_gold": reference_gold, "test_prompts": len(test), "methods": methods, "fits": fits,
        "trajectories": trajectories, "curves_rise_then_fall": curves, "targets": targets}


def _goodhart(stages: dict, methods: dict, profile) -> dict | None:
    """The split-half overoptimization test, on the run named before the run: the headline
    method's weak-proxy arm where the profile has one (weak proxies overoptimize sooner), else
    its first setting. Gold against the proxy that run optimised."""
    from alignlab.pressure.stats import split_half_goodhart

    runs = (stages.get(profile.online_method) or {}).get("runs", [])
    chosen = next((r for r in runs if r.get("arm") == "weak proxy"), None) or (runs[0] if runs else None)
    if chosen is None:
        return None
    path = _run_path(methods[profile.online_method], chosen["run"])
    if len(path) < 2 or len(path[0].get("gold_by_prompt", [])) < 4:
        return None
    proxy_key = "own_proxy_by_prompt" if "own_proxy_by_prompt" in path[0] else "proxy_by_prompt"
    test = split_half_goodhart([p["gold_by_prompt"] for p in path], [p[proxy_key] for p in path])
    return {**{k: test[k] for k in ("value", "se", "proxy_rise", "proxy_rise_se", "significant", "method")},
            "peak": path[test["peak_snapshot"]]["setting"], "final": path[-1]["setting"],
            "run": chosen["run"], "setting": path[-1]["setting"], "arm": chosen.get("arm", "proxy"),
            "estimator": test["method"], "method": profile.online_method}
