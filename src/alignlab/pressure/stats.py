"""Statistics a reader can trust for gold-judge evaluations of policies.

The unit is the prompt, never the response. Several responses sampled for one prompt share
that prompt's difficulty, topic and length, so they are correlated: treating 16 responses to
each of 50 prompts as 800 independent draws would shrink every standard error by up to
sqrt(16) and make noise look like a result. So every estimator here averages within a prompt
first (or clusters by prompt) and takes its standard error across prompts.

    paired_win_rate            mean over prompts of the within-prompt win rate (ties 1/2);
                               prompt-clustered normal interval
    paired_difference          mean paired difference over prompts; normal interval
    clustered_accuracy         pooled mean of pair judgements; cluster-robust (ratio-estimator)
                               normal interval, clusters = prompts
    bootstrap_ci               any statistic; percentile bootstrap over units (prompts)
    best_of_n_weights          exact selection probability of each of m >= n samples under
    best_of_n_order_statistic  best-of-n by proxy (all C(m, n) subsets, ties shared), and the
    best_of_n_win_rate         expected gold / win rate that follows
    split_half_goodhart        the pre-registered overoptimisation test: peak chosen on one
                               random half of the prompts, drop measured on the other

Normal intervals use the standard-library normal quantile (1.959963984540054 at 95%).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A number with its uncertainty and the name of the estimator that produced both."""

    value: float
    se: float
    """Standard error of value."""
    ci: tuple[float, float]
    """Interval at the level it was asked for (see method)."""
    n: int
    """Number of independent units (prompts or clusters) behind the estimate."""
    method: str
    """The estimator and interval, e.g. 'mean paired difference; normal 95% CI over 12 prompts'."""

    def to_dict(self) -> dict:
        return {"value": self.value, "se": self.se, "ci": list(self.ci), "n": self.n, "method": self.method}


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"confidence level {level!r} must lie strictly between 0 and 1, e.g. 0.95")
    return statistics.NormalDist().inv_cdf(0.5 + level / 2)


def _vector(name: str, values: Sequence[float]) -> np.ndarray:
    """values as a finite 1-D float array, or a ValueError naming `name`."""
    out = np.asarray(values, dtype=float)
    if out.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of numbers (got shape {out.shape})")
    if not np.all(np.isfinite(out)):
        bad = np.flatnonzero(~np.isfinite(out))[:5].tolist()
        raise ValueError(f"{name} holds NaN or infinite values (first at positions {bad})")
    return out


def _normal(value: float, se: float, n: int, unit: str, level: float, method: str, clip: bool) -> Estimate:
    half = _z(level) * se
    lo, hi = value - half, value + half
    if clip:  # a proportion's interval cannot leave [0, 1]
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    method = f"{method}; normal {level:.0%} CI over {n} {unit}"
    return Estimate(float(value), float(se), (float(lo), float(hi)), n, method)


def _mean_se(per_unit: np.ndarray, what: str) -> tuple[float, float]:
    """Mean and sd(ddof=1)/sqrt(P) of one value per independent unit."""
    if per_unit.size < 2:
        raise ValueError(f"a standard error across {what} needs at least two of them (got {per_unit.size})")
    return float(per_unit.mean()), float(per_unit.std(ddof=1) / math.sqrt(per_unit.size))


