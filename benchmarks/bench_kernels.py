"""alignlab's decoding kernel (models/kernels) against torch's matrix product, on the same work.

1. The product alone: ``x @ W^T`` for x with N rows (a decoding step's positions) and the embedded
   Gemma 3 270M's weight shapes: the 262,144 x 640 output layer and the decoder layers' 2048 x 640
   (MLP up/gate), 640 x 2048 (MLP down) and 1024 x 640 (queries). torch is timed both ways it can
   be asked: ``F.linear(x, W)`` (what nn.Linear runs) and ``(W @ x^T)^T`` (the form
   ``output_logits`` used before the kernel).
2. The sampler: ``alignlab.models.sample`` of 8 rows x 32 tokens on the embedded model (PPO's
   rollout in benchmarks/bench_ppo.py), with the kernel and without it, alternating in one
   process; it checks that both draw the same tokens.

Timings are medians over --repeats alternating rounds (this host is shared; alternating spreads
its noise over both sides).

    .venv/bin/python benchmarks/bench_kernels.py
    .venv/bin/python benchmarks/bench_kernels.py --skip-sampler --rows 1 8 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import alignlab.models.kernels as kernels

SHAPES = {"output layer": (262144, 640), "mlp up/gate": (2048, 640), "mlp down": (640, 2048), "queries": (1024, 640)}


def timed(fn, reps: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def products(rows: list[int], repeats: int) -> None:
    module = kernels.kernel()
    print(f"{'weight':14s} {'N':>3s} {'kernel ms':>10s} {'F.linear ms':>12s} {'W@x^T ms':>9s} {'speed-up':>9s}")
    for name, (V, D) in SHAPES.items():
        weight = torch.randn(V, D) * 0.03
        reps = 5 if V > 100_000 else 200
        for n in rows:
            x = torch.randn(n, D)
            err = (module.few_rows_matmul(x, weight) - x @ weight.T).abs().max().item()
            if err > 1e-3:
                raise SystemExit(f"kernel and torch disagree by {err} on {name} with {n} rows")
            times: dict[str, list[float]] = {"kernel": [], "linear": [], "wx": []}
            for _ in range(repeats):
                times["kernel"].append(timed(lambda: module.few_rows_matmul(x, weight), reps))
                times["linear"].append(timed(lambda: torch.nn.functional.linear(x, weight), reps))
                times["wx"].append(timed(lambda: (weight @ x.T).T.contiguous(), reps))
            k, lin, wx = (statistics.median(times[key]) * 1000 for key in ("kernel", "linear", "wx"))
            print(f"{name:14s} {n:3d} {k:10.3f} {lin:12.3f} {wx:9.3f} {min(lin, wx) / k:8.2f}x", flush=True)


def sampler(repeats: int, tokens: int) -> None:
    from alignlab.models import SampleConfig, load_model, sample

    model, tok = load_model("gemma-3-270m")
    prompts = ["The weather today is", "Once upon a time", "def main():", "In 1905, Einstein"] * 2
    config = SampleConfig(max_new_tokens=tokens, temperature=0.7, entropy=True, hidden=True)
    module = kernels.kernel()
    times: dict[str, list[float]] = {"kernel": [], "torch": []}
    outputs = {}
    sample(model, tok, prompts[:2], SampleConfig(max_new_tokens=4))  # warm up
    for _ in range(repeats):
        for side in ("kernel", "torch"):
            kernels._STATE["module"] = module if side == "kernel" else None
            start = time.perf_counter()
            outputs[side] = sample(model, tok, prompts, config, seeds=list(range(len(prompts))))
            times[side].append(time.perf_counter() - start)
    kernels._STATE["module"] = module
    same = all(a.token_ids == b.token_ids for a, b in zip(outputs["kernel"], outputs["torch"]))
    k, t = statistics.median(times["kernel"]), statistics.median(times["torch"])
    print(f"\nsampler, embedded Gemma 3 270M, {len(prompts)} rows x {tokens} tokens, float32 "
          f"(medians of {repeats} rounds):")
    print(f"  with the kernel     {k:6.2f} s   ({', '.join(f'{v:.2f}' for v in times['kernel'])})")
    print(f"  torch's product     {t:6.2f} s   ({', '.join(f'{v:.2f}' for v in times['torch'])})")
    print(f"  speed-up {t / k:.2f}x; the same tokens on both sides: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 12, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--skip-sampler", action="store_true")
    args = parser.parse_args()
    print(f"decoding kernel: {kernels.status()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if kernels.kernel() is None:
        raise SystemExit("nothing to compare: the kernel is off on this machine")
    products(args.rows, args.repeats)
    if not args.skip_sampler:
        sampler(args.repeats, args.tokens)


if __name__ == "__main__":
    main()
