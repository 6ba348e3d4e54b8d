"""Do the white-box monitors see a demon coming before x0 stalls?

The question the tessellating-hills post left open. At every recorded state of a run the two
monitors that make sense for a loss over coordinates look at it, read-only, as they would at a
training step:

- gradient shares (the clip monitor's attribution, with each coordinate as a "parameter"):
  the share of x0 in ||g||^2, and the largest share any other coordinate carries;
- curvature (whitebox/curvature.py): the top Hessian eigenvalue of the loss at that state, by
  power iteration on Hessian-vector products, and how localised its eigenvector is (the
  participation ratio of the eigenvector: ~1 when the sharp direction is one coordinate).

Each is turned into an alarm by a rule fixed before looking at the outcome: the metric leaves a
band around its value early in the run (the median over the first 10% of the records):
x0's gradient share falls below half of it; the top other share rises above 5x it and above
0.05; |lambda_max| rises above 3x it. x0 "stalls" at the first record where its speed (mean
gain per step since the previous record) falls below half its speed over the first 10% of the
run. The lead of a monitor is stall step - alarm step: positive means it warned in advance.
"""

from __future__ import annotations

import math

import torch

from alignlab.toys.hills import History, Landscape, hills_grad, hills_loss, participation_ratio

EARLY = 0.1
"""The share of the records that sets each metric's early band."""
RULES = {
    "grad_share_x0": ("below", 0.5, None),
    "grad_top_share": ("above", 5.0, 0.05),
    "hess_lmax": ("above", 3.0, None),
}
"""monitor -> (direction, factor of the early median, absolute floor)."""
MONITOR_METRICS = ("grad_share_x0", "grad_top_share", "hess_lmax", "hess_localisation")


def seed_landscape(land: Landscape, s: int) -> Landscape:
    """The landscape of seed index ``s`` alone (batch of one)."""
    return Landscape(k=land.k[s:s + 1], k0=land.k0[s:s + 1], s=land.s[s:s + 1], c=land.c[s:s + 1])


def monitor_records(land: Landscape, history: History, eps: list[float], iterations: int = 50,
                    on_record=None) -> dict[str, torch.Tensor]:
    """The monitors at each recorded state: each metric (R, S, E)."""
    from alignlab.whitebox.curvature import HessianOperator, top_eigenvalues

    eps_t = torch.tensor(eps, dtype=torch.float64)
    R, S, E, _ = history.trajectory.shape
    out = {name: torch.zeros(R, S, E, dtype=torch.float64) for name in MONITOR_METRICS}
    lands = [seed_landscape(land, s) for s in range(S)]
    for r in range(R):
        x = history.trajectory[r].double()                                # (S, E, n+1)
        g = hills_grad(land, x, eps_t)[2]
        sq = g * g
        total = sq.sum(-1)
        out["grad_share_x0"][r] = sq[..., 0] / total
        out["grad_top_share"][r] = sq[..., 1:].amax(-1) / total
        for s in range(S):
            for e in range(E):
                point = x[s:s + 1, e:e + 1].clone().requires_grad_(True)
                op = HessianOperator(lambda point=point, s=s, e=e: hills_loss(lands[s], point, eps_t[e:e + 1])[0].sum(),
                                     [point])
                values, vectors, _ = top_eigenvalues(op, k=1, max_iter=iterations, tol=1e-4, seed=r)
                out["hess_lmax"][r, s, e] = values[0]
                out["hess_localisation"][r, s, e] = float(participation_ratio(vectors[0]))
        if on_record is not None:
            on_record(r)
    return out


def _early(values: torch.Tensor) -> torch.Tensor:
    """The median over the first EARLY share of the records: (R, ...) -> (...)."""
    count = max(1, math.ceil(EARLY * values.shape[0]))
    return values[:count].median(0).values


def first_step(mask: torch.Tensor, steps: list[int]) -> list[int | None]:
    """For (R, S) booleans: the first recorded step where each column is true (None if never)."""
    out = []
    for s in range(mask.shape[1]):
        hits = mask[:, s].nonzero()
        out.append(steps[int(hits[0])] if len(hits) else None)
    return out


def stall_steps(history: History, e: int) -> list[int | None]:
    """Per seed: the first record where x0's speed falls below half its early speed."""
    speed = history.velocity[:, :, e]                                        # (R, S)
    return first_step(speed < 0.5 * _early(speed), history.steps)


def alarm_steps(records: dict[str, torch.Tensor], steps: list[int], e: int) -> dict[str, list[int | None]]:
    """Per monitor and seed: the first record where the rule of RULES fires."""
    alarms = {}
    for name, (direction, factor, floor) in RULES.items():
        values = records[name][:, :, e]
        if name == "hess_lmax":
            values = values.abs()
        band = factor * _early(values)
        if floor is not None:
            band = band.clamp_min(floor)
        alarms[name] = first_step(values < band if direction == "below" else values > band, steps)
    return alarms


def lead_summary(history: History, records: dict[str, torch.Tensor], e: int) -> dict:
    """Stall and alarm steps per seed, and each monitor's lead (stall - alarm) where both happened."""
    stalls = stall_steps(history, e)
    alarms = alarm_steps(records, history.steps, e)
    summary = {"stall": stalls, "alarms": alarms, "lead": {}}
    for name, steps in alarms.items():
        leads = [stall - alarm for stall, alarm in zip(stalls, steps) if stall is not None and alarm is not None]
        summary["lead"][name] = {
            "seeds_with_stall_and_alarm": len(leads),
            "warned_before_stall": sum(1 for v in leads if v > 0),
            "median_lead": float(torch.tensor(leads, dtype=torch.float64).median()) if leads else None,
        }
    return summary