def _beats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each a_j, the fraction of b it beats, ties counted 1/2.  (len(a),)"""
    a, b = a[:, None], b[None, :]
    return ((a > b) + 0.5 * (a == b)).mean(axis=1)


def paired_win_rate(policy_gold: Sequence[Sequence[float]], base_gold: Sequence[Sequence[float]],
                    level: float = 0.95) -> Estimate:
    """Mean over prompts of w_i = P(gold(policy) > gold(base)) over all policy x base sample pairs
    of prompt i, ties 1/2; prompts weigh equally. SE sd(w, ddof=1)/sqrt(P) (prompt-clustered),
    normal interval clipped to [0, 1]."""
    if len(policy_gold) != len(base_gold):
        raise ValueError(f"policy has gold scores for {len(policy_gold)} prompts but base for {len(base_gold)}; "
                         "pass the same prompts, in the same order, for both")
    wins = []
    for i, (pol, base) in enumerate(zip(policy_gold, base_gold)):
        pol, base = _vector(f"policy gold of prompt {i}", pol), _vector(f"base gold of prompt {i}", base)
        if pol.size == 0 or base.size == 0:
            side = "policy" if pol.size == 0 else "base"
            raise ValueError(f"prompt {i} has no {side} samples; every prompt needs at least one of each")
        wins.append(_beats(pol, base).mean())
    value, se = _mean_se(np.array(wins), "prompts")
    return _normal(value, se, len(wins), "prompts", level, "prompt-mean win rate (ties 1/2), prompt-clustered SE",
                   clip=True)


def paired_difference(a_by_prompt: Sequence[float], b_by_prompt: Sequence[float], level: float = 0.95) -> Estimate:
    """Mean over prompts of a_i - b_i; SE sd(a - b, ddof=1)/sqrt(P), normal interval."""
    a, b = _vector("a_by_prompt", a_by_prompt), _vector("b_by_prompt", b_by_prompt)
    if a.size != b.size:
        raise ValueError(f"paired difference needs one a and one b per prompt (got {a.size} and {b.size})")
    value, se = _mean_se(a - b, "prompts")
    return _normal(value, se, a.size, "prompts", level, "mean paired difference", clip=False)


def clustered_accuracy(correct: Sequence[float | bool], clusters: Sequence[Hashable],
                       level: float = 0.95) -> Estimate:
    """Pooled mean of pair judgements (1 right, 0 wrong, 0.5 tie) clustered by prompt. Variance is
    the cluster-robust ratio-estimator G/(G-1) * sum_g (S_g - m n_g)^2 / N^2 (cluster sums S_g,
    sizes n_g, pooled mean m, N pairs); normal interval clipped to [0, 1]."""
    x = _vector("correct", correct)
    if x.size != len(clusters):
        raise ValueError(f"correct has {x.size} judgements but clusters has {len(clusters)} labels; give one each")
    if np.any((x < 0) | (x > 1)):
        raise ValueError("correct must hold 1 (right), 0 (wrong) or 0.5 (tie); found values outside [0, 1]")
    sums: dict[Hashable, list[float]] = {}
    for value, label in zip(x.tolist(), clusters):
        sums.setdefault(label, [0.0, 0.0])
        sums[label][0] += value
        sums[label][1] += 1
    g = len(sums)
    if g < 2:
        raise ValueError(f"a cluster-robust standard error needs at least two clusters (got {g})")
    s, counts = np.array(list(sums.values())).T  # (G,), (G,)
    m = float(x.mean())
    var = g / (g - 1) * float(((s - m * counts) ** 2).sum()) / x.size ** 2
    return _normal(m, math.sqrt(var), g, "clusters", level, f"pooled accuracy of {x.size} pairs, cluster-robust SE",
                   clip=True)


def bootstrap_ci(units: Sequence, statistic: Callable[[list], float], resamples: int = 2000,
                 level: float = 0.95, seed: int = 0) -> Estimate:
    """statistic(units) with a percentile bootstrap interval: resample the units (prompts) with
    replacement `resamples` times; SE is the sd (ddof=1) of the replicates."""
    units = list(units)
    if not units:
        raise ValueError("bootstrap_ci got no units; pass one entry per prompt")
    if resamples < 2:
        raise ValueError(f"bootstrap needs at least 2 resamples (got {resamples}); 2000 is usual")
    _z(level)  # validates level
    rng = np.random.default_rng(seed)
    reps = np.array([float(statistic([units[k] for k in rng.integers(0, len(units), len(units))]))
                     for _ in range(resamples)])
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(float(statistic(units)), float(reps.std(ddof=1)), (float(lo), float(hi)), len(units),
                    f"percentile bootstrap {level:.0%} CI, {resamples} resamples of {len(units)} units, seed {seed}")


def best_of_n_weights(proxy: Sequence[float], n: int) -> np.ndarray:
    """P(sample j is the one best-of-n picks) when n of the m samples are drawn without replacement
    and the highest proxy wins: rank r (1-based, ascending proxy) gets C(r-1, n-1)/C(m, n); tied
    samples split their block's total equally (ties broken at random). Sums to 1.  (m,)"""
    p = _vector("proxy", proxy)
    m = p.size
    if not 1 <= n <= m:
        raise ValueError(f"best-of-{n} needs 1 <= n <= the {m} samples given; draw more samples or lower n")
    order = np.argsort(p, kind="stable")
    total = math.comb(m, n)
    by_rank = np.array([math.comb(r - 1, n - 1) / total for r in range(1, m + 1)])  # exact ints, then divide
    sorted_p = p[order]
    start = 0
    while start < m:  # spread each tie block's probability evenly over its members
        end = start
        while end + 1 < m and sorted_p[end + 1] == sorted_p[start]:
            end += 1
        by_rank[start:end + 1] = by_rank[start:end + 1].mean()
        start = end + 1
    weights = np.empty(m)
    weights[order] = by_rank
    return weights


