"""Dataclass configs that document themselves, and the command-line options made from them.

Every config field has a one-line docstring under it. That string is the ``--help`` text, the
docs and the description in a run's ``config.json``: an option is documented in one place only.

    @dataclass
    class SampleConfig:
        temperature: float = 1.0
        \"\"\"Divide logits by this before sampling; 0 means greedy.\"\"\"

Field metadata understood here: ``positional`` (a positional argument instead of ``--name``),
``short`` (an extra short flag such as ``-n``), ``aliases`` (more long flags, e.g. ``["--max-tokens"]``),
``cli`` (False keeps a field off the command line).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args, get_origin


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (and of its dataclass bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for stmt, following in zip(body, body[1:] + [None]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(following.value.value.split())
    return docs


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _resolved_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _converter(tp: Any) -> tuple[Any, dict[str, Any]]:
    """argparse ``type=`` and extra keyword arguments for one annotated type."""
    if get_origin(tp) is Literal:
        choices = list(get_args(tp))
        return type(choices[0]), {"choices": choices}
    if tp is Path:
        return Path, {}
    if tp in (int, float, str):
        return tp, {}
    raise TypeError(f"configs: unsupported field type {tp!r}")


def ordered_fields(cls: type) -> list[dataclasses.Field]:
    """A config's own fields first, then those it inherits (shared option groups) in MRO order."""
    fields = dataclasses.fields(cls)
    rank = {}
    for depth, klass in enumerate(cls.__mro__):
        for name in getattr(klass, "__annotations__", {}):
            rank.setdefault(name, depth)
    return sorted(fields, key=lambda f: rank.get(f.name, 0))


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option (or positional argument) per field of the dataclass ``cls``."""
    docs = field_docs(cls)
    hints = _resolved_types(cls)
    for f in ordered_fields(cls):
        if f.metadata.get("cli", True) is False:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        help_text = docs.get(f.name, "")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        names = [flag, *f.metadata.get("aliases", [])] + ([f.metadata["short"]] if "short" in f.metadata else [])
        if tp is bool:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                help=f"{help_text} (default: {default})",
            )
            continue
        nargs = None
        if get_origin(tp) in (list, tuple):
            (tp,) = get_args(tp)[:1]
            nargs = "*" if f.metadata.get("positional") else "+"
        conv, extra = _converter(tp)
        shown = "" if default in (None, [], "") else f" (default: {default})"
        if f.metadata.get("positional"):
            parser.add_argument(
                f.name, type=conv, nargs=nargs or ("?" if optional or default is not None else None),
                default=default, help=help_text + shown, **extra,
            )
        elif nargs:
            # Repeating the flag adds to the list (--set a=1 --set b=2); the default applies only
            # when the flag is absent.
            parser.add_argument(
                *names, dest=f.name, type=conv, nargs=nargs, action="extend", default=None,
                help=help_text + shown, metavar=f.metadata.get("metavar"), **extra,
            )
        else:
            parser.add_argument(
                *names, dest=f.name, type=conv, default=default,
                help=help_text + shown, metavar=f.metadata.get("metavar"), **extra,
            )


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build the config ``cls`` from parsed arguments; fields not on the command line keep defaults."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    for f in dataclasses.fields(cls):
        if values.get(f.name, 0) is None and f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            values[f.name] = f.default_factory()  # type: ignore[misc]
    return cls(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (paths become strings)."""
    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if dataclasses.is_dataclass(value):
            return config_to_dict(value)
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def type_name(tp: Any) -> str:
    """A short readable name for a field type: 'int', 'path', 'a|b', 'list of str', 'int or none'."""
    inner, optional = _unwrap_optional(tp)
    if get_origin(inner) is Literal:
        name = "/".join(str(a) for a in get_args(inner))
    elif get_origin(inner) in (list, tuple):
        name = "list of " + type_name(get_args(inner)[0])
    elif inner is Path:
        name = "path"
    else:
        name = getattr(inner, "__name__", str(inner))
    return name + (" (optional)" if optional else "")


def describe_config(cls: type) -> list[tuple[str, str, str, str]]:
    """(flags, type, default, doc) for each command-line field: what docs/ pages print as a table."""
    docs = field_docs(cls)
    hints = _resolved_types(cls)
    rows = []
    for f in ordered_fields(cls):
        if f.metadata.get("cli", True) is False:
            continue
        default = f.default if f.default is not dataclasses.MISSING else ""
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        if f.metadata.get("positional"):
            flags = f.name.upper()
        else:
            flags = ", ".join(["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", []),
                               *([f.metadata["short"]] if "short" in f.metadata else [])])
        rows.append((flags, type_name(hints[f.name]), repr(default), docs.get(f.name, "")))
    return rows
