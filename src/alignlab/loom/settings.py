"""Generation settings: where a generation's settings come from (defaults, the tree, each branch
above the node, the request: the nearest wins), and presets, named sets of them a person picks
in the settings bar (a few built in, the rest saved in the store)."""

from __future__ import annotations

from alignlab.loom.generation import TEMPLATE, GenerateRequest
from alignlab.loom.store import Store

DEFAULTS = GenerateRequest().settings() | {"n": 3, "memory": "", "template": TEMPLATE}
"""Generation settings when neither the request, the branch nor the tree sets them."""

BUILTIN_PRESETS: dict[str, dict] = {
    "default": {"n": 3, "max_tokens": 48, "temperature": 1.0, "top_p": 1.0},
    "focused": {"temperature": 0.7, "top_p": 0.9},
    "greedy": {"n": 1, "temperature": 0.0},
    "wild": {"n": 4, "temperature": 1.3, "top_p": 1.0},
    "long": {"n": 2, "max_tokens": 256},
}
"""Presets every loom has (they cannot be changed or deleted): the defaults; sampling from the
more likely tokens (temperature 0.7, nucleus 0.9); the single likeliest continuation; more
varied ones; longer ones. A preset sets only the fields it names."""


def effective_settings(s: Store, node_id: str, request: dict | None = None) -> dict:
    """Defaults, then the tree's settings, then each ancestor's branch settings from the root
    down, then the request: the nearest wins."""
    path = s.ancestry(node_id)
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in (s.tree(path[0]["tree_id"])["settings"] or {}).items() if v is not None})
    for node in path:
        merged.update({k: v for k, v in (node["meta"].get("branch_settings") or {}).items() if v is not None})
    merged.update({k: v for k, v in (request or {}).items() if v is not None})
    return merged


def request_from(settings: dict, n: int | None = None) -> GenerateRequest:
    """The generation request that effective settings describe (``n`` overrides theirs)."""
    return GenerateRequest(n=n or settings["n"], max_tokens=settings["max_tokens"],
                           temperature=settings["temperature"], top_p=settings["top_p"], top_k=settings["top_k"],
                           seed=settings.get("seed"), stop=list(settings["stop"]), alternatives=settings["alternatives"],
                           steering=settings.get("steering"), memory=settings.get("memory") or "",
                           template=settings.get("template") or TEMPLATE)


def presets(s: Store) -> list[dict]:
    """The built-in presets, then the saved ones by name."""
    built = [{"name": name, "settings": values, "builtin": True} for name, values in BUILTIN_PRESETS.items()]
    return built + [{**p, "builtin": False} for p in s.presets()]
