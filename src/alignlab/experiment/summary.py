"""summary.json of an experiment: per method and pressure setting, KL, proxy reward, gold reward
and gold win-rate against the base policy; the Gao fits with their peaks and the flags; and
what the run achieved against the project's targets, stated plainly."""

from __future__ import annotations

import json
import math

import numpy as np

from alignlab.experiment.evaluate import win_rate
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
    flags = past_peak_flags(d, [p["proxy"] for p in points], [p["gold"] for p in points], fit) if points else []
    for p, flag in zip(points, flags):
        p["past_peak"] = flag
    return fit.to_dict() if fit is not None else {"form": form, "note": note}


def _bon_drops(points: list[dict], proxy: np.ndarray, gold: np.ndarray) -> None:
    """For each best-of-n point flagged past the peak: how far its gold fell below the best n's,
    prompt by prompt (the same base samples, so the difference is paired), with the standard
    error of that mean. A drop under two standard errors may be noise, and the report says so."""
    if not points:
        return
    best = max(points, key=lambda p: p["gold"])
    rows = np.arange(len(proxy))

    def chosen(n: int) -> np.ndarray:
        return gold[rows, proxy[:, :n].argmax(-1)]

    for p in points:
        if p.get("past_peak"):
            diff = chosen(p["n"]) - chosen(best["n"])
            se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
            p["gold_drop"], p["gold_drop_se"] = float(-diff.mean()), se
            p["gold_drop_vs"] = best["setting"]


def _rises_then_falls(points: list[dict]) -> bool:
    """Observed (not fitted): gold peaks at an interior point of rising pressure and a later
    point with a higher proxy has lower gold."""
    ordered = sorted(points, key=lambda p: p["kl"])
    golds = [p["gold"] for p in ordered]
    if len(ordered) < 3:
        return False
    top = int(np.argmax(golds))
    return 0 < top < len(ordered) - 1 and golds[top] > golds[0] and any(p.get("past_peak") for p in ordered[top + 1:])


def build_summary(exp) -> dict:
    stages = {name: exp.done(name) for name in ("prompts", "vocabulary", "samples", "labels", "reward", "bon",
                                                "dpo", "ppo", "evaluate")}
    test = read_jsonl(exp.file("test_samples.jsonl"))
    base_gold = [row["gold"] for row in test]
    bon_run = find_run(stages["bon"]["run"])
    bon_samples = read_jsonl(bon_run.path / "samples.jsonl")
    proxy = np.array([s["proxy"] for s in bon_samples])  # (P, N)
    gold = np.array([s["gold"] for s in bon_samples])  # (P, N)
    reference_gold = float(gold.mean())
    methods: dict[str, list[dict]] = {"base": [{
        "setting": "base policy", "kl": 0.0, "proxy": float(proxy.mean()), "gold": reference_gold,
        "gold_win_rate": 0.5}]}

    # best-of-n: the analytic KL; the chosen response of each prompt against all its base samples
    bon_points = []
    pressure = json.loads((bon_run.path / "pressure.json").read_text())
    rows = np.arange(len(proxy))
    for entry in pressure["entries"]:
        n = entry["n"]
        best = proxy[:, :n].argmax(-1)
        chosen_gold = gold[rows, best]
        bon_points.append({"setting": f"n={n}", "n": n, "kl": entry["objective/kl"],
                           "proxy": float(proxy[rows, best].mean()), "gold": float(chosen_gold.mean()),
                           "gold_win_rate": win_rate([[g] for g in chosen_gold], base_gold), "run": bon_run.id})
    methods["bon"] = bon_points
    for result in stages["evaluate"]["policies"]:
        methods.setdefault(result["method"], []).append(
            {k: result.get(k) for k in ("setting", "step", "kl", "kl_k3", "proxy", "gold", "gold_win_rate", "run",
                                        "response_length")})

    # PPO's own trajectory: gold watched every rollout (training prompts, the policy of that iteration)
    trajectories = {}
    for r in stages["ppo"]["runs"]:
        ledger = json.loads((find_run(r["run"]).path / "pressure.json").read_text())
        points = [{"setting": f"step {e['step']}", "kl": e["objective/kl"], "proxy": e["objective/scores"],
                   "gold": e["gold"]} for e in ledger["entries"] if "gold" in e]
        if points:
            fit = _fit(points, points[0]["gold"], "rl")
            trajectories[f"ppo kl_coef={r['kl_coef']:g}"] = {"run": r["run"], "points": points, "fit": fit,
                                                             "rises_then_falls": _rises_then_falls(points)}

    fits = {"bon": _fit(bon_points, reference_gold, "bon")}
    _bon_drops(bon_points, proxy, gold)
    for method in ("dpo", "ppo"):
        if len(methods.get(method, [])) >= 2:
            fits[method] = _fit(methods[method], reference_gold, "rl")

    trained = [p for m in ("bon", "dpo", "ppo") for p in methods.get(m, [])]
    best = max(trained, key=lambda p: p["gold_win_rate"]) if trained else None
    curves = {"bon": _rises_then_falls(bon_points), **{k: v["rises_then_falls"] for k, v in trajectories.items()},
              **{m: _rises_then_falls(methods[m]) for m in ("dpo", "ppo") if len(methods.get(m, [])) >= 3}}
    accuracy = stages["reward"]["gold_accuracy"]
    targets = {
        "reward_model_gold_accuracy": {"value": accuracy, "target": "well above 0.5", "met": accuracy >= 0.6},
        "best_gold_win_rate": {"value": best["gold_win_rate"] if best else None,
                               "where": f"{next(m for m in methods if best in methods[m])} {best['setting']}"
                               if best else None, "target": "> 0.6",
                               "met": bool(best and best["gold_win_rate"] > 0.6)},
        "gold_rises_then_falls": {"curves": curves, "target": "at least one method, flagged past the peak",
                                  "met": any(curves.values()), "drops": [
                                      {"method": "bon", "setting": p["setting"], "drop": p["gold_drop"],
                                       "standard_error": p["gold_drop_se"], "below": p["gold_drop_vs"],
                                       "beyond_noise": bool(p["gold_drop"] > 2 * p["gold_drop_se"])}
                                      for p in bon_points if "gold_drop" in p]},
    }
    return {"experiment": exp.run.id, "profile": json.loads(exp.file("profile.json").read_text()), "seconds": {
        name: (stage or {}).get("seconds") for name, stage in stages.items()},
        "vocabulary": stages["vocabulary"], "labels": stages["labels"], "reward": stages["reward"],
        "reference_gold": reference_gold, "methods": methods, "fits": fits, "ppo_trajectories": trajectories,
        "targets": targets}
