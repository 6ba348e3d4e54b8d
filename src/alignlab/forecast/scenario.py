"""Scenarios: every input of the model, read from a TOML file, overridable, and checked.

A scenario is a TOML file. The package ships ``cotra-2020`` (her best guess) and ``cotra-2022``
(her two-year update) under ``forecast/scenarios/``; any other file works the same way. A file
may start from another with ``extends = "cotra-2020"`` (a shipped name or a path relative to the
file) and change only what differs; ``--set KEY=VALUE`` then changes single inputs
(``--set spending.doubling_years=2.5``, ``--set hypotheses.evolution.weight=0``,
``--set anchor_defaults.brain_flops='{ lognormal = [12, 18] }'``).

After merging, the whole scenario is checked against SCHEMA below: an unknown key, a missing
input or a value out of range is refused with a ValueError that names the key and the accepted
range. SCHEMA is also the one place where each input is documented.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from alignlab.forecast.distributions import is_number, check_distribution


@dataclass(frozen=True)
class Spec:
    """How one input is checked: its kind, the accepted range, its unit and what it means."""

    kind: str  # "number", "int", "dist", "bool", "str", "numbers" (a list of numbers)
    low: float = float("-inf")
    high: float = float("inf")
    unit: str = ""
    doc: str = ""
    required: bool = True
    above: bool = False  # the low end is excluded (doubling times: > 0)

    def accepted(self) -> str:
        if self.kind in ("bool", "str"):
            return "true or false" if self.kind == "bool" else "a string"
        low = f"> {self.low:g}" if self.above else f">= {self.low:g}"
        parts = [low] if self.low != float("-inf") else []
        parts += [f"<= {self.high:g}"] if self.high != float("inf") else []
        what = {"int": "a whole number", "numbers": "a list of numbers", "dist": "a number or distribution"}
        return f"{what.get(self.kind, 'a number')} {' and '.join(parts)}{' ' + self.unit if self.unit else ''}".strip()


YEAR = dict(low=1900, high=2300, unit="(year)")

SCHEMA: dict[str, dict[str, Spec]] = {
    "projection": {
        "start_year": Spec("int", **YEAR, doc="First projected year; what changed since the reference years arrives at once."),
        "end_year": Spec("int", **YEAR, doc="Last projected year; mass not affordable by then is reported as 'not by END'."),
    },
    "hardware": {
        "flop_per_dollar": Spec("number", 1e5, 1e35, "FLOP/$", "Price-performance in reference_year."),
        "reference_year": Spec("number", **YEAR, doc="The year flop_per_dollar describes."),
        "doubling_years": Spec("number", 0, 100, "years", "Years for FLOP per dollar to double, early on.", above=True),
        "max_flop_per_dollar": Spec("number", 1e5, 1e40, "FLOP/$", "Where price-performance levels off."),
    },
    "spending": {
        "dollars": Spec("number", 1, 1e16, "$", "Spent on the largest training run in reference_year."),
        "reference_year": Spec("number", **YEAR, doc="The year 'dollars' describes."),
        "doubling_years": Spec("number", 0, 100, "years", "Years for that spending to double, early on.", above=True),
        "max_gdp_fraction": Spec("number", 0, 1, "", "Cap on one run's spending, as a fraction of GDP.", above=True),
    },
    "gdp": {
        "dollars": Spec("number", 1e6, 1e17, "$", "GDP of the largest economy in reference_year."),
        "reference_year": Spec("number", **YEAR, doc="The year 'dollars' describes."),
        "growth": Spec("number", -0.5, 1, "per year", "Yearly growth (0.03 = 3%)."),
    },
    "algorithms": {
        "reference_year": Spec("number", **YEAR,
                               doc="Requirements are stated in this year's algorithms; progress counts from it."),
    },
    "low_requirement_update": {
        "enabled": Spec("bool", doc="Push up requirements below ~1e27 (runs of GPT-3 scale did not produce TAI)."),
        "thresholds": Spec("numbers", 0, 60, "log10 FLOP", "A draw below each threshold, in turn, is shifted up."),
        "shift_probability": Spec("numbers", 0, 1, "", "Chance that a draw below the matching threshold is shifted."),
        "shift": Spec("dist", 0, 20, "OOM", "How far a shifted draw moves up."),
        "floor": Spec("number", 0, 60, "log10 FLOP", "No requirement stays below this after the update."),
    },
}

ANCHOR_INPUTS: dict[str, Spec] = {
    "brain_flops": Spec("dist", -10, 40, "log10 FLOP/s", "b: the brain's (or ancestors' brains') computation."),
    "inefficiency": Spec("dist", -30, 30, "OOM", "e: how much more compute 2020 ML needs than the brain does."),
    "transformative_vs_human": Spec("dist", -10, 10, "OOM", "t: a transformative model's compute vs a human's."),
    "horizon": Spec("dist", 0, 60, "log10 s",
                    "h: effective horizon (subjective seconds per sample), or the span learned over."),
    "flop_per_param": Spec("dist", -5, 10, "log10 FLOP/param/s", "f: FLOP per parameter per subjective second.",
                           required=False),
    "scaling_exponent": Spec("dist", 0, 3, "", "alpha: data needed grows as parameters^alpha.", required=False),
    "parameters": Spec("dist", 0, 30, "log10", "p: parameters; if absent, p = b + e - f.", required=False),
    "reference_params": Spec("number", 0, 30, "log10", "P_ref: parameters of the reference scaling point.", required=False),
    "reference_samples": Spec("number", 0, 40, "log10", "S_ref: samples at the reference scaling point.", required=False),
}

HYPOTHESIS_FIELDS: dict[str, Spec] = {
    "label": Spec("str", doc="Name shown in tables and plots."),
    "weight": Spec("number", 0, 1, "", "Probability of this hypothesis; 1 - sum of weights is 'never'."),
    "data_scaling": Spec("bool", doc="true: log10 C = b+e+t+h + S_ref + alpha (p - P_ref); false: b+e+t+h."),
    "algorithm_halving_years": Spec("number", 0, 100, "years", "Years for algorithms to halve this requirement, early on.",
                                    above=True),
    "algorithm_max_oom": Spec("number", 0, 30, "OOM", "Most that algorithmic progress can cut this requirement."),
    **ANCHOR_INPUTS,
}

TOP_LEVEL = {"name", "title", "source", "notes", "extends", "anchor_defaults", "hypotheses", "uncertainty",
             "sensitivity", "published", *SCHEMA}
AFFORDABILITY = ("hardware", "spending", "gdp")
SCALING_INPUTS = ("scaling_exponent", "reference_params", "reference_samples")

SCENARIO_DIR = "scenarios"
REPLACED_ON_EXTEND = {"published"}
"""Tables a scenario that extends another replaces whole (the parent's published figures are not the child's)."""


def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped in the package."""
    folder = resources.files("alignlab.forecast") / SCENARIO_DIR
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_toml(name_or_path: str, relative_to: Path | None = None) -> tuple[dict[str, Any], str, Path | None]:
    """(data, label, folder) for a shipped scenario name or a TOML file path."""
    if name_or_path in shipped_scenarios():
        text = (resources.files("alignlab.forecast") / SCENARIO_DIR / f"{name_or_path}.toml").read_text(encoding="utf-8")
        where, folder = name_or_path, None
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        if not path.is_file():
            raise FileNotFoundError(f"scenario '{name_or_path}' is neither a shipped scenario "
                                    f"({', '.join(shipped_scenarios())}) nor a TOML file")
        text, where, folder = path.read_text(encoding="utf-8"), str(path), path.parent
    try:
        return tomllib.loads(text), where, folder
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"scenario {where}: not valid TOML ({err})") from None


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``changes`` laid over it (tables merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _is_distribution(value):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _is_distribution(value: dict) -> bool:
    return any(k in value for k in ("normal", "lognormal", "uniform", "mean", "mixture"))


def load_raw(name_or_path: str, _seen: tuple[str, ...] = (), _relative_to: Path | None = None) -> dict[str, Any]:
    """The scenario as a plain dict, with ``extends`` resolved (not yet checked)."""
    data, where, folder = _read_toml(name_or_path, _relative_to)
    if where in _seen:
        raise ValueError(f"scenario {where}: 'extends' loops back on itself ({' -> '.join(_seen + (where,))})")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ValueError(f"scenario {where}: extends = {parent!r}; accepted: a shipped scenario name or a file path")
    base = load_raw(parent, _seen + (where,), folder)
    for key in REPLACED_ON_EXTEND & set(data):
        base.pop(key, None)
    return merge(base, data)


def parse_assignment(text: str) -> tuple[str, Any]:
    """'spending.doubling_years=2.5' -> ('spending.doubling_years', 2.5); the value is read as a
    TOML value (numbers, true/false, [lists], { tables }), or kept as a string if it is not one."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise ValueError(f"--set {text!r}: expected KEY=VALUE, e.g. --set spending.doubling_years=2.5")
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for 'a.b.c', making tables along the way (a point value
    replaced by a table becomes that table)."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def get_path(data: dict[str, Any], dotted: str) -> Any:
    """``data[a][b][c]`` for 'a.b.c' (KeyError if absent)."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


@dataclass
class Hypothesis:
    """One biological anchor hypothesis, its weight, its requirement's inputs and its progress."""

    name: str
    label: str
    weight: float
    data_scaling: bool
    halving_years: float
    max_oom: float
    inputs: dict[str, Any]


@dataclass
class Scenario:
    """A checked scenario: every input of the model, plus where it came from."""

    name: str
    data: dict[str, Any]
    hypotheses: list[Hypothesis]

    @property
    def never(self) -> float:
        """Probability that no anchor is right: TAI is never affordable."""
        return max(0.0, 1.0 - sum(h.weight for h in self.hypotheses))

    def section(self, name: str) -> dict[str, Any]:
        return self.data[name]

    @property
    def years(self) -> range:
        return range(self.data["projection"]["start_year"], self.data["projection"]["end_year"] + 1)


def load_scenario(name_or_path: str, overrides: list[str] | None = None) -> Scenario:
    """Read, merge (``extends``), override (``KEY=VALUE`` strings) and check a scenario."""
    data = load_raw(name_or_path)
    for text in overrides or []:
        key, value = parse_assignment(text)
        set_path(data, key, value)
    return check_scenario(data, data.get("name", name_or_path) if isinstance(data.get("name"), str) else name_or_path)


def scenario_from_dict(data: dict[str, Any], name: str = "scenario") -> Scenario:
    """Check an in-memory scenario dict (what tests and sweeps build)."""
    return check_scenario(copy.deepcopy(data), name)


def check_scenario(data: dict[str, Any], name: str) -> Scenario:
    """Check every key and value of a merged scenario; raise ValueError naming the first bad one."""
    where = f"scenario {name}"
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise ValueError(f"{where}: unknown key '{unknown[0]}'; accepted top-level keys: {', '.join(sorted(TOP_LEVEL))}")
    for key in ("name", "title", "source", "notes"):
        if key in data and not isinstance(data[key], str):
            raise ValueError(f"{where}: {key} must be a string")
    for section, specs in SCHEMA.items():
        _check_table(data.get(section), section, specs, where)
    projection = data["projection"]
    if projection["end_year"] <= projection["start_year"]:
        raise ValueError(f"{where}: projection.end_year ({projection['end_year']}) must be after "
                         f"projection.start_year ({projection['start_year']})")
    if data["hardware"]["max_flop_per_dollar"] < data["hardware"]["flop_per_dollar"]:
        raise ValueError(f"{where}: hardware.max_flop_per_dollar must be >= hardware.flop_per_dollar "
                         f"({data['hardware']['flop_per_dollar']:g})")
    update = data["low_requirement_update"]
    if len(update["thresholds"]) != len(update["shift_probability"]):
        raise ValueError(f"{where}: low_requirement_update.thresholds and .shift_probability need the same length")
    defaults = data.get("anchor_defaults", {})
    _check_table(defaults, "anchor_defaults", {k: replace(s, required=False) for k, s in ANCHOR_INPUTS.items()}, where)
    hypotheses = _check_hypotheses(data.get("hypotheses"), defaults, where)
    _check_uncertainty(data.get("uncertainty", {}), where)
    _check_sensitivity(data, where)
    _check_published(data.get("published", {}), where)
    return Scenario(name=data.get("name", name), data=data, hypotheses=hypotheses)


def _check_table(table: Any, section: str, specs: dict[str, Spec], where: str) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: missing table [{section}] (keys: {', '.join(specs)})")
    unknown = sorted(set(table) - set(specs))
    if unknown:
        raise ValueError(f"{where}: unknown key '{section}.{unknown[0]}'; accepted keys in [{section}]: {', '.join(specs)}")
    for key, spec in specs.items():
        if key not in table:
            if spec.required:
                raise ValueError(f"{where}: missing key '{section}.{key}' ({spec.doc} Accepted: {spec.accepted()})")
            continue
        _check_value(table[key], f"{section}.{key}", spec, where)


def _check_value(value: Any, key: str, spec: Spec, where: str) -> None:
    bad = f"{where}: {key} = {value!r} is out of range; accepted: {spec.accepted()}"
    if spec.kind == "dist":
        try:
            check_distribution(value, key, spec.low, spec.high, f" {spec.unit}" if spec.unit else "")
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: {key} = {value!r}; accepted: true or false")
    elif spec.kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"{where}: {key} = {value!r}; accepted: a string")
    elif spec.kind == "numbers":
        if not isinstance(value, list) or not all(is_number(v) and spec.low <= v <= spec.high for v in value):
            raise ValueError(f"{where}: {key} = {value!r}; accepted: a list of numbers, each in "
                             f"{spec.low:g}..{spec.high:g} {spec.unit}".rstrip())
    else:
        if not is_number(value) or (spec.kind == "int" and not isinstance(value, int)):
            raise ValueError(bad)
        if not spec.low <= value <= spec.high or (spec.above and value <= spec.low):  # also refuses nan
            raise ValueError(bad)


