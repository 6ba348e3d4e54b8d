"""report.html of the process-supervision study (experiment/process.py): the answer in plain
words, best-of-n gold and pair accuracy against the labelling budget for each supervision, the
process model's step judgements on a few test chains, and the decomposition measurement."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from alignlab.fileio import atomic_write_text
from alignlab.report.experiment import _interval, _num, _png, _pyplot, _table

COLORS = {"process": "#1f77b4", "outcome": "#d62728"}


def _by_budget(points: list[dict], supervision: str, key: str) -> tuple[list[float], list[float], list[float]]:
    """Budgets, the mean over seeds of ``key``, and the 95% half-width of that mean across seeds."""
    budgets = sorted({q["budget"] for q in points})
    means, halves = [], []
    for b in budgets:
        values = [q[key] for q in points if q["budget"] == b and q["supervision"] == supervision
                  and not math.isnan(q[key])]
        mean = sum(values) / len(values) if values else math.nan
        sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        means.append(mean), halves.append(1.96 * sd / math.sqrt(len(values)) if values else 0.0)
    return budgets, means, halves


def plot_budget(summary: dict) -> str:
    """Best-of-n gold and pair accuracy against the budget, process and outcome, mean over seeds
    with 95% bars across seeds."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    points = summary["process_vs_outcome"]
    for ax, key, title in ((axes[0], "bon_gold", f"gold outcome of best-of-{summary['bon_n']}"),
                           (axes[1], "rm_accuracy", "pair accuracy against gold (test chains)")):
        for s, color in COLORS.items():
            x, y, e = _by_budget(points, s, key)
            ax.errorbar(x, y, yerr=e, marker="o", color=color, capsize=3, label=f"{s} supervision")
        if key == "bon_gold":
            ax.axhline(summary["base_gold"], color="gray", ls=":", label="base (n = 1)")
            ax.axhline(summary["oracle_gold"], color="black", ls="--", alpha=0.5, label="perfect judge")
        ax.set_xscale("log")
        ax.set_xlabel("labelling budget (cost units)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    return _png(fig)


def plot_bon_curve(summary: dict) -> str:
    """Gold outcome of best-of-n against n at the largest budget (mean over seeds)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    for s, color in COLORS.items():
        curves = [q["bon_curve"] for q in summary["process_vs_outcome"] if q["supervision"] == s and q.get("bon_curve")]
        if curves:
            ns = [c["n"] for c in curves[0]]
            ax.plot(ns, [sum(c[k]["gold"] for c in curves) / len(curves) for k in range(len(ns))], marker="o",
                    color=color, label=s)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n")
    ax.set_ylabel("gold outcome")
    ax.set_title("best-of-n at the largest budget", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def _example_rows(examples: list[dict]) -> list[list]:
    rows = []
    for e in examples:
        cells = "".join(
            f"<div style='background:{'#e6f4ea' if g else '#fce8e6'}'>{html.escape(step.rstrip())} "
            f"<small>gold {'right' if g else 'wrong'}, P(right) {p:.2f}</small></div>"
            for step, g, p in zip(e["steps"], e["gold"], e["p_right"]))
        rows.append([str(e["prompt_index"]), "right" if e["outcome"] else "wrong", cells])
    return rows


def _policy_words(summary: dict) -> str:
    policy = summary.get("policy") or {}
    if policy.get("sft"):
        return (f"{summary['profile']['model']} fine-tuned on {policy.get('demos')} worked solutions of other chains "
                f"(run {policy['sft']})")
    return f"{summary['profile']['model']}, as it is"


def write_process_report(exp, summary: dict) -> Path:
    comparison = [[_num(c["budget"], 0), _num(c["process_bon_gold"]), _num(c["outcome_bon_gold"]),
                   f"{c['process_minus_outcome']:+.3f}", _interval(c["process_minus_outcome_ci"]),
                   _num(c["process_rm_accuracy"]), _num(c["outcome_rm_accuracy"]), str(c["seeds"])]
                  for c in summary["comparison"]]
    points = [[_num(q["budget"], 0), str(q["seed"]), q["supervision"], str(q["responses_labelled"]),
               str(q["step_labels"]), _num(q["bon_gold"]), _interval(q["bon_gold_ci"]), _num(q["rm_accuracy"]),
               _interval(q["rm_accuracy_ci"])] for q in summary["process_vs_outcome"]]
    examples = json.loads(exp.file("fits.json").read_text()).get("examples", {}).get("process", [])
    decomposition = summary.get("decomposition") or []
    decomposition_html = (_table(["length (tokens)", "pairs", "chunked", "95% CI", "truncated", "95% CI"],
                                 [[str(r["length"]), str(r["pairs"]), _num(r["chunked"]), _interval(r["chunked_ci"]),
                                   _num(r["truncated"]), _interval(r["truncated_ci"])] for r in decomposition])
                          if decomposition else "<p>Not measured in this profile.</p>")
    step = summary["prm_step_accuracy"]
    samples = summary["samples"]
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>alignlab process study {exp.run.id}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top}}
pre{{white-space:pre-wrap;font-size:12px}}img{{max-width:100%}}</style></head><body>
<h1>Process against outcome supervision at equal labelling cost</h1>
<p>Experiment <code>{exp.run.id}</code>. Arithmetic chains the policy sometimes gets right; a hidden gold judge
checks every step. The policy: {html.escape(_policy_words(summary))}. Its samples: {samples['train']['responses']} to label (their steps right
{samples['train']['steps_right']:.0%} of the time, their answers {samples['train']['outcome_right']:.0%}), and
{samples['test']['responses']} on {summary['profile']['test_prompts']} held-out test chains. Simulated labelers judge
steps (stopping at the first they find wrong) or final answers, with noise, each at its cost; both reward models are
the same head on the same features and differ only in their labels.</p>
<p><b>{html.escape(summary['headline'])}</b></p>
<h2>Against the labelling budget</h2><img src="{plot_budget(summary)}"><img src="{plot_bon_curve(summary)}">
<p>Bars: 95% intervals of the mean across seeds. The differences below are paired over test chains (each chain's
best-of-n gold averaged over seeds), normal 95% intervals.</p>
{_table(["budget", "process best-of-n gold", "outcome", "process − outcome", "95% CI", "process pair accuracy",
         "outcome pair accuracy", "seeds"], comparison)}
<h2>The process model's step judgements</h2>
<p>Held-out step accuracy at the largest budget: {_num(step['value'])} {_interval(step['ci'])} on {step.get('steps')}
steps (target {step['target']}; always guessing the commoner label:
{_num(step.get('majority_baseline'))}); the first wrong step found exactly in
{_num(step.get('first_wrong_step_accuracy'))} of the test responses.</p>
{_table(["test chain", "outcome", "steps: gold and the process model's P(right)"], _example_rows(examples))}
<h2>Decomposed evaluation of long outputs</h2>{decomposition_html}
<h2>Every fit</h2>{_table(["budget", "seed", "supervision", "responses", "step labels", "best-of-n gold", "95% CI",
                          "pair accuracy", "95% CI"], points)}
<h2>Profile</h2><pre>{html.escape(json.dumps(summary['profile'], indent=1))}</pre></body></html>"""
    path = exp.file("report.html")
    atomic_write_text(path, body)
    return path
