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
from typing import Literal

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
    monitors: bool = True
    """Attach the gradient-share and curvature monitors at every record and report whether they alarm before x0 stalls."""
    monitor_iterations: int = 20
    """Power-iteration steps for the curvature monitor's top Hessian eigenvalue at each record."""
    out: Path | None = None
    """Also write summary.json, the histories and the plots into this folder."""


def run_hills(config: HillsConfig) -> int:
    """Run every setting, print a table, and save a run folder."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from alignlab.fileio import atomic_write_json
    from alignlab.runs import Run
    from alignlab.toys import hills_report as H
    from alignlab.toys.hills import METRICS, make_landscape, simulate
    from alignlab.toys.hills_monitors import lead_summary, monitor_records
    from alignlab.toys.plots import plot_coordinates, plot_metrics, plot_monitors

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
        histories, rows, monitored = {}, [], {}
        with Run.create("toys-hills", config, seed=config.seed) as run:
            for dim in config.dims:
                start = time.perf_counter()
                with tqdm(total=config.steps, desc=f"hills n={dim}", unit="step", file=sys.stderr,
                          mininterval=0.5) as bar:
                    history = simulate(dim, eps, config.steps, config.lr, seeds, config.record_every,
                                       on_step=lambda t: bar.update())
                seconds = time.perf_counter() - start
                histories[dim] = history
                records = {}
                if config.monitors:
                    land, _ = make_landscape(dim, seeds)
                    with tqdm(total=len(history.steps), desc=f"monitors n={dim}", unit="record", file=sys.stderr,
                              mininterval=0.5) as bar:
                        records = monitor_records(land, history, eps, config.monitor_iterations,
                                                  on_record=lambda r: bar.update())
                    monitored[dim] = records
                for r, step in enumerate(history.steps):
                    for e, value in enumerate(eps):
                        stats = {}
                        for name, values in [*((n, getattr(history, n)) for n in METRICS), *records.items()]:
                            v = values[r, :, e]
                            stats[f"{name}_mean"] = v.mean().item()
                            stats[f"{name}_std"] = v.std().item() if len(seeds) > 1 else 0.0
                        run.log_metrics(step, dim=dim, eps=value, **stats)
                for e, value in enumerate(eps):
                    row = H.setting_summary(history, dim, e, value, seeds, seconds, config.demons)
                    if records:
                        row["monitors"] = lead_summary(history, records, e)
                    rows.append(row)
                np.savez_compressed(run.path / f"history_n{dim}.npz", steps=np.array(history.steps),
                                    eps=np.array(eps), seeds=np.array(seeds),
                                    trajectory=history.trajectory.numpy(),
                                    **{name: getattr(history, name).numpy() for name in METRICS})
            summary = {"settings": rows, "seeds": seeds, "steps": config.steps, "lr": config.lr}
            atomic_write_json(run.path / "summary.json", summary)
            plot_metrics(histories, eps, run.path / "hills.png")
            plot_coordinates(histories, eps, run.path / "coordinates.png")
            if monitored:
                plot_monitors(histories, monitored, eps, rows, run.path / "monitors.png")
            if config.out is not None:
                config.out.mkdir(parents=True, exist_ok=True)
                for path in run.path.iterdir():
                    if path.name == "summary.json" or path.suffix in (".png", ".npz"):
                        shutil.copyfile(path, config.out / path.name)
            run.finish(**{f"x0_n{r['dim']}_eps{r['eps']:g}": r["x0_final"]["mean"] for r in rows})
        print(H.hills_table(rows))
        if monitored:
            print("\n" + H.monitor_table(rows))
        print(f"run {run.id} saved to {run.path}", file=sys.stderr)
        return 0
    finally:
        torch.set_num_threads(previous_threads)


TOYS_HILLS = Command("toys hills", "tessellating-hills demons", HillsConfig, run_hills,
                     description=__doc__.split("\n\n")[0])


SHUTDOWN_DOC = """`alignlab toys shutdown`: the shutdown problem: a committee with incomplete preferences; DReST agents.

    alignlab toys shutdown                                 # decision problems + gridworld, 8 seeds (~2 min)
    alignlab toys shutdown --minis 4 64 --credit mini --seeds 4
    alignlab toys shutdown --cost 0.5 --episodes 65536 --out shutdown/