def _check_hypotheses(table: Any, defaults: dict[str, Any], where: str) -> list[Hypothesis]:
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{where}: missing table [hypotheses.NAME]; each hypothesis needs "
                         f"{', '.join(k for k, s in HYPOTHESIS_FIELDS.items() if s.required)}")
    out = []
    for name, raw in table.items():
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: hypotheses.{name} must be a table")
        merged = {**defaults, **raw}
        specs = dict(HYPOTHESIS_FIELDS)
        if merged.get("data_scaling") is True:
            specs.update({k: replace(ANCHOR_INPUTS[k], required=True) for k in SCALING_INPUTS})
            if "parameters" not in merged:
                specs["flop_per_param"] = replace(ANCHOR_INPUTS["flop_per_param"], required=True)
        _check_table(merged, f"hypotheses.{name}", specs, where)
        inputs = {k: merged[k] for k in ANCHOR_INPUTS if k in merged}
        out.append(Hypothesis(name, merged["label"], float(merged["weight"]), merged["data_scaling"],
                              float(merged["algorithm_halving_years"]), float(merged["algorithm_max_oom"]), inputs))
    total = sum(h.weight for h in out)
    if total > 1.0 + 1e-9:
        raise ValueError(f"{where}: hypothesis weights sum to {total:.4g}; accepted range: 0..1 "
                         f"(1 - sum is the probability that no anchor is right: 'never')")
    return out


