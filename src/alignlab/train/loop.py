"""Loop pieces every training method shares: checkpoints, resuming, the schedule, one
optimizer step with clipping and hooks. Kept small on purpose: the loops themselves stay in
their own files (sft.py, dpo.py, ppo.py, reward.py) so each reads top to bottom.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from alignlab.errors import NonFiniteError
from alignlab.fileio import atomic_write_text, read_jsonl
from alignlab.models.processes import distributed, resolve_device
from alignlab.runs import Run, find_run
from alignlab.train.hooks import Hooks, StepContext



def accelerator_for(device: str = "auto"):
    """The Accelerator a trainer's --device asks for: the CPU for 'cpu' (and for 'auto' with no
    GPU visible), else the GPU (a named one, cuda:N, when this is a single process; under
    ``accelerate launch`` each process takes its own)."""
    from accelerate import Accelerator

    where = resolve_device(device)
    if where.type == "cuda" and where.index is not None and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        torch.cuda.set_device(where)
    return Accelerator(cpu=where.type != "cuda")

def reopen_run(config: Any, kind: str) -> tuple[Any, Run]:
    """The original config and run of ``config.resume``; only ``stop_after`` comes from the new call."""
    info = find_run(config.resume)
    if info.kind != kind:
        raise ValueError(f"run {info.id} is a '{info.kind}' run, not a {kind} run; resume a {kind} run")
    cls = type(config)
    hints = {f.name: f for f in dataclasses.fields(cls)}
    saved = {k: v for k, v in info.config.items() if k in hints}
    for name, value in saved.items():
        if value is not None and "Path" in str(hints[name].type):
            saved[name] = Path(value)
    saved.update(resume=config.resume, stop_after=getattr(config, "stop_after", 0))
    return cls(**saved), Run(info.id, info.path)


def data_order(train_rows: list[int], total_steps: int, batch_size: int, seed: int) -> list[int]:
    """The rows of every global batch, epoch after epoch, each epoch its own seeded shuffle."""
    order: list[int] = []
    epoch = 0
    while len(order) < total_steps * batch_size:
        perm = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        order.extend(train_rows[i] for i in perm.tolist())
        epoch += 1
    return order


class AdamW(torch.optim.AdamW):
    """torch's AdamW (fused where the build has it) that also takes row-sparse gradients, such as
    an ``nn.Embedding(sparse=True)``'s: a reward model reads its 262k x 640 input embedding at a
    few thousand rows, and a dense gradient for it costs a 670 MB zero-fill, norm, clip and
    update every step (~1 s of an embedded-model step here; benchmarks/bench_reward.py).

    A sparse-gradient parameter is updated only at the rows that ever had a gradient, which is
    exactly what dense AdamW does: a row never touched has zero moments, so dense AdamW moves it
    by 0 / (0 + eps) = 0, while a row touched once keeps moving with its decaying moments (and
    so stays in the updated set). Weight decay, which dense AdamW applies to every row, is
    applied to every row here too. The set of touched rows is kept in the optimizer state
    (``touched``), so checkpoints resume it.
    """

    def __init__(self, params, **kwargs):
        try:
            super().__init__(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            super().__init__(params, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):
        sparse = [(group, p) for group in self.param_groups for p in group["params"]
                  if p.grad is not None and p.grad.is_sparse]
        held = {p: p.grad for _, p in sparse}
        for p in held:
            p.grad = None
        try:
            loss = super().step(closure)
        finally:
            for p, grad in held.items():
                p.grad = grad
        for group, p in sparse:
            self._sparse_step(group, p)
        return loss

    def _sparse_step(self, group: dict, p: torch.nn.Parameter) -> None:
        if group["amsgrad"] or group["maximize"]:
            raise ValueError("alignlab's AdamW takes sparse gradients without amsgrad or maximize only")
        grad = p.grad.coalesce()
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            state["touched"] = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)  # 0/1 per row
        state["step"] += 1
        step = float(state["step"])
        now = grad.indices()[0]
        state["touched"][now] = 1
        rows = state["touched"].nonzero()[:, 0]  # sorted, like ``now``
        g = torch.zeros(len(rows), *p.shape[1:], dtype=p.dtype, device=p.device)
        g[torch.searchsorted(rows, now)] = grad.values().to(p.dtype)
        lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        lr = float(lr)
        if decay:
            p.mul_(1 - lr * decay)
        exp_avg = state["exp_avg"][rows].lerp_(g, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        state["exp_avg"][rows] = exp_avg
        state["exp_avg_sq"][rows] = exp_avg_sq
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step)).add_(eps)
        p.index_add_(0, rows, exp_avg / denom, alpha=-lr / (1 - beta1 ** step))


def adamw(params, **kwargs) -> AdamW:
    """AdamW, fused where this torch build supports it: the per-parameter loop version costs ~4.6 s
    a step on the embedded model here (sqrt and div over the 262k x 640 embedding) and holds two
    parameter-sized temporaries (see benchmarks/bench_reward.py). Row-sparse gradients are
    taken too (see ``AdamW``)."""
    return AdamW(list(params), **kwargs)


def sparse_embedding_gradients(model: torch.nn.Module, enable: bool = True) -> bool:
    """Give a model's input embedding row-sparse gradients (``nn.Embedding.sparse``) while it trains.

    The embedding's own gradient lives on the rows of the batch's tokens; a dense one is a
    262k x 640 tensor zero-filled and added every backward pass (~1.4 s of a PPO step on the
    embedded model here). Where the output layer shares the weight (Gemma ties them), its dense
    gradient arrives first in backward and the sparse rows are added into it in place; where it
    does not, or reads only a restricted vocabulary's rows (models/vocab.py), the gradient stays
    sparse and ``AdamW`` updates those rows exactly as dense AdamW would. Left off in
    data-parallel runs (DDP would reduce a dense copy). Returns whether the embedding is sparse now.
    """
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, torch.nn.Embedding) or not embedding.weight.requires_grad or distributed():
        return False
    embedding.sparse = enable
    return enable


def keep_freed_memory() -> bool:
    """Let this process reuse the memory training frees instead of giving it back to the system.

    glibc serves every allocation over 32 MB (a 262k-vocabulary gradient, logits, activations)
    with a fresh mmap and returns it on free, so each training step faults hundreds of thousands
    of pages back in: ~0.8 CPU-seconds of a 5-second PPO step on the embedded model here. With
    mmap off and trimming off the heap keeps those blocks and the next step reuses them (4-7%
    faster steps, the same peak memory: the blocks are in use at the peak anyway). Linux/glibc
    only; elsewhere nothing changes. Returns whether the setting took effect.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


