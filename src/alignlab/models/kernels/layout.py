"""Which way round the output layer's float32 product runs faster on this machine.

Logits for n positions are ``h @ W^T`` (n, V). MKL can also compute ``W @ h^T`` (V, n) and the
result be transposed back: the same numbers up to float rounding, at a speed that depends on the
CPU. On one 2-core AMD EPYC the second form was ~1.3x faster for 128 rows of the embedded model
even counting the transpose; on a 2-core Intel Xeon (AVX-512) the first is faster at every size
measured (16 rows: 84 ms against 129; 128: 302 against 457; 512: 0.95 s against 1.41 s). So the
layout is measured once per machine (both forms on a (131072, 640) weight with 16 and 128 rows,
the median of three runs each, about two seconds) and kept in ``<cache>/kernels/logits_layout.json``
under the CPU's name, thread count and torch version. Every later process reads it, so a machine
uses one layout and its runs, resumed runs included, stay reproducible.
``ALIGNLAB_LOGITS_LAYOUT=rows|weight`` sets it instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time

import torch

ENV = "ALIGNLAB_LOGITS_LAYOUT"
LAYOUTS = ("rows", "weight")
_LOCK = threading.Lock()
_CHOSEN: dict[str, str] = {}


def logits_layout() -> str:
    """'rows' (``h @ W^T``) or 'weight' (``W @ h^T``, transposed back): this machine's faster form."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced:
        if forced not in LAYOUTS:
            raise ValueError(f"{ENV}={forced!r}: use 'rows' (h @ W^T) or 'weight' (W @ h^T), or unset it to "
                             "use the layout measured on this machine")
        return forced
    if "layout" not in _CHOSEN:
        with _LOCK:
            if "layout" not in _CHOSEN:
                _CHOSEN["layout"] = machine_layout()["layout"]
    return _CHOSEN["layout"]


def machine_key() -> str:
    """What the measurement depends on: the CPU, the threads torch uses, torch's version."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):  # no /proc/cpuinfo (not Linux): the platform's name serves
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), name)
    return f"{name} | {torch.get_num_threads()} threads | torch {torch.__version__}"


def machine_layout() -> dict:
    """This machine's entry of the layout file (measured and saved first if it has none): the
    layout and the milliseconds each form took. Concurrent processes measure once (a file lock)."""
    import fcntl

    from alignlab.fileio import atomic_write_json
    from alignlab.home import cache_dir

    folder = cache_dir() / "kernels"
    folder.mkdir(parents=True, exist_ok=True)
    path, key = folder / "logits_layout.json", machine_key()
    with open(folder / ".logits_layout.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except ValueError:  # a damaged file is measured again
            known = {}
        entry = known.get(key) if isinstance(known, dict) else None
        if not isinstance(entry, dict) or entry.get("layout") not in LAYOUTS:
            entry = measure()
            known = {**(known if isinstance(known, dict) else {}), key: entry}
            atomic_write_json(path, known)
    return entry


@torch.inference_mode()
def measure(vocab: int = 131072, width: int = 640, rows: tuple[int, ...] = (16, 128), repeats: int = 3) -> dict:
    """Time both forms (median of ``repeats``) for each row count; the faster total wins."""
    weight = torch.full((vocab, width), 0.01)
    ms = {"rows": 0.0, "weight": 0.0}
    for n in rows:
        h = torch.full((n, width), 0.02)
        forms = {"rows": lambda: h @ weight.T, "weight": lambda: (weight @ h.T).T.contiguous()}
        for name, form in forms.items():
            form()  # warm
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                form()
                times.append(time.perf_counter() - start)
            ms[name] += 1000 * sorted(times)[len(times) // 2]
    return {"layout": min(ms, key=ms.get), "ms": {k: round(v, 1) for k, v in ms.items()},
            "shape": [vocab, width], "rows": list(rows)}
