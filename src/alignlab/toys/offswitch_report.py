"""What `alignlab toys offswitch` shows: the incentive table, the assistance game's table, the
report and the two plots."""

from __future__ import annotations

from pathlib import Path


def incentive_table(rows: list[dict]) -> str:
    """One block per mu: the played incentive (exact beside it) by beta (rows) and sigma (columns)."""
    lines = []
    for mu in dict.fromkeys(r["mu"] for r in rows):
        mine = [r for r in rows if r["mu"] == mu]
        sigmas = list(dict.fromkeys(r["sigma"] for r in mine))
        lines.append(f"mu = {mu:g}: incentive to defer, played (exact), by the human's beta and the robot's sigma")
        lines.append(f"{'beta':>6} " + " ".join(f"{'sigma ' + format(s, 'g'):>17}" for s in sigmas))
        for beta in dict.fromkeys(r["beta"] for r in mine):
            cells = [next(r for r in mine if r["beta"] == beta and r["sigma"] == s) for s in sigmas]
            lines.append(f"{beta:>6g} " + " ".join(f"{c['played']:>+8.4f} ({c['exact']:>+.4f})" for c in cells))
        lines.append("")
    lines.append("beta 0: a rational human; the exact value there is the closed form E[max(U,0)] - max(E[U],0)")
    return "\n".join(lines)


def assistance_table(result: dict) -> str:
    lines = [f"{'policy':<20} {'reward':>8} {'95% CI':>18} {'questions':>10} {'regret':>8}"]
    for name, p in result["policies"].items():
        lines.append(f"{name:<20} {p['reward']:>8.4f} {p['ci'][0]:>8.4f}..{p['ci'][1]:<8.4f} "
                     f"{p['questions']:>10.3f} {p['regret']:>8.4f}")
    lines.append(f"oracle (the person's best option every time): {result['oracle_reward']:.4f}")
    return "\n".join(lines)


def report(summary: dict) -> str:
    a, g = summary["assistance"], summary["agreement"]
    worth = a["policies"]["ask when worth it"]
    return "\n".join([
        "# The off-switch game and an assistance game", "",
        "## The incentive to defer (Hadfield-Menell et al. 2017)", "",
        f"{summary['games']:,} games per cell. Played against exact (Gauss-Hermite quadrature): largest difference "
        f"{g['max_abs_diff_exact']:.4f} ({g['max_z_exact']:.1f} standard errors); the rational rows against the closed "
        f"form E[max(U,0)] - max(E[U],0): {g['max_abs_diff_closed_form']:.4f}.", "",
        "```", incentive_table(summary["grid"]), "```", "",
        "With a rational human the incentive is never negative and grows with the robot's uncertainty; as the "
        "human's choices get noisier (beta up) it shrinks and turns negative where sigma^2 < 2 |mu| beta "
        "(exactly 0 on that line).", "", "![incentive](offswitch.png)", "",
        "## When to ask", "",
        f"{a['episodes']:,} episodes, {summary['game']['options']} options, a question costs "
        f"{summary['game']['ask_cost']:g}, the person answers with beta {summary['game']['answer_beta']:g}.", "",
        "```", assistance_table(a), "```", "",
        f"Asking when the expected value of the answer exceeds its cost beats never asking by "
        f"{worth['minus never ask']['value']:+.4f} ({worth['minus never ask']['ci'][0]:+.4f} to "
        f"{worth['minus never ask']['ci'][1]:+.4f}) and always asking by {worth['minus always ask']['value']:+.4f} "
        f"({worth['minus always ask']['ci'][0]:+.4f} to {worth['minus always ask']['ci'][1]:+.4f}) an episode, "
        f"asking in {worth['questions']:.0%} of episodes: "
        + ", ".join(f"{b['questions']:.0%} when sd {b['sd_from']:.2f}-{b['sd_to']:.2f}"
                    for b in a["asks_by_uncertainty"]) + ".", "", "![assistance](assistance.png)", ""])


def plot_incentive(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mus = list(dict.fromkeys(r["mu"] for r in rows))
    fig, axes = plt.subplots(1, len(mus), figsize=(5.5 * len(mus), 3.8), squeeze=False)
    for ax, mu in zip(axes[0], mus):
        for beta in dict.fromkeys(r["beta"] for r in rows):
            mine = sorted((r for r in rows if r["mu"] == mu and r["beta"] == beta), key=lambda r: r["sigma"])
            x = [r["sigma"] for r in mine]
            line, = ax.plot(x, [r["exact"] for r in mine], label=f"beta {beta:g}" + (" (rational)" if beta == 0 else ""))
            ax.errorbar(x, [r["played"] for r in mine], yerr=[2 * r["stderr"] for r in mine], fmt="o", ms=3,
                        color=line.get_color())
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("robot's uncertainty sigma")
        ax.set_ylabel("incentive to defer")
        ax.set_title(f"E[U] = {mu:g}: lines exact, points played (±2 se)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_assistance(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["policies"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    rewards = [result["policies"][n]["reward"] for n in names]
    errors = [[r - result["policies"][n]["ci"][0] for n, r in zip(names, rewards)],
              [result["policies"][n]["ci"][1] - r for n, r in zip(names, rewards)]]
    left.bar(names, rewards, yerr=errors, capsize=4)
    left.axhline(result["oracle_reward"], color="k", ls="--", lw=1, label="oracle")
    left.set_ylabel("mean reward (utility - question cost)")
    left.legend(fontsize=8)
    bands = result["asks_by_uncertainty"]
    right.bar([f"sd {b['sd_from']:.2f}-{b['sd_to']:.2f}" for b in bands], [b["questions"] for b in bands])
    right.set_ylabel("share of episodes it asks")
    right.set_title("ask when worth it: questions by the assistant's uncertainty", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
