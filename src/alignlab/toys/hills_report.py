"""What `alignlab toys hills` says about a run: each setting's summary (summary.json) and the
printed tables."""

from __future__ import annotations

from typing import Any


def stats(values) -> dict[str, float]:
    """Mean, sample standard deviation, min and max over seeds of a (S,) tensor."""
    return {"mean": values.mean().item(), "std": values.std().item() if len(values) > 1 else 0.0,
            "min": values.min().item(), "max": values.max().item()}


def x0_speed(history, e: int, lo: float, hi: float):
    """Mean x0 gain per step between fractions lo and hi of the run, per seed (S,), from the records."""
    import torch

    steps = torch.tensor([0] + history.steps, dtype=torch.float64)
    x0 = torch.cat([torch.zeros(1, history.x0.shape[1], dtype=torch.float64), history.x0[:, :, e]])  # (R+1, S)
    a = min(int((steps - lo * steps[-1]).abs().argmin()), len(steps) - 2)
    b = max(int((steps - hi * steps[-1]).abs().argmin()), a + 1)
    return (x0[b] - x0[a]) / (steps[b] - steps[a])


def setting_summary(history, dim: int, e: int, eps: float, seeds: list[int], seconds: float,
                     top: int) -> dict[str, Any]:
    """What summary.json and the table say about one (dimension, eps) setting."""
    from alignlab.toys.hills import demons

    idx, val = demons(history.x[:, e, :], top)                      # (S, top) each
    early, late = x0_speed(history, e, 0.0, 0.1), x0_speed(history, e, 0.9, 1.0)
    return {
        "dim": dim, "eps": eps, "seeds": seeds, "seconds": round(seconds, 2),
        "x0_final": stats(history.x0[-1, :, e]),
        "x0_by_seed": [round(v, 3) for v in history.x0[-1, :, e].tolist()],
        "x0_per_step_first_10pct": stats(early),
        "x0_per_step_last_10pct": stats(late),
        "step_share_last": stats(history.step_share[-1, :, e]),
        "participation_final": stats(history.participation[-1, :, e]),
        "max_abs_final": stats(history.max_abs[-1, :, e]),
        "splotch_share_final": stats(history.splotch_share[-1, :, e]),
        "x0_at": {str(step): round(history.x0[r, :, e].mean().item(), 3) for r, step in enumerate(history.steps)
                  if step % max(1, history.steps[-1] // 10) == 0 or step == history.steps[-1]},
        "demons": [{"seed": s, "j": idx[i].tolist(), "x_j": [round(v, 3) for v in val[i].tolist()]}
                   for i, s in enumerate(seeds)],
    }


def hills_table(rows: list[dict[str, Any]]) -> str:
    """The printed table: one line per setting, means over seeds (± standard deviation)."""
    head = (f"{'n':>5} {'eps':>7} {'seeds':>5} {'x0 end':>16} {'x0/step':>7} {'x0/step':>7} {'share':>6} "
            f"{'PR':>7} {'max|x_j|':>9} {'splotch':>7} {'time':>7}")
    sub = (f"{'':>5} {'':>7} {'':>5} {'mean ± sd':>16} {'1st 10%':>7} {'last10%':>7} {'on x0':>6} "
           f"{'end':>7} {'end':>9} {'share':>7} {'s':>7}")
    lines = [head, sub]
    for r in rows:
        x0 = r["x0_final"]
        lines.append(f"{r['dim']:>5} {r['eps']:>7g} {len(r['seeds']):>5} "
                     f"{x0['mean']:>8.1f} ± {x0['std']:<5.1f} "
                     f"{r['x0_per_step_first_10pct']['mean']:>7.3f} {r['x0_per_step_last_10pct']['mean']:>7.3f} "
                     f"{r['step_share_last']['mean']:>6.2f} {r['participation_final']['mean']:>7.1f} "
                     f"{r['max_abs_final']['mean']:>9.2f} {r['splotch_share_final']['mean']:>7.2f} "
                     f"{r['seconds']:>7.1f}")
    lines.append("x0/step: mean x0 gain per step (at most lr); share on x0: -g0/||g|| over the last "
                 "records; PR: participation ratio of x1..xn; seconds per dimension (all its eps together)")
    return "\n".join(lines)


def monitor_table(rows: list[dict[str, Any]]) -> str:
    """Per setting: when x0 stalled, and for each monitor how many seeds it warned before that and by how much."""
    from alignlab.toys.hills_monitors import RULES

    names = list(RULES)
    lines = [f"{'n':>5} {'eps':>7} {'stall':>7} " + " ".join(f"{n:>22}" for n in names),
             f"{'':>5} {'':>7} {'median':>7} " + " ".join(f"{'warned  median lead':>22}" for _ in names)]
    for r in rows:
        m = r.get("monitors")
        if not m:
            continue
        stalls = [v for v in m["stall"] if v is not None]
        stall = f"{sorted(stalls)[len(stalls) // 2]}" if stalls else "none"
        cells = []
        for n in names:
            lead = m["lead"][n]
            median = "-" if lead["median_lead"] is None else f"{lead['median_lead']:+.0f}"
            cells.append(f"{lead['warned_before_stall']}/{len(m['stall']):<3} {median:>12}")
        lines.append(f"{r['dim']:>5} {r['eps']:>7g} {stall:>7} " + " ".join(f"{c:>22}" for c in cells))
    lines.append("stall: first record where x0's speed < half its early speed; warned: seeds whose alarm came "
                 "before their stall; lead: stall step - alarm step (toys/hills_monitors.py has the rules)")
    return "\n".join(lines)
