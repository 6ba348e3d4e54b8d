"""What curvature costs, and alignlab's estimates against PyHessian's on the same model and batch.

1. Cost of a Hessian-vector product against a gradient, on the tiny language model (float32,
   2 layers, hidden 64, a 262k-word output layer) and on a small CNN (two 3x3 convolutions and a
   linear head, CIFAR-shaped random batch). Four timings, medians of --repeats:
   - gradient: forward + backward (default attention kernels);
   - hvp(): one product from scratch (forward, backward with create_graph, backward through it);
   - build: HessianOperator's forward + create_graph backward, made once per point;
   - matvec: one more product through the kept graph (what power iteration and Hutchinson pay
     per step). The project's target: a product at most ~3x a gradient.
2. The same CNN and batch through PyHessian 0.1 (Yao et al. 2020) and alignlab: top eigenvalue
   (power iteration, both stopping on a relative change of 1e-3), trace (PyHessian's Hutchinson
   stops when its running mean changes by less than 1e-3; alignlab's takes --trace-samples, and
   Hutch++ gets as many products) and wall time, against a reference from a tight power iteration
   and a long Hutchinson run. PyHessian is GPL and not a dependency: if it is not importable, install
   it beside the project with
       .venv/bin/python -m pip install --target .bench-deps pyhessian --no-deps
   (the folder is git-ignored); without it, that part is skipped.

    .venv/bin/python benchmarks/bench_curvature.py
    .venv/bin/python benchmarks/bench_curvature.py --repeats 5 --threads 1

Prints tables; asserts nothing (timings belong here, not in tests).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from _common import cpu_counters
from alignlab.models import load_model
from alignlab.whitebox.curvature import HessianOperator, hutchinson_trace, hutchpp_trace, hvp, top_eigenvalues

ROOT = Path(__file__).resolve().parent.parent
TARGET = 3.0
"""The project's target: one Hessian-vector product costs at most about this many gradients."""
TEXT = ("Question: How do I keep basil alive indoors?\nAnswer: Put it in the sunniest window you have, "
        "water it when the top of the soil is dry and pinch off the flowers as soon as they appear.")


def small_cnn() -> nn.Module:
    """Two 3x3 convolutions (3->16->32 channels, each with ReLU and 2x2 max-pooling) and a linear
    head: 25,578 parameters."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 10))


def cnn_problem(batch: int, seed: int):
    """The CNN, a random CIFAR-shaped batch (batch, 3, 32, 32) with random labels, and its cross-entropy."""
    torch.manual_seed(seed)
    model = small_cnn().eval()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    return model, x, y, nn.CrossEntropyLoss()


def timed(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls, after one unmeasured call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- 1. a product against a gradient ----------------------------------------------------------------------

def cost(name: str, loss_fn, params: list[torch.Tensor], repeats: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=gen).to(p.dtype) for p in params]
    op = HessianOperator(loss_fn, params)
    flat = op.flatten(v)
    row = {"name": name, "params": sum(p.numel() for p in params),
           "gradient": timed(lambda: torch.autograd.grad(loss_fn(), params), repeats),
           "hvp": timed(lambda: hvp(loss_fn, params, v), repeats),
           "build": timed(lambda: HessianOperator(loss_fn, params), repeats),
           "matvec": timed(lambda: op.matvec(flat), repeats)}
    return row


def print_costs(rows: list[dict]) -> None:
    print(f"\n1. one Hessian-vector product against one gradient (median seconds; target: a product <= {TARGET:g}x "
          "a gradient)")
    print(f"{'model':<34}{'params':>11}{'gradient':>10}{'hvp()':>9}{'build':>9}{'matvec':>9}"
          f"{'hvp/grad':>10}{'matvec/grad':>13}")
    for r in rows:
        print(f"{r['name']:<34}{r['params']:>11,}{r['gradient']:>10.4f}{r['hvp']:>9.4f}{r['build']:>9.4f}"
              f"{r['matvec']:>9.4f}{r['hvp'] / r['gradient']:>10.2f}{r['matvec'] / r['gradient']:>13.2f}")
    print("hvp(): forward + create_graph backward + double backward, from scratch; matvec: one more product through "
          "a kept graph (build + n x matvec for n products)")


# -- 2. against PyHessian ---------------------------------------------------------------------------------

def import_pyhessian():
    """PyHessian's module, from the environment or .bench-deps; None (with the reason printed) if neither works."""
    try:
        import pyhessian  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / ".bench-deps"))
        try:
            import pyhessian  # noqa: F401
        except ImportError as err:
            print(f"\n2. PyHessian comparison skipped: pyhessian is not importable ({err}). Install it with\n"
                  "   .venv/bin/python -m pip install --target .bench-deps pyhessian --no-deps")
            return None
    import importlib

    # The package's __init__ binds the name 'hessian' to the class, hiding the module of that name.
    return importlib.import_module("pyhessian.hessian")