def best_of_n_order_statistic(proxy: Sequence[float], gold: Sequence[float], n: int) -> float:
    """Expected gold of best-of-n by proxy for one prompt, using all m >= n samples (the unbiased
    order-statistic estimator, not just the first n): sum_j best_of_n_weights_j * gold_j."""
    g = _vector("gold", gold)
    if g.size != len(proxy):
        raise ValueError(f"proxy has {len(proxy)} samples but gold has {g.size}; score every sample with both")
    return float(best_of_n_weights(proxy, n) @ g)


def best_of_n_win_rate(proxy: Sequence[float], gold: Sequence[float], base_gold_samples: Sequence[float],
                       n: int) -> float:
    """P(best-of-n's pick beats a base sample on gold), ties 1/2, for one prompt:
    sum_j best_of_n_weights_j * (fraction of base samples gold_j beats)."""
    g, base = _vector("gold", gold), _vector("base_gold_samples", base_gold_samples)
    if g.size != len(proxy):
        raise ValueError(f"proxy has {len(proxy)} samples but gold has {g.size}; score every sample with both")
    if base.size == 0:
        raise ValueError("base_gold_samples is empty; the win rate needs at least one base sample")
    return float(best_of_n_weights(proxy, n) @ _beats(g, base))


def split_half_goodhart(gold_by_snapshot: Sequence[Sequence[float]], proxy_by_snapshot: Sequence[Sequence[float]],
                        seed: int = 0) -> dict:
    """The pre-registered overoptimisation test for one RL run. Rows are snapshots in training
    order (last = final policy), columns the same P test prompts (per-prompt mean scores). A
    seeded random half A picks the peak = argmax mean gold; on the other half B, the drop
    gold[peak] - gold[final] and the proxy rise proxy[final] - proxy[peak] are paired differences
    (normal SE over B's prompts). Significant when peak != final and both are positive and at
    least 2 SE (strictly positive, so that an exactly flat run cannot pass with se = 0)."""
    gold, proxy = np.asarray(gold_by_snapshot, dtype=float), np.asarray(proxy_by_snapshot, dtype=float)
    if gold.ndim != 2:
        raise ValueError("gold_by_snapshot must be one equal-length row of per-prompt scores per snapshot")
    if proxy.shape != gold.shape:
        raise ValueError(f"proxy_by_snapshot has shape {proxy.shape} but gold_by_snapshot {gold.shape}; "
                         "give both for the same snapshots and prompts")
    if not (np.all(np.isfinite(gold)) and np.all(np.isfinite(proxy))):
        raise ValueError("gold_by_snapshot or proxy_by_snapshot holds NaN or infinite scores")
    snapshots, prompts = gold.shape
    if snapshots < 1 or prompts < 4:
        raise ValueError(f"split-half test needs >= 1 snapshot and >= 4 prompts (got {snapshots} x {prompts})")
    perm = np.random.default_rng(seed).permutation(prompts)
    select, test = np.sort(perm[:prompts // 2]), np.sort(perm[prompts // 2:])
    peak, final = int(np.argmax(gold[:, select].mean(axis=1))), snapshots - 1
    drop = paired_difference(gold[peak, test], gold[final, test])
    rise = paired_difference(proxy[final, test], proxy[peak, test])
    significant = (peak != final and drop.value > 0 and drop.value >= 2 * drop.se
                   and rise.value > 0 and rise.value >= 2 * rise.se)
    return {"peak_snapshot": peak, "value": drop.value, "se": drop.se, "proxy_rise": rise.value,
            "proxy_rise_se": rise.se, "significant": bool(significant),
            "selection_prompts": select.tolist(), "test_prompts": test.tolist(),
            "method": f"split-half: peak = argmax mean gold on {select.size} selection prompts (seed {seed}); "
                      f"drop and proxy rise = mean paired differences on {test.size} held-out prompts, >= 2 SE"}
