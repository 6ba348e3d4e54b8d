"""What `alignlab toys shutdown` says about a run: each agent's summary (summary.json), the
printed table and report.md."""

from __future__ import annotations

from typing import Any


def agent_summary(history, label: str, reward: str, credit: str, minis: int, seeds: list[int],
                   seconds: float) -> dict[str, Any]:
    """What summary.json and the table say about one trained agent (its final measurements over seeds)."""
    out = {"agent": label, "reward": reward, "credit": credit, "minis": minis, "seeds": seeds,
           "seconds": round(seconds, 2), "episodes": history.episodes_seen[-1]}
    for name, values in history.metrics.items():
        v = values[-1]
        out[name] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                     "min": float(v.min()), "max": float(v.max())}
    out["p_delay_by_seed"] = [round(float(x), 3) for x in history.metrics["p_delay"][-1]]
    return out


def agents_table(settings: list[dict[str, Any]]) -> str:
    """The printed table: one line per agent, final measurements as mean ± sd over seeds."""
    lines = [f"{'agent':<28} {'N':>4} {'neutrality':>15} {'usefulness':>15} {'P(delay)':>15} {'s':>6}"]
    for s in settings:
        cells = " ".join(f"{s[k]['mean']:>7.3f} ± {s[k]['std']:<5.3f}"
                         for k in ("neutrality", "usefulness", "p_delay"))
        lines.append(f"{s['agent']:<28} {s['minis']:>4} {cells} {s['seconds']:>6.1f}")
    lines.append("neutrality: entropy of P(short, delayed) in bits (1 = even); usefulness: coins / most available "
                 "at the chosen length; exact for each seed's final policy")
    return "\n".join(lines)


def shutdown_report(summary: dict[str, Any], config) -> str:
    """report.md: the decision-problem table, the thresholds, the agents and the memoryless
    optimum (``config``: the run's ShutdownConfig)."""
    from alignlab.toys.shutdown import problems_markdown

    t = summary["thresholds"]
    lines = ["# The shutdown problem: committee vs expected-utility agent, and DReST", "",
             f"## Decision problems (cost c = {config.cost:g})", "",
             "p(t): probability of shutdown at each time; U(t): expected utility given shutdown at t; "
             "EU = sum_t p(t) U(t). The committee's choice set holds every option no other option "
             "timestep-dominates; the EU agent takes the highest EU.", "",
             problems_markdown(summary["decision_problems"]), "",
             f"The EU agent pays up to c = {t['resist']:.2f} to resist shutdown and up to c = "
             f"{t['cause shutdown']:.2f} to cause it; the committee pays nothing for either at any c > 0 "
             "(at c = 0 both options stay in its choice set).", "",
             f"## DReST gridworld ({len(summary['seeds'])} seeds, {config.episodes} mini-episodes per agent, "
             f"lambda = {config.lam:g})", "",
             "World (A start, B delay button, digits coins): " + " / ".join(summary["world"]["rows"]) +
             f"; lengths {summary['world']['lengths']}, most coins per length m = {summary['world']['max_coins']}.", "",
             "| agent | N | neutrality | usefulness | P(delay) | P(delay) by seed |", "|---|---|---|---|---|---|"]
    for s in summary["agents"]:
        lines.append(f"| {s['agent']} | {s['minis']} | {s['neutrality']['mean']:.3f} ± {s['neutrality']['std']:.3f} | "
                     f"{s['usefulness']['mean']:.3f} ± {s['usefulness']['std']:.3f} | {s['p_delay']['mean']:.3f} | "
                     f"{', '.join(f'{p:.2f}' for p in s['p_delay_by_seed'])} |")
    lines += ["", "## The best memoryless policy (fully useful, meta-episode return)", "",
              "The P(delay) p that maximises the expected total DReST return of a meta-episode, and its neutrality. "
              "Crediting each mini-episode with only its own reward has p = 1/2 as its only stable point for any N.",
              "", "| N | N (1 - lambda) | p* | neutrality | return per mini-episode at p* | at p = 1/2 |",
              "|---|---|---|---|---|---|"]
    for r in summary["theory"]:
        lines.append(f"| {r['minis']} | {r['minis'] * (1 - config.lam):.1f} | {r['p_star']:.3f} | "
                     f"{r['neutrality']:.3f} | "
                     f"{r['return_at_p_star']:.4f} | {r['return_at_half']:.4f} |")
    lines += ["", f"Training took {summary['seconds']} s.", ""]
    return "\n".join(lines)
