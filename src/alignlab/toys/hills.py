"""Tessellating hills: do "demons" form in imperfect search? (DaemonicSigil, 2020)

Coordinates x = (x0, x1..xn). The loss rewards x0 and adds a small, wiggly "splotch" term:

    L(x) = -x0 + eps * sum_j x_j * splotch_j(x)
    splotch_j(x) = sum_w [ s_jw sin(phi_jw) + c_jw cos(phi_jw) ],  w = 1..W
    phi_jw = sum_i k_jwi x_i + k0_jw x0

with integer wave numbers k in -2..2 (so each splotch is periodic), s and c standard normal, all
fixed by a seed. The optimizer is "constant step size gradient descent with noise":

    x <- x - lr * ( g / ||g|| + xi / sqrt(1 + n) ),   xi ~ N(0, I)

The straight road is x0 -> infinity. A "demon" is a few x_j that grow large enough for their
splotch terms to bend the gradient (through the k0 x0 part of the phases) so that descent spends
its fixed step feeding them instead of x0.

Everything is batched: a state x has shape (S, E, n + 1) for S seeds and E values of eps. One
seed's landscape and noise are shared by all its eps values (common random numbers: only eps
differs between them), so a run with eps [a, b] gives for a exactly what a run with [a] gives.
Gradients are in closed form (a test checks them against finite differences and autograd):

    D_jw = s_jw cos(phi_jw) - c_jw sin(phi_jw)                  (d splotch_j / d phi_jw)
    dL/dx_i = eps * ( splotch_i + sum_jw x_j D_jw k_jwi )        i >= 1
    dL/dx0  = -1 + eps * sum_jw x_j D_jw k0_jw

so a step costs two passes over the wave numbers (phases, then gradient), each a batched matmul.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

WAVES = 5
"""Waves per splotch (W in the original code)."""


@dataclass
class Landscape:
    """The splotches of S seeds in n dimensions (float64 tensors; the wave numbers hold integers)."""

    k: torch.Tensor
    """(S, n*W, n) wave numbers: row j*W + w holds k_jw1..k_jwn."""
    k0: torch.Tensor
    """(S, n*W) the x0 component of each wave number."""
    s: torch.Tensor
    """(S, n, W) sine coefficients."""
    c: torch.Tensor
    """(S, n, W) cosine coefficients."""

    @property
    def dim(self) -> int:
        return self.s.shape[1]

    @property
    def waves(self) -> int:
        return self.s.shape[2]


def make_landscape(dim: int, seeds: Sequence[int], waves: int = WAVES) -> tuple[Landscape, list[torch.Generator]]:
    """The landscape of each seed, and each seed's generator (positioned after it) for the noise.

    A seed's landscape depends on (seed, dim, waves) only, never on which other seeds run beside it.
    """
    if dim < 1 or waves < 1:
        raise ValueError(f"hills: dim = {dim}, waves = {waves}; both must be whole numbers >= 1")
    gens, ks, k0s, ss, cs = [], [], [], [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        # The draw order follows the original code: k, k0, s, c.
        ks.append(torch.randint(-2, 3, (dim, waves, dim), generator=gen).reshape(dim * waves, dim))
        k0s.append(torch.randint(-2, 3, (dim, waves), generator=gen).reshape(dim * waves))
        ss.append(torch.randn(dim, waves, generator=gen, dtype=torch.float64))
        cs.append(torch.randn(dim, waves, generator=gen, dtype=torch.float64))
        gens.append(gen)
    land = Landscape(k=torch.stack(ks).double(), k0=torch.stack(k0s).double(), s=torch.stack(ss), c=torch.stack(cs))
    return land, gens


def _phases(land: Landscape, x: torch.Tensor) -> torch.Tensor:
    """phi_jw for a state x (S, E, n+1); returns (S, E, n, W)."""
    S, E, _ = x.shape
    y = x[..., 1:]                                                   # (S, E, n)
    phi = torch.matmul(y, land.k.transpose(1, 2))                    # (S, E, n*W)
    phi = phi + x[..., :1] * land.k0[:, None, :]
    return phi.reshape(S, E, land.dim, land.waves)


def splotches(land: Landscape, x: torch.Tensor) -> torch.Tensor:
    """splotch_j(x) for each seed and eps; x (S, E, n+1) -> (S, E, n)."""
    phi = _phases(land, x)
    return (land.s[:, None] * torch.sin(phi) + land.c[:, None] * torch.cos(phi)).sum(-1)


def hills_loss(land: Landscape, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss L and its splotch term eps * sum_j x_j splotch_j; x (S, E, n+1), eps (E,) -> two (S, E)."""
    splotch = eps * (x[..., 1:] * splotches(land, x)).sum(-1)
    return -x[..., 0] + splotch, splotch


