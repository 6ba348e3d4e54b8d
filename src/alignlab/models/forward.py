"""The two halves of a causal LM forward pass, kept apart so callers pay for logits only where
they need them.

With a 262,144-token vocabulary the output layer is most of the compute on a CPU. Splitting the
pass lets sampling compute logits for the last position only, and scoring for the continuation
positions only, in chunks, instead of a (batch, length, vocabulary) tensor.
"""

from __future__ import annotations

import torch


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
                  position_ids: torch.Tensor | None = None, past_key_values=None,
                  use_cache: bool = False):
    """Final-layer hidden states (B, T, D) and the updated KV cache.

    Position ids default to the count of real tokens before each position, so left padding
    does not shift positions.
    """
    if position_ids is None:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = decoder(model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, use_cache=use_cache)
    return out.last_hidden_state, out.past_key_values


def output_layer(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    """(weight (V, D), bias (V,) or None, final soft-cap or None) of the model's output layer,
    restricted to the kept rows when the model has a restricted vocabulary (models/vocab.py)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    head = model.get_output_embeddings()
    weight, bias = head.weight, getattr(head, "bias", None)
    subset = getattr(model, "alignlab_vocabulary", None)
    if subset is not None:
        weight = subset.rows(weight)
        bias = bias[subset.ids] if bias is not None else None
    return weight, bias, getattr(model.config, "final_logit_softcapping", None) or None


def output_logits(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits (..., V) from hidden states (..., D), with the model's final soft-capping if any.
    With a restricted vocabulary (models/vocab.py) V is the kept set's size, in its order.

    Computed as ``W @ h^T`` rather than ``h @ W^T``: with few rows (decoding) MKL runs the first
    form about 4x faster in float32 on this kind of CPU (see benchmarks/), and the result is the
    same product.
    """
    weight, bias, cap = output_layer(model)
    flat = hidden.reshape(-1, hidden.shape[-1])
    if flat.dtype != weight.dtype:
        flat = flat.to(weight.dtype)
    if flat.shape[0] <= 16 and weight.dtype == torch.float32:
        logits = (weight @ flat.T).T.contiguous()
    else:
        logits = flat @ weight.T
    if bias is not None:
        logits = logits + bias
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.reshape(*hidden.shape[:-1], logits.shape[-1])


class TargetLogProb(torch.autograd.Function):
    """log softmax((h W^T + b), soft-capped, / T)[target] for each row, without keeping the
    (rows, V) logits for backward: backward recomputes them from h and W. Autograd's own path
    keeps a float32 log-softmax of every chunk until backward (~1 GB for a DPO step of the
    embedded model); this keeps h, W and one log-sum-exp per row, for one more matrix product."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, temperature: float, cap):
        raw = h.to(weight.dtype) @ weight.T  # (n, V)
        if bias is not None:
            raw = raw + bias
        logits = (torch.tanh(raw / cap) * cap if cap else raw).float() / temperature
        lse = torch.logsumexp(logits, -1)  # (n,)
        ctx.save_for_backward(h, weight, bias if bias is not None else torch.empty(0), targets, lse)
        ctx.temperature, ctx.cap, ctx.has_bias = temperature, cap, bias is not None
        return logits.gather(1, targets[:, None])[:, 0] - lse

    @staticmethod
    def backward(ctx, grad):
        h, weight, bias, targets, lse = ctx.saved_tensors
        raw = h.to(weight.dtype) @ weight.T
        if ctx.has_bias:
            raw = raw + bias
        capped = torch.tanh(raw.float() / ctx.cap) if ctx.cap else None
        logits = (capped * ctx.cap if ctx.cap else raw.float()) / ctx.temperature
        d = torch.exp(logits - lse[:, None]).mul_(-grad[:, None])  # d out / d logits = onehot - softmax
        d[torch.arange(len(targets), device=d.device), targets] += grad
        d = d / ctx.temperature
        if ctx.cap:
            d = d * (1 - capped * capped)
        d = d.to(weight.dtype)
        grad_h = (d @ weight).to(h.dtype) if ctx.needs_input_grad[0] else None
        grad_w = d.T @ h.to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_b = d.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_h, grad_w, grad_b, None, None, None
