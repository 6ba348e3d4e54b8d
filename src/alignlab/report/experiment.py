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

COLORS = {"base": "#555555", "bon": "#1f77b4", "dpo": "#2ca02c", "ppo": "#d62728", "rloo": "#9467bd", "grpo": "#e377c2"}


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


def _se(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0


def plot_pressure(summary: dict) -> str:
    """Gold and proxy against sqrt(KL) with 95% error bars over test prompts: one panel per method
    (each online run's training trajectory too, where gold watched every rollout)."""
    plt = _pyplot()
    panels = [(m, summary["methods"][m], summary["fits"].get(m)) for m in ("bon", "dpo", "ppo", "rloo", "grpo")
              if summary["methods"].get(m)]
    panels += [(name, t["points"], t["fit"]) for name, t in summary["trajectories"].items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    reference = summary["reference_gold"]
    for ax, (name, points, fit) in zip(axes[0], panels):
        method = name.split()[0]
        color = COLORS.get(method, "#9467bd")
        trajectory = name != method
        base = points[0]["gold"] if trajectory else reference
        d = np.array([math.sqrt(max(p["kl"], 0)) for p in points])
        gold = np.array([p["gold"] for p in points])
        proxy = np.array([p["proxy"] for p in points])
        gold_err = np.array([1.96 * _se(p["gold_by_prompt"]) if p.get("gold_by_prompt") else 0.0 for p in points])
        proxy_err = np.array([1.96 * _se(p["proxy_by_prompt"]) if p.get("proxy_by_prompt") else 0.0 for p in points])
        order = np.argsort(d)
        ax.errorbar(d[order], gold[order], yerr=gold_err[order], fmt="o-", color=color, capsize=3, label="gold")
        flagged = [i for i, p in enumerate(points) if p.get("past_peak")]
        if flagged:
            ax.scatter(d[flagged], gold[flagged], s=120, facecolors="none", edgecolors="black", label="past peak")
        _fit_curve(ax, fit, float(d.max()) if d.size else 1.0, base, color, "")
        twin = ax.twinx()
        twin.errorbar(d[order], proxy[order], yerr=proxy_err[order], fmt="s:", color="#ff7f0e", alpha=0.8,
                      capsize=2, label="proxy")
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
        if not points:  # a method this profile did not run gets no legend entry
            continue
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
    rows = [(f"{m} {p['setting']}", p["gold_win_rate"], p.get("gold_win_rate_ci") or [p["gold_win_rate"]] * 2,
             COLORS.get(m, "#9467bd")) for m, points in summary["methods"].items() if m != "base" for p in points]
    fig, ax = plt.subplots(figsize=(5.5, 0.32 * len(rows) + 1.2))
    values = np.array([r[1] for r in rows])
    err = np.array([[r[1] - r[2][0] for r in rows], [r[2][1] - r[1] for r in rows]])
    ax.barh([r[0] for r in rows], values, xerr=err, color=[r[3] for r in rows], capsize=2)
    ax.axvline(0.5, color="#555555", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("gold win-rate against the base policy, 95% CI (test prompts)")
    ax.invert_yaxis()
    return _png(fig)


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _num(x, digits=3):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _interval(ci) -> str:
    return f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "-"


def sample_rows(exp, summary: dict, prompts: int = 3) -> tuple[list[str], list[list]]:
    """The headline run's responses to the same test prompts at low pressure (its first evaluated
    snapshot), at its best gold and at the most pressure (its final policy): distinct policies,
    so distinct samples; when the best is the final or the first, that column is left out."""
    from alignlab.runs import find_run

    headline = summary["targets"].get("online_rl_gold_win_rate")
    if headline is None:
        return [], []
    path = sorted([p for p in summary["methods"][headline["method"]] if p.get("run") == headline["run"]],
                  key=lambda p: (p.get("step") is None, p.get("step") or 0))
    if not path:
        return [], []
    best = max(path, key=lambda p: p["gold"])
    columns = [("low pressure", path[0])]
    if best is not path[0] and best is not path[-1]:
        columns.append(("best gold", best))
    columns.append(("most pressure" + (" (also the best gold)" if best is path[-1] else ""), path[-1]))
    folder = find_run(headline["run"]).path
    per_column = []
    for _, point in columns:
        name = "test_samples.jsonl" if point.get("step") is None else f"test_samples-step-{point['step']:07d}.jsonl"
        per_column.append(read_jsonl(folder / name) if (folder / name).exists() else [])
    rows = []
    n = max(1, len(per_column[0]) // max(1, summary["test_prompts"])) if per_column[0] else 1
    for i in range(prompts):
        k = i * n
        if not all(len(c) > k for c in per_column):
            break
        cells = [html.escape(per_column[0][k]["prompt"].rsplit("Prompt:", 1)[-1].strip()[:160])]
        for (label, point), samples in zip(columns, per_column):
            s = samples[k]
            cells.append(f"<b>{html.escape(point['setting'])}</b> (KL {_num(point['kl'], 2)}) proxy {s['proxy']:.3f}, "
                         f"gold {s['gold']:.3f}<pre>{html.escape(s['response'].strip())}</pre>")
        rows.append(cells)
    return ["prompt"] + [label for label, _ in columns], rows


def headline_paragraph(summary: dict) -> str:
    """The report's first paragraph: what this run showed and did not, with the intervals."""
    t = summary["targets"]
    rm = t["reward_model_gold_accuracy"]
    parts = [f"The proxy reward model ordered {_num(rm['value'])} of {rm.get('pairs', '?')} held-out response pairs "
             f"as gold does (95% CI {_interval(rm.get('ci'))}; target {rm['target']}: "
             f"{'met' if rm['met'] else 'not met'})."]
    win = t.get("online_rl_gold_win_rate")
    if win:
        gain = t["online_rl_proxy_gain"]
        parts.append(f"The online method named before the run, {win['method'].upper()} ({win['setting']}), was "
                     f"preferred by gold to the base policy {_num(win['value'])} of the time on "
                     f"{summary['test_prompts']} test prompts (95% CI {_interval(win['ci'])}; target {win['target']}: "
                     f"{'met' if win['met'] else 'not met'}); its proxy reward rose by {_num(gain['value'])} "
                     f"(95% CI {_interval(gain['ci'])}) over the base policy's, "
                     + ("so RLHF worked here: it learned, and what it learned transferred to gold."
                        if win["ci"][0] > 0.5 and gain["ci"][0] > 0 else
                        "which is not enough to say that RL improved on the base policy here."))
        if win.get("seeds"):
            seeds = win["seeds"]
            parts.append(f"Trained with {len(seeds['values'])} seeds, the same setting's win-rate was "
                         f"{_num(seeds['mean'])} on average (sd {_num(seeds['sd'])}, from {_num(seeds['min'])} to "
                         f"{_num(seeds['max'])}).")
    else:
        parts.append("No online RL method ran in this profile.")
    g = t.get("goodhart_drop")
    if g:
        verdict = ("a drop beyond two standard errors while the proxy kept rising: overoptimization, measured"
                   if g["significant"] else "not beyond two standard errors: this run does not show overoptimization")
        parts.append(f"Overoptimization ({g['method']} {g['arm']}, split-half test): gold at the peak snapshot "
                     f"({html.escape(g['peak'])}) minus gold at the end was {_num(g['value'])} ± {_num(g['se'])} "
                     f"(SE) on held-out prompts, while the proxy changed by {_num(g['proxy_rise'])} ± "
                     f"{_num(g['proxy_rise_se'])} from the peak to the end: {verdict}.")
    return " ".join(parts)


def _peak(fit: dict) -> str:
    """The fitted peak's KL as the report states it: a peak far past the data is not claimed."""
    if fit.get("peak_kl") is None:
        return fit.get("note") or "no peak (still rising)"
    if fit.get("peak_beyond_data"):
        return (f"no peak within the run (the form's extrapolated peak, {_num(fit['peak_kl'], 1)} nats, lies far past "
                f"the largest KL reached, {_num(fit['max_kl'], 1)})")
    return _num(fit["peak_kl"])


def write_report(exp, summary: dict) -> Path:
    targets = summary["targets"]
    method_rows = [[m, html.escape(p["setting"]), _num(p["kl"]), _num(math.sqrt(max(p["kl"], 0))), _num(p["proxy"], 4),
                    _num(p["gold"], 4), _num(p["gold_win_rate"]), _interval(p.get("gold_win_rate_ci")),
                    "PAST PEAK" if p.get("past_peak") else ""]
                   for m, points in summary["methods"].items() for p in points]

    def coefficient(f, name):
        ci = f.get(f"{name}_ci")
        return _num(f.get(name), 4) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    fit_rows = [[name, f.get("form"), coefficient(f, "alpha"), coefficient(f, "beta"), _num(f.get("r2")), _peak(f)]
                for name, f in list(summary["fits"].items())
                + [(k, v["fit"]) for k, v in summary["trajectories"].items()]]
    target_rows = [[html.escape(name.replace("_", " ")), _num(v.get("value")),
                    _interval(v.get("ci")) if v.get("ci") else (f"SE {_num(v.get('se'))}" if "se" in v else "-"),
                    html.escape(str(v.get("target"))), {True: "yes", False: "no", None: "not claimed"}[v.get("met")]]
                   for name, v in targets.items()]
    header_samples, rows_samples = sample_rows(exp, summary)
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
A proxy reward model learns from those labels; best-of-n, DPO and online RL (PPO, RLOO, GRPO) optimize the proxy;
gold judges the result on {summary['test_prompts']} held-out test prompts.</p>
<p><b>{headline_paragraph(summary)}</b></p>
<h2>What this run achieved</h2>{_table(["figure", "value", "95% CI / SE", "target", "met"], target_rows)}
<h2>Gold and proxy against optimization pressure</h2><img src="{plot_pressure(summary)}">
<p>Dashed: the Gao, Schulman &amp; Hilton (2022) forms fitted to gold gains, best-of-n d(α − βd), RL d(α − β log d);
vertical lines mark the fitted peaks; circled points are past the peak with the proxy still rising.</p>
{_table(["fit", "form", "alpha", "beta", "R²", "peak KL (nats)"], fit_rows)}
<h2>Every policy</h2>{_table(["method", "setting", "KL", "sqrt(KL)", "proxy", "gold", "gold win vs base", "95% CI", "flag"],
                             method_rows)}
<p>Win-rates: per test prompt, the share of (policy sample, base sample) pairs gold orders for the policy (ties
1/2), averaged over prompts; the interval is normal over prompts. Best-of-n uses every base sample of a prompt
(the order-statistic estimator), so n = 1 is exactly the base policy.</p>
<div style="display:flex;gap:1em;flex-wrap:wrap"><img src="{plot_gold_vs_proxy(summary)}">
<img src="{plot_reward_curve(summary)}"><img src="{plot_win_rates(summary)}"></div>
<h2>Samples at low, best and excessive pressure (the headline online run)</h2>
{_table(header_samples, rows_samples) if rows_samples else "<p>No online run to show.</p>"}
<h2>Cost cuts and their effect</h2><p>Output vocabulary: {vocab_text}</p>
<h2>Profile</h2><pre>{html.escape(profile)}</pre>
<p>Stage times (s): {html.escape(json.dumps(summary['seconds']))}</p></body></html>"""
    path = exp.file("report.html")
    atomic_write_text(path, body)
    return path
