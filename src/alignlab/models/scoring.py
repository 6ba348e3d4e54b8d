"""Per-token log-probs of given continuations: the quantity DPO, PPO and KL accounting need.

``token_logprobs`` works on tensors and keeps the autograd graph (training uses it);
``score`` takes text or token ids, batches, and returns plain numbers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from alignlab.models.forward import hidden_states
from alignlab.models.vocab import vocabulary
from alignlab.models.tokens import PieceText, encode_prompt

LOGIT_CHUNK = 512
"""Positions whose logits are materialised at once: bounds memory at CHUNK x V floats."""


class OutputTargetLogProbs(torch.autograd.Function):
    """log_softmax((h @ W^T + b) / temperature)[i, targets[i]] for each row i of ``h``, in float32:
    the output layer and the log-prob of the target token in one step.

    Equal in value and gradient to ``log_softmax(F.linear(h, W, b) / T).gather(...)`` (with the
    model's final soft-capping, if any), but faster and leaner on a 262k-token vocabulary:

    - the logits are computed as ``W @ h^T``, a (V, n) product, which MKL runs at ~60 GFLOP/s on
      this kind of CPU against ~40 for ``h @ W^T`` (benchmarks/; 0.71 s vs 1.06 s for 128 rows
      of the embedded model), and the weight's gradient ``G @ h`` likewise (0.89 s vs 1.00 s);
    - one float32 (V, n) buffer is kept for backward and turned into the gradient of the logits
      in place ((onehot - softmax) * g / T), where autograd's pair would allocate two more;
    - where the weight is also the model's input embedding and that embedding has row-sparse
      gradients (train/loop.py ``sparse_embedding_gradients``), the weight's dense gradient goes
      straight into ``weight.grad`` (``sink``) and the embedding's rows are added to it there in
      place. Through autograd the two would meet in its input buffer, which adds a sparse
      gradient to a dense one out of place: a 0.7 GB copy, ~0.8 s of every PPO step here.

    The buffer is consumed, so the graph through it can be walked back once only
    (``retain_graph=True`` is refused).
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                temperature: float = 1.0, cap: float | None = None, sink: list | None = None) -> torch.Tensor:
        hm = h.to(weight.dtype) if h.dtype != weight.dtype else h
        z = (weight @ hm.T).float()  # (V, n)
        if bias is not None:
            z += bias.float()[:, None]
        squashed = None
        if cap:
            squashed = torch.tanh(z / cap)  # kept: the cap's derivative is 1 - tanh^2
            z = squashed * cap
        if temperature != 1.0:
            z /= temperature
        z -= torch.logsumexp(z, 0, keepdim=True)  # log-probs, (V, n)
        cols = torch.arange(z.shape[1], device=z.device)
        out = z[targets, cols]
        ctx.save_for_backward(z, hm, weight, targets, squashed)
        ctx.temperature, ctx.cap, ctx.h_dtype, ctx.has_bias, ctx.used = temperature, cap, h.dtype, bias is not None, False
        ctx.sink = sink
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.used:
            raise RuntimeError("OutputTargetLogProbs' saved buffer became its gradient in the first backward; "
                               "a second backward through it (retain_graph=True) is not supported")
        ctx.used = True
        logp, hm, weight, targets, squashed = ctx.saved_tensors
        g = grad.float() / ctx.temperature  # (n,)
        gz = logp.exp_().mul_(-g[None, :])  # -softmax * g, in the saved buffer, (V, n)
        gz[targets, torch.arange(gz.shape[1], device=gz.device)] += g
        if ctx.cap:
            gz.mul_(1 - squashed * squashed)
        grad_bias = gz.sum(1).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        gz = gz.to(weight.dtype)
        grad_h = (gz.T @ weight).to(ctx.h_dtype) if ctx.needs_input_grad[0] else None  # (n, D)
        grad_w = None
        if ctx.sink:  # the parameter itself (see the class docstring)
            param = ctx.sink[0]
            if param.grad is None:
                param.grad = _rows_times(gz, hm)
            else:
                if param.grad.is_sparse:
                    param.grad = param.grad.to_dense()
                _rows_times(gz, hm, accumulate=param.grad)
        elif ctx.needs_input_grad[1]:
            grad_w = _rows_times(gz, hm)  # (V, D)
        return grad_h, grad_w, grad_bias, None, None, None, None


