"""The models a loom works with, loaded on first use and kept.

Generation models (the base model, a trained policy folder, a base model plus a LoRA adapter)
are named as everywhere in alignlab ('gemma-3-270m', 'tiny', or a folder). Reward models (a
folder written by `alignlab reward train`) are kept beside them as scorers: the loom shows
their score for a node, they do not generate.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alignlab.loom.events import Invalid, NotFound
from alignlab.loom.generation import COLOURS, ModelSlot


class ModelRegistry:
    """Names in the order they were added; each model is loaded the first time it is used."""

    def __init__(self, names: list[str]):
        self._names: list[str] = []
        self._kinds: dict[str, str] = {}
        self._loaded: dict[str, object] = {}
        self._lock = threading.Lock()
        for name in names:
            self.add(name)

    def add(self, name: str, kind: str | None = None) -> dict:
        """Register a model by name or folder (not loaded until used)."""
        if not isinstance(name, str) or not name.strip():
            raise Invalid("'name' is empty; give a model name or a folder", field="name")
        if kind is None:
            kind = "reward" if (Path(name) / "reward_config.json").exists() else (
                "adapter" if (Path(name) / "adapter_config.json").exists() else
                "policy" if Path(name).is_dir() else "base")
        if kind not in ("base", "policy", "adapter", "reward"):
            raise Invalid(f"'kind' is {kind!r}; use base, policy, adapter or reward", field="kind")
        if kind != "reward" and Path(name).is_dir() is False and name not in ("gemma-3-270m", "tiny") \
                and ("/" in name or name.startswith(".")):
            raise Invalid(f"no model folder at {name}", field="name")
        with self._lock:
            if name not in self._names:
                self._names.append(name)
                self._kinds[name] = kind
        return self.describe(name)

    def names(self, kind: str | None = None) -> list[str]:
        return [n for n in self._names if kind is None or (self._kinds[n] == "reward") == (kind == "reward")]

    def default(self) -> str:
        generators = self.names("generate")
        if not generators:
            raise NotFound("this loom has no generation model; start it with --model NAME", field="model")
        return generators[0]

    def describe(self, name: str) -> dict:
        index = self._names.index(name)
        return {"name": name, "kind": self._kinds[name], "colour": COLOURS[index % len(COLOURS)],
                "loaded": name in self._loaded}

    def slot(self, name: str | None) -> ModelSlot:
        """The loaded generation model ``name`` (default: the first). Call on the model worker."""
        name = name or self.default()
        if name not in self._kinds:
            raise NotFound(f"no model {name!r} in this loom; add it first (models: {', '.join(self._names)})",
                           field="model")
        if self._kinds[name] == "reward":
            raise Invalid(f"{name} is a reward model; it scores, it does not generate", field="model")
        if name not in self._loaded:
            from alignlab.train.policy import load_policy

            model, tokenizer = load_policy(name)
            model.eval()
            self._loaded[name] = ModelSlot(name, model, tokenizer, self.describe(name)["colour"], self._kinds[name])
        return self._loaded[name]

    def reward(self, name: str):
        """The loaded reward model ``name``. Call on the model worker."""
        if self._kinds.get(name) != "reward":
            raise NotFound(f"no reward model {name!r} in this loom", field="model")
        if name not in self._loaded:
            from alignlab.train.reward_model import load_reward_model

            self._loaded[name] = load_reward_model(name)
        return self._loaded[name]
