"""A compiled kernel for decoding: ``x @ W^T`` with a few rows of ``x``, in float32.

A decoding step multiplies one new position per sequence (the rollout's 8 rows, the loom's few
branches) by every weight matrix of the model, the 262k-row output layer included. MKL runs that
as a general matrix product and reaches about half the speed at which the CPU can read the
weights: ~80-190 ms for the embedded model's output layer with 8 rows on this project's 2-core
AVX-512 machine, where reading it takes ~40 ms. ``few_rows.cpp`` reads each weight row once, two
at a time with prefetching, and keeps up to 8 rows' partial sums in registers (4 with AVX2): ~45 ms there, and
the whole sampling step about 1.6x faster (benchmarks/bench_kernels.py).

The kernel is built with torch's C++ extension loader the first time it is needed (about a
minute, once per machine; ``make install`` does it ahead), for the CPU's vector extension (AVX-512
or AVX2 with FMA), into ``<cache>/kernels``. Where it cannot run (neither extension, no C++
compiler or ninja, ``ALIGNLAB_KERNELS=0``) everything uses torch's
own product instead, with the same results up to float rounding; ``python -m
alignlab.models.kernels`` says which applies.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

MAX_ROWS = 8
"""Up to this many rows of ``x`` go to the kernel. With more, MKL's matrix product catches up
(at 16 rows it is as fast with AVX-512 and faster with AVX2 here; benchmarks/bench_kernels.py)."""

PREFETCH_ROWS = 4
"""How many weight rows ahead the kernel prefetches (2 and 8 measured no better here)."""

SOURCE = Path(__file__).with_name("few_rows.cpp")
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


ISA_FLAGS = {"avx512": ["-mavx512f"], "avx2": ["-mavx2", "-mfma"]}
"""Compiler flags per vector extension. Not -march=native: a build may be shared by machines with
other CPUs of the same extension."""


def vector_extension() -> str | None:
    """'avx512' or 'avx2' (the CPU's, as torch reports it; ``ALIGNLAB_KERNEL_ISA=avx2`` picks the
    AVX2 build on an AVX-512 CPU), or None where the kernel has no build."""
    capability = torch.backends.cpu.get_cpu_capability()
    own = {"AVX512": "avx512", "AVX2": "avx2"}.get(capability)
    asked = os.environ.get("ALIGNLAB_KERNEL_ISA", "").strip().lower()
    if asked and asked != own:
        if asked not in ISA_FLAGS or own != "avx512":  # an AVX-512 CPU runs AVX2 code too, not the reverse
            raise ValueError(f"ALIGNLAB_KERNEL_ISA={asked}: this CPU ({capability}) can run "
                             f"{', '.join(k for k in ISA_FLAGS if own == 'avx512' or k == own) or 'neither build'}; "
                             "unset it to use the CPU's own")
        return asked
    return own


def _disabled_reason() -> str | None:
    if os.environ.get("ALIGNLAB_KERNELS", "").strip() == "0":
        return "ALIGNLAB_KERNELS=0"
    if vector_extension() is None:
        return f"this CPU's vector capability is {torch.backends.cpu.get_cpu_capability()}, not AVX512 or AVX2"
    return None


def _build():
    from torch.utils.cpp_extension import load

    scripts = sysconfig.get_path("scripts")  # the virtual environment's bin, where pip puts ninja
    if scripts and scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    from alignlab.home import cache_dir

    isa = vector_extension()
    folder = cache_dir() / "kernels" / f"few_rows_{isa}"
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("*.so")):
        print(f"alignlab: compiling the decoding kernel ({isa}) into {folder} (first use only, about a minute)...",
              file=sys.stderr, flush=True)
    return load(f"alignlab_few_rows_{isa}", [str(SOURCE)], build_directory=str(folder), verbose=False,
                extra_cflags=["-O3", *ISA_FLAGS[isa], "-fopenmp", f"-DPREFETCH_ROWS={PREFETCH_ROWS}"],
                extra_ldflags=["-fopenmp"])


def kernel():
    """The compiled module (with ``few_rows_matmul(x, w)``), or None where it cannot run; built
    once per process, and a failed build is reported once as a warning."""
    if "module" in _STATE:
        return _STATE["module"]
    with _LOCK:
        if "module" not in _STATE:
            reason = _disabled_reason()
            module = None
            if reason is None:
                try:
                    module = _build()
                except Exception as err:  # no compiler, no ninja, a failed compile: torch's product serves
                    reason = f"it could not be built ({type(err).__name__}: {str(err).strip()[:500]})"
                    warnings.warn(f"alignlab's decoding kernel is off: {reason}. Decoding uses torch's matrix "
                                  "product (the same results, slower). Install a C++ compiler and ninja "
                                  "(pip install ninja) to build it.", RuntimeWarning, stacklevel=2)
            _STATE["reason"] = reason
            _STATE["module"] = module
    return _STATE["module"]


def status() -> str:
    """One line: whether the kernel is in use (and its build), or why not."""
    module = kernel()
    return f"on ({module.vector_extension()})" if module is not None else f"off: {_STATE['reason']}"


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``x @ weight^T`` can go to the kernel: float32 CPU tensors, 1..MAX_ROWS rows of x,
    weight rows contiguous, and no gradient to record."""
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or x.device.type != "cpu" or weight.device.type != "cpu":
        return False
    if weight.dim() != 2 or weight.stride(1) != 1 or x.shape[-1] != weight.shape[1] or x.shape[-1] == 0:
        return False
    rows = x.numel() // x.shape[-1]
    if not 1 <= rows <= MAX_ROWS:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    return kernel() is not None


def few_rows_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight^T`` (..., V) for x (..., D) and weight (V, D): the kernel where ``usable``,
    else torch's product."""
    return _kernel_matmul(x, weight) if usable(x, weight) else x @ weight.T


def _kernel_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The kernel's product, for inputs ``usable`` has accepted (not checked again)."""
    return kernel().few_rows_matmul(x.reshape(-1, x.shape[-1]), weight).reshape(*x.shape[:-1], weight.shape[0])


def _few_row_forward(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``nn.Linear.forward`` with the kernel for a few rows (bound to each layer in the block)."""
    weight, bias = layer.weight, layer.bias
    if not usable(x, weight):
        return torch.nn.functional.linear(x, weight, bias)
    y = _kernel_matmul(x, weight)
    return y + bias if bias is not None else y


@contextmanager
def few_row_linears(model: torch.nn.Module) -> Iterator[None]:
    """Within this block the model's ``nn.Linear`` layers multiply a few rows (a decoding step)
    with the kernel; any other call (more rows, gradients, another dtype) runs as before. Blocks
    on one model may nest or overlap across threads: the layers are restored when the last ends."""
    if kernel() is None:
        yield
        return
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    with _LOCK:
        count = getattr(model, "_alignlab_few_row_blocks", 0)
        if count == 0:
            for layer in linears:
                layer.forward = types.MethodType(_few_row_forward, layer)  # a copy rebinds to itself
        model._alignlab_few_row_blocks = count + 1
    try:
        yield
    finally:
        with _LOCK:
            model._alignlab_few_row_blocks -= 1
            if model._alignlab_few_row_blocks == 0:
                for layer in linears:
                    layer.__dict__.pop("forward", None)
