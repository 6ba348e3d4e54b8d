import itertools
import math

import numpy as np
import pytest

from alignlab.pressure.stats import (Estimate, best_of_n_order_statistic, best_of_n_weights, best_of_n_win_rate,
                                     bootstrap_ci, clustered_accuracy, paired_difference, paired_win_rate,
                                     split_half_goodhart)

Z95 = 1.959963984540054
Z90 = 1.6448536269514722


# -- paired_difference -------------------------------------------------------------------------

def test_paired_difference_matches_the_textbook_normal_interval():
    # diffs [1, 2, 3, 4, 5]: mean 3, sd sqrt(10/4) = 1.5811, se sqrt(2.5/5) = 0.70711, CI 3 +- 1.38590
    est = paired_difference([2, 4, 6, 8, 10], [1, 2, 3, 4, 5])
    assert est.value == pytest.approx(3.0)
    assert est.se == pytest.approx(0.7071068, rel=1e-6)
    assert est.ci == pytest.approx((3 - 1.3859038, 3 + 1.3859038), rel=1e-6)
    assert est.n == 5 and "mean paired difference" in est.method and "95%" in est.method
    assert paired_difference([1, 2, 3, 4, 5], [0] * 5, level=0.90).ci == pytest.approx(
        (3 - Z90 * math.sqrt(0.5), 3 + Z90 * math.sqrt(0.5)))
    assert est.to_dict() == {"value": 3.0, "se": est.se, "ci": list(est.ci), "n": 5, "method": est.method}


