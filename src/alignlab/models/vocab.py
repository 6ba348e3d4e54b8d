"""A restricted output vocabulary: the model's distribution renormalised over the tokens a task
actually uses, so the output layer costs K rows instead of 262,144.

On a CPU the embedded model's output layer (640 x 262,144) is most of every sampling and
training step. A task that writes English stories uses a few tens of thousands of those tokens;
computing logits for just those rows and renormalising gives the distribution
q(x) = p(x) / Z over the kept set S, with Z = p(S). Sampling, scoring, DPO and PPO then all work
in that space consistently (policy and reference alike), so every KL the ledger reports is
between two restricted distributions.

The cost of the restriction is the mass the full model puts outside S: per position,
KL(q || p) = -log Z. Token ids are not ordered by frequency in Gemma's vocabulary, so S must be
built from text the task produces: models/task_vocab.py builds it (``task_vocabulary``, which
samples the model) and measures its cost (``vocabulary_coverage``). This module is what the
sampler and the scorer read, below both.

    subset = task_vocabulary(model, tokenizer, prompts, pilot_prompts)   # models/task_vocab.py
    restrict_vocabulary(model, subset)     # sampling/scoring now use S; restrict_vocabulary(model, None) undoes
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from alignlab.models.processes import distributed
from alignlab.models.tokens import eos_ids

ATTRIBUTE = "alignlab_vocabulary"


class VocabularySubset:
    """The kept token ids (sorted) and the map from a full-vocabulary id to its kept index."""

    def __init__(self, ids: Iterable[int], vocab_size: int, tokenizer=None):
        kept = sorted({int(i) for i in ids})
        if not kept:
            raise ValueError("a restricted vocabulary needs at least one token")
        if kept[0] < 0 or kept[-1] >= vocab_size:
            raise ValueError(f"token ids must lie in [0, {vocab_size}); got {kept[0]}..{kept[-1]}")
        self.ids = torch.tensor(kept, dtype=torch.long)  # (K,) kept index -> token id
        self.index = torch.full((vocab_size,), -1, dtype=torch.long)  # (V,) token id -> kept index or -1
        self.index[self.ids] = torch.arange(len(kept))
        self.vocab_size = vocab_size
        self._tokenizer = tokenizer
        self._cache: dict[bool, tuple] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, token_id: int) -> bool:
        return 0 <= token_id < self.vocab_size and bool(self.index[token_id] >= 0)

    def to_local(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Kept indices of full-vocabulary ids; an id outside the kept set is an error naming it."""
        local = self.index.to(token_ids.device)[token_ids]
        if (local < 0).any():
            bad = int(token_ids[local < 0][0])
            piece = repr(self._tokenizer.decode([bad])) if self._tokenizer is not None else ""
            raise ValueError(f"token {bad} {piece} is outside the restricted vocabulary of {len(self)} tokens; "
                             "build the vocabulary from text that includes this data (task_vocabulary(texts=...))")
        return local

    def to_global(self, local: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary ids of kept indices."""
        return self.ids.to(local.device)[local]

    def rows(self, weight: torch.Tensor) -> torch.Tensor:
        """The kept rows of an output weight (K, D). Sliced anew while the weight trains (so its
        gradient flows back); cached when nothing can change it."""
        if weight.requires_grad and torch.is_grad_enabled():
            # Read as an embedding lookup: the same rows, with a row-sparse gradient where that is
            # safe (one process), instead of a dense 262k-row one (train/loop.py's AdamW takes it).
            return torch.nn.functional.embedding(self.ids.to(weight.device), weight, sparse=not distributed())
        # A slice made under inference mode cannot enter autograd later (a frozen LoRA base does):
        # one cached slice per mode.
        inference = torch.is_inference_mode_enabled()
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cached = self._cache.get(inference)
        if cached is None or cached[0] != key:
            cached = self._cache[inference] = (key, weight.detach().index_select(0, self.ids.to(weight.device)))
        return cached[1]

    def to_list(self) -> list[int]:
        return self.ids.tolist()


def _base(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def vocabulary(model: torch.nn.Module) -> VocabularySubset | None:
    """The restricted vocabulary a model computes logits over, or None for the full one."""
    return getattr(_base(model), ATTRIBUTE, None)


def restrict_vocabulary(model: torch.nn.Module, subset: VocabularySubset | None) -> None:
    """Make the model's logits (through alignlab's forward functions) cover ``subset`` only;
    None restores the full vocabulary."""
    base = _base(model)
    if subset is not None:
        size = base.get_output_embeddings().weight.shape[0]
        if subset.vocab_size != size:
            raise ValueError(f"the vocabulary subset was built for {subset.vocab_size} tokens, the model has {size}")
    setattr(base, ATTRIBUTE, subset)


def special_ids(tokenizer, model=None) -> set[int]:
    """Tokens a restricted vocabulary always keeps: EOS (every one the model stops at), BOS, pad."""
    ids = {getattr(tokenizer, name) for name in ("eos_token_id", "bos_token_id", "pad_token_id")}
    if model is not None:
        ids |= set(eos_ids(model, tokenizer))
    return {int(i) for i in ids if i is not None}


def save_vocabulary(path, subset: VocabularySubset, **extra) -> None:
    """Write a vocabulary file (JSON: the kept ids, the full size, and anything measured)."""
    from alignlab.fileio import atomic_write_json

    atomic_write_json(path, {"vocab_size": subset.vocab_size, "size": len(subset), **extra, "ids": subset.to_list()})


def load_vocabulary(path, tokenizer=None) -> VocabularySubset:
    """Read a vocabulary file written by ``save_vocabulary``; errors name the file and field."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"vocabulary file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
    for key in ("ids", "vocab_size"):
        if key not in data:
            raise ValueError(f"{path}: field '{key}' is missing; a vocabulary file holds 'ids' (kept token ids) "
                             "and 'vocab_size'")
    if not isinstance(data["ids"], list) or not all(isinstance(i, int) for i in data["ids"]):
        raise ValueError(f"{path}: field 'ids' must be a list of integer token ids")
    return VocabularySubset(data["ids"], int(data["vocab_size"]), tokenizer)
