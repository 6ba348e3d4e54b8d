"""The two halves of a causal LM forward pass, kept apart so callers pay for logits only where
they need them.

With a 262,144-token vocabulary the output layer is most of the compute on a CPU. Splitting the
pass lets sampling compute logits for the last position only, and scoring for the continuation
positions only, in chunks, instead of a (batch, length, vocabulary) tensor.
"""

from __future__ import annotations

import torch

from alignlab.models.kernels import _kernel_matmul, usable
from alignlab.models.kernels.layout import logits_layout


def decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body of a ``*ForCausalLM`` model (everything before the output layer).

    A peft model is unwrapped: its adapters are injected into the base model's layers, so the
    body still runs them (and ``disable_adapter()`` still turns them off).
    """
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    body = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if body is None or body is model:
        raise TypeError(f"{type(model).__name__} has no separate decoder body; alignlab needs a "
                        "transformers *ForCausalLM model")
    return body


def hidden_states(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  position_ids: torch.Tensor | None = None, cache=None, use_cache: bool = False):
    """Final-layer hidden states (B, T, D) and the updated KV cache.

    Position ids default to the count of real tokens before each position, so left padding
    does not shift positions.
    """
    if position_ids is None:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if cache is None and not use_cache:
        return body_hidden_states(decoder(model), input_ids, attention_mask, position_ids), None
    out = decoder(model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=use_cache)
    return out.last_hidden_state, out.cache


SHARED_PREFIX_MIN = 16
"""Rows that begin with at least this many identical tokens run that prefix once."""


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, limit: int | None = None) -> int:
    """How many leading positions every row has in common (all real tokens, the same ids), kept
    one short of the shortest row so each row has a token of its own; 0 when under
    ``SHARED_PREFIX_MIN`` or when the batch is a single row or longer than ``limit``."""
    rows, width = input_ids.shape
    if rows < 2 or (limit is not None and width > limit):
        return 0
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0)  # (T,)
    shared = int(same.long().cumprod(0).sum())
    shared = min(shared, width - 1)
    return shared if shared >= SHARED_PREFIX_MIN else 0


def body_hidden_states(body: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       position_ids: torch.Tensor) -> torch.Tensor:
    """``body(...).last_hidden_state`` (B, T, D), without the work rows repeat or pad.

    Prompts built from one template (a task's few-shot example, a system text) start every row
    of a training batch with the same tokens; their keys, values and hidden states are the same
    in every row, so they are computed for one row and the other rows read them (through the KV
    cache, whose copies share the one computation in autograd: gradients add up as if each row
    had its own). The rest of the rows runs packed where the model allows it (models/packing.py:
    no padding, and prefixes that only some rows share, such as a preference pair's prompt, once).
    The result equals the plain pass up to float rounding at every real token. The cached prefix
    is skipped where a row would reach past the model's sliding attention window, where a cache
    may keep only its tail.
    """
    from alignlab.models.packing import packed_body_hidden_states, plan_packing, supports_packing

    window = getattr(getattr(body, "config", None), "sliding_window", None) or 10**9
    pack = supports_packing(body)
    pad_id = getattr(body.config, "pad_token_id", None) or 0
    shared = shared_prefix_length(input_ids, attention_mask)
    if shared and not torch.equal(position_ids[:, :shared],
                                  torch.arange(shared, device=position_ids.device).expand(len(position_ids), -1)):
        shared = 0
    if shared:
        tail_ids, tail_mask, tail_pos = input_ids[:, shared:], attention_mask[:, shared:], position_ids[:, shared:]
        plan = plan_packing(tail_ids, tail_mask, tail_pos, offset=shared, pad_id=pad_id) if pack else None
        tail_width = plan.input_ids.shape[1] if plan is not None else tail_ids.shape[1]
        if shared + tail_width <= window:
            rows = len(plan.input_ids) if plan is not None else input_ids.shape[0]
            head = body(input_ids=input_ids[:1, :shared], attention_mask=attention_mask[:1, :shared],
                        position_ids=position_ids[:1, :shared], use_cache=True)
            cache = head.cache
            cache.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=input_ids.device))
            if plan is not None:
                tail = packed_body_hidden_states(body, plan, cache, past=shared)
            else:
                tail = body(input_ids=tail_ids, attention_mask=attention_mask, position_ids=tail_pos,
                            cache=cache, use_cache=True).last_hidden_state
            return torch.cat([head.last_hidden_state.expand(input_ids.shape[0], -1, -1), tail], dim=1)
    plan = plan_packing(input_ids, attention_mask, position_ids, pad_id=pad_id) if pack else None
    if plan is not None:
        return packed_body_hidden_states(body, plan)
    return body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state


def output_logits(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits (..., V) from hidden states (..., D), with the model's final soft-capping if any.
    With a restricted vocabulary (models/vocab.py) V is the kept set's size, in its order.

    Up to ``kernels.MAX_ROWS`` rows without gradients (a decoding step) go to alignlab's kernel
    (models/kernels), which reads the 262k-row weight once at close to memory speed. Otherwise, in
    float32, it is ``h @ W^T`` or ``W @ h^T`` transposed back, whichever this machine runs faster
    (measured once per machine: models/kernels/layout.py); the result is the same product.
    """
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    head = model.get_output_embeddings()
    flat = hidden.reshape(-1, hidden.shape[-1])
    weight, bias = head.weight, getattr(head, "bias", None)
    subset = getattr(model, "alignlab_vocabulary", None)  # see models/vocab.py
    if subset is not None:
        weight = subset.rows(weight)
        bias = bias[subset.ids] if bias is not None else None
    if flat.dtype != weight.dtype:
        flat = flat.to(weight.dtype)
    if usable(flat, weight):  # a few rows without gradients (decoding): models/kernels
        logits = _kernel_matmul(flat, weight)
    elif weight.dtype == torch.float32 and logits_layout() == "weight":
        logits = (weight @ flat.T).T.contiguous()
    else:
        logits = flat @ weight.T
    if bias is not None:
        logits = logits + bias
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.reshape(*hidden.shape[:-1], logits.shape[-1])
