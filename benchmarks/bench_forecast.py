"""Draws per second of the Biological Anchors Monte Carlo: ours (vectorised numpy) against a
straightforward per-draw Python loop of the same model (alignlab.forecast.reference), and, if
it is installed, squigglepy sampling the same six requirement distributions.

    .venv/bin/python benchmarks/bench_forecast.py [--draws 1000000] [--loop-draws 20000]

squigglepy (Rethink Priorities' Python port of Squiggle, which the public re-implementations of
Cotra's model use) is optional: `pip install squigglepy`. It is compared on sampling the
requirements only (its part of such a notebook); the year search is ours in both.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from alignlab.forecast import load_scenario, simulate
from alignlab.forecast.model import draw_requirements
from alignlab.forecast.reference import simulate_loop


def best_of(repeats: int, fn) -> float:
    """The fastest of ``repeats`` wall-clock timings of ``fn()``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def squigglepy_requirements():
    """The six anchors and the 10% 'never' as one squigglepy mixture, built as the Rethink
    Priorities notebook builds them (sq.norm / sq.lognorm take 90% intervals), or None."""
    try:
        import squigglepy as sq
    except ImportError:
        return None

    def nn(horizon):
        brain, alpha, f = sq.lognorm(11, 19.5), sq.norm(0.5, 1.1), sq.norm(1, 2)
        return brain + 1 + sq.norm(-2, 2) + horizon + 12 - alpha * 11.2 + alpha * (brain + 1 - f)

    lifetime = sq.lognorm(11, 19.5) + sq.mixture([sq.lognorm(2, 5), sq.lognorm(5, 9)]) + sq.norm(-2, 2) + 9
    genome_alpha = sq.norm(0.5, 1.1)
    genome = (sq.lognorm(11, 19.5) + sq.norm(0, 2) + sq.norm(-2, 2) + sq.norm(7, 9) + 12 - genome_alpha * 11.2
              + genome_alpha * sq.norm(mean=8.7, sd=0.35))
    evolution = sq.lognorm(3, 6) + sq.norm(-6, 5) + sq.norm(-2, 2) + sq.norm(20, 22) + 16
    never = sq.norm(60, 70)  # the re-implementations' stand-in for "no anchor is right"
    return sq, sq.mixture([[0.05, lifetime], [0.20, nn(sq.norm(0, 3))], [0.10, genome], [0.30, nn(sq.norm(3, 6))],
                           [0.15, nn(sq.norm(6, 9))], [0.10, evolution], [0.10, never]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=1_000_000)
    parser.add_argument("--loop-draws", type=int, default=20_000)
    parser.add_argument("--squiggle-draws", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scenario = load_scenario("cotra-2020")
    print(f"Biological Anchors Monte Carlo, scenario cotra-2020, years 2025..2100; "
          f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")

    full = best_of(args.repeats, lambda: simulate(scenario, args.draws, seed=0))
    sampled = best_of(args.repeats, lambda: simulate(scenario, args.draws, seed=0, sample_affordability=True))
    requirements = best_of(args.repeats, lambda: draw_requirements(scenario, args.draws, np.random.default_rng(0)))
    loop = best_of(1, lambda: simulate_loop(scenario, args.loop_draws, seed=0))
    rows = [
        ("ours, full model (vectorised)", args.draws, full),
        ("ours, full model, --sample-affordability", args.draws, sampled),
        ("ours, requirements only", args.draws, requirements),
        ("per-draw Python loop, full model", args.loop_draws, loop),
    ]
    squiggle = squigglepy_requirements()
    if squiggle is not None:
        sq, mixture = squiggle
        seconds = best_of(args.repeats, lambda: sq.sample(mixture, n=args.squiggle_draws, verbose=False))
        rows.append((f"squigglepy {sq.__version__}, requirements only", args.squiggle_draws, seconds))
    print(f"\n{'what':<44}{'draws':>11}{'seconds':>10}{'draws/s':>14}")
    for name, n, seconds in rows:
        print(f"{name:<44}{n:>11,}{seconds:>10.3f}{n / seconds:>14,.0f}")
    print(f"\nours vs the per-draw loop (full model): {(args.draws / full) / (args.loop_draws / loop):,.0f}x")
    if squiggle is not None:
        print(f"ours vs squigglepy (requirements only): "
              f"{(args.draws / requirements) / (args.squiggle_draws / rows[-1][2]):,.1f}x")
    else:
        print("squigglepy is not installed (pip install squigglepy) - skipped")
    print(f"a million draws of the full model: {full * 1e6 / args.draws:.3f} s")


if __name__ == "__main__":
    main()
