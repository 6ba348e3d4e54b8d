"""Tokenizer-side helpers the sampler, the scorer and the vocabulary share: a prompt's ids, the
ids that end a sequence, left padding, and the display text of single tokens. Below all three,
so none of them imports another for these."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def encode_prompt(tokenizer, prompt: str | Sequence[int]) -> list[int]:
    """Token ids of a prompt, with the tokenizer's BOS; a list of ids is taken as it is."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    return list(prompt)


def eos_ids(model, tokenizer) -> set[int]:
    """Every id that ends a sequence for this model."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T), padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


class PieceText:
    """Display text of single token ids (for alternatives), cached."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self.cache.get(token_id)
        if text is None:
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            text = self.tokenizer.convert_tokens_to_string([piece]) if piece is not None else ""
            if piece and piece.startswith("\u2581"):
                text = " " + text.lstrip(" ")
            self.cache[token_id] = text
        return text