NORM_BLOCK = 4096
"""Elements per partial sum in ``tensor_norms``."""


def tensor_norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The L2 norm of each tensor (float32 scalars), accurate at any size.

    torch's own norms (``vector_norm``, ``_foreach_norm``, hence ``clip_grad_norm_``) sum a whole
    tensor's squares in float32: for the embedded model's tied embedding gradient (168M entries)
    comes out 2.3% low (12,656 against 12,953.8 from a float64 sum, for standard normal entries)
    and takes 66 ms on this machine. Norms of ``NORM_BLOCK``-entry blocks combined in float64 are
    right to float32 rounding and take 34 ms; every optimizer step of every loop reads this norm.
    Tensors under two blocks go through ``_foreach_norm`` together.
    """
    out: list[torch.Tensor | None] = [None] * len(tensors)
    small = [i for i, t in enumerate(tensors) if t.numel() < 2 * NORM_BLOCK]
    if small:
        for i, norm in zip(small, torch._foreach_norm([tensors[i] for i in small])):
            out[i] = norm.float()
    for i, t in enumerate(tensors):
        if out[i] is None:
            flat = t.reshape(-1)
            whole = flat.numel() // NORM_BLOCK * NORM_BLOCK
            blocks = torch.linalg.vector_norm(flat[:whole].view(-1, NORM_BLOCK), dim=1, dtype=torch.float32)
            squares = blocks.double().square().sum()
            if whole < flat.numel():
                squares = squares + torch.linalg.vector_norm(flat[whole:], dtype=torch.float32).double().square()
            out[i] = squares.sqrt().float()
    return out


def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all ``tensors`` together (a float64 scalar; see ``tensor_norms``)."""
    if not tensors:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack([n.double() for n in tensor_norms(tensors)]).square().sum().sqrt()


