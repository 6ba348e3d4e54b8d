"""The models a loom works with, loaded on first use and kept.

Generation models (the base model, a trained policy folder, a base model plus a LoRA adapter)
are named as everywhere in alignlab ('gemma-3-270m', 'tiny', or a folder). Reward models (a
folder written by `alignlab reward train`) and process reward models (`alignlab prm train`) are
kept beside them as scorers: the loom shows a reward model's score for a node and a process
reward model's P(right) of each of its steps; they do not generate.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alignlab.loom.endpoint import EndpointSlot
from alignlab.loom.events import Invalid, NotFound
from alignlab.loom.generation import COLOURS, ModelSlot


BASE_MODELS = ("gemma-3-270m", "tiny")
KINDS = ("base", "policy", "adapter", "reward", "process")
SCORERS = ("reward", "process")
"""Kinds that score text instead of writing it."""


def model_kind(name: str) -> str:
    """What ``name`` is: 'base' (a model name alignlab knows), or the kind of model a folder
    holds: 'reward' (reward_config.json), 'process' (prm_config.json), 'adapter'
    (adapter_config.json), 'policy' (config.json with weights). Anything else is refused, naming
    what a model folder holds."""
    if not isinstance(name, str) or not name.strip():
        raise Invalid("'name' is empty; give a model name or a folder", field="name")
    if name in BASE_MODELS:
        return "base"
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise Invalid(f"no model folder at {name}: give a model name ({', '.join(BASE_MODELS)}) or a folder that "
                      "holds a model", field="name")
    if (folder / "reward_config.json").is_file():
        return "reward"
    if (folder / "prm_config.json").is_file():
        return "process"
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    weights = any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))
    if (folder / "config.json").is_file() and weights:
        return "policy"
    raise Invalid(f"{name} holds no model: a model folder has config.json with weights (*.safetensors), "
                  "an adapter (adapter_config.json), a reward model (reward_config.json) or a process reward "
                  "model (prm_config.json)", field="name")


class ModelRegistry:
    """Names in the order they were added; each model is loaded the first time it is used."""

    def __init__(self, names: list[str], store=None, context_tokens: int = 4096, endpoints: list[str] = ()):
        """``names``: the models the loom was started with. ``store``: where models added later
        are kept (and read back from, so that a restart lists them again). ``context_tokens``:
        the most tokens a model is given at once (see ``ModelSlot.window``). ``endpoints``:
        models over an OpenAI-compatible endpoint, as ``NAME=URL[,model=M][,key_env=VAR]``
        (loom/endpoint.py; not stored: give them again at each start)."""
        self.context_tokens = context_tokens
        self._names: list[str] = []
        self._kinds: dict[str, str] = {}
        self._loaded: dict[str, object] = {}
        self._lock = threading.Lock()
        self._store = store
        self.missing: list[str] = []
        """Kept models whose folder is gone (listed by the store, not offered)."""
        for name in names:
            self.add(name, keep=False)
        for spec in endpoints:
            slot = EndpointSlot.parse(spec, COLOURS[len(self._names) % len(COLOURS)])
            if slot.name in self._names:
                raise Invalid(f"--endpoint {spec!r}: the name {slot.name!r} is taken; give the endpoint another",
                              field="endpoint")
            self._names.append(slot.name)
            self._kinds[slot.name] = "endpoint"
            self._loaded[slot.name] = slot
        for kept in (store.models() if store is not None else []):
            try:
                self.add(kept["name"], kept["kind"], keep=False)
            except Invalid:
                self.missing.append(kept["name"])

    def add(self, name: str, kind: str | None = None, author: str = "loom", keep: bool = True) -> dict:
        """Register a model by name or folder (not loaded until used); ``keep``: store it, so that
        it is listed again after a restart. A folder must hold a model (see ``model_kind``)."""
        found = model_kind(name)
        if kind is not None and kind not in KINDS:
            raise Invalid(f"'kind' is {kind!r}; use {', '.join(KINDS)}", field="kind")
        if kind is not None and kind != found and {kind, found} != {"policy", "adapter"}:
            raise Invalid(f"{name} holds a {found} model, not a {kind} one", field="kind")
        kind = found
        if found != "base":
            name = str(Path(name).expanduser().resolve())
        with self._lock:
            if name not in self._names:
                self._names.append(name)
                self._kinds[name] = kind
                if keep and self._store is not None and found != "base":
                    self._store.keep_model(name, kind, author)
        return self.describe(name)

    def names(self, kind: str | None = None) -> list[str]:
        """The models of one kind ('generate': every model that writes text), or all of them."""
        if kind == "generate":
            return [n for n in self._names if self._kinds[n] not in SCORERS]
        return [n for n in self._names if kind is None or self._kinds[n] == kind]

    def default(self) -> str:
        generators = self.names("generate")
        if not generators:
            raise NotFound("this loom has no generation model; start it with --model NAME", field="model")
        return generators[0]

    def describe(self, name: str) -> dict:
        index = self._names.index(name)
        return {"name": name, "kind": self._kinds[name], "colour": COLOURS[index % len(COLOURS)],
                "loaded": name in self._loaded}

    def kind(self, name: str) -> str:
        return self._kinds[name]

    def local(self, name: str | None, what: str) -> ModelSlot:
        """The loaded local model ``name`` (default: the first generation model) for work only a
        local model can do (``what``, e.g. 'the next-token view'); an endpoint is refused."""
        slot = self.slot(name)
        if isinstance(slot, EndpointSlot):
            raise Invalid(f"{slot.name} is served over an endpoint: {what} needs a local model's own distribution "
                          "(pick a local model)", field="model")
        return slot

    def slot(self, name: str | None) -> ModelSlot | EndpointSlot:
        """The loaded generation model ``name`` (default: the first). Call on the model worker."""
        name = name or self.default()
        if name not in self._kinds:
            raise NotFound(f"no model {name!r} in this loom; add it first (models: {', '.join(self._names)})",
                           field="model")
        if self._kinds[name] in SCORERS:
            what = "a reward model" if self._kinds[name] == "reward" else "a process reward model"
            raise Invalid(f"{name} is {what}; it scores, it does not generate", field="model")
        if name not in self._loaded:
            from alignlab.train.policy import load_policy

            model, tokenizer = load_policy(name)
            model.eval()
            self._loaded[name] = ModelSlot(name, model, tokenizer, self.describe(name)["colour"], self._kinds[name],
                                           self.context_tokens)
        return self._loaded[name]

    def reward(self, name: str):
        """The loaded reward model ``name``. Call on the model worker."""
        if self._kinds.get(name) != "reward":
            raise NotFound(f"no reward model {name!r} in this loom", field="model")
        if name not in self._loaded:
            from alignlab.train.reward_model import load_reward_model

            self._loaded[name] = load_reward_model(name)
        return self._loaded[name]

    def process(self, name: str):
        """The loaded process reward model ``name`` (train/prm.py). Call on the model worker."""
        if self._kinds.get(name) != "process":
            raise NotFound(f"no process reward model {name!r} in this loom; add its folder (the one "
                           "`alignlab prm train` printed) with + model", field="model")
        if name not in self._loaded:
            from alignlab.train.prm import load_prm

            self._loaded[name] = load_prm(name)
        return self._loaded[name]
