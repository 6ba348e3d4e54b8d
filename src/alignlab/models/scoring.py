"""Per-token log-probs of given continuations: the quantity DPO, PPO and KL accounting need.

``token_logprobs`` works on tensors and keeps the autograd graph (training uses it);
``score`` takes text or token ids, batches, and returns plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from alignlab.models.forward import hidden_states, output_logits
from alignlab.models.vocab import vocabulary
from alignlab.models.sampling import PieceText, encode_prompt

LOGIT_CHUNK = 512
"""Positions whose logits are materialised at once: bounds memory at CHUNK x V floats."""


class TargetLogSoftmax(torch.autograd.Function):
    """log_softmax(logits / temperature)[i, targets[i]] for each row i, in float32.

    Equal to ``torch.log_softmax(...).gather(...)`` in value and gradient, with less memory: it
    keeps one float32 (n, V) buffer for backward and turns that buffer into the gradient in place
    ((onehot - softmax) * g / temperature), where autograd's pair keeps the same buffer and
    allocates two more (the gather's dense gradient and log_softmax's). On the 262k-token output
    layer each (n, V) is n MB. The buffer is consumed, so a graph through it can be walked back
    once only (``retain_graph=True`` is refused).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        z = logits.float()
        if temperature != 1.0:
            z = z / temperature
        logp = z - torch.logsumexp(z, -1, keepdim=True)  # (n, V), a new buffer
        del z
        ctx.save_for_backward(logp, targets)
        ctx.temperature, ctx.dtype, ctx.used = temperature, logits.dtype, False
        return logp.gather(1, targets[:, None])[:, 0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.used:
            raise RuntimeError("TargetLogSoftmax's saved buffer became its gradient in the first backward; "
                               "a second backward through it (retain_graph=True) is not supported")
        ctx.used = True
        logp, targets = ctx.saved_tensors
        g = grad.float() / ctx.temperature  # (n,)
        out = logp.exp_().mul_(-g[:, None])  # -softmax * g, in the saved buffer
        out.scatter_add_(1, targets[:, None], g[:, None])
        return out.to(ctx.dtype), None, None


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   target_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-prob of each target token given everything before it.

    input_ids, attention_mask, target_mask: (B, T). Returns (B, T) with log p(x_t | x_<t) where
    target_mask[:, t] is true and 0 elsewhere. Padding may be on either side: positions come
    from the attention mask. Logits are divided by ``temperature`` (PPO scores with the
    sampling temperature). Differentiable.
    """
    if target_mask[:, 0].any():
        raise ValueError("target_mask marks position 0, which has no preceding token to condition on")
    hidden, _ = hidden_states(model, input_ids, attention_mask)  # (B, T, D)
    select = target_mask[:, 1:].bool()  # (B, T-1): position t-1 predicts token t
    h = hidden[:, :-1][select]  # (N, D)
    targets = input_ids[:, 1:][select]  # (N,)
    subset = vocabulary(model)
    if subset is not None:  # logits cover the kept tokens only, in their order
        targets = subset.to_local(targets)
    pieces = []
    for start in range(0, h.shape[0], LOGIT_CHUNK):
        logits = output_logits(model, h[start:start + LOGIT_CHUNK])  # (n, V)
        pieces.append(TargetLogSoftmax.apply(logits, targets[start:start + LOGIT_CHUNK], temperature))
        del logits  # not needed by backward: the next chunk's logits may take its memory
    values = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    out = torch.zeros(input_ids.shape, dtype=values.dtype, device=values.device)
    out[:, 1:] = out[:, 1:].masked_scatter(select, values)
    return out


def build_batch(prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]],
                pad_id: int, padding: str = "right") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, target_mask), each (B, T), for prompt + continuation rows."""
    if padding not in ("left", "right"):
        raise ValueError(f"padding is '{padding}'; use 'left' or 'right'")
    rows = [list(p) + list(c) for p, c in zip(prompt_ids, continuation_ids)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    target = torch.zeros_like(ids, dtype=torch.bool)
    for i, (row, p) in enumerate(zip(rows, prompt_ids)):
        offset = width - len(row) if padding == "left" else 0
        ids[i, offset:offset + len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, offset:offset + len(row)] = 1
        target[i, offset + len(p):offset + len(row)] = True
    return ids, mask, target


@dataclass
class Scored:
    """Log-probs of one continuation, token by token."""

    prompt: str
    continuation: str
    token_ids: list[int]
    token_texts: list[str]
    logprobs: list[float]

    @property
    def total(self) -> float:
        return sum(self.logprobs)

    @property
    def perplexity(self) -> float:
        return math.exp(-self.total / max(1, len(self.logprobs)))

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "continuation": self.continuation, "total_logprob": self.total,
                "perplexity": self.perplexity, "tokens": [
                    {"id": i, "text": t, "logprob": lp}
                    for i, t, lp in zip(self.token_ids, self.token_texts, self.logprobs)]}


def encode_continuation(tokenizer, continuation: str | Sequence[int]) -> list[int]:
    """Token ids of a continuation (no BOS); a list of ids is taken as it is."""
    if isinstance(continuation, str):
        return list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    return list(continuation)


@torch.no_grad()
def score(model, tokenizer, prompts: Sequence[str | Sequence[int]],
          continuations: Sequence[str | Sequence[int]], batch_size: int = 8, padding: str = "right",
          temperature: float = 1.0, progress: bool = False) -> list[Scored]:
    """Per-token log-probs of each continuation given its prompt.

    Text prompts get the tokenizer's BOS; text continuations are tokenized without it and
    appended (token ids can be given instead of either, e.g. ids recorded while sampling).
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations; give one each")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    piece = PieceText(tokenizer)
    device = next(model.parameters()).device
    p_ids = [encode_prompt(tokenizer, p) for p in prompts]
    c_ids = [encode_continuation(tokenizer, c) for c in continuations]
    for i, (p, c) in enumerate(zip(p_ids, c_ids)):
        if not p:
            raise ValueError(f"prompt {i} encodes to no tokens; a continuation needs at least a BOS before it")
    results: list[Scored] = []
    starts = range(0, len(p_ids), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="scoring", unit="batch", leave=False)
    for start in starts:
        batch_p, batch_c = p_ids[start:start + batch_size], c_ids[start:start + batch_size]
        ids, mask, target = build_batch(batch_p, batch_c, pad_id, padding)
        lp = token_logprobs(model, ids.to(device), mask.to(device), target.to(device), temperature).cpu()
        for row, (p, c) in enumerate(zip(batch_p, batch_c)):
            values = lp[row][target[row]].tolist()
            k = start + row
            results.append(Scored(
                prompt=prompts[k] if isinstance(prompts[k], str) else tokenizer.decode(list(prompts[k])),
                continuation=continuations[k] if isinstance(continuations[k], str) else tokenizer.decode(c),
                token_ids=c, token_texts=[piece(t) for t in c], logprobs=values))
    return results