def run_pyhessian(module, model, x, y, criterion, seed: int) -> dict:
    """PyHessian's top eigenvalue and trace with its defaults (maxIter=100, tol=1e-3), products counted."""
    counted = {"n": 0}
    original = module.hessian_vector_product

    def counting(*args, **kwargs):
        counted["n"] += 1
        return original(*args, **kwargs)

    module.hessian_vector_product = counting
    try:
        torch.manual_seed(seed)
        start = time.perf_counter()
        h = module.hessian(model, criterion, data=(x, y), cuda=False)
        build = time.perf_counter() - start
        start = time.perf_counter()
        eigenvalues, _ = h.eigenvalues(maxIter=100, tol=1e-3, top_n=1)
        eig_s, eig_n = time.perf_counter() - start, counted["n"]
        start = time.perf_counter()
        samples = h.trace(maxIter=100, tol=1e-3)
        trace_s, trace_n = time.perf_counter() - start, counted["n"] - eig_n
    finally:
        module.hessian_vector_product = original
        model.zero_grad(set_to_none=True)  # PyHessian leaves create_graph gradients in .grad
    return {"build": build, "lmax": eigenvalues[0], "lmax_s": eig_s, "lmax_n": eig_n,
            "trace": statistics.mean(samples), "trace_s": trace_s, "trace_n": trace_n}


def run_alignlab(model, x, y, criterion, trace_samples: int, seed: int) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    op = HessianOperator(lambda: criterion(model(x), y), params)
    build = time.perf_counter() - start
    start = time.perf_counter()
    values, _, iterations = top_eigenvalues(op, k=1, seed=seed)
    eig_s = time.perf_counter() - start
    start = time.perf_counter()
    trace, error, _ = hutchinson_trace(op, samples=trace_samples, seed=seed)
    trace_s = time.perf_counter() - start
    start = time.perf_counter()
    pp = hutchpp_trace(op, matvecs=trace_samples, seed=seed)
    pp_s = time.perf_counter() - start
    return {"build": build, "lmax": values[0], "lmax_s": eig_s, "lmax_n": iterations[0], "trace": trace,
            "trace_se": error, "trace_s": trace_s, "trace_n": trace_samples, "hutchpp": pp, "hutchpp_s": pp_s}


def reference(model, x, y, criterion, samples: int) -> dict:
    """lambda_max to a relative change of 1e-7 and the trace from ``samples`` Hutchinson samples (with its error)."""
    op = HessianOperator(lambda: criterion(model(x), y), [p for p in model.parameters() if p.requires_grad])
    values, _, iterations = top_eigenvalues(op, k=1, max_iter=2000, tol=1e-7, seed=123)
    trace, error, _ = hutchinson_trace(op, samples=samples, seed=123)
    return {"lmax": values[0], "lmax_n": iterations[0], "trace": trace, "trace_se": error}


