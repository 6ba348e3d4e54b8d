"""White-box monitors attached to a training run: the blocked-gradient audit, clipping
attribution and curvature, with red flags that name the parameter or module, what was seen and
since which step.

Attach them to any alignlab trainer with ``--monitor audit,clip,curvature --monitor-every N``
(the trainers call the hook protocol of train/hooks.py; they never import this module), build
them in code with ``build_monitors``, or run the same checks once on any model and loss with
``audit.audit`` and ``curvature.curvature_summary`` (``alignlab inspect`` does that from the
command line).

What runs when:
- clip: every step (per-tensor gradient norms are one pass over the gradients);
- audit: gradient presence every step; the full audit (graph walk, recorded forward, watched
  backward, sensitivity; the static scan the first time only) at step 1 and every N steps;
- curvature: every N steps, on the step's last micro-batch, with the weights as they are before
  the optimizer step.
The audit and curvature recompute the loss through ``ctx.loss_fn`` under
``models.scoring.plain_autograd`` and put the step's own gradients back afterwards, so the run
trains exactly as it would unmonitored (tested).

At the end of the run (or when it stops to be resumed) the monitors write, under the run
folder's ``monitors/``: flags.json, report.md (the red flags first), clip.jsonl, audit.json,
curvature.jsonl, and the plots clip_shares.png, curvature.png and spectrum.png; and state.json,
everything they have counted, so a resumed run's monitors go on from it (flags keep the step
they were first seen, the zero-gradient counts and the clipping window carry on, records
continue). A session killed before it stopped leaves no state: its steps are missing from the
records, never counted twice.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from alignlab.train.hooks import Hooks, StepContext
from alignlab.whitebox.audit import Finding, GradientPresence, audit
from alignlab.whitebox.clipping import ClipAttribution, ClipRecord

MONITORS = ("audit", "clip", "curvature")
STATE = "state.json"


@dataclass
class Flag:
    """A red flag: which parameter or module, what was seen, since which step."""

    check: str
    where: str
    what: str
    since: int
    last: int
    count: int = 1


class FlagBook:
    """Red flags keyed by (check, where), keeping the step each was first and last seen."""

    def __init__(self):
        self.flags: dict[tuple[str, str], Flag] = {}
        self.known: dict[tuple[str, str], Finding] = {}

    def add(self, finding: Finding, step: int) -> None:
        key = (finding.check, finding.where)
        if finding.known:
            self.known.setdefault(key, finding)
            return
        flag = self.flags.get(key)
        if flag is None:
            self.flags[key] = Flag(finding.check, finding.where, finding.what, step, step)
        elif flag.last != step:
            flag.last, flag.count, flag.what = step, flag.count + 1, finding.what

    def sorted(self) -> list[Flag]:
        return sorted(self.flags.values(), key=lambda f: (f.since, f.check, f.where))


@dataclass
class MonitorSettings:
    """What the monitors check and how often (the trainers' --monitor options fill it)."""

    monitors: tuple[str, ...] = ()
    every: int = 10
    max_grad_norm: float = 0.0
    sensitivity: int = 2
    """Parameter tensors whose loss sensitivity is checked by finite differences at each audit."""
    window: int = 50
    """Steps in the clipping attribution's rolling window."""
    curvature_iterations: int = 20
    """Power-iteration steps for the top Hessian eigenvalue."""
    trace_samples: int = 8
    """Hutchinson samples for the Hessian trace."""
    spectrum_steps: int = 16
    """Lanczos steps for the spectral density drawn at the end (0: no spectrum)."""
    blocks: tuple[str, ...] = ()
    """Parameter-name prefixes measured as blocks beside the global curvature."""


def parse_monitors(text: str) -> tuple[str, ...]:
    """'audit,clip' -> ('audit', 'clip'), refusing unknown names; 'all' means every monitor."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    if names == ("all",):
        return MONITORS
    unknown = [n for n in names if n not in MONITORS]
    if unknown:
        raise ValueError(f"--monitor: unknown monitor {', '.join(unknown)}; choose from {', '.join(MONITORS)} "
                         "(comma-separated) or 'all'")
    return names


class WhiteboxMonitor:
    """The training hook: see the module docstring."""

    def __init__(self, settings: MonitorSettings):
        if settings.every < 1:
            raise ValueError(f"--monitor-every must be at least 1, got {settings.every}")
        self.settings = settings
        self.on = set(settings.monitors)
        self.book = FlagBook()
        self.presence = GradientPresence()
        self.clip: ClipAttribution | None = None
        self.audits: list[dict] = []
        self.curvature: list[dict] = []
        self.spectrum: dict | None = None
        self._last = None
        self._scanned = False
        self._pending_clip: dict | None = None

    # -- the hook protocol --------------------------------------------------------------------

    def after_backward(self, ctx: StepContext) -> None:
        due = ctx.step == 1 or ctx.step % self.settings.every == 0
        if "clip" in self.on:
            if self.clip is None:
                self.clip = ClipAttribution(ctx.parameters, self.settings.max_grad_norm, self.settings.window)
                self._restore_clip()
            ctx.metrics.update(self.clip.observe(ctx.step, ctx.parameters, ctx.grad_norm, ctx.clipped,
                                                 keep_weights=due and _adam(ctx.optimizer)))
            for finding, since in self.clip.findings():
                self.book.add(finding, since)
        if "audit" in self.on:
            self.presence.observe(ctx.parameters)
            for finding in self.presence.findings():
                self.book.add(finding, ctx.step)
            if due and ctx.loss_fn is not None:
                self._audit(ctx)
        if "curvature" in self.on and due and ctx.loss_fn is not None:
            self._curvature(ctx)
        if ctx.loss_fn is not None:
            self._last = (ctx.model, ctx.loss_fn, ctx.parameters)
        ctx.metrics["monitor/flags"] = len(self.book.flags)

    def after_step(self, ctx: StepContext) -> None:
        if self.clip is not None:
            ctx.metrics.update(self.clip.after_step(ctx.parameters))

    def resume(self, run) -> None:
        """Go on from what the monitors kept when this run last stopped (nothing kept: start afresh)."""
        path = Path(run.path) / "monitors" / STATE
        if path.exists():
            self.load_state(json.loads(path.read_text(encoding="utf-8")))

    def finish(self, run) -> list[Flag]:
        """Write the monitors' files into the run folder; print the red flags to stderr."""
        from alignlab.fileio import atomic_write_json

        if "curvature" in self.on and self._last is not None and self.settings.spectrum_steps > 0:
            self.spectrum = _spectrum(*self._last, self.settings.spectrum_steps)
        folder = Path(run.path) / "monitors"
        flags = write_monitor_files(folder, self)
        atomic_write_json(folder / STATE, self.state())
        for flag in flags:
            print(f"RED FLAG [{flag.check}] {flag.where}: {flag.what} (since step {flag.since})", file=sys.stderr)
        return flags

    # -- what carries over a resume -------------------------------------------------------------

    def state(self) -> dict:
        """Everything the monitors have counted, as JSON."""
        clip = self._pending_clip
        if self.clip is not None:
            clip = {"records": self.clip.records, "window": [asdict(r) for r in self.clip.window],
                    "first_flagged": [[c, w, step] for (c, w), step in self.clip.first_flagged.items()]}
        return {"monitors": sorted(self.on), "scanned": self._scanned,
                "flags": [asdict(f) for f in self.book.flags.values()],
                "known": [asdict(f) for f in self.book.known.values()],
                "presence": {"steps": self.presence.steps, "missing": self.presence.missing},
                "audits": self.audits, "curvature": self.curvature, "clip": clip}

    def load_state(self, state: dict) -> None:
        """Go on from ``state`` (what ``state()`` returned when the run stopped)."""
        self._scanned = bool(state.get("scanned", False))
        for f in state.get("flags", []):
            flag = Flag(**f)
            self.book.flags[(flag.check, flag.where)] = flag
        for f in state.get("known", []):
            finding = Finding(**f)
            self.book.known[(finding.check, finding.where)] = finding
        presence = state.get("presence") or {}
        self.presence.steps = int(presence.get("steps", 0))
        self.presence.missing = {k: int(v) for k, v in (presence.get("missing") or {}).items()}
        self.audits = list(state.get("audits", [])) + self.audits
        self.curvature = list(state.get("curvature", [])) + self.curvature
        self._pending_clip = state.get("clip")  # applied when the clipping monitor sees its parameters

    def _restore_clip(self) -> None:
        kept, self._pending_clip = self._pending_clip, None
        if kept is None or self.clip is None:
            return
        self.clip.records[:0] = kept["records"]
        for record in kept["window"]:
            self.clip.window.append(ClipRecord(**record))
        self.clip.first_flagged.update({(c, w): step for c, w, step in kept["first_flagged"]})

    # -- the checks ---------------------------------------------------------------------------

    def _audit(self, ctx: StepContext) -> None:
        result = audit(ctx.model, ctx.loss_fn, ctx.parameters, sensitivity_of=self.settings.sensitivity,
                       static=not self._scanned)
        self._scanned = True
        for finding in result.findings:
            self.book.add(finding, ctx.step)
        self.audits.append({"step": ctx.step, "loss": result.loss, "flags": len(result.flags),
                            "findings": [asdict(f) for f in result.findings], "sensitivity": result.sensitivity,
                            "untraced": result.untraced})
        ctx.metrics["audit/flags"] = len(result.flags)

    def _curvature(self, ctx: StepContext) -> None:
        from alignlab.models.scoring import plain_autograd
        from alignlab.whitebox.curvature import curvature_summary

        lr = ctx.optimizer.param_groups[0]["lr"]
        saved = {n: p.grad for n, p in ctx.parameters.items()}
        try:
            for p in ctx.parameters.values():
                p.grad = None
            with plain_autograd(ctx.model), torch.enable_grad():
                summary = curvature_summary(ctx.model, ctx.loss_fn, blocks=list(self.settings.blocks) or None,
                                            max_iter=self.settings.curvature_iterations,
                                            trace_samples=self.settings.trace_samples, lr=lr)
        finally:
            for n, p in ctx.parameters.items():
                p.grad = saved[n]
        self.curvature.append({"step": ctx.step, "lr": lr, **summary})
        ctx.metrics.update(summary)
        stability = summary.get("hess/stability/all")
        # lr x lambda_max vs 2 is plain gradient descent's threshold; Adam's steps are preconditioned,
        # so for it the ratio is reported but not flagged.
        if stability is not None and stability > 1 and not _adam(ctx.optimizer):
            self.book.add(Finding("unstable-curvature", "(all parameters)",
                                  f"top Hessian eigenvalue {summary['hess/lmax/all']:.4g} x learning rate {lr:.3g} "
                                  "exceeds 2: gradient descent is unstable along that direction"), ctx.step)


def _adam(optimizer) -> bool:
    return "Adam" in type(optimizer).__name__


def _spectrum(model, loss_fn, parameters, steps: int) -> dict:
    from alignlab.models.scoring import plain_autograd
    from alignlab.whitebox.curvature import HessianOperator, spectral_density

    saved = {n: p.grad for n, p in parameters.items()}
    try:
        with plain_autograd(model), torch.enable_grad():
            op = HessianOperator(loss_fn, list(parameters.values()))
            grid, density = spectral_density(op, lanczos_steps=steps, runs=1)
    finally:
        for n, p in parameters.items():
            p.grad = saved[n]
    return {"grid": [float(x) for x in grid], "density": [float(x) for x in density]}


def build_monitors(monitors: str | tuple[str, ...], every: int = 10, max_grad_norm: float = 0.0,
                   **settings: Any) -> WhiteboxMonitor | None:
    """A monitor hook for the named monitors, or None when none are named."""
    names = parse_monitors(monitors) if isinstance(monitors, str) else tuple(monitors)
    if not names:
        return None
    return WhiteboxMonitor(MonitorSettings(names, every, max_grad_norm, **settings))


def write_monitor_files(folder: Path, monitor: WhiteboxMonitor) -> list[Flag]:
    """flags.json, report.md, the records and the plots; returns the red flags."""
    from alignlab.fileio import atomic_write_json, atomic_write_text
    from alignlab.whitebox.monitor_plots import plot_clip_shares, plot_curvature, plot_spectrum

    folder.mkdir(parents=True, exist_ok=True)
    flags = monitor.book.sorted()
    known = list(monitor.book.known.values())
    atomic_write_json(folder / "flags.json", {"flags": [asdict(f) for f in flags],
                                              "known_routes": [asdict(f) for f in known]})
    plots = []
    if monitor.clip is not None and monitor.clip.records:
        atomic_write_text(folder / "clip.jsonl", "".join(json.dumps(r) + "\n" for r in monitor.clip.records))
        plots.append(plot_clip_shares(monitor.clip.records, folder / "clip_shares.png"))
    if monitor.audits:
        atomic_write_json(folder / "audit.json", monitor.audits)
    if monitor.curvature:
        atomic_write_text(folder / "curvature.jsonl", "".join(json.dumps(r) + "\n" for r in monitor.curvature))
        plots.append(plot_curvature(monitor.curvature, folder / "curvature.png"))
    if monitor.spectrum:
        atomic_write_json(folder / "spectrum.json", monitor.spectrum)
        plots.append(plot_spectrum(monitor.spectrum, folder / "spectrum.png"))
    atomic_write_text(folder / "report.md", render_report(monitor, flags, known, [p for p in plots if p]))
    return flags


def render_report(monitor: WhiteboxMonitor, flags: list[Flag], known: list[Finding], plots: list[Path]) -> str:
    lines = ["# White-box monitors", "", f"Monitors: {', '.join(sorted(monitor.on))}; full checks every "
             f"{monitor.settings.every} steps.", "", "## Red flags", ""]
    lines += flag_table(flags)
    if known:
        lines += ["", "Known gradient routes (alignlab's own, exact; not flags):", ""]
        lines += [f"- {f.where}: {f.what} -- {f.known}" for f in known]
    if monitor.clip is not None and monitor.clip.records:
        last = monitor.clip.records[-1]
        top = sorted(last["shares"].items(), key=lambda kv: -kv[1])[:5]
        lines += ["", "## Clipping", "", f"{monitor.clip.clip_rate():.0%} of {len(monitor.clip.records)} steps clipped "
                  f"(threshold {monitor.settings.max_grad_norm:g}). Largest gradient shares at the last step:", ""]
        lines += [f"- {name}: {share:.1%}" for name, share in top]
    if monitor.curvature:
        lines += ["", "## Curvature", "", "| step | top eigenvalue | trace | lr x lambda_max / 2 |", "|---|---|---|---|"]
        for row in monitor.curvature:
            lines.append(f"| {row['step']} | {row.get('hess/lmax/all', float('nan')):.4g} | "
                         f"{row.get('hess/trace/all', float('nan')):.4g} | {row.get('hess/stability/all', float('nan')):.3g} |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def flag_table(flags: list[Flag]) -> list[str]:
    """Markdown lines: one row per flag, or a sentence saying there are none."""
    if not flags:
        return ["No red flags."]
    lines = ["| check | parameter or module | what was seen | since step | times seen |", "|---|---|---|---|---|"]
    for f in flags:
        lines.append(f"| {f.check} | `{f.where}` | {f.what.replace('|', '/')} | {f.since} | {f.count} |")
    return lines


def read_flags(run_path: Path) -> list[dict] | None:
    """The red flags a run's monitors recorded, or None when it ran without monitors."""
    path = Path(run_path) / "monitors" / "flags.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["flags"]


def hooks_for(config) -> Hooks | None:
    """The hooks a trainer's ``--monitor`` options ask for (None when none)."""
    monitor = build_monitors(getattr(config, "monitor", ""), getattr(config, "monitor_every", 10),
                             getattr(config, "max_grad_norm", 0.0))
    return Hooks([monitor]) if monitor is not None else None
