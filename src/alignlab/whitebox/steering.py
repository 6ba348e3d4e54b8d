"""Activation addition: steering a model by adding a vector to its residual stream.

The method of Turner et al. (2023), "Steering Language Models With Activation Engineering"
(ActAdd): run two contrasting prompts (e.g. "Love" and "Hate") through the model, take the
difference of their residual-stream activations at the input of one layer, position by
position, and add ``coefficient`` times that difference at the same positions of the user's
prompt during generation (the paper's GPT-2-XL settings: layer 6, coefficient 5 for Love - Hate).
The two prompts are padded with spaces to the same token length, as in the paper. Positions
beyond the steering prompts' length are left alone, so decoding with a KV cache is steered
through the prompt's keys and values only, exactly as a full forward pass would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from alignlab.models.forward import decoder


@dataclass(frozen=True)
class Steering:
    """One activation-addition recipe (what a loom node records about the steering it was made with)."""

    positive: str
    negative: str
    layer: int
    coefficient: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Steering:
        missing = [k for k in ("positive", "negative", "layer", "coefficient") if k not in d]
        if missing:
            raise ValueError(f"steering needs {', '.join(missing)}")
        if not isinstance(d["positive"], str) or not isinstance(d["negative"], str) or not (d["positive"] or d["negative"]):
            raise ValueError("steering 'positive' and 'negative' must be strings, not both empty")
        if isinstance(d["layer"], bool) or not isinstance(d["layer"], int):
            raise ValueError(f"steering 'layer' must be an integer, got {d['layer']!r}")
        if isinstance(d["coefficient"], bool) or not isinstance(d["coefficient"], (int, float)):
            raise ValueError(f"steering 'coefficient' must be a number, got {d['coefficient']!r}")
        return cls(d["positive"], d["negative"], d["layer"], float(d["coefficient"]))


def _layers(model) -> torch.nn.ModuleList:
    body = decoder(model)
    layers = getattr(body, "layers", None)
    if layers is None:
        raise TypeError(f"{type(body).__name__} has no .layers; steering needs a decoder of stacked layers")
    return layers


def check_layer(model, layer: int) -> None:
    count = len(_layers(model))
    if not 0 <= layer < count:
        raise ValueError(f"steering layer {layer} does not exist; this model has layers 0..{count - 1}")


@torch.no_grad()
def steering_vector(model, tokenizer, steering: Steering) -> torch.Tensor:
    """The per-position difference (k, D) of the two prompts' activations at the input of
    ``steering.layer`` (both prompts with BOS, the shorter padded with spaces)."""
    check_layer(model, steering.layer)
    rows = [tokenizer(t)["input_ids"] for t in (steering.positive, steering.negative)]
    space = tokenizer(" ", add_special_tokens=False)["input_ids"]
    pad = space[-1] if space else (tokenizer.pad_token_id or 0)
    width = max(len(r) for r in rows)
    rows = [r + [pad] * (width - len(r)) for r in rows]
    ids = torch.tensor(rows, device=next(model.parameters()).device)
    captured: list[torch.Tensor] = []

    def grab(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        captured.append(hidden.detach())

    handle = _layers(model)[steering.layer].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        decoder(model)(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        handle.remove()
    acts = captured[0]  # (2, k, D)
    return acts[0] - acts[1]


@contextmanager
def steered(model, vector: torch.Tensor, layer: int, coefficient: float) -> Iterator[None]:
    """Within the block, every forward pass adds ``coefficient * vector[p]`` to the input of
    ``layer`` at each position p < len(vector) (positions as the body receives them)."""
    check_layer(model, layer)
    positions: list[torch.Tensor | None] = [None]

    def remember(module, args, kwargs):
        pos = kwargs.get("position_ids")
        if pos is None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            pos = torch.arange(ids.shape[1], device=ids.device)[None] if ids is not None else None
        positions[0] = pos

    def add(module, args, kwargs):
        pos = positions[0]
        hidden = args[0] if args else kwargs["hidden_states"]
        if pos is None:
            return None
        pos = pos.expand(hidden.shape[0], -1)
        hit = pos < vector.shape[0]  # (B, T)
        if not bool(hit.any()):
            return None
        delta = torch.zeros_like(hidden)
        delta[hit] = (coefficient * vector.to(hidden.dtype))[pos[hit]]
        hidden = hidden + delta
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    body_handle = decoder(model).register_forward_pre_hook(remember, with_kwargs=True)
    layer_handle = _layers(model)[layer].register_forward_pre_hook(add, with_kwargs=True)
    try:
        yield
    finally:
        body_handle.remove()
        layer_handle.remove()
