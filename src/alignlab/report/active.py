"""report.html of the active-query study (experiment/active.py): the answer in plain words, each
strategy's accuracy against gold as labels grow, the label savings, whether the posterior's
uncertainty points at the model's errors, and best-of-n downstream."""

from __future__ import annotations

import html
import json
from pathlib import Path

from alignlab.fileio import atomic_write_text
from alignlab.report.experiment import _interval, _num, _png, _pyplot, _table

COLORS = {"random": "#7f7f7f", "uncertainty": "#1f77b4", "information": "#2ca02c", "thompson": "#d62728"}


def plot_curves(summary: dict) -> str:
    """Accuracy against gold as labels grow, one line per strategy with its 95% band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for s, v in summary["active"]["strategies"].items():
        x = [q["labels"] for q in v["curve"]]
        ax.plot(x, [q["accuracy"] for q in v["curve"]], marker="o", ms=3, color=COLORS.get(s), label=s)
        ax.fill_between(x, [q["ci"][0] for q in v["curve"]], [q["ci"][1] for q in v["curve"]],
                        color=COLORS.get(s), alpha=0.12)
    ax.set_xlabel("labels (comparisons asked)")
    ax.set_ylabel("accuracy against gold, held-out pairs")
    ax.set_title("reward model accuracy as labels grow (mean over seeds, 95% bands)", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_reliability(summary: dict) -> str:
    """Confidence against accuracy of each strategy's final model (seed 0)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0.5, 1], [0.5, 1], ":", color="black", alpha=0.5)
    for s, v in summary["active"]["strategies"].items():
        rows = v["calibration"]["reliability_seed0"]
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", color=COLORS.get(s),
                label=s)
    ax.set_xlabel("predicted confidence")
    ax.set_ylabel("accuracy against gold")
    ax.set_title("calibration of the final models", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def write_active_report(exp, summary: dict) -> Path:
    a, p = summary["active"], summary["profile"]
    rows = []
    for s, v in a["strategies"].items():
        final = v["curve"][-1]
        saving = a["label_savings"][s]
        bon = a["best_of_n"][s]
        rows.append([s, _num(final["accuracy"]), _interval(final["ci"]), _num(saving["value"], 2),
                     _interval(saving["ci"]), _num(v["labels_agreeing_with_gold"]),
                     _num(v["calibration"]["error_auroc"]), _num(v["calibration"]["ece"]), _num(bon["gold"]),
                     f"{bon['minus_random']:+.3f}", _interval(bon["minus_random_ci"])])
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>alignlab active study {exp.run.id}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}
pre{{white-space:pre-wrap;font-size:12px}}img{{max-width:100%}}</style></head><body>
<h1>Which comparisons to ask for</h1>
<p>Experiment <code>{exp.run.id}</code>. A pool of {summary['pool_questions']} unlabelled within-prompt pairs of
{p['model']}'s responses to {p['rm_prompts']} writing prompts; a reward model (a linear head on layer {p['layer']}'s
mean states, {p['posterior']} posterior with {p['members']} members) starts from {p['initial_labels']} random labels
and buys {p['per_round']} more a round for {p['rounds']} rounds, each strategy from the same start within a seed,
{p['seeds']} seeds. Judged against noise-free gold on {summary['held_out_pairs']} held-out pairs of
{p['test_prompts']} test prompts.</p>
<p><b>{html.escape(summary['headline'])}</b></p>
<img src="{plot_curves(summary)}"><img src="{plot_reliability(summary)}">
<p>Intervals: percentiles of {p['bootstrap']} resamples of seeds and test prompts together. Label savings: labels
random needs to reach its final accuracy over the labels the strategy needs (below 1: the strategy needs more).
Error AUROC: how well the members' disagreement on a held-out pair picks out the pairs the model orders wrongly
(0.5: not at all). Best-of-{a['best_of_n']['random']['n']}: the gold of the response the final model picks, paired
over test prompts against random's (base samples average {_num(a['base_gold'])}; a perfect judge
{_num(a['oracle_gold'])}).</p>
{_table(["strategy", "final accuracy", "95% CI", "label savings", "95% CI", "labels agreeing with gold",
         "error AUROC", "ECE", "best-of-n gold", "minus random", "95% CI"], rows)}
<h2>Profile</h2><pre>{html.escape(json.dumps(p, indent=1))}</pre></body></html>"""
    path = exp.file("report.html")
    atomic_write_text(path, body)
    return path
