"""Gao, Schulman & Hilton (2022), "Scaling laws for reward model overoptimization": the functional
forms of gold reward against the distance d = sqrt(KL(policy || reference)) travelled.

    best-of-n  R(d) = d (alpha - beta d)        peak at d* = alpha / (2 beta)
    RL         R(d) = d (alpha - beta log d)    peak at d* = exp(alpha / beta - 1)

R is the gain over the reference policy (R(0) = 0), so callers subtract the reference's gold
score first. Both forms are linear in (alpha, beta), so ordinary least squares on the columns
(d, -d^2) or (d, -d log d) fits them exactly, without an iterative optimiser or a starting guess.
A fit with beta <= 0 has no peak within reach: gold is still rising (or the form bends the
other way), and ``peak_d`` is infinite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FORMS = ("bon", "rl")


@dataclass(frozen=True)
class GoodhartFit:
    """A fitted Gao-form curve: coefficients, the peak it implies, and how well it fits."""

    form: str
    """'bon' (best-of-n, d(alpha - beta d)) or 'rl' (d(alpha - beta log d))."""
    alpha: float
    beta: float
    r2: float
    """Coefficient of determination of the fit on the gains it was given (1 = perfect)."""
    rmse: float
    points: int

    @property
    def peak_d(self) -> float:
        """The d = sqrt(KL) at which fitted gold peaks (inf when the fit has no peak)."""
        if self.beta <= 0:
            return math.inf
        if self.form == "bon":
            return self.alpha / (2 * self.beta)
        return math.exp(min(self.alpha / self.beta - 1, 700.0))

    @property
    def peak_kl(self) -> float:
        """The KL in nats at the fitted peak."""
        return self.peak_d ** 2

    @property
    def peak_gain(self) -> float:
        """The fitted gold gain at the peak."""
        return float(self(self.peak_d)) if math.isfinite(self.peak_d) else math.inf

    def __call__(self, d):
        """The fitted gain at distance(s) d (array-like)."""
        d = np.asarray(d, dtype=float)
        if self.form == "bon":
            return d * (self.alpha - self.beta * d)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, d * (self.alpha - self.beta * np.log(np.where(d > 0, d, 1.0))), 0.0)

    def to_dict(self) -> dict:
        finite = math.isfinite(self.peak_d)
        return {"form": self.form, "alpha": self.alpha, "beta": self.beta, "r2": self.r2, "rmse": self.rmse,
                "points": self.points, "peak_d": self.peak_d if finite else None,
                "peak_kl": self.peak_kl if finite else None, "peak_gain": self.peak_gain if finite else None}


def fit_gao(d: Sequence[float], gain: Sequence[float], form: str) -> GoodhartFit:
    """Least-squares fit of a Gao form to gold gains (gold minus the reference's gold) at
    distances d = sqrt(KL). Needs at least two points with d > 0."""
    if form not in FORMS:
        raise ValueError(f"unknown Goodhart form {form!r}; use one of {', '.join(FORMS)}")
    d = np.asarray(d, dtype=float)
    gain = np.asarray(gain, dtype=float)
    if d.shape != gain.shape:
        raise ValueError(f"d and gain differ in length ({d.size} vs {gain.size})")
    if np.any(~np.isfinite(d)) or np.any(~np.isfinite(gain)) or np.any(d < 0):
        raise ValueError("d must be finite and >= 0 and gains finite")
    keep = d > 0  # the forms pass through (0, 0) by construction: d = 0 adds no information
    if keep.sum() < 2:
        raise ValueError(f"a {form} fit needs at least two points with KL > 0 (got {int(keep.sum())})")
    x, y = d[keep], gain[keep]
    curve = x * x if form == "bon" else x * np.log(x)
    design = np.stack([x, -curve], axis=1)  # (N, 2)
    (alpha, beta), *_ = np.linalg.lstsq(design, y, rcond=None)
    fitted = design @ np.array([alpha, beta])
    residual = float(((y - fitted) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)
    return GoodhartFit(form, float(alpha), float(beta), r2, math.sqrt(residual / len(y)), int(len(y)))


def past_peak_flags(d: Sequence[float], proxy: Sequence[float], gold: Sequence[float],
                    fit: GoodhartFit | None) -> list[bool]:
    """Which points have passed the gold peak: beyond the fitted peak (or, with no fit, beyond
    the best observed gold), with gold below the best gold seen at any lower pressure while the
    proxy is at or above its value there. The overoptimisation signature."""
    order = np.argsort(np.asarray(d, dtype=float), kind="stable")
    d, proxy, gold = (np.asarray(a, dtype=float)[order] for a in (d, proxy, gold))
    peak = fit.peak_d if fit is not None else d[int(np.argmax(gold))]
    flags_sorted = np.zeros(len(d), dtype=bool)
    for i in range(1, len(d)):
        if d[i] <= peak:
            continue
        best = int(np.argmax(gold[:i]))  # the best gold at lower pressure
        flags_sorted[i] = gold[i] < gold[best] and proxy[i] >= proxy[best]
    flags = np.zeros(len(d), dtype=bool)
    flags[order] = flags_sorted
    return flags.tolist()
