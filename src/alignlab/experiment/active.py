"""The active-query study: which comparisons should a person be asked for?

`alignlab experiment --study active` measures what choosing the questions saves (Sadigh et al.
2017; Dwaracherla et al. 2024, "Efficient Exploration for LLMs"). A pool of base-policy
responses to the writing prompts waits unlabelled; every within-prompt pair of them is a
question a person could be asked. A reward model (the proxy's head: a linear map of one layer's
mean states, standardised, L2-penalised Bradley-Terry) starts from a few random labels; in each
round its posterior (feedback/active.py: Laplace or bootstrap members) scores the pool, a query
strategy picks the next batch of pairs, a simulated labeler answers them (the RLHF experiment's
labeler, calibrated to the same human-like agreement), and the model is refitted.

Strategies: random (the baseline), uncertainty (the members' disagreement), information (BALD:
the expected information about the model in the answer) and double Thompson sampling. Within a
seed every strategy starts from the same labels, and a pair asked twice gets the same answer
under every strategy (the labeler's noise is drawn once per pair and seed), so the strategies
differ only in which questions they ask.

Measured on held-out test prompts, against noise-free gold: accuracy on every within-prompt pair
whose gold differs, as labels grow; the label savings (labels random needs to reach its final
accuracy over the labels a strategy needs); whether the posterior's uncertainty points at the
model's errors; and the downstream effect on best-of-n's gold quality.

Stages (cached in the experiment folder, resumable like the RLHF experiment's):

    1. prompts     the task's splits (pool prompts and test prompts)
    2. vocabulary  the task's output vocabulary (fast sampling on a CPU)
    3. samples     the pool's and the test prompts' base samples, gold-scored
    4. features    every sample's features at the profile's layer (one backbone pass each)
    5. rounds      every strategy and seed, round by round
    6. report      summary.json and report.html
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from alignlab.fileio import atomic_write_json, read_jsonl

STUDY_STAGES = ("prompts", "vocabulary", "samples", "features", "rounds", "report")


@dataclass(frozen=True)
class ActiveProfile:
    """How big each stage of the active-query study is."""

    model: str
    dtype: str
    rm_prompts: int
    """Pool prompts: their samples' within-prompt pairs are the questions that can be asked."""
    samples_per_prompt: int
    test_prompts: int
    """Held-out prompts the reward models are judged on."""
    bon_n: tuple[int, ...]
    """Best-of-n sizes for the downstream measure; the test prompts get max(bon_n) samples each."""
    initial_labels: int
    """Random labels every strategy starts from (the same ones within a seed)."""
    per_round: int
    """Labels bought in each round."""
    rounds: int
    seeds: int
    layer: int
    """Decoder layer the head reads (1-based), as the RLHF experiment's proxy."""
    study: str = "active"
    strategies: tuple[str, ...] = ("random", "uncertainty", "information", "thompson")
    headline: str = "information"
    """The strategy the target is read from, named before the run (the best of several would be
    biased upward: with intervals as wide as these, by a lot)."""
    posterior: str = "laplace"
    """Where the members come from: 'laplace' (one fit a round) or 'bootstrap' (one fit per member)."""
    members: int = 16
    l2: float = 1.0
    """The head's L2 penalty on standardised features (mean loss + l2 ||w||^2), as the proxy's."""
    agreement: float = 0.75
    """Two simulated labelers agree this often (the labeler's noise, as in the RLHF experiment)."""
    pooling: str = "mean"
    max_new_tokens: int = 48
    restrict_vocabulary: bool = True
    vocab_pilot_prompts: int = 8
    batch_size: int = 64
    max_length: int = 256
    bootstrap: int = 1000
    """Resamples (of seeds and test prompts together) behind the curves' and savings' intervals."""
    target_savings: float = 1.5
    notes: tuple[str, ...] = ()

    # the RLHF experiment's prompts stage reads these: this study trains no policy
    ppo_rollout = 0
    ppo_iterations = 0
    rl_prompts = 0
    rl_iterations = 0


