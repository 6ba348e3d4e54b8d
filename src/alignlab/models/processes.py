"""Where this process computes: the device a command's --device names, and whether the process
trains beside others (a row-sparse gradient is exact only in a single process)."""

from __future__ import annotations

import re

import torch


def distributed() -> bool:
    """Whether this process is one of several (torch.distributed initialised with world size > 1)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


DEVICE_HELP = "Where the model runs: auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N."


def resolve_device(name: str = "auto") -> torch.device:
    """The device ``name`` means ('auto', 'cpu', 'cuda', 'cuda:N'), refused with what is visible
    when it is not there."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or re.fullmatch(r"cuda:\d+", text):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: torch sees no CUDA device here (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda or 'none'}); use --device cpu or auto")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return torch.device("cuda", index)
    raise ValueError(f"--device {name!r} is not auto, cpu, cuda or cuda:N")