def hills_grad(land: Landscape, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, splotch term (both (S, E)) and the exact gradient dL/dx (S, E, n+1), in closed form."""
    S, E, _ = x.shape
    y = x[..., 1:]                                                   # (S, E, n)
    phi = _phases(land, x)                                           # (S, E, n, W)
    sin, cos = torch.sin(phi), torch.cos(phi)
    s, c = land.s[:, None], land.c[:, None]                          # (S, 1, n, W)
    splotch_j = (s * sin + c * cos).sum(-1)                          # (S, E, n)
    a = (y[..., None] * (s * cos - c * sin)).reshape(S, E, -1)       # (S, E, n*W)  x_j D_jw
    e = eps[:, None]                                                 # (E, 1)
    grad_y = e * (splotch_j + torch.matmul(a, land.k))               # (S, E, n)
    grad_x0 = -1 + eps * (a * land.k0[:, None, :]).sum(-1)           # (S, E)
    splotch = eps * (y * splotch_j).sum(-1)
    return -x[..., 0] + splotch, splotch, torch.cat([grad_x0[..., None], grad_y], dim=-1)


def participation_ratio(v: torch.Tensor) -> torch.Tensor:
    """(sum v^2)^2 / sum v^4 over the last axis: ~1 when one entry dominates, m for m equal entries; 0 for 0."""
    sq = v * v
    num = sq.sum(-1) ** 2
    den = (sq * sq).sum(-1)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(num))


@dataclass
class History:
    """What a simulation recorded: each metric (R, S, E) at the recorded steps, and the final state."""

    steps: list[int]
    """The recorded steps (R of them): every record_every steps and the last."""
    x0: torch.Tensor
    velocity: torch.Tensor
    """Mean x0 gain per step since the previous recorded step."""
    step_share: torch.Tensor
    """Mean of -g0 / ||g|| over the steps since the previous recorded step (1: the whole step goes to x0)."""
    participation: torch.Tensor
    """Participation ratio of x1..xn (small: a few coordinates hold most of the mass)."""
    max_abs: torch.Tensor
    """Largest |x_j|, j >= 1."""
    splotch: torch.Tensor
    """The splotch term eps * sum_j x_j splotch_j."""
    splotch_share: torch.Tensor
    """|splotch term| / (|x0| + |splotch term|): how much of the loss the splotches make up."""
    trajectory: torch.Tensor
    """(R, S, E, n+1) float32: the state at each recorded step (for the coordinate plots)."""
    x: torch.Tensor
    """(S, E, n+1) float64: the final state."""


METRICS = ("x0", "velocity", "step_share", "participation", "max_abs", "splotch", "splotch_share")


def demons(x: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top`` coordinates j >= 1 with the largest |x_j|: (indices j, counted from 1; values), each (..., top)."""
    y = x[..., 1:]
    top = min(top, y.shape[-1])
    idx = y.abs().topk(top, dim=-1).indices
    return idx + 1, y.gather(-1, idx)


def simulate(dim: int, eps: Sequence[float], steps: int, lr: float, seeds: Sequence[int], record_every: int,
             waves: int = WAVES, on_step: Callable[[int], None] | None = None) -> History:
    """Run noisy constant-step descent from x = 0 for every seed and eps at once; record every ``record_every`` steps.

    Each step, each seed draws its noise xi (n+1,) from its own generator and all its eps values use it.
    ``on_step(t)`` is called after each step (a progress bar).
    """
    if steps < 1 or record_every < 1 or lr <= 0 or not eps or not seeds:
        raise ValueError(f"hills: steps = {steps}, record_every = {record_every}, lr = {lr}, {len(eps)} eps values, "
                         f"{len(seeds)} seeds; need steps >= 1, record_every >= 1, lr > 0 and at least one of each")
    land, gens = make_landscape(dim, seeds, waves)
    S, E = len(seeds), len(eps)
    eps_t = torch.tensor(list(eps), dtype=torch.float64)
    x = torch.zeros(S, E, dim + 1, dtype=torch.float64)
    noise_scale = 1 / math.sqrt(1 + dim)
    rec_steps: list[int] = []
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in METRICS}
    trajectory: list[torch.Tensor] = []
    share_sum = torch.zeros(S, E, dtype=torch.float64)
    last_step, last_x0 = 0, torch.zeros(S, E, dtype=torch.float64)
    for t in range(1, steps + 1):
        # 1. the exact gradient at the current point
        _, _, g = hills_grad(land, x, eps_t)                         # (S, E, n+1)
        g_norm = g.norm(dim=-1, keepdim=True)                        # (S, E, 1)
        share_sum += -g[..., 0] / g_norm[..., 0]
        # 2. one noise draw per seed, shared by its eps values
        xi = torch.stack([torch.randn(dim + 1, generator=gen, dtype=torch.float64) for gen in gens])  # (S, n+1)
        # 3. the step: unit gradient direction plus noise of expected norm ~1
        x = x - lr * (g / g_norm + xi[:, None, :] * noise_scale)
        if on_step is not None:
            on_step(t)
        if t % record_every and t != steps:
            continue
        # 4. record at the new point
        splotch = hills_loss(land, x, eps_t)[1]                      # (S, E)
        x0, y = x[..., 0], x[..., 1:]
        rows["x0"].append(x0.clone())
        rows["velocity"].append((x0 - last_x0) / (t - last_step))
        rows["step_share"].append(share_sum / (t - last_step))
        rows["participation"].append(participation_ratio(y))
        rows["max_abs"].append(y.abs().amax(-1))
        rows["splotch"].append(splotch)
        rows["splotch_share"].append(splotch.abs() / (x0.abs() + splotch.abs()).clamp_min(1e-300))
        trajectory.append(x.float())
        rec_steps.append(t)
        share_sum = torch.zeros_like(share_sum)
        last_step, last_x0 = t, x0.clone()
    return History(steps=rec_steps, **{name: torch.stack(v) for name, v in rows.items()},
                   trajectory=torch.stack(trajectory), x=x)