def gradient_values(grad: torch.Tensor) -> torch.Tensor:
    """The stored values of a gradient: itself, or a coalesced sparse gradient's values (an alias:
    scaling it in place scales the gradient)."""
    return grad._values() if grad.is_sparse else grad


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def latest_checkpoint(run_path: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, if any."""
    folders = [p for p in sorted((run_path / "checkpoints").glob("step-*")) if not p.name.endswith(".tmp")]
    return folders[-1] if folders else None


def save_checkpoint(run_path: Path, step: int, parameters: dict[str, torch.nn.Parameter], optimizer,
                    scheduler, extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write checkpoints/step-N atomically (temp folder, then rename) and keep the newest ``keep``."""
    folder = run_path / "checkpoints" / f"step-{step:07d}"
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"step": step, "params": {k: p.detach().clone() for k, p in parameters.items()},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "extra": extra or {}}, tmp / "state.pt")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    done = [p for p in sorted((run_path / "checkpoints").glob("step-*")) if not p.name.endswith(".tmp")]
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: Path, parameters: dict[str, torch.nn.Parameter], optimizer, scheduler) -> tuple[int, dict]:
    """Restore parameters, optimizer and schedule; return (step, extra state)."""
    state = torch.load(folder / "state.pt", weights_only=False)
    with torch.no_grad():
        for name, value in state["params"].items():
            parameters[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["step"], state.get("extra", {})


def truncate_metrics(run_path: Path, step: int) -> None:
    """Drop metric lines written after ``step`` (a resumed run writes them again)."""
    path = run_path / "metrics.jsonl"
    rows = [r for r in read_jsonl(path) if r.get("step", 0) <= step and not r.get("final")]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def check_finite(loss: torch.Tensor, step: int, what: str, batch: Any) -> None:
    """Stop with the step and the batch named when a loss is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise NonFiniteError(f"non-finite {what} at step {step} (batch {batch}); lower the learning rate, "
                             "check the data, or train in float32")


def optimizer_step(ctx: StepContext, scheduler, max_grad_norm: float, hooks: Hooks | None = None) -> None:
    """After backward: hooks, clipping (recording the norm and whether it clipped), step, hooks."""
    hooks = hooks or Hooks()
    ctx.grad_norm, ctx.clipped = clip_gradients_before_hooks(ctx, max_grad_norm, hooks)
    if not torch.isfinite(torch.tensor(ctx.grad_norm)):
        raise NonFiniteError(f"non-finite gradient norm at step {ctx.step}; lower the learning rate or train in float32")
    ctx.optimizer.step()
    scheduler.step()
    hooks.after_step(ctx)
    ctx.optimizer.zero_grad(set_to_none=True)


def clip_gradients_before_hooks(ctx: StepContext, max_grad_norm: float, hooks: Hooks) -> tuple[float, bool]:
    """Measure the norm once, let after_backward hooks see it, then clip with that same norm."""
    for p in ctx.parameters.values():
        if p.grad is not None and p.grad.is_sparse and not p.grad.is_coalesced():
            p.grad = p.grad.coalesce()  # repeated rows summed, so norms and clipping see the true gradient
    grads = [gradient_values(p.grad) for p in ctx.parameters.values() if p.grad is not None]
    if not grads:
        hooks.after_backward(ctx)
        return 0.0, False
    total = global_norm(grads)
    ctx.grad_norm = float(total)
    ctx.clipped = bool(max_grad_norm > 0 and ctx.grad_norm > max_grad_norm)
    hooks.after_backward(ctx)
    if max_grad_norm > 0:
        scale = torch.clamp(max_grad_norm / (total + 1e-6), max=1.0).float()  # as torch's clip_grad_norm_
        torch._foreach_mul_(grads, scale)
    return ctx.grad_norm, ctx.clipped


def broadcast_run(accelerator, run: Run | None) -> Run:
    """Every process needs the run folder the main process made."""
    if accelerator.num_processes == 1:
        return run
    from accelerate.utils import broadcast_object_list

    payload = broadcast_object_list([(run.id, str(run.path)) if run is not None else None])
    return Run(payload[0][0], Path(payload[0][1]))
