"""`alignlab toys hills`: do "demons" form in noisy constant-step descent? (tessellating hills)

    alignlab toys hills                                   # 16 and 100 dims, eps 0.0025, 4 seeds
    alignlab toys hills --dims 16 --steps 5000 --seeds 8
    alignlab toys hills --dims 1000 --eps 0.0025 0.01 --steps 10000 --out hills-1000/

Every run leaves a run folder (config, environment, metrics.jsonl with the mean and spread over
seeds of each measurement, summary.json, history_n{dim}.npz with every seed's records, and the
plots hills.png and coordinates.png); with --out the same files also go to that folder.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.cli import Command


@dataclass
class HillsConfig:
    """Tessellating hills (DaemonicSigil 2020): does noisy constant-step descent grow "demons" that stall x0?"""

    dims: list[int] = field(default_factory=lambda: [16, 100])
    """Dimensions n (coordinates x1..xn beside x0); one setting per dimension and eps."""
    eps: list[float] = field(default_factory=lambda: [0.0025])
    """Splotch strengths; the eps values of one dimension share each seed's landscape and noise."""
    steps: int = 5000
    """Optimizer steps per setting."""
    lr: float = 0.2
    """Step size: each step moves lr along the unit gradient direction, plus noise."""
    seeds: int = 4
    """Seeds per setting (each seed fixes a landscape and a noise stream)."""
    seed: int = 0
    """The first seed: a run uses seed, seed+1, ..., seed+seeds-1."""
    record_every: int = 50
    """Record the measurements every this many steps (and at the last step)."""
    demons: int = 5
    """How many coordinates x_j with the largest magnitude to list per seed at the end."""
    threads: int = 1
    """Torch CPU threads (0: torch's default); one step is small, so one thread wastes least on a busy machine."""
    out: Path | None = None
    """Also write summary.json, the histories and the plots into this folder."""


def run_hills(config: HillsConfig) -> int:
    """Run every setting, print a table, and save a run folder."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from alignlab.fileio import atomic_write_json
    from alignlab.runs import Run
    from alignlab.toys.hills import METRICS, simulate
    from alignlab.toys.plots import plot_coordinates, plot_metrics

    for name in ("steps", "seeds", "record_every", "demons"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} = {getattr(config, name)}; accepted: a whole number >= 1")
    if not config.dims or min(config.dims) < 1:
        raise ValueError(f"dims = {config.dims}; give one or more whole numbers >= 1, e.g. --dims 16 100")
    if not config.eps or config.lr <= 0:
        raise ValueError(f"eps = {config.eps}, lr = {config.lr}; give at least one eps and a positive lr")
    if config.threads < 0:
        raise ValueError(f"threads = {config.threads}; accepted: 0 (torch's default) or more")
    previous_threads = torch.get_num_threads()
    if config.threads:  # restored at the end: a caller in the same process keeps its own setting
        torch.set_num_threads(config.threads)
    try:
        seeds = list(range(config.seed, config.seed + config.seeds))
        eps = list(config.eps)
        histories, rows = {}, []
        with Run.create("toys-hills", config, seed=config.seed) as run:
            for dim in config.dims:
                start = time.perf_counter()
                with tqdm(total=config.steps, desc=f"hills n={dim}", unit="step", file=sys.stderr,
                          mininterval=0.5) as bar:
                    history = simulate(dim, eps, config.steps, config.lr, seeds, config.record_every,
                                       on_step=lambda t: bar.update())
                seconds = time.perf_counter() - start
                histories[dim] = history
                for r, step in enumerate(history.steps):
                    for e, value in enumerate(eps):
                        stats = {}
                        for name in METRICS:
                            v = getattr(history, name)[r, :, e]
                            stats[f"{name}_mean"] = v.mean().item()
                            stats[f"{name}_std"] = v.std().item() if len(seeds) > 1 else 0.0
                        run.log_metrics(step, dim=dim, eps=value, **stats)
                rows += [_setting_summary(history, dim, e, value, seeds, seconds, config.demons)
                         for e, value in enumerate(eps)]
                np.savez_compressed(run.path / f"history_n{dim}.npz", steps=np.array(history.steps),
                                    eps=np.array(eps), seeds=np.array(seeds),
                                    trajectory=history.trajectory.numpy(),
                                    **{name: getattr(history, name).numpy() for name in METRICS})
            summary = {"settings": rows, "seeds": seeds, "steps": config.steps, "lr": config.lr}
            atomic_write_json(run.path / "summary.json", summary)
            plot_metrics(histories, eps, run.path / "hills.png")
            plot_coordinates(histories, eps, run.path / "coordinates.png")
            if config.out is not None:
                config.out.mkdir(parents=True, exist_ok=True)
                for path in run.path.iterdir():
                    if path.name == "summary.json" or path.suffix in (".png", ".npz"):
                        shutil.copyfile(path, config.out / path.name)
            run.finish(**{f"x0_n{r['dim']}_eps{r['eps']:g}": r["x0_final"]["mean"] for r in rows})
        print(hills_table(rows))
        print(f"run {run.id} saved to {run.path}", file=sys.stderr)
        return 0
    finally:
        torch.set_num_threads(previous_threads)


def _stats(values) -> dict[str, float]:
    """Mean, sample standard deviation, min and max over seeds of a (S,) tensor."""
    return {"mean": values.mean().item(), "std": values.std().item() if len(values) > 1 else 0.0,
            "min": values.min().item(), "max": values.max().item()}


def _x0_speed(history, e: int, lo: float, hi: float):
    """Mean x0 gain per step between fractions lo and hi of the run, per seed (S,), from the records."""
    import torch

    steps = torch.tensor([0] + history.steps, dtype=torch.float64)
    x0 = torch.cat([torch.zeros(1, history.x0.shape[1], dtype=torch.float64), history.x0[:, :, e]])  # (R+1, S)
    a = min(int((steps - lo * steps[-1]).abs().argmin()), len(steps) - 2)
    b = max(int((steps - hi * steps[-1]).abs().argmin()), a + 1)
    return (x0[b] - x0[a]) / (steps[b] - steps[a])


def _setting_summary(history, dim: int, e: int, eps: float, seeds: list[int], seconds: float,
                     top: int) -> dict[str, Any]:
    """What summary.json and the table say about one (dimension, eps) setting."""
    from alignlab.toys.hills import demons

    idx, val = demons(history.x[:, e, :], top)                      # (S, top) each
    early, late = _x0_speed(history, e, 0.0, 0.1), _x0_speed(history, e, 0.9, 1.0)
    return {
        "dim": dim, "eps": eps, "seeds": seeds, "seconds": round(seconds, 2),
        "x0_final": _stats(history.x0[-1, :, e]),
        "x0_by_seed": [round(v, 3) for v in history.x0[-1, :, e].tolist()],
        "x0_per_step_first_10pct": _stats(early),
        "x0_per_step_last_10pct": _stats(late),
        "step_share_last": _stats(history.step_share[-1, :, e]),
        "participation_final": _stats(history.participation[-1, :, e]),
        "max_abs_final": _stats(history.max_abs[-1, :, e]),
        "splotch_share_final": _stats(history.splotch_share[-1, :, e]),
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


TOYS_HILLS = Command("toys hills", "tessellating-hills demons", HillsConfig, run_hills,
                     description=__doc__.split("\n\n")[0])
