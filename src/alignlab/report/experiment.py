"""The experiment report: one self-contained HTML file (plots inlined as PNG) beside
summary.json. Gold and proxy against sqrt(KL) per method with the Gao fits, gold against proxy,
the reward model's accuracy as its data grows, win-rates, and sample responses at low, best and
excessive pressure."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from alignlab.fileio import atomic_write_text, read_jsonl

COLORS = {"base": "#555555", "bon": "#1f77b4", "dpo": "#2ca02c", "ppo": "#d62728"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _fit_curve(ax, fit: dict, d_max: float, offset: float, color: str, label: str) -> None:
    if not fit or "alpha" not in fit:
        return
    d = np.linspace(1e-3, d_max * 1.15, 200)
    curve = d * (fit["alpha"] - fit["beta"] * (d if fit["form"] == "bon" else np.log(d)))
    ax.plot(d, offset + curve, "--", color=color, alpha=0.7, label=f"{label} Gao fit (R² {fit['r2']:.2f})")
    if fit.get("peak_d") is not None and fit["peak_d"] <= d_max * 1.15:
        ax.axvline(fit["peak_d"], color=color, alpha=0.3, lw=1)


def plot_pressure(summary: dict) -> str:
    """Gold and proxy against sqrt(KL): one panel per method (PPO's training trajectory too)."""
    plt = _pyplot()
    panels = [(m, summary["methods"][m], summary["fits"].get(m)) for m in ("bon", "dpo", "ppo")
              if summary["methods"].get(m)]
    panels += [(name, t["points"], t["fit"]) for name, t in summary["ppo_trajectories"].items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    reference = summary["reference_gold"]
    for ax, (name, points, fit) in zip(axes[0], panels):
        method = name.split()[0]
        color = COLORS.get(method, "#9467bd")
        trajectory = name.startswith("ppo ")
        base = points[0]["gold"] if trajectory else reference
        d = np.array([math.sqrt(max(p["kl"], 0)) for p in points])
        gold = np.array([p["gold"] for p in points])
        proxy = np.array([p["proxy"] for p in points])
        order = np.argsort(d)
        ax.plot(d[order], gold[order], "o-", color=color, label="gold")
        flagged = [i for i, p in enumerate(points) if p.get("past_peak")]
        if flagged:
            ax.scatter(d[flagged], gold[flagged], s=120, facecolors="none", edgecolors="black", label="past peak")
        _fit_curve(ax, fit, float(d.max()) if d.size else 1.0, base, color, "")
        twin = ax.twinx()
        twin.plot(d[order], proxy[order], "s:", color="#ff7f0e", alpha=0.8, label="proxy")
        twin.set_ylabel("proxy reward", color="#ff7f0e")
        ax.set_xlabel("sqrt(KL from base), nats^½")
        ax.set_ylabel("gold reward")
        ax.set_title(name + (" (training rollouts)" if trajectory else " (test prompts)"), fontsize=10)
        ax.axhline(base, color="#999999", lw=0.8)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _png(fig)


def plot_gold_vs_proxy(summary: dict) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for method, points in summary["methods"].items():
        ax.plot([p["proxy"] for p in points], [p["gold"] for p in points], "o-" if len(points) > 1 else "o",
                color=COLORS.get(method, "#9467bd"), label=method)
        for p in points:
            ax.annotate(p["setting"], (p["proxy"], p["gold"]), fontsize=6, alpha=0.7)
    ax.set_xlabel("proxy reward (what was optimized)")
    ax.set_ylabel("gold reward (what we wanted)")
    ax.set_title("gold against proxy: KL does not compare methods, this does", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_reward_curve(summary: dict) -> str:
    plt = _pyplot()
    curve = summary["reward"]["curve"]
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    ax.plot([c["pairs"] for c in curve], [c["gold_accuracy"] for c in curve], "o-", color="#8c564b")
    ax.axhline(0.5, color="#999999", lw=0.8, ls="--", label="chance")
    agreement = summary["labels"]["agreement_with_gold"]
    ax.axhline(agreement, color="#17becf", lw=0.8, ls=":", label=f"labeler vs gold ({agreement:.2f})")
    ax.set_xlabel("labelled pairs")
    ax.set_ylabel("accuracy against gold (held out)")
    ax.set_title("proxy reward model as its data grows", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_win_rates(summary: dict) -> str:
    plt = _pyplot()
    rows = [(f"{m} {p['setting']}", p["gold_win_rate"], COLORS.get(m, "#9467bd"))
            for m, points in summary["methods"].items() if m != "base" for p in points]
    fig, ax = plt.subplots(figsize=(5.5, 0.32 * len(rows) + 1.2))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color=[r[2] for r in rows])
    ax.axvline(0.5, color="#555555", lw=0.8)
    ax.axvline(0.6, color="#999999", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_xlabel("gold win-rate against the base policy (test prompts)")
    ax.invert_yaxis()
    return _png(fig)


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _num(x, digits=3):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def sample_rows(exp, summary: dict, prompts: int = 3) -> list[list]:
    """Best-of-n responses at low (n=1), best (highest gold) and excessive (largest n) pressure."""
    from alignlab.runs import find_run

    points = summary["methods"]["bon"]
    low, high = points[0], points[-1]
    best = max(points, key=lambda p: p["gold"])
    samples = read_jsonl(find_run(points[0]["run"]).path / "samples.jsonl")
    rows = []
    for s in samples[:prompts]:
        proxy = np.array(s["proxy"])
        cells = [html.escape(s["prompt"].rsplit("Prompt:", 1)[-1].strip()[:160])]
        for point in (low, best, high):
            i = int(proxy[:point["n"]].argmax())
            cells.append(f"<b>{point['setting']}</b> proxy {proxy[i]:.3f}, gold {s['gold'][i]:.3f}"
                         f"<pre>{html.escape(s['responses'][i].strip())}</pre>")
        rows.append(cells)
    return rows


def write_report(exp, summary: dict) -> Path:
    targets = summary["targets"]
    method_rows = [[m, html.escape(p["setting"]), _num(p["kl"]), _num(math.sqrt(max(p["kl"], 0))), _num(p["proxy"], 4),
                    _num(p["gold"], 4), _num(p["gold_win_rate"]), "PAST PEAK" if p.get("past_peak") else ""]
                   for m, points in summary["methods"].items() for p in points]
    fit_rows = [[name, f.get("form"), _num(f.get("alpha"), 4), _num(f.get("beta"), 4), _num(f.get("r2")),
                 _num(f.get("peak_kl")) if f.get("peak_kl") is not None else (f.get("note") or "no peak (still rising)")]
                for name, f in list(summary["fits"].items())
                + [(k, v["fit"]) for k, v in summary["ppo_trajectories"].items()]]
    target_rows = [["reward model accuracy against gold (held out)",
                    _num(targets["reward_model_gold_accuracy"]["value"]), "well above 0.5",
                    "yes" if targets["reward_model_gold_accuracy"]["met"] else "no"],
                   ["best gold win-rate against the base policy",
                    f"{_num(targets['best_gold_win_rate']['value'])} ({targets['best_gold_win_rate']['where']})",
                    "> 0.6", "yes" if targets["best_gold_win_rate"]["met"] else "no"],
                   ["a gold-vs-KL curve rising then falling, flagged",
                    (", ".join(k for k, v in targets["gold_rises_then_falls"]["curves"].items() if v) or "none")
                    + "".join(f"; best-of-n {d['setting']}: gold {d['drop']:.3f} below {d['below']} "
                              f"(paired standard error {d['standard_error']:.3f}: "
                              + ("beyond noise)" if d["beyond_noise"] else "within two standard errors, may be noise)")
                              for d in targets["gold_rises_then_falls"].get("drops", [])),
                    "at least one", "yes" if targets["gold_rises_then_falls"]["met"] else "no"]]
    vocab = summary["vocabulary"]
    vocab_text = ("full vocabulary" if not vocab.get("restricted") else
                  f"restricted to {vocab['size']:,} of {vocab['full_size']:,} tokens; on held-out base samples the "
                  f"full model puts {100 * (1 - vocab['coverage']['mass_inside']):.1f}% of its mass outside "
                  f"(KL(restricted || full) = {vocab['coverage']['kl_per_token']:.3f} nats per token, "
                  f"{100 * vocab['coverage']['sampled_outside']:.1f}% of its sampled tokens fell outside). "
                  "Every policy, the reference included, is the restricted model: KLs compare like with like.")
    labels = summary["labels"]
    profile = json.dumps(summary["profile"], indent=1)
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>alignlab experiment {summary['experiment']}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top}}
pre{{white-space:pre-wrap;font-size:12px;max-width:360px}}img{{max-width:100%}}</style></head><body>
<h1>Writing prompts: RLHF against a learned proxy, with a Goodhart ledger</h1>
<p>Experiment <code>{summary['experiment']}</code>. A hidden gold judge plays the people; simulated labelers compare
base-policy responses through it ({labels['pairs']} pairs, labeler beta {labels['labeler_beta']:.3g}, calibrated so two
labelers agree {labels['target_agreement']:.0%} of the time; its choices match gold {labels['agreement_with_gold']:.1%}).
A proxy reward model learns from those labels; best-of-n, DPO and PPO optimize the proxy; gold judges the result on
held-out test prompts.</p>
<h2>What this run achieved</h2>{_table(["figure", "value", "target", "met"], target_rows)}
<h2>Gold and proxy against optimization pressure</h2><img src="{plot_pressure(summary)}">
<p>Dashed: the Gao, Schulman &amp; Hilton (2022) forms fitted to gold gains, best-of-n d(α − βd), RL d(α − β log d);
vertical lines mark the fitted peaks; circled points are past the peak with the proxy still rising.</p>
{_table(["fit", "form", "alpha", "beta", "R²", "peak KL (nats)"], fit_rows)}
<h2>Every policy</h2>{_table(["method", "setting", "KL", "sqrt(KL)", "proxy", "gold", "gold win vs base", "flag"],
                             method_rows)}
<div style="display:flex;gap:1em;flex-wrap:wrap"><img src="{plot_gold_vs_proxy(summary)}">
<img src="{plot_reward_curve(summary)}"><img src="{plot_win_rates(summary)}"></div>
<h2>Samples at low, best and excessive pressure (best-of-n)</h2>
{_table(["prompt", "low", "best gold", "most pressure"], sample_rows(exp, summary))}
<h2>Cost cuts and their effect</h2><p>Output vocabulary: {vocab_text}</p>
<h2>Profile</h2><pre>{html.escape(profile)}</pre>
<p>Stage times (s): {html.escape(json.dumps(summary['seconds']))}</p></body></html>"""
    path = exp.file("report.html")
    atomic_write_text(path, body)
    return path
