"""Which parameters' gradients are clipped: attribution of global-norm clipping per tensor.

Global-norm clipping scales every parameter's gradient by the same factor, so "which parameter
is clipped" is a question of attribution: per step and tensor p, its gradient norm g_p, the
global norm G, whether the step was clipped, the share s_p = g_p^2 / G^2 of the squared norm
and that share divided by the tensor's share of the parameters (1 = its fair share). A tensor
that carries the dominant share on most clipped steps of a rolling window is a red flag: the
clipping is, in effect, clipping that one tensor, every time. For Adam-style optimizers the
update-to-weight ratio ||delta theta_p|| / ||theta_p|| is recorded at the monitor's full-check
steps. alignlab's trainers clip the global norm only (no per-tensor or value clipping), so there
is no per-tensor clip rate to report.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from alignlab.train.loop import tensor_norms
from alignlab.whitebox.audit import Finding


def gradient_norms(parameters: dict[str, torch.nn.Parameter]) -> dict[str, float]:
    """||grad|| per tensor that has a gradient (sparse gradients by their stored values)."""
    names, grads = [], []
    for name, p in parameters.items():
        if p.grad is not None:
            g = p.grad
            if g.is_sparse:
                g = g.coalesce().values()
            names.append(name)
            grads.append(g)
    norms = tensor_norms(grads)  # blocked: torch's single float32 sum is 2.3% low on a 168M-entry gradient
    return {n: float(v) for n, v in zip(names, norms)}


@dataclass
class ClipRecord:
    step: int
    clipped: bool
    global_norm: float
    norms: dict[str, float]

    def shares(self) -> dict[str, float]:
        total = sum(v * v for v in self.norms.values()) or 1.0
        return {n: v * v / total for n, v in self.norms.items()}


class ClipAttribution:
    """Collects per-tensor gradient shares each step and flags dominant or often-clipped tensors.

    ``window``: steps in the rolling window; ``dominance``: the share that makes a tensor
    dominant on a step (with ``fair_multiple`` times its share of the parameters);
    ``persistence``: the fraction of the window's clipped steps on which it must dominate (at
    least ``min_clipped`` of them) to be flagged.
    """

    def __init__(self, parameters: dict[str, torch.nn.Parameter], max_norm: float = 0.0, window: int = 50,
                 dominance: float = 0.5, persistence: float = 0.8, min_clipped: int = 5, fair_multiple: float = 5.0):
        self.sizes = {n: p.numel() for n, p in parameters.items()}
        self.max_norm = max_norm
        self.window: deque[ClipRecord] = deque(maxlen=window)
        self.dominance, self.persistence, self.min_clipped = dominance, persistence, min_clipped
        self.fair_multiple = fair_multiple
        self.records: list[dict] = []
        self.first_flagged: dict[tuple[str, str], int] = {}
        self._before: dict[str, torch.Tensor] = {}

    def observe(self, step: int, parameters: dict[str, torch.nn.Parameter], global_norm: float, clipped: bool,
                keep_weights: bool = False) -> dict[str, float]:
        """Record one step's gradients (before clipping); returns scalars to log."""
        norms = gradient_norms(parameters)
        record = ClipRecord(step, clipped, global_norm, norms)
        self.window.append(record)
        shares = record.shares()
        total = sum(self.sizes[n] for n in norms) or 1
        row = {"step": step, "clipped": clipped, "global_norm": global_norm,
               "norms": norms, "shares": shares,
               "normalised": {n: s / (self.sizes[n] / total) for n, s in shares.items()}}
        self.records.append(row)
        if keep_weights:  # for the update-to-weight ratio after the optimizer step
            self._before = {n: p.detach().clone() for n, p in parameters.items() if n in norms}
        top = sorted(shares.items(), key=lambda kv: -kv[1])[:3]
        metrics = {f"clip/share/{n}": s for n, s in top}
        metrics["clip/top_share"] = top[0][1] if top else 0.0
        self._check(step)
        return metrics

    def after_step(self, parameters: dict[str, torch.nn.Parameter]) -> dict[str, float]:
        """Update-to-weight ratios, when ``observe(..., keep_weights=True)`` kept the weights."""
        if not self._before:
            return {}
        ratios = {}
        for n, before in self._before.items():
            weight = float(before.float().norm())
            ratios[n] = float((parameters[n].detach() - before).float().norm()) / (weight or 1.0)
        self._before = {}
        self.records[-1]["update_ratio"] = ratios
        top = max(ratios.items(), key=lambda kv: kv[1])
        return {"clip/update_ratio_max": top[1]}

    def _dominant(self, record) -> str | None:
        """The tensor that dominates this step: at least ``dominance`` of the squared norm and at least
        ``fair_multiple`` times its share of the parameters (an embedding holding most of the
        parameters and most of the gradient is not singled out)."""
        shares = record["shares"] if isinstance(record, dict) else record.shares()
        if not shares:
            return None
        name, share = max(shares.items(), key=lambda kv: kv[1])
        total = sum(self.sizes[n] for n in shares) or 1
        fair = self.sizes[name] / total
        return name if share >= self.dominance and share >= self.fair_multiple * fair else None

    def _check(self, step: int) -> None:
        clipped = [r for r in self.window if r.clipped]
        if len(clipped) < self.min_clipped:
            return
        counts: dict[str, int] = {}
        for r in clipped:
            name = self._dominant(r)
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
        for name, n in counts.items():
            if n / len(clipped) >= self.persistence:
                self.first_flagged.setdefault(("dominant-clip-share", name), step)

    def findings(self) -> list[tuple[Finding, int]]:
        """Flags with the step they were first raised."""
        out = []
        clipped = [r for r in self.records if r["clipped"]]
        for (check, name), since in self.first_flagged.items():
            dominant = sum(1 for r in clipped if self._dominant(r) == name)
            share = sum(r["shares"].get(name, 0.0) for r in clipped) / max(len(clipped), 1)
            what = (f"dominated the gradient on {dominant} of {len(clipped)} clipped steps (mean share "
                    f"{share:.0%} of ||g||^2 while holding {self.sizes[name] / sum(self.sizes.values()):.2%} of the "
                    "parameters): clipping is, in effect, clipping this tensor")
            out.append((Finding(check, name, what), since))
        return out

    def clip_rate(self) -> float:
        return sum(r["clipped"] for r in self.records) / max(len(self.records), 1)