def print_pyhessian(ours: dict, theirs: dict, ref: dict, batch: int, samples: int) -> None:
    print(f"\n2. alignlab against PyHessian 0.1, the small CNN on one random batch of {batch} (float32, CPU)")
    print(f"reference: lambda_max {ref['lmax']:.5g} (power iteration to 1e-7, {ref['lmax_n']} products); "
          f"trace {ref['trace']:.5g} +- {ref['trace_se']:.2g} (Hutchinson, {samples} samples)")
    print(f"{'quantity':<28}{'alignlab':>14}{'PyHessian':>14}{'alignlab/PyH':>14}")
    rows = [("build (s)", ours["build"], theirs["build"]),
            ("lambda_max", ours["lmax"], theirs["lmax"]),
            ("  relative error vs ref", abs(ours["lmax"] / ref["lmax"] - 1), abs(theirs["lmax"] / ref["lmax"] - 1)),
            ("  products", ours["lmax_n"], theirs["lmax_n"]),
            ("  time (s)", ours["lmax_s"], theirs["lmax_s"]),
            ("trace (Hutchinson)", ours["trace"], theirs["trace"]),
            ("  relative error vs ref", abs(ours["trace"] / ref["trace"] - 1), abs(theirs["trace"] / ref["trace"] - 1)),
            ("  products", ours["trace_n"], theirs["trace_n"]),
            ("  time (s)", ours["trace_s"], theirs["trace_s"]),
            ("  time per product (s)", ours["trace_s"] / ours["trace_n"], theirs["trace_s"] / theirs["trace_n"])]
    for label, a, b in rows:
        ratio = a / b if b else float("nan")
        print(f"{label:<28}{a:>14.5g}{b:>14.5g}{ratio:>14.3g}")
    print(f"alignlab's trace standard error: {ours['trace_se']:.3g}; Hutch++ with the same {ours['trace_n']} products: "
          f"{ours['hutchpp']:.5g} (relative error {abs(ours['hutchpp'] / ref['trace'] - 1):.2g}, "
          f"{ours['hutchpp_s']:.3g} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median reported)")
    parser.add_argument("--batch", type=int, default=32, help="CNN batch size")
    parser.add_argument("--lm-rows", type=int, default=2, help="copies of the text in the language model's batch")
    parser.add_argument("--trace-samples", type=int, default=64,
                        help="alignlab's Hutchinson samples (and Hutch++ products)")
    parser.add_argument("--reference-samples", type=int, default=400, help="Hutchinson samples of the reference trace")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-pyhessian", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mark = cpu_counters()

    lm, tok = load_model("tiny", seed=args.seed)
    ids = tok([TEXT] * args.lm_rows, return_tensors="pt")["input_ids"]
    cnn, x, y, criterion = cnn_problem(args.batch, args.seed)
    rows = [cost(f"tiny LM, {args.lm_rows}x{ids.shape[1]} tokens", lambda: lm(input_ids=ids, labels=ids).loss,
                 list(lm.parameters()), args.repeats),
            cost("tiny LM, layers only (no embedding)", lambda: lm(input_ids=ids, labels=ids).loss,
                 [p for n, p in lm.named_parameters() if ".layers." in n], args.repeats),
            cost(f"small CNN, batch {args.batch}", lambda: criterion(cnn(x), y), list(cnn.parameters()), args.repeats)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print_costs(rows)

    if not args.skip_pyhessian:
        module = import_pyhessian()
        if module is not None:
            theirs = run_pyhessian(module, cnn, x, y, criterion, args.seed)
            ours = run_alignlab(cnn, x, y, criterion, args.trace_samples, args.seed)
            ref = reference(cnn, x, y, criterion, args.reference_samples)
            print_pyhessian(ours, theirs, ref, args.batch, args.reference_samples)

    (w0, busy0, self0), (w1, busy1, self1) = mark, cpu_counters()
    print(f"\nload: this process {(self1 - self0) / (w1 - w0):.2f} cores, others "
          f"{max(0.0, (busy1 - busy0) - (self1 - self0)) / (w1 - w0):.2f} cores during the run "
          "(timings taken while others compete for the cores are not worth comparing)")


if __name__ == "__main__":
    main()
