"""A small hook protocol that training loops call, so observers (the white-box monitors, a
gradient logger, a test) attach without the loops importing them.

Every alignlab training loop calls, once per optimizer step:

    hooks.after_backward(ctx)   # gradients are in p.grad, not yet clipped
    hooks.after_step(ctx)       # the optimizer has stepped

with a ``StepContext`` holding the step number, the model, the loss, the optimizer, the
trainable named parameters, the step's gradient-norm record and ``loss_fn``, a closure that
recomputes the loss of the step's last micro-batch with its graph (for monitors that need
derivatives of their own). A hook may add metrics to ``ctx.metrics``; the loop logs them with
its own. When the loop ends (or stops to be resumed), the main process calls
``hooks.finish(run)`` so hooks can write into the run folder; a run resumed from a checkpoint
calls ``hooks.resume(run)`` before its first step, so hooks can pick up what they kept there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class StepContext:
    step: int
    model: torch.nn.Module
    loss: torch.Tensor
    optimizer: torch.optim.Optimizer
    parameters: dict[str, torch.nn.Parameter]
    grad_norm: float = float("nan")
    """Global gradient norm before clipping (set after backward)."""
    clipped: bool = False
    """Whether clipping scaled this step's gradient down."""
    metrics: dict[str, Any] = field(default_factory=dict)
    loss_fn: Callable[[], torch.Tensor] | None = None
    """Recomputes the step's last micro-batch loss (scaled as that micro-batch's share of the step)."""


class TrainingHook(Protocol):
    def after_backward(self, ctx: StepContext) -> None: ...

    def after_step(self, ctx: StepContext) -> None: ...


class Hooks:
    """The hooks attached to one run, called in order."""

    def __init__(self, hooks: Iterable[TrainingHook] = ()):
        self.hooks = list(hooks)

    def after_backward(self, ctx: StepContext) -> None:
        for hook in self.hooks:
            if hasattr(hook, "after_backward"):
                hook.after_backward(ctx)

    def after_step(self, ctx: StepContext) -> None:
        for hook in self.hooks:
            if hasattr(hook, "after_step"):
                hook.after_step(ctx)

    def resume(self, run) -> None:
        for hook in self.hooks:
            if hasattr(hook, "resume"):
                hook.resume(run)

    def finish(self, run) -> None:
        for hook in self.hooks:
            if hasattr(hook, "finish"):
                hook.finish(run)