ACTIVE_PROFILES: dict[str, ActiveProfile] = {
    "test": ActiveProfile(model="tiny", dtype="float32", rm_prompts=8, samples_per_prompt=3, test_prompts=4,
                          bon_n=(2, 4), initial_labels=4, per_round=4, rounds=2, seeds=2, layer=1, members=4,
                          max_new_tokens=16, vocab_pilot_prompts=0, batch_size=16, agreement=0.6, bootstrap=50),
    # Quick: the first version (64 pool prompts, 32 labels a round for 12 rounds, 5 seeds) took
    # 6 min 28 s and 3.1 GB from an empty cache on a 2-core CPU; on its samples 10 seeds gave
    # information 1.26x (0.77-2.01) and rounds of 8 labels 1.37x (0.51-2.23) (docs/active.md).
    # Now: half as many pool prompts again (more to choose from), rounds of 8, 10 seeds: 6 min
    # 40 s, 3.2 GB from an empty cache; information 1.07x (0.44-2.74).
    "quick": ActiveProfile(model="gemma-3-270m", dtype="auto", rm_prompts=96, samples_per_prompt=8,
                           test_prompts=32, bon_n=(4, 8), initial_labels=32, per_round=8, rounds=48, seeds=10,
                           layer=11),
    # Standard: 45 min 41 s, 2.0 GB with the model converted and the test suite beside it;
    # information 0.98x (0.67-1.32), thompson 1.36x (0.89-1.84) (docs/active.md).
    "standard": ActiveProfile(model="gemma-3-270m", dtype="auto", rm_prompts=200, samples_per_prompt=8,
                              test_prompts=64, bon_n=(4, 16), initial_labels=32, per_round=8, rounds=96, seeds=12,
                              layer=11),
}


def get_active_profile(name: str, **overrides) -> ActiveProfile:
    if name not in ACTIVE_PROFILES:
        raise ValueError(f"the active study has profiles {', '.join(ACTIVE_PROFILES)}; got {name!r}")
    profile = replace(ACTIVE_PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})
    if profile.dtype == "auto":
        from alignlab.models.loading import auto_dtype

        profile = replace(profile, dtype=auto_dtype())
    from alignlab.feedback.active import POSTERIORS, STRATEGIES

    unknown = [s for s in profile.strategies if s not in STRATEGIES]
    if unknown or "random" not in profile.strategies:
        raise ValueError(f"strategies {list(profile.strategies)}: choose from {', '.join(STRATEGIES)}, "
                         "and keep 'random' (every saving is measured against it)")
    if profile.headline not in profile.strategies or profile.headline == "random":
        raise ValueError(f"headline {profile.headline!r}: name one of the strategies other than random "
                         f"({', '.join(s for s in profile.strategies if s != 'random')})")
    if profile.posterior not in POSTERIORS:
        raise ValueError(f"posterior {profile.posterior!r}: choose from {', '.join(POSTERIORS)}")
    return profile


