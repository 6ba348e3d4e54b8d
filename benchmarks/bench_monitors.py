"""What the white-box monitors cost a training step, at their default frequency.

SFT (`alignlab sft`) on a synthetic demonstration set, timed without monitors and with each
monitor (and all three) attached, every run with the same data, seed and steps. The monitors
run their full checks at step 1 and every ``--every`` steps (the trainers' default 10); clip
attribution runs every step. Printed: s/step over steps 2..N (model loading and step 1, whose
first-time costs such as the static scan differ, are not counted; steps ``every``, 2 x ``every``,
... with their full checks are) and the ratio to the unmonitored run.

    .venv/bin/python benchmarks/bench_monitors.py                          # tiny model
    .venv/bin/python benchmarks/bench_monitors.py --model gemma-3-270m --lora --steps 20
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (the embedded model's usual mode)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--monitors", default="none,clip,audit,curvature,all")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-monitors-"))
    os.environ["ALIGNLAB_RUNS_DIR"] = str(work / "runs")
    from alignlab.data import Demonstration, write_feedback
    from alignlab.train.sft import SFTConfig, train_sft
    from alignlab.whitebox.monitors import hooks_for

    data = work / "demos.jsonl"
    write_feedback(data, [Demonstration(f"Question {i}: what should I bring on a hike of {i} miles?",
                                        f" Water, a map, snacks for {i} hours and a light jacket.")
                          for i in range(args.steps * args.batch_size)])
    print(f"SFT on {args.model}{' (LoRA)' if args.lora else ''}, {args.steps} steps of {args.batch_size} "
          f"examples, monitors' full checks every {args.every} steps, torch threads {torch.get_num_threads()}")
    print(f"{'monitors':<12} {'s/step':>8} {'x unmonitored':>14}")
    base = None
    for name in args.monitors.split(","):
        monitor = "" if name == "none" else name
        config = SFTConfig(data=str(data), model=args.model, lora=args.lora, max_steps=args.steps,
                           batch_size=args.batch_size, kl_prompts=0, monitor=monitor, monitor_every=args.every,
                           checkpoint_every=10 ** 6)
        times = []

        class Clock:
            def after_step(self, ctx):
                times.append(time.perf_counter())

        hooks = hooks_for(config)
        from alignlab.train.hooks import Hooks

        hooks = Hooks([*(hooks.hooks if hooks else []), Clock()])
        train_sft(config, progress=False, hooks=hooks)
        per_step = (times[-1] - times[0]) / (len(times) - 1)  # steps 2..N: loading and step 1 not counted
        base = base or per_step
        print(f"{name:<12} {per_step:>8.3f} {per_step / base:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
