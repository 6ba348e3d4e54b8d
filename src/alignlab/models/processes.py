"""Whether this process trains beside others: the one fact about the process group that code
below the training loop needs (a row-sparse gradient is exact only in a single process)."""

from __future__ import annotations

import torch


def distributed() -> bool:
    """Whether this process is one of several (torch.distributed initialised with world size > 1)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1