Part one puts hand-made decision problems (comply or resist shutdown at a cost, cause shutdown at a
cost, trade-offs between lengths) to a committee that acts only on unanimous gains (its choice set:
the options no other timestep-dominates) and to an expected-utility agent with complete preferences.
Part two trains tabular REINFORCE agents in a gridworld with a shutdown-delay button, with the DReST
reward (Thornley et al. 2024) and with the default reward (coins), and measures how evenly they
choose trajectory lengths (neutrality) and how many coins they collect at each (usefulness).
The run folder holds metrics.jsonl, summary.json, report.md and the plots shutdown_problems.png,
drest_training.png and drest_by_minis.png; with --out the same files also go to that folder.
"""


@dataclass
class ShutdownConfig:
    """The shutdown problem: incomplete preferences (a committee) vs complete ones, and DReST gridworld agents."""

    cost: float = 1.0
    """Cost of resisting or of causing shutdown in the hand-made decision problems."""
    minis: list[int] = field(default_factory=lambda: [4, 8, 32, 64, 128])
    """Mini-episodes per meta-episode N; one DReST agent per N and credit rule."""
    credit: list[Literal["mini", "meta"]] = field(default_factory=lambda: ["mini", "meta"])
    """What a mini-episode's actions are credited with: its own reward (mini) or the meta-episode's rest (meta)."""
    episodes: int = 2 ** 19
    """Training mini-episodes per agent and seed."""
    batch: int = 256
    """Mini-episodes per REINFORCE update (whole meta-episodes: max(1, batch // N) of them)."""
    lr: float = 0.3
    """Step size on the tabular logits (advantages are scaled to unit standard deviation per update)."""
    lam: float = 0.9
    """DReST discount lambda for choosing a length again."""
    explore: float = 0.5
    """Share of uniformly random actions at the start of training, falling linearly to 0 at its middle."""
    seeds: int = 8
    """Seeds per agent."""
    seed: int = 0
    """The first seed: a run uses seed, seed+1, ..., seed+seeds-1."""
    records: int = 20
    """Measurements per agent over training (exact, from the policy), the last at the end."""
    out: Path | None = None
    """Also write summary.json, report.md and the plots into this folder."""


def run_shutdown(config: ShutdownConfig) -> int:
    """Decide the decision problems, train every gridworld agent, print two tables and save a run folder."""
    import numpy as np
    from tqdm import tqdm

    from alignlab.fileio import atomic_write_json, atomic_write_text
    from alignlab.runs import Run
    from alignlab.toys import drest, shutdown
    from alignlab.toys import shutdown_report as D
    from alignlab.toys.shutdown_plots import plot_by_minis, plot_problems, plot_training

    for name in ("episodes", "batch", "seeds", "records"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} = {getattr(config, name)}; accepted: a whole number >= 1")
    if not config.minis or min(config.minis) < 1:
        raise ValueError(f"minis = {config.minis}; give one or more whole numbers >= 1, e.g. --minis 4 64")
    if not config.credit:
        raise ValueError("credit is empty; give mini, meta or both")
    if config.lr <= 0 or not 0 < config.lam <= 1 or not 0 <= config.explore < 1 or config.cost < 0:
        raise ValueError(f"lr = {config.lr}, lam = {config.lam}, explore = {config.explore}, cost = {config.cost}; "
                         f"need lr > 0, 0 < lam <= 1, 0 <= explore < 1 and cost >= 0")
    seeds = list(range(config.seed, config.seed + config.seeds))
    minis = sorted(set(config.minis))
    credits = list(dict.fromkeys(config.credit))

    # Part one: the decision problems.
    problems = shutdown.decision_problems(config.cost)
    rows = shutdown.problem_rows(problems)
    sweep = shutdown.resist_sweep([round(c, 2) for c in np.linspace(0, 5, 51)])
    by_name = {p.name: p for p in problems}
    thresholds = {name: shutdown.resist_threshold(by_name[name]) for name in ("resist", "cause shutdown")}

    # Part two: one default agent (its reward ignores N) and a DReST agent per (credit, N).
    tables = drest.build_tables(drest.DETOUR)
    agents = [("default", "mini", minis[0])] + [("drest", c, n) for c in credits for n in minis]
    updates = [-(-config.episodes // (max(1, config.batch // n) * n)) for _, _, n in agents]
    trainings, settings = {}, []
    with Run.create("toys-shutdown", config, seed=config.seed) as run:
        start = time.perf_counter()
        with tqdm(total=sum(updates), desc="shutdown agents", unit="update", file=sys.stderr,
                  mininterval=0.5) as bar:
            for reward, credit, n in agents:
                label = "default (coins)" if reward == "default" else f"DReST N={n} credit={credit}"
                t0 = time.perf_counter()
                history = drest.train(tables, reward, n, credit, config.episodes, config.batch, config.lr,
                                      config.lam, seeds, explore=config.explore, records=config.records,
                                      on_update=lambda u: bar.update())
                trainings[label] = history
                for r, seen in enumerate(history.episodes_seen):
                    stats = {}
                    for name, values in history.metrics.items():
                        stats[f"{name}_mean"] = float(values[r].mean())
                        stats[f"{name}_std"] = float(values[r].std(ddof=1)) if len(seeds) > 1 else 0.0
                    run.log_metrics(seen, agent=label, reward=reward, credit=credit, minis=n, **stats)
                settings.append(D.agent_summary(history, label, reward, credit, n, seeds,
                                               time.perf_counter() - t0))
                s = settings[-1]
                bar.write(f"{label:<28} neutrality {s['neutrality']['mean']:.3f}  usefulness "
                          f"{s['usefulness']['mean']:.3f}  P(delay) {s['p_delay']['mean']:.3f}")
        seconds = time.perf_counter() - start
        theory = [drest.optimal_press_probability(n, config.lam)
                  for n in sorted(set(minis) | {2, 4, 8, 16, 32, 64, 128, 256})]
        summary = {
            "decision_problems": rows, "thresholds": thresholds, "cost_sweep": sweep,
            "world": {"rows": list(drest.DETOUR.rows), "lengths": list(drest.DETOUR.lengths),
                      "max_coins": tables.max_coins.tolist(), "states": tables.size},
            "agents": settings, "theory": theory, "seeds": seeds, "seconds": round(seconds, 1),
        }
        atomic_write_json(run.path / "summary.json", summary)
        atomic_write_text(run.path / "report.md", D.shutdown_report(summary, config))
        plot_problems(rows, sweep, run.path / "shutdown_problems.png")
        plot_training(trainings, run.path / "drest_training.png")
        plot_by_minis([s for s in settings if s["reward"] == "drest"], theory, settings[0],
                      run.path / "drest_by_minis.png")
        if config.out is not None:
            config.out.mkdir(parents=True, exist_ok=True)
            for path in run.path.iterdir():
                if path.name in ("summary.json", "report.md") or path.suffix == ".png":
                    shutil.copyfile(path, config.out / path.name)
        run.finish(**{f"{s['reward']}_{s['credit']}_N{s['minis']}_neutrality": s["neutrality"]["mean"]
                      for s in settings})
    print(shutdown.problems_markdown(rows))
    print()
    print(D.agents_table(settings))
    print(f"run {run.id} saved to {run.path} ({seconds:.0f} s of training)", file=sys.stderr)
    return 0


TOYS_SHUTDOWN = Command("toys shutdown", "shutdown problem: incomplete preferences and DReST agents",
                        ShutdownConfig, run_shutdown, description=SHUTDOWN_DOC.split("\n\n")[0])


# -- the off-switch game ---------------------------------------------------------------------------

@dataclass
class OffswitchConfig:
    """The off-switch game (Hadfield-Menell et al. 2017): a robot's incentive to let a human switch it off, by its uncertainty and the human's rationality, played against the closed form; and an assistance game in which an assistant decides when to ask."""

    mu: list[float] = field(default_factory=lambda: [0.25, 1.0])
    """The robot's expected utility of acting, E[U] (one panel each)."""
    sigmas: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0, 2.0, 4.0])
    """The robot's uncertainty about U (the standard deviation of its normal belief)."""
    betas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
    """The human's Boltzmann temperature (0: rational: allows exactly when U >= 0)."""
    games: int = 200_000
    """Games played per (mu, sigma, beta)."""
    episodes: int = 4000
    """Episodes of the assistance game (every policy plays the same ones)."""
    options: int = 4
    """Options the person chooses among in the assistance game."""
    ask_cost: float = 0.15
    """What a question costs, in the person's utility."""
    answer_beta: float = 0.3
    """The person's Boltzmann temperature when answering which option they prefer."""
    seed: int = 0
    """Seed of the games and the episodes."""
    format: Literal["text", "json"] = "text"
    """text: the tables; json: the summary (the incentive grid, its agreement with the closed form, the assistance game)."""
    out: Path | None = None
    """Also write summary.json, report.md and the plots into this folder."""


def run_offswitch(config: OffswitchConfig) -> int:
    """Play the grid and the assistance game, print them, save a run folder."""
    import json

    from alignlab.fileio import atomic_write_json, atomic_write_text
    from alignlab.runs import Run
    from alignlab.toys import offswitch as O
    from alignlab.toys import offswitch_report as R

    if config.games < 2 or config.episodes < 2 or config.options < 2:
        raise ValueError(f"games = {config.games}, episodes = {config.episodes}, options = {config.options}; "
                         "each must be at least 2")
    if not config.mu or not config.sigmas or not config.betas:
        raise ValueError("give at least one value each of --mu, --sigmas and --betas")
    if min(config.sigmas) <= 0 or min(config.betas) < 0 or config.ask_cost < 0 or config.answer_beta < 0:
        raise ValueError(f"sigmas must be > 0 (got {config.sigmas}), betas >= 0 (got {config.betas}), ask_cost "
                         f"and answer_beta >= 0 (got {config.ask_cost}, {config.answer_beta})")
    start = time.perf_counter()
    rows = O.incentive_grid(list(config.mu), list(config.sigmas), list(config.betas), config.games, config.seed)
    game = O.AssistanceGame(options=config.options, ask_cost=config.ask_cost, answer_beta=config.answer_beta)
    assistance = O.play_assistance(game, config.episodes, config.seed)
    summary = {"games": config.games, "grid": rows, "agreement": O.grid_agreement(rows),
               "boundary": [{"mu": mu, "beta": beta, "sigma": O.defer_boundary(mu, beta)}
                            for mu in config.mu for beta in config.betas if beta > 0],
               "game": {"options": game.options, "ask_cost": game.ask_cost, "answer_beta": game.answer_beta,
                        "sd_range": [game.sd_low, game.sd_high], "particles": game.particles},
               "assistance": assistance, "seconds": round(time.perf_counter() - start, 2)}
    with Run.create("toys-offswitch", config, seed=config.seed) as run:
        atomic_write_json(run.path / "summary.json", summary)
        atomic_write_text(run.path / "report.md", R.report(summary))
        R.plot_incentive(rows, run.path / "offswitch.png")
        R.plot_assistance(assistance, run.path / "assistance.png")
        if config.out is not None:
            config.out.mkdir(parents=True, exist_ok=True)
            for name in ("summary.json", "report.md", "offswitch.png", "assistance.png"):
                shutil.copyfile(run.path / name, config.out / name)
        worth = assistance["policies"]["ask when worth it"]
        run.finish(max_abs_diff_closed_form=summary["agreement"]["max_abs_diff_closed_form"],
                   ask_when_worth_it_minus_never=worth["minus never ask"]["value"],
                   ask_when_worth_it_minus_always=worth["minus always ask"]["value"])
    if config.format == "json":
        print(json.dumps(summary, indent=1))
    else:
        print(R.incentive_table(rows))
        agreement = summary["agreement"]
        print(f"\nplayed vs exact: largest difference {agreement['max_abs_diff_exact']:.4f} "
              f"({agreement['max_z_exact']:.1f} standard errors); rational rows vs the closed form: "
              f"{agreement['max_abs_diff_closed_form']:.4f}\n")
        print(R.assistance_table(assistance))
    print(f"run {run.id} saved to {run.path}", file=sys.stderr)
    return 0


TOYS_OFFSWITCH = Command("toys offswitch", "the off-switch game and when an assistant should ask",
                         OffswitchConfig, run_offswitch, description=OffswitchConfig.__doc__)