GRAD_ROWS = 32768
"""Rows of the weight's gradient computed per product: MKL runs (V, n) @ (n, D) ~1.3x faster in
blocks of this many rows than in one call here (0.73 s vs 0.94 s for the embedded model's
262,144 rows at n = 128)."""


def _rows_times(gz: torch.Tensor, h: torch.Tensor, accumulate: torch.Tensor | None = None) -> torch.Tensor:
    """``gz @ h`` (V, D) in row blocks; added into ``accumulate`` in place when given."""
    out = torch.empty(gz.shape[0], h.shape[1], dtype=gz.dtype, device=gz.device) if accumulate is None else accumulate
    for start in range(0, gz.shape[0], GRAD_ROWS):
        block = slice(start, start + GRAD_ROWS)
        if accumulate is None:
            torch.mm(gz[block], h, out=out[block])
        else:
            out[block].addmm_(gz[block], h)
    return out


_PLAIN = threading.local()


@contextmanager
def plain_autograd(model) -> Iterator[None]:
    """Within this block ``target_logprobs`` is built from ordinary autograd operations and the
    input embedding's gradient is dense: slower, but the graph can be walked more than once and
    differentiated twice (Hessian-vector products), and no gradient goes around autograd. The
    white-box monitors run their extra passes under it."""
    # Any module may come here (a reward model wrapping an LM, a policy with a value head, a
    # plain PyTorch model): every sparse embedding inside it turns dense for the block.
    sparse = [m for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse]
    before = getattr(_PLAIN, "on", False)
    _PLAIN.on = True
    for embedding in sparse:
        embedding.sparse = False
    try:
        yield
    finally:
        _PLAIN.on = before
        for embedding in sparse:
            embedding.sparse = True


def target_logprobs(model, h: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-prob (n,) of each target token from final hidden states ``h`` (n, D), through the
    model's output layer (a restricted vocabulary's rows where one is set: targets are then
    local ids), ``LOGIT_CHUNK`` rows at a time. Differentiable."""
    weight, bias, cap = _output_layer(model)
    if getattr(_PLAIN, "on", False):
        z = torch.nn.functional.linear(h.to(weight.dtype), weight, bias).float()  # (n, V)
        if cap:
            z = torch.tanh(z / cap) * cap
        return torch.log_softmax(z / temperature, -1).gather(-1, targets[:, None])[:, 0]
    sink = None
    if torch.is_grad_enabled() and weight.is_leaf and weight.requires_grad and _tied_sparse(model, weight):
        sink, weight = [weight], weight.detach()
    pieces = [OutputTargetLogProbs.apply(h[start:start + LOGIT_CHUNK], weight, bias,
                                         targets[start:start + LOGIT_CHUNK], temperature, cap, sink)
              for start in range(0, h.shape[0], LOGIT_CHUNK)]
    return torch.cat(pieces) if pieces else h.new_zeros(0, dtype=torch.float32)


def _tied_sparse(model, weight: torch.Tensor) -> bool:
    """Whether ``weight`` is also the input embedding's and that embedding's gradient is sparse:
    the embedding's own autograd path then still reaches the parameter, so its gradient hooks
    run once both contributions are in."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    embedding = model.get_input_embeddings()
    return getattr(embedding, "sparse", False) and embedding.weight is weight


def _output_layer(model):
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    head = model.get_output_embeddings()
    weight, bias = head.weight, getattr(head, "bias", None)
    subset = vocabulary(model)
    if subset is not None:
        weight = subset.rows(weight)
        bias = bias[subset.ids] if bias is not None else None
    return weight, bias, getattr(model.config, "final_logit_softcapping", None)


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
    values = target_logprobs(model, h, targets, temperature)  # (N,)
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