def profile_from_dict(data: dict) -> ActiveProfile:
    return ActiveProfile(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# -- 4. features ------------------------------------------------------------------------------------


def stage_features(exp) -> dict:
    """Every pool and test sample's features at the profile's layer (the frozen backbone the head reads)."""
    import torch

    from alignlab.models import load_model
    from alignlab.train.reward import cached_features
    from alignlab.train.reward_model import RewardModel

    p = exp.profile
    lm, tokenizer = load_model(p.model, dtype=p.dtype)
    rm = RewardModel(lm, tokenizer, max_length=p.max_length, pooling=p.pooling, layer=p.layer).eval()
    saved = {}
    with torch.no_grad():
        for name in ("rm", "test"):
            rows = read_jsonl(exp.file(f"{name}_samples.jsonl"))
            ids = [rm.encode(row["prompt"], r) for row in rows for r in row["responses"]]
            saved[name] = cached_features(rm, ids, progress=exp.progress).float()
    torch.save(saved, exp.file("features.pt"))
    return {"layer": p.layer, "width": int(saved["rm"].shape[1]), "pool_texts": int(saved["rm"].shape[0]),
            "test_texts": int(saved["test"].shape[0])}


# -- 5. rounds --------------------------------------------------------------------------------------


class Pool:
    """The questions: every within-prompt pair of distinct pool samples, as text indices."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.pairs, self.prompt_of = [], []
        at = 0
        for i, row in enumerate(rows):
            for a, b in itertools.combinations(range(len(row["responses"])), 2):
                if row["responses"][a] != row["responses"][b]:
                    self.pairs.append((at + a, at + b))
                    self.prompt_of.append(i)
            at += len(row["responses"])
        self.pairs = np.array(self.pairs, dtype=int).reshape(-1, 2)
        self.prompt_of = np.array(self.prompt_of, dtype=int)
        self.groups = np.array([i for i, row in enumerate(rows) for _ in row["responses"]], dtype=int)


def answers(exp, pool: Pool, seed: int) -> np.ndarray:
    """The simulated labeler's answer to every question for one seed: 1 where it chose the first."""
    from alignlab.feedback.labelers import SimulatedLabeler

    gold = {(row["prompt"], r): g for row in pool.rows for r, g in zip(row["responses"], row["gold"])}

    def lookup(prompt: str, response: str) -> float:
        return gold[(prompt, response)]

    calibrated = SimulatedLabeler.calibrated(lookup, [(row["prompt"], row["responses"]) for row in pool.rows],
                                             target_agreement=exp.profile.agreement, seed=exp.seed)
    labeler = SimulatedLabeler(lookup, beta=calibrated.beta, seed=exp.seed * 7919 + 101 * seed + 1)
    texts = [(row["prompt"], r) for row in pool.rows for r in row["responses"]]
    out = np.zeros(len(pool.pairs))
    for k, (a, b) in enumerate(pool.pairs):
        prompt = texts[a][0]
        out[k] = float(labeler.compare(prompt, texts[a][1], texts[b][1]).chosen == texts[a][1])
    return out


def held_out_pairs(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every within-prompt pair of the test samples whose gold differs: (better, worse) text indices
    and each pair's prompt."""
    better, worse, prompt = [], [], []
    at = 0
    for i, row in enumerate(rows):
        for a, b in itertools.combinations(range(len(row["responses"])), 2):
            if row["gold"][a] != row["gold"][b] and row["responses"][a] != row["responses"][b]:
                hi, lo = (a, b) if row["gold"][a] > row["gold"][b] else (b, a)
                better.append(at + hi), worse.append(at + lo), prompt.append(i)
        at += len(row["responses"])
    return np.array(better, dtype=int), np.array(worse, dtype=int), np.array(prompt, dtype=int)


def _per_prompt_correct(w: np.ndarray, x_test: np.ndarray, prompt_of: np.ndarray, prompts: int) -> np.ndarray:
    margin = x_test @ w
    correct = np.where(margin > 0, 1.0, np.where(margin == 0, 0.5, 0.0))
    return np.bincount(prompt_of, weights=correct, minlength=prompts)


def _best_of_n(w: np.ndarray, z_test: np.ndarray, rows: list[dict], n: int) -> list[float]:
    """Per test prompt, the expected gold of the best of n of its samples by the head's score
    (the order-statistic estimator over all of them)."""
    from alignlab.pressure.stats import best_of_n_order_statistic

    scores, out, at = z_test @ w, [], 0
    for row in rows:
        k = len(row["responses"])
        out.append(best_of_n_order_statistic(scores[at:at + k].tolist(), row["gold"], n))
        at += k
    return out


def stage_rounds(exp) -> dict:
    """Every strategy and seed, round by round; the points go to rounds.json."""
    import torch
    from tqdm import tqdm

    from alignlab.feedback.active import next_questions, posterior_samples, uncertainty_calibration

    p = exp.profile
    features = torch.load(exp.file("features.pt"))
    pool_rows, test_rows = read_jsonl(exp.file("rm_samples.jsonl")), read_jsonl(exp.file("test_samples.jsonl"))
    pool_raw, test_raw = features["rm"].double().numpy(), features["test"].double().numpy()
    mean, std = pool_raw.mean(0), pool_raw.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    z, z_test = (pool_raw - mean) / std, (test_raw - mean) / std  # standardised over the pool, as the proxy's head
    pool = Pool(pool_rows)
    if len(pool.pairs) < p.initial_labels + p.per_round * p.rounds:
        raise ValueError(f"the pool holds {len(pool.pairs)} questions; the profile asks "
                         f"{p.initial_labels + p.per_round * p.rounds}: raise rm_prompts or samples_per_prompt")
    x_pool = z[pool.pairs[:, 0]] - z[pool.pairs[:, 1]]
    better, worse, test_prompt = held_out_pairs(test_rows)
    if len(better) < 2:
        raise ValueError("the test samples hold fewer than 2 pairs whose gold differs; raise test_prompts or bon_n")
    x_test = z_test[better] - z_test[worse]
    per_prompt_pairs = np.bincount(test_prompt, minlength=len(test_rows))
    runs, bar = [], tqdm(total=p.seeds * len(p.strategies) * (p.rounds + 1), desc="rounds", unit="fit",
                         disable=not exp.progress)
    for seed in range(p.seeds):
        y = answers(exp, pool, seed)
        first = np.random.default_rng([exp.seed, seed]).choice(len(pool.pairs), p.initial_labels, replace=False)
        for s, strategy in enumerate(p.strategies):
            rng = np.random.default_rng([exp.seed, seed, s + 1])
            asked = np.zeros(len(pool.pairs), dtype=bool)
            asked[first] = True
            order = list(first)
            curve = []
            for round_ in range(p.rounds + 1):
                mode, samples = posterior_samples(p.posterior, x_pool[order], y[order], p.l2, p.members, rng)
                correct = _per_prompt_correct(mode, x_test, test_prompt, len(test_rows))
                curve.append({"labels": len(order), "correct_by_prompt": correct.tolist(),
                              "accuracy": float(correct.sum() / per_prompt_pairs.sum())})
                bar.update()
                if round_ == p.rounds:
                    break
                new = next_questions(strategy, samples @ z.T, pool.pairs, asked, p.per_round, rng, pool.groups)
                asked[new] = True
                order += new
            runs.append({"seed": seed, "strategy": strategy, "curve": curve, "asked": [int(k) for k in order],
                         "labels_agreeing_with_gold": _agreement_with_gold(pool, pool_rows, order, y),
                         "calibration": uncertainty_calibration(samples, mode, x_test),
                         "bon": {str(n): _best_of_n(mode, z_test, test_rows, n) for n in p.bon_n}})
    bar.close()
    atomic_write_json(exp.file("rounds.json"), {"runs": runs, "pairs_by_prompt": per_prompt_pairs.tolist(),
                                                "pool_questions": len(pool.pairs)})
    return {"fits": len(runs) * (p.rounds + 1), "pool_questions": int(len(pool.pairs)),
            "held_out_pairs": int(len(better))}


def _agreement_with_gold(pool: Pool, rows: list[dict], order: list[int], y: np.ndarray) -> float:
    """How often the labels a strategy bought agree with gold (it may ask harder questions)."""
    gold = [g for row in rows for g in row["gold"]]
    agree = [(gold[pool.pairs[k, 0]] > gold[pool.pairs[k, 1]]) == bool(y[k]) for k in order
             if gold[pool.pairs[k, 0]] != gold[pool.pairs[k, 1]]]
    return float(np.mean(agree)) if agree else math.nan


# -- 6. report --------------------------------------------------------------------------------------


def _curves(runs: list[dict], strategy: str, seeds: np.ndarray) -> np.ndarray:
    """(seeds, rounds + 1, test prompts) correct counts of one strategy."""
    by_seed = {r["seed"]: r for r in runs if r["strategy"] == strategy}
    return np.array([[point["correct_by_prompt"] for point in by_seed[int(s)]["curve"]] for s in seeds])


def build_active_summary(exp) -> dict:
    """summary.json: each strategy's curve with intervals, its label savings, calibration and best-of-n."""
    from alignlab.feedback.active import label_savings
    from alignlab.pressure.stats import paired_difference

    p = exp.profile
    data = json.loads(exp.file("rounds.json").read_text())
    runs, pairs = data["runs"], np.array(data["pairs_by_prompt"], dtype=float)
    seeds = np.arange(p.seeds)
    labels = np.array([q["labels"] for q in runs[0]["curve"]], dtype=float)
    counts = {s: _curves(runs, s, seeds) for s in p.strategies}  # (S, R, P)

    def accuracy(c: np.ndarray, seed_pick: np.ndarray, prompt_weight: np.ndarray) -> np.ndarray:
        return (c[seed_pick] * prompt_weight).sum(axis=(0, 2)) / (len(seed_pick) * (pairs * prompt_weight).sum())

    every_prompt = np.ones(len(pairs))
    rng = np.random.default_rng(exp.seed)
    draws = [(rng.integers(0, p.seeds, p.seeds), rng.multinomial(len(pairs), np.full(len(pairs), 1 / len(pairs))))
             for _ in range(p.bootstrap)]
    strategies, savings = {}, {}
    for s in p.strategies:
        value = accuracy(counts[s], seeds, every_prompt)
        boot = np.array([accuracy(counts[s], pick, weight) for pick, weight in draws])
        low, high = np.nanpercentile(boot, [2.5, 97.5], axis=0)
        calibration = [r["calibration"] for r in runs if r["strategy"] == s]
        strategies[s] = {
            "curve": [{"labels": int(n), "accuracy": float(a), "ci": [float(lo), float(hi)]}
                      for n, a, lo, hi in zip(labels, value, low, high)],
            "final_accuracy_by_seed": [float(r["curve"][-1]["accuracy"]) for r in runs if r["strategy"] == s],
            "labels_agreeing_with_gold": float(np.nanmean([r["labels_agreeing_with_gold"] for r in runs
                                                           if r["strategy"] == s])),
            "calibration": {"error_auroc": float(np.nanmean([c["error_auroc"] for c in calibration])),
                            "ece": float(np.mean([c["ece"] for c in calibration])),
                            "reliability_seed0": calibration[0]["reliability"]}}
        random_value = accuracy(counts["random"], seeds, every_prompt)
        ratio = label_savings(labels, random_value, value)
        boot_ratio = [label_savings(labels, accuracy(counts["random"], pick, weight), accuracy(counts[s], pick, weight))
                      for pick, weight in draws]
        savings[s] = {"value": ratio, "ci": [float(x) for x in np.percentile(boot_ratio, [2.5, 97.5])]}
    bon = {}
    n_top = max(p.bon_n)
    by_prompt = {s: np.mean([r["bon"][str(n_top)] for r in runs if r["strategy"] == s], axis=0) for s in p.strategies}
    for s in p.strategies:
        diff = paired_difference(by_prompt[s].tolist(), by_prompt["random"].tolist())
        bon[s] = {"n": n_top, "gold": float(by_prompt[s].mean()),
                  "minus_random": diff.value if s != "random" else 0.0,
                  "minus_random_ci": list(diff.ci) if s != "random" else [0.0, 0.0],
                  "by_n": {str(n): float(np.mean([np.mean(r["bon"][str(n)]) for r in runs if r["strategy"] == s]))
                           for n in p.bon_n}}
    test_rows = read_jsonl(exp.file("test_samples.jsonl"))
    base_gold = float(np.mean([np.mean(row["gold"]) for row in test_rows]))
    oracle_gold = float(np.mean([max(row["gold"]) for row in test_rows]))
    best = p.headline
    return {"study": "active", "profile": asdict(p), "samples": exp.done("samples"), "features": exp.done("features"),
            "pool_questions": data["pool_questions"], "held_out_pairs": int(pairs.sum()),
            "active": {"strategies": strategies, "label_savings": savings, "best_of_n": bon, "base_gold": base_gold,
                       "oracle_gold": oracle_gold,
                       "target": {"strategy": best, "value": savings[best]["value"], "ci": savings[best]["ci"],
                                  "target": p.target_savings, "met": bool(savings[best]["value"] >= p.target_savings),
                                  "ci_excludes_1": bool(savings[best]["ci"][0] > 1.0)}}}


def headline(summary: dict) -> str:
    """The answer in plain words, with intervals, whichever way it came out."""
    a, p = summary["active"], summary["profile"]
    random_curve = a["strategies"]["random"]["curve"]
    parts = []
    for s, v in a["label_savings"].items():
        if s == "random":
            continue
        final = a["strategies"][s]["curve"][-1]
        verdict = ("fewer labels shown" if v["ci"][0] > 1 else "more labels shown" if v["ci"][1] < 1
                   else "no saving shown")
        parts.append(f"{s} reached {final['accuracy']:.3f} (95% CI {final['ci'][0]:.3f}-{final['ci'][1]:.3f}) and "
                     f"saves {v['value']:.2f}x the labels (95% CI {v['ci'][0]:.2f}-{v['ci'][1]:.2f}: {verdict})")
    t = a["target"]
    bon = a["best_of_n"][t["strategy"]]
    joined = "; ".join(parts)
    text = (f"Random questions took the reward model from {random_curve[0]['accuracy']:.3f} at "
            f"{random_curve[0]['labels']} labels to {random_curve[-1]['accuracy']:.3f} (95% CI "
            f"{random_curve[-1]['ci'][0]:.3f}-{random_curve[-1]['ci'][1]:.3f}) at {random_curve[-1]['labels']} "
            f"against gold, mean over {p['seeds']} seeds. " + joined[:1].upper() + joined[1:]
            + f". The strategy named before the run, {t['strategy']}, {'meets' if t['met'] else 'does not meet'} "
            f"the {t['target']}x target"
            + ("" if t["ci_excludes_1"] else " (and its interval does not exclude 1x: no saving is shown)")
            + f". Downstream, best-of-{bon['n']} by its final model picks responses of gold "
            f"{bon['gold']:.3f}, {bon['minus_random']:+.3f} against random's (95% CI {bon['minus_random_ci'][0]:+.3f} "
            f"to {bon['minus_random_ci'][1]:+.3f}).")
    return text


def stage_report(exp) -> dict:
    from alignlab.report.active import write_active_report

    summary = build_active_summary(exp)
    summary["headline"] = headline(summary)
    atomic_write_json(exp.file("summary.json"), summary)
    report = write_active_report(exp, summary)
    return {"summary": str(exp.file("summary.json")), "report": str(report)}


def run_active_stages(exp, stop_after: str | None = None) -> dict:
    """Run every stage of the study in order (cached ones are skipped); stop after ``stop_after``."""
    from alignlab.experiment.pipeline import run_stages, stage_prompts, stage_samples, stage_vocabulary

    functions = {"prompts": stage_prompts, "vocabulary": stage_vocabulary, "samples": stage_samples,
                 "features": stage_features, "rounds": stage_rounds, "report": stage_report}
    return run_stages(exp, stop_after, STUDY_STAGES, functions)