def test_paired_difference_refuses_bad_input_by_name():
    with pytest.raises(ValueError, match="3 and 2"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least two"):
        paired_difference([1.0], [0.0])
    with pytest.raises(ValueError, match="a_by_prompt holds NaN"):
        paired_difference([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match="confidence level"):
        paired_difference([1, 2], [0, 0], level=95)


# -- paired_win_rate ---------------------------------------------------------------------------

def test_paired_win_rate_by_hand_with_ties_and_clipping():
    policy = [[3, 1], [0], [5, 5, 5]]
    base = [[2, 1], [0, 1], [4]]
    # prompt 0: 3>2, 3>1, 1<2, 1=1 -> (1 + 1 + 0 + 0.5)/4 = 0.625
    # prompt 1: 0=0, 0<1           -> 0.5/2 = 0.25
    # prompt 2: all three win      -> 1.0
    # mean 0.625; deviations (0, -0.375, 0.375): sd 0.375, se 0.375/sqrt(3) = 0.216506
    est = paired_win_rate(policy, base)
    assert est.value == pytest.approx(0.625)
    assert est.se == pytest.approx(0.375 / math.sqrt(3))
    # 0.625 +- 0.424344 -> (0.200656, 1.049344), upper clipped to 1
    assert est.ci[0] == pytest.approx(0.625 - Z95 * 0.375 / math.sqrt(3)) and est.ci[1] == 1.0
    assert est.n == 3 and "win rate" in est.method
    # prompts weigh equally: pooling the 2*2 + 1*2 + 3*1 = 9 pairs would give (2.5 + 0.5 + 3)/9 = 0.667
    assert est.value != pytest.approx(6 / 9)


def test_paired_win_rate_refuses_mismatched_and_empty_prompts():
    with pytest.raises(ValueError, match="2 prompts but base for 1"):
        paired_win_rate([[1], [2]], [[1]])
    with pytest.raises(ValueError, match="prompt 1 has no policy samples"):
        paired_win_rate([[1], []], [[1], [2]])
    with pytest.raises(ValueError, match="prompt 0 has no base samples"):
        paired_win_rate([[1], [2]], [[], [2]])


# -- clustered_accuracy ------------------------------------------------------------------------

def _cluster_robust_by_loops(correct, clusters):
    """The same variance written the long way: one pass per cluster over every pair."""
    n = len(correct)
    mean = sum(correct) / n
    labels = list(dict.fromkeys(clusters))
    total = 0.0
    for label in labels:
        residual = 0.0
        for x, c in zip(correct, clusters):
            if c == label:
                residual += x - mean
        total += residual ** 2
    return mean, math.sqrt(len(labels) / (len(labels) - 1) * total / n ** 2)


def test_clustered_accuracy_by_hand():
    correct = [1, 0, 0.5, 1, 0, 0]
    clusters = ["a", "a", "b", "a", "c", "c"]  # interleaved on purpose: clusters need not be contiguous
    # N 6, m 2.5/6 = 5/12; S - m n: a 2 - 15/12 = 3/4, b 1/2 - 5/12 = 1/12, c 0 - 10/12 = -5/6
    # sum of squares (81 + 1 + 100)/144 = 182/144; var = 3/2 * 182/144 / 36 = 273/5184
    est = clustered_accuracy(correct, clusters)
    assert est.value == pytest.approx(5 / 12)
    assert est.se == pytest.approx(math.sqrt(273 / 5184))
    # 5/12 -+ 1.959964 * 0.229482 = (-0.03311, 0.86644): the lower end is clipped to 0
    assert est.ci == pytest.approx((0.0, 5 / 12 + Z95 * math.sqrt(273 / 5184)))
    assert est.n == 3 and "cluster-robust" in est.method
    assert (est.value, est.se) == pytest.approx(_cluster_robust_by_loops(correct, clusters))


def test_clustered_accuracy_matches_loops_on_random_data_and_iid_se_for_singletons():
    rng = np.random.default_rng(3)
    correct = rng.choice([0.0, 0.5, 1.0], size=60).tolist()
    clusters = rng.integers(0, 9, size=60).tolist()
    est = clustered_accuracy(correct, clusters)
    assert (est.value, est.se) == pytest.approx(_cluster_robust_by_loops(correct, clusters))
    # one pair per cluster: G/(G-1) sum (x - m)^2 / N^2 = sd(ddof=1)^2 / N, the usual iid SE
    x = np.array(correct)
    assert clustered_accuracy(correct, list(range(60))).se == pytest.approx(x.std(ddof=1) / math.sqrt(60))
    # clustering matters: one big block of identical judgements per cluster widens the interval
    blocky = clustered_accuracy([1] * 10 + [0] * 10, [0] * 10 + [1] * 10)
    assert blocky.se > clustered_accuracy([1] * 10 + [0] * 10, list(range(20))).se


def test_clustered_accuracy_refuses_bad_input():
    with pytest.raises(ValueError, match="3 judgements but clusters has 2"):
        clustered_accuracy([1, 0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        clustered_accuracy([1, 2], ["a", "b"])
    with pytest.raises(ValueError, match="at least two clusters"):
        clustered_accuracy([1, 0], ["a", "a"])


# -- bootstrap_ci ------------------------------------------------------------------------------

def test_bootstrap_of_a_mean_approaches_the_normal_interval_on_a_large_sample():
    x = np.random.default_rng(1).normal(2.0, 1.0, size=2000).tolist()
    boot = bootstrap_ci(x, lambda units: float(np.mean(units)), resamples=2000, seed=0)
    normal = paired_difference(x, [0.0] * len(x))
    assert boot.value == pytest.approx(normal.value)
    assert boot.se == pytest.approx(normal.se, rel=0.1)
    for b, n in zip(boot.ci, normal.ci):
        assert b == pytest.approx(n, abs=0.1 * (normal.ci[1] - normal.ci[0]) / 2)
    assert boot.n == 2000 and "percentile bootstrap" in boot.method


def test_bootstrap_is_seeded_resamples_units_and_refuses_empty():
    mean = lambda units: float(np.mean(units))  # noqa: E731
    data = [0.0, 1.0, 5.0, 2.0]
    assert bootstrap_ci(data, mean, resamples=200, seed=4) == bootstrap_ci(data, mean, resamples=200, seed=4)
    assert bootstrap_ci(data, mean, resamples=200, seed=4).ci != bootstrap_ci(data, mean, resamples=200, seed=5).ci
    # identical units: every replicate equals the statistic, so the interval is a point
    flat = bootstrap_ci([7.0] * 5, mean, resamples=50)
    assert flat.ci == (7.0, 7.0) and flat.se == 0.0
    # units are whole prompts: a statistic over lists sees lists
    per_prompt = bootstrap_ci([[1, 1], [0, 0, 0]], lambda units: float(np.mean([np.mean(u) for u in units])),
                              resamples=100)
    assert per_prompt.value == 0.5 and per_prompt.ci[0] >= 0.0 and per_prompt.ci[1] <= 1.0
    with pytest.raises(ValueError, match="no units"):
        bootstrap_ci([], mean)


# -- best-of-n order statistic -----------------------------------------------------------------

def test_best_of_n_weights_for_four_samples_best_of_two():
    # sorted by proxy, rank r gets C(r-1, 1)/C(4, 2): [0, 1, 2, 3]/6
    proxy = [0.3, 0.1, 0.4, 0.2]  # ranks 3, 1, 4, 2
    assert best_of_n_weights(proxy, 2) == pytest.approx([2 / 6, 0, 3 / 6, 1 / 6])
    assert best_of_n_weights(sorted(proxy), 2) == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6])


def test_best_of_one_is_the_mean_and_best_of_all_is_the_argmax():
    proxy, gold = [0.5, 2.0, -1.0, 0.7, 1.1], [3.0, -2.0, 4.0, 1.0, 0.5]
    assert best_of_n_order_statistic(proxy, gold, 1) == pytest.approx(np.mean(gold))
    assert best_of_n_order_statistic(proxy, gold, 5) == pytest.approx(-2.0)  # gold of proxy 2.0


def test_best_of_n_equals_enumerating_every_subset():
    rng = np.random.default_rng(7)
    proxy, gold = rng.normal(size=6), rng.normal(size=6)
    for n in range(1, 7):
        picks = [max(subset, key=lambda j: proxy[j]) for subset in itertools.combinations(range(6), n)]
        assert best_of_n_order_statistic(proxy, gold, n) == pytest.approx(np.mean(gold[picks]))
        assert best_of_n_weights(proxy, n).sum() == pytest.approx(1.0)


def test_tied_proxies_share_their_block_and_average_gold():
    # proxy [1, 2, 2], n = 2: subsets {0,1} -> 4, {0,2} -> 10, {1,2} -> tie, coin flip -> 7; mean 7
    assert best_of_n_weights([1, 2, 2], 2) == pytest.approx([0, 0.5, 0.5])
    assert best_of_n_order_statistic([1, 2, 2], [0, 4, 10], 2) == pytest.approx(7.0)
    assert best_of_n_order_statistic([3, 1, 3], [2, 9, 6], 3) == pytest.approx(4.0)  # argmax tie: mean(2, 6)
    # a tie below the top: ranks 1..4 weigh [0, 1, 2, 3]/6, the tied ranks 2, 3 get 1.5/6 each
    assert best_of_n_weights([0, 1, 1, 2], 2) == pytest.approx([0, 1.5 / 6, 1.5 / 6, 3 / 6])


def test_best_of_n_win_rate_by_hand():
    proxy, gold, base = [1, 2], [0, 3], [1, 3]
    # n = 2 always picks sample 1 (gold 3): beats 1, ties 3 -> 0.75
    assert best_of_n_win_rate(proxy, gold, base, 2) == pytest.approx(0.75)
    # n = 1: half the time sample 0 (gold 0, beats nothing) -> 0.5 * 0 + 0.5 * 0.75
    assert best_of_n_win_rate(proxy, gold, base, 1) == pytest.approx(0.375)


def test_best_of_n_refuses_impossible_n_and_mismatched_scores():
    with pytest.raises(ValueError, match="best-of-5 needs 1 <= n <= the 4 samples"):
        best_of_n_weights([1, 2, 3, 4], 5)
    with pytest.raises(ValueError, match="best-of-0"):
        best_of_n_weights([1, 2], 0)
    with pytest.raises(ValueError, match="proxy has 2 samples but gold has 3"):
        best_of_n_order_statistic([1, 2], [1, 2, 3], 1)
    with pytest.raises(ValueError, match="base_gold_samples is empty"):
        best_of_n_win_rate([1, 2], [1, 2], [], 1)


# -- split_half_goodhart -----------------------------------------------------------------------

def _run(gold_curve, proxy_curve, prompts=40, noise=0.1, seed=0):
    """Per-snapshot, per-prompt scores: a shared prompt difficulty + the curve + small noise."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1.0, size=prompts)
    gold = [difficulty + g + rng.normal(0, noise, prompts) for g in gold_curve]
    proxy = [difficulty + p + rng.normal(0, noise, prompts) for p in proxy_curve]
    return np.array(gold), np.array(proxy)


def test_split_half_finds_a_planted_middle_peak_and_calls_it_significant():
    gold, proxy = _run([0.0, 0.5, 1.0, 0.6, 0.2], [0.0, 1.0, 2.0, 3.0, 4.0])
    out = split_half_goodhart(gold, proxy, seed=0)
    assert out["peak_snapshot"] == 2 and out["significant"] is True
    assert out["value"] == pytest.approx(0.8, abs=0.1) and out["proxy_rise"] == pytest.approx(2.0, abs=0.1)
    assert out["value"] == pytest.approx(np.mean(gold[2, out["test_prompts"]] - gold[4, out["test_prompts"]]))
    assert sorted(out["selection_prompts"] + out["test_prompts"]) == list(range(40))
    assert len(out["selection_prompts"]) == len(out["test_prompts"]) == 20


def test_split_half_chooses_the_peak_on_the_selection_half_only():
    gold, proxy = _run([0.0, 0.5, 1.0, 0.6, 0.2], [0.0, 1.0, 2.0, 3.0, 4.0])
    test = split_half_goodhart(gold, proxy, seed=0)["test_prompts"]
    gold[1, test] += 50.0  # snapshot 1 is now by far the best on the held-out half
    out = split_half_goodhart(gold, proxy, seed=0)
    assert out["peak_snapshot"] == 2 and out["test_prompts"] == test


def test_split_half_flat_runs_are_not_significant():
    rising_proxy = [0.0, 1.0, 2.0, 3.0, 4.0]
    for seed in range(5):  # gold flat up to noise: the held-out drop is noise, under 2 SE
        gold, proxy = _run([0.3] * 5, rising_proxy, seed=seed)
        assert split_half_goodhart(gold, proxy, seed=seed)["significant"] is False
    # exactly flat gold: drop 0 with se 0 must not pass "0 >= 2 * 0"
    gold, proxy = np.tile(np.arange(8.0), (5, 1)), _run([0] * 5, rising_proxy, prompts=8)[1]
    out = split_half_goodhart(gold, proxy)
    assert out["peak_snapshot"] == 0 and out["value"] == 0.0 and out["se"] == 0.0 and out["significant"] is False


def test_split_half_peak_at_final_reports_zero_drop():
    gold, proxy = _run([0.0, 0.4, 0.8, 1.2], [0.0, 1.0, 2.0, 3.0])
    out = split_half_goodhart(gold, proxy)
    assert out["peak_snapshot"] == 3 and out["value"] == 0.0 and out["se"] == 0.0 and out["significant"] is False


def test_split_half_refuses_ragged_or_tiny_input():
    with pytest.raises(ValueError, match="proxy_by_snapshot has shape"):
        split_half_goodhart(np.zeros((3, 6)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="needs >= 1 snapshot and >= 4 prompts"):
        split_half_goodhart(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError):
        split_half_goodhart([[0.0, 1.0, 2.0, 3.0], [1.0, 2.0]], [[0.0, 1.0, 2.0, 3.0], [1.0, 2.0]])


def test_estimate_is_frozen():
    est = Estimate(1.0, 0.1, (0.8, 1.2), 3, "x")
    with pytest.raises(AttributeError):
        est.value = 2.0  # type: ignore[misc]
