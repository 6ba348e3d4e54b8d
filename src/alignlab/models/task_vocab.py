"""Building a task's restricted output vocabulary and measuring what the restriction costs.

A task's kept set S (models/vocab.py) is the tokens of its prompts and data, of samples of the
full model on pilot prompts, and the top alternatives at every sampled position
(``task_vocabulary``); ``vocabulary_coverage`` samples the full model on held-out prompts and
measures the mass it puts inside S, KL(q || p) = -log Z per position, which the experiment's
report states. Both sample and score, so this module sits above the sampler and the scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from alignlab.models.forward import hidden_states, output_logits
from alignlab.models.sampling import SampleConfig, sample
from alignlab.models.scoring import build_batch
from alignlab.models.vocab import VocabularySubset, restrict_vocabulary, special_ids, vocabulary


@torch.no_grad()
def task_vocabulary(model, tokenizer, texts: Sequence[str], pilot_prompts: Sequence[str] = (),
                    samples_per_prompt: int = 2, max_new_tokens: int = 48, alternatives: int = 64,
                    seed: int = 0, progress: bool = False) -> VocabularySubset:
    """The tokens a task uses: those of ``texts`` (its prompts, any data), of full-vocabulary
    samples of the model on ``pilot_prompts``, and the top ``alternatives`` at every sampled
    position (so the mass the model nearly chose is kept too), plus the special tokens."""
    restrict_vocabulary(model, None)
    ids = special_ids(tokenizer, model)
    for text in texts:
        ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    if pilot_prompts:
        config = SampleConfig(max_new_tokens=max_new_tokens, seed=seed, alternatives=alternatives)
        for completion in sample(model, tokenizer, list(pilot_prompts), config, n=samples_per_prompt,
                                 progress=progress):
            for token in completion.tokens:
                ids.add(token.id)
                ids.update(a.id for a in token.alternatives)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    size = base.get_output_embeddings().weight.shape[0]
    return VocabularySubset(ids, size, tokenizer)


@dataclass
class Coverage:
    """How much the restriction costs, measured on the full model's own samples."""

    tokens: int
    """Response positions measured."""
    mass_inside: float
    """Mean probability the full model puts inside the kept set, Z = p(S)."""
    min_mass_inside: float
    kl_per_token: float
    """Mean KL(q || p) = -log Z per position, in nats."""
    sampled_outside: float
    """Share of the sampled tokens that fell outside the kept set."""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@torch.no_grad()
def vocabulary_coverage(model, tokenizer, subset: VocabularySubset, prompts: Sequence[str], max_new_tokens: int = 48,
                        seed: int = 1) -> Coverage:
    """Sample the FULL model on ``prompts`` (use prompts not used to build the subset) and
    measure, at every response position, the mass inside the kept set."""
    previous = vocabulary(model)
    restrict_vocabulary(model, None)
    try:
        completions = [c for c in sample(model, tokenizer, list(prompts),
                                         SampleConfig(max_new_tokens=max_new_tokens, seed=seed, alternatives=0))
                       if c.token_ids]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids, mask, target = build_batch([c.prompt_ids for c in completions], [c.token_ids for c in completions], pad)
        hidden, _ = hidden_states(model, ids, mask)
        select = target[:, 1:]
        h = hidden[:, :-1][select]  # (N, D): the states that predicted each response token
        sampled = ids[:, 1:][select]  # (N,)
        log_z = []
        for start in range(0, h.shape[0], 256):
            logp = torch.log_softmax(output_logits(model, h[start:start + 256]).float(), -1)  # (n, V)
            log_z.append(torch.logsumexp(logp[:, subset.ids], -1))
        log_z = torch.cat(log_z)
    finally:
        restrict_vocabulary(model, previous)
    outside = (subset.index[sampled] < 0).float().mean()
    return Coverage(int(log_z.numel()), float(log_z.exp().mean()), float(log_z.exp().min()), float(-log_z.mean()),
                    float(outside))
