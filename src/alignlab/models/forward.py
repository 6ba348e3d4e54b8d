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


def output_logits(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits (..., V) from hidden states (..., D), with the model's final soft-capping if any.
    With a restricted vocabulary (models/vocab.py) V is the kept set's size, in its order.

    Computed as ``W @ h^T`` rather than ``h @ W^T``: with few rows (decoding) MKL runs the first
    form about 4x faster in float32 on this kind of CPU (see benchmarks/), and the result is the
    same product.
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
    if flat.shape[0] <= 16 and weight.dtype == torch.float32:
        logits = (weight @ flat.T).T.contiguous()
    else:
        logits = flat @ weight.T
    if bias is not None:
        logits = logits + bias
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.reshape(*hidden.shape[:-1], logits.shape[-1])