def _check_uncertainty(table: Any, where: str) -> None:
    """[uncertainty.SECTION] KEY = distribution: used only by --sample-affordability."""
    if not isinstance(table, dict):
        raise ValueError(f"{where}: [uncertainty] must be a table of [uncertainty.hardware|spending|gdp]")
    for section, entries in table.items():
        if section not in AFFORDABILITY or not isinstance(entries, dict):
            raise ValueError(f"{where}: unknown key 'uncertainty.{section}'; accepted: {', '.join(AFFORDABILITY)} "
                             "(only affordability inputs can be sampled)")
        for key, value in entries.items():
            spec = SCHEMA[section].get(key)
            if spec is None or spec.kind != "number" or key == "reference_year":
                raise ValueError(f"{where}: unknown key 'uncertainty.{section}.{key}'; accepted: "
                                 f"{', '.join(k for k, s in SCHEMA[section].items() if k != 'reference_year')}")
            _check_value(value, f"uncertainty.{section}.{key}", Spec("dist", spec.low, spec.high, spec.unit), where)


def _check_sensitivity(data: dict[str, Any], where: str) -> None:
    """[sensitivity] "dotted.key" = [low, high]: the inputs the tornado chart varies."""
    table = data.get("sensitivity", {})
    if not isinstance(table, dict):
        raise ValueError(f"{where}: [sensitivity] must map input keys to [low, high]")
    for key, pair in table.items():
        try:
            current = get_path(data, key)
        except KeyError:
            raise ValueError(f"{where}: sensitivity key '{key}' names no input of the scenario") from None
        if not is_number(current):
            raise ValueError(f"{where}: sensitivity key '{key}' is not a point value (only those can be varied)")
        if not (isinstance(pair, list) and len(pair) == 2 and all(map(is_number, pair)) and pair[0] < pair[1]):
            raise ValueError(f"{where}: sensitivity.'{key}' = {pair!r}; accepted: [low, high] with low < high")


def _check_published(table: Any, where: str) -> None:
    """[published]: the source's own figures, shown beside ours (never used by the model)."""
    if not isinstance(table, dict):
        raise ValueError(f"{where}: [published] must be a table")
    unknown = sorted(set(table) - {"source", "p_by_year", "quantiles", "anchor_p_by_year"})
    if unknown:
        raise ValueError(f"{where}: unknown key 'published.{unknown[0]}'; accepted: source, p_by_year, quantiles, "
                         "anchor_p_by_year")
    for key in ("p_by_year", "anchor_p_by_year"):
        rows = table.get(key, {})
        flat = rows.items() if key == "p_by_year" else [(f"{a}.{y}", p) for a, r in rows.items() for y, p in r.items()]
        for year, p in flat:
            if not is_number(p) or not 0 <= p <= 1:
                raise ValueError(f"{where}: published.{key}.{year} = {p!r}; accepted: a probability in 0..1")
