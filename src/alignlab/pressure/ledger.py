"""The Goodhart ledger of a policy run: how much optimization pressure it applied (KL from its
reference, and for best-of-n the analytic log n - (n-1)/n), the weak prior that held it (the
reference and beta), and, where a gold judge scored it, proxy and gold reward over that
pressure with the fitted Gao peak and a flag on every point past it.

Every policy method writes ``pressure.json`` into its run folder (train/policy.py
``write_pressure``); this module reads it back for `alignlab pressure RUN` and the reports.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from alignlab.pressure.fits import GoodhartFit, fit_gao, past_peak_flags

PRESSURE_FILE = "pressure.json"


@dataclass
class LedgerPoint:
    """One point of pressure: a step of training, an n of best-of-n, or a final evaluation."""

    label: str
    kl: float
    proxy: float | None = None
    gold: float | None = None
    gold_win_rate: float | None = None
    past_peak: bool = False

    @property
    def d(self) -> float:
        """sqrt(KL), the distance Gao et al. plot against (negative KL estimates count as 0)."""
        return math.sqrt(max(self.kl, 0.0))


@dataclass
class Ledger:
    """The pressure a run applied and, with a gold judge, what it bought."""

    method: str
    reference: str
    beta: float | None
    points: list[LedgerPoint]
    reference_gold: float | None = None
    fit: GoodhartFit | None = None
    extra: dict = field(default_factory=dict)

    @property
    def has_gold(self) -> bool:
        return any(p.gold is not None for p in self.points)


def form_for(method: str) -> str:
    """Which Gao form describes a method: best-of-n's own, the RL form for trained policies."""
    return "bon" if method == "bon" else "rl"


def build_ledger(data: dict) -> Ledger:
    """A Ledger from the contents of a pressure.json, with the Gao fit and flags when gold exists."""
    method = data.get("method", "?")
    points = []
    for e in data.get("entries", []):
        label = f"n={e['n']}" if "n" in e else f"step {e.get('step', '?')}"
        points.append(LedgerPoint(label, float(e.get("objective/kl", 0.0)), e.get("objective/scores"), e.get("gold"),
                                  e.get("gold_win_rate_vs_base")))
    ledger = Ledger(method, data.get("reference", "?"), data.get("beta"), points,
                    data.get("reference_gold"), extra={k: v for k, v in data.items()
                                                       if k not in {"method", "reference", "beta", "entries"}})
    judged = [p for p in points if p.gold is not None and p.proxy is not None]
    if judged:
        if ledger.reference_gold is None:  # the least-pressured point stands in for the reference
            ledger.reference_gold = min(judged, key=lambda p: p.kl).gold
        try:
            ledger.fit = fit_gao([p.d for p in judged], [p.gold - ledger.reference_gold for p in judged],
                                 form_for(method))
        except ValueError:
            ledger.fit = None  # too few points with KL > 0: the table still shows them
        for p, flag in zip(judged, past_peak_flags([p.d for p in judged], [p.proxy for p in judged],
                                                   [p.gold for p in judged], ledger.fit)):
            p.past_peak = flag
    return ledger


def read_ledger(run_path: str | Path) -> Ledger:
    """The ledger of the run folder ``run_path`` (which must hold a pressure.json)."""
    path = Path(run_path) / PRESSURE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: only policy runs (sft, dpo, bon, ppo) keep a "
                                "pressure ledger")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
    return build_ledger(data)


def _num(value: float | None, width: int, digits: int = 3) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def format_ledger(ledger: Ledger) -> str:
    """The ledger as a table a person reads: pressure, proxy and gold, the fit and the flags."""
    prior = f"reference {ledger.reference}" + (f", beta {ledger.beta:g}" if ledger.beta is not None else "")
    lines = [f"{ledger.method}: {prior}"]
    if ledger.method == "bon":
        lines.append("KL is best-of-n's analytic log n - (n-1)/n.")
    header = f"{'point':<12} {'KL (nats)':>10} {'sqrt(KL)':>9} {'proxy':>9}"
    if ledger.has_gold:
        header += f" {'gold':>9} {'gold win':>9}  flag"
    lines.append(header)
    for p in ledger.points:
        line = f"{p.label:<12} {p.kl:>10.3f} {p.d:>9.3f} {_num(p.proxy, 9, 4)}"
        if ledger.has_gold:
            line += f" {_num(p.gold, 9, 4)} {_num(p.gold_win_rate, 9)}  {'PAST PEAK' if p.past_peak else ''}"
        lines.append(line.rstrip())
    if ledger.has_gold:
        lines.append(f"reference gold: {ledger.reference_gold:.4f}")
        fit = ledger.fit
        if fit is None:
            lines.append("Gao fit: needs at least two judged points with KL > 0")
        else:
            shape = "d(alpha - beta d)" if fit.form == "bon" else "d(alpha - beta log d)"
            peak = (f"peak at sqrt(KL) = {fit.peak_d:.3f} (KL {fit.peak_kl:.3f} nats), gain {fit.peak_gain:+.4f}"
                    if math.isfinite(fit.peak_d) else
                    "no peak: gold still rising" if fit.alpha > 0 else "no peak: the fitted curve has no maximum")
            lines.append(f"Gao fit {shape}: alpha {fit.alpha:.4f}, beta {fit.beta:.4f}, R^2 {fit.r2:.3f} "
                         f"over {fit.points} points; {peak}")
        flagged = [p.label for p in ledger.points if p.past_peak]
        if flagged:
            lines.append(f"past the gold peak (proxy still rising, gold falling): {', '.join(flagged)}")
    else:
        lines.append("no gold judge scored this run: the ledger shows pressure only")
    return "\n".join(lines)
