"""Model surgery: edit a trained model's weights or structure and measure what changes.

Three operations (steering by activation addition, the fourth kind of surgery, is whitebox/steering.py):

1. Task vectors (Ilharco et al. 2023, "Editing Models with Task Arithmetic"): tau = theta_ft -
   theta_pre, tensor by tensor; negate it to remove a behaviour, add vectors to combine tasks,
   tau_C + tau_B - tau_A for analogies; apply ``theta + coefficient * tau`` with the coefficient
   chosen on held-out data.
2. Layer interventions (Lad et al. 2024, "The Remarkable Robustness of LLMs"): delete a decoder
   layer (its attention and MLP add nothing to the residual stream) or swap two adjacent layers,
   and compare every next-token distribution with the original's on held-out text.
3. Stitching (Bansal et al. 2021, "Revisiting Model Stitching"): the bottom k layers of model A, a
   trained linear map on the residual stream, the top layers of model B, both halves frozen; the
   stitching penalty is the stitched model's held-out loss minus B's.

Every intervention is a context manager that puts the model back exactly as it was.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from alignlab.models.forward import decoder, output_logits
from alignlab.whitebox.steering import _layers as decoder_layers

TaskVector = dict[str, torch.Tensor]


# -- held-out text --------------------------------------------------------------------------------

def read_text(path: str | Path) -> str:
    """The text of a held-out file: a plain text file as it is, or a .jsonl file's rows joined by
    blank lines (each row's "text", else its "prompt" followed by "completion" or "response")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"held-out text file {path} does not exist; give a .txt or .jsonl file")
    raw = path.read_text(encoding="utf-8")
    if path.suffix != ".jsonl":
        return raw
    pieces = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise ValueError(f"{path} line {number}: expected an object with 'text' (or 'prompt' and 'completion')")
        if isinstance(row.get("text"), str):
            pieces.append(row["text"])
        elif isinstance(row.get("prompt"), str):
            pieces.append(row["prompt"] + str(row.get("completion", row.get("response", ""))))
        else:
            raise ValueError(f"{path} line {number}: no 'text' or 'prompt' string; each row needs one")
    return "\n\n".join(pieces)


def text_windows(tokenizer, text: str, context: int = 512, max_tokens: int | None = None) -> torch.Tensor:
    """The text as equal windows (N, W) of token ids, each starting with BOS followed by the next
    W - 1 tokens of the text (W = ``context``, or less for a short text). The tail that does not
    fill a window is dropped, so every window is a full-length batch row (no padding to mask)."""
    if context < 2:
        raise ValueError(f"context = {context}; a window needs at least 2 tokens (BOS and one to predict)")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise ValueError(f"the held-out text has {len(ids)} tokens; give a text of at least a few sentences")
    step = min(context - 1, len(ids))
    bos = tokenizer.bos_token_id
    rows = [([bos] if bos is not None else []) + ids[s:s + step] for s in range(0, len(ids) - step + 1, step)]
    return torch.tensor(rows, dtype=torch.long)


# -- next-token comparisons -----------------------------------------------------------------------

@dataclass
class TokenComparison:
    """Per-position measurements (n,) of an intervened model against the original."""

    kl: torch.Tensor
    """KL(original || intervened) of the next-token distributions, in nats."""
    nll_original: torch.Tensor
    nll_intervened: torch.Tensor
    agree: torch.Tensor
    """1 where both models' most likely next token is the same."""
    correct_original: torch.Tensor
    """1 where the original's most likely next token is the actual next token."""
    correct_intervened: torch.Tensor


def compare_logits(original: torch.Tensor, intervened: torch.Tensor, targets: torch.Tensor) -> TokenComparison:
    """Compare two models' logits (n, V) at the same positions, whose actual next tokens are ``targets`` (n,)."""
    logp = torch.log_softmax(original.float(), -1)  # (n, V)
    logq = torch.log_softmax(intervened.float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)  # (n,)
    top_p, top_q = logp.argmax(-1), logq.argmax(-1)
    return TokenComparison(
        kl=kl, nll_original=-logp.gather(-1, targets[:, None])[:, 0],
        nll_intervened=-logq.gather(-1, targets[:, None])[:, 0],
        agree=(top_p == top_q).float(), correct_original=(top_p == targets).float(),
        correct_intervened=(top_q == targets).float(),
    )


def summarize(parts: Sequence[TokenComparison]) -> dict[str, float]:
    """Means over all positions: KL, both losses and their difference, top-1 agreement, both
    models' top-1 accuracy and the retention (intervened accuracy / original accuracy)."""
    def mean(name: str) -> float:
        return torch.cat([getattr(p, name) for p in parts]).double().mean().item()

    acc_o, acc_i = mean("correct_original"), mean("correct_intervened")
    loss_o, loss_i = mean("nll_original"), mean("nll_intervened")
    return {
        "kl": mean("kl"), "loss_original": loss_o, "loss": loss_i, "loss_change": loss_i - loss_o,
        "top1_agreement": mean("agree"), "accuracy_original": acc_o, "accuracy": acc_i,
        "top1_retention": acc_i / acc_o if acc_o > 0 else math.nan,
        "tokens": sum(len(p.kl) for p in parts),
    }


@torch.no_grad()
def final_hidden(model, windows: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """The body's last hidden states (N, W, D) for every window, ``batch_size`` windows at a time."""
    body = decoder(model)
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(windows), batch_size):
        ids = windows[start:start + batch_size].to(device)
        out.append(body(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).last_hidden_state)
    return torch.cat(out)


LOGIT_ROWS = 256
"""Positions whose full-vocabulary logits are held at once (256 x 262,144 floats = 256 MiB)."""

KEEP_ORIGINAL_BYTES = 4 << 30
"""Keep the original model's log-probabilities between interventions when they take at most this
much memory (4,096 positions of the 262,144-token vocabulary); otherwise recompute them from its
hidden states each time. The output layer is most of a forward pass here, so keeping them halves
the time of a layer sweep."""


@dataclass
class _Original:
    """What comparisons need of the original's predictions at a chunk of positions."""

    probs: torch.Tensor  # (n, V)
    neg_entropy: torch.Tensor  # (n,): sum_v p log p
    top: torch.Tensor  # (n,)
    nll: torch.Tensor  # (n,)


def _original(logits: torch.Tensor, targets: torch.Tensor) -> _Original:
    logp = torch.log_softmax(logits.float(), -1)  # (n, V)
    probs = logp.exp()
    # Over 262,144 terms float32 log-softmax is off by a constant ~5e-5 (the probabilities sum to
    # 1 + 5e-5); _compare_with multiplies that by logits of ~20, so renormalise here.
    total = probs.sum(-1, keepdim=True)
    probs, logp = probs / total, logp - total.log()
    return _Original(probs, (probs * logp).sum(-1), logp.argmax(-1), -logp.gather(-1, targets[:, None])[:, 0])


def _compare_with(original: _Original, logits: torch.Tensor, targets: torch.Tensor) -> TokenComparison:
    """``compare_logits`` with the original's side precomputed, and KL(p || q) as
    sum p log p - (sum p z - logsumexp z): two passes over the vocabulary instead of a full
    log-softmax and three more (a layer sweep spends much of its time here). The sum of p z is
    taken as a product and a sum, not a batched matrix product: torch.bmm's float32 dot over
    262,144 terms was off by ~3e-3 nats, as large as the KL of a small edit; this is off by ~1e-6."""
    z = logits.float()  # (n, V)
    lse = torch.logsumexp(z, -1)  # (n,)
    cross = (original.probs * z).sum(-1)  # (n,)
    top = z.argmax(-1)
    return TokenComparison(
        kl=original.neg_entropy - (cross - lse), nll_original=original.nll,
        nll_intervened=lse - z.gather(-1, targets[:, None])[:, 0], agree=(original.top == top).float(),
        correct_original=(original.top == targets).float(), correct_intervened=(top == targets).float(),
    )


class Reference:
    """The original model's next-token predictions on some windows, to compare interventions with."""

    def __init__(self, model, windows: torch.Tensor, batch_size: int = 4):
        self.model, self.windows, self.batch_size = model, windows, batch_size
        self.hidden = self._hidden()  # (n, D)
        self.targets = windows[:, 1:].reshape(-1).to(self.hidden.device)  # (n,)
        vocab = model.get_output_embeddings().weight.shape[0]
        self._kept: list[_Original] | None = None
        if len(self.targets) * vocab * 4 <= KEEP_ORIGINAL_BYTES:
            self._kept = [self._original(s) for s in self.starts]

    @property
    def starts(self) -> range:
        return range(0, len(self.targets), LOGIT_ROWS)

    def _hidden(self) -> torch.Tensor:
        hidden = final_hidden(self.model, self.windows, self.batch_size)[:, :-1]  # (N, W-1, D)
        return hidden.reshape(-1, hidden.shape[-1])

    @torch.no_grad()
    def _original(self, start: int) -> _Original:
        logits = output_logits(self.model, self.hidden[start:start + LOGIT_ROWS])
        return _original(logits, self.targets[start:start + LOGIT_ROWS])

    @torch.no_grad()
    def compare(self) -> dict[str, float]:
        """Run the windows through the model as it is now (inside an intervention) and summarize."""
        hidden = self._hidden()
        parts = []
        for i, start in enumerate(self.starts):
            original = self._kept[i] if self._kept is not None else self._original(start)
            logits = output_logits(self.model, hidden[start:start + LOGIT_ROWS])
            parts.append(_compare_with(original, logits, self.targets[start:start + LOGIT_ROWS]))
        return summarize(parts)


# -- layer interventions --------------------------------------------------------------------------

def check_layer(model, layer: int, what: str = "layer", last_offset: int = 0) -> int:
    """The number of decoder layers; refuses ``layer`` unless 0 <= layer < count - last_offset."""
    count = len(decoder_layers(model))
    if not 0 <= layer < count - last_offset:
        raise ValueError(f"{what} {layer} is out of range: this model has layers 0..{count - 1}"
                         + (f", and {what} must be at most {count - 1 - last_offset}" if last_offset else ""))
    return count


@contextmanager
def layer_deleted(model, layer: int) -> Iterator[None]:
    """Within the block, decoder layer ``layer`` passes its input through unchanged: its attention
    and MLP add nothing to the residual stream.

    Done with a forward hook that replaces the layer's output by its input, rather than by taking
    the module out of the list, so that the body's per-position bookkeeping (layer types, KV cache
    slots) is untouched; the layer still runs, a 1/L waste of time accepted for that.
    """
    check_layer(model, layer)

    def skip(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = decoder_layers(model)[layer].register_forward_hook(skip, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _indexed(module: torch.nn.Module) -> list[tuple[torch.nn.Module, int]]:
    return [(m, m.layer_idx) for m in module.modules() if isinstance(getattr(m, "layer_idx", None), int)]


@contextmanager
def layers_swapped(model, layer: int) -> Iterator[None]:
    """Within the block, decoder layers ``layer`` and ``layer + 1`` run in the other order.

    The two modules change places in the ModuleList and each keeps its own attention type: in
    Gemma 3 a layer is trained for sliding-window attention with the local rotary base or for
    full attention with the global one, and the body picks the mask and rotary embedding by
    position from ``config.layer_types``, so that list is swapped too, and each module's
    ``layer_idx`` (its KV cache slot, typed by the same list) is renumbered to its new position.
    Swapping the weights alone would instead run a full-attention layer's weights as a sliding
    one with the other rotary base: a change of function beyond the change of order that the
    intervention is about. Everything is put back on exit (swapping twice is the identity).
    """
    count = check_layer(model, layer, last_offset=1)
    layers = decoder_layers(model)
    config = decoder(model).config
    first, second = layers[layer], layers[layer + 1]
    indices = _indexed(first) + _indexed(second)
    types = getattr(config, "layer_types", None)
    layers[layer], layers[layer + 1] = second, first
    for module, _ in _indexed(second):
        module.layer_idx = layer
    for module, _ in _indexed(first):
        module.layer_idx = layer + 1
    if isinstance(types, list) and len(types) >= count:
        swapped = list(types)
        swapped[layer], swapped[layer + 1] = types[layer + 1], types[layer]
        config.layer_types = swapped
    try:
        yield
    finally:
        layers[layer], layers[layer + 1] = first, second
        for module, index in indices:
            module.layer_idx = index
        if types is not None:
            config.layer_types = types


INTERVENTIONS: dict[str, Callable] = {"delete": layer_deleted, "swap": layers_swapped}


def layer_sweep(model, windows: torch.Tensor, kinds: Sequence[str] = ("delete", "swap"),
                layers: Sequence[int] | None = None, batch_size: int = 4,
                on_done: Callable[[dict], None] | None = None) -> list[dict]:
    """One row per intervention (kind, layer; a swap of i is i with i + 1) with ``summarize``'s
    measurements against the unmodified model on ``windows`` (N, W)."""
    count = len(decoder_layers(model))
    chosen = list(range(count)) if layers is None else list(layers)
    jobs = []
    for kind in kinds:
        if kind not in INTERVENTIONS:
            raise ValueError(f"intervention '{kind}' is not one of {', '.join(INTERVENTIONS)}")
        last = count - 1 if kind == "swap" else count
        jobs += [(kind, i) for i in chosen if i < last]
    for _, i in jobs:
        check_layer(model, i)
    reference = Reference(model, windows, batch_size)
    rows = []
    for kind, i in jobs:
        with INTERVENTIONS[kind](model, i):
            row = {"intervention": kind, "layer": i, **reference.compare()}
        rows.append(row)
        if on_done is not None:
            on_done(row)
    return rows


# -- task vectors ---------------------------------------------------------------------------------

def float_tensors(model_or_state: torch.nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model's floating-point state by name (integer and boolean buffers left out), each shared
    tensor once under its first name (a tied output layer is the input embedding)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    seen, out = set(), {}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = tensor
    return out


def _check_same_names(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], a: str, b: str) -> None:
    only_a = sorted(set(first) - set(second))
    only_b = sorted(set(second) - set(first))
    shapes = sorted(n for n in set(first) & set(second) if first[n].shape != second[n].shape)
    problems = []
    if only_a:
        problems.append(f"only in {a}: {', '.join(only_a[:5])}{' ...' if len(only_a) > 5 else ''}")
    if only_b:
        problems.append(f"only in {b}: {', '.join(only_b[:5])}{' ...' if len(only_b) > 5 else ''}")
    if shapes:
        problems.append("different shapes: " + ", ".join(
            f"{n} {tuple(first[n].shape)} vs {tuple(second[n].shape)}" for n in shapes[:5]))
    if problems:
        raise ValueError(f"{a} and {b} do not have the same tensors ({'; '.join(problems)}); task vectors "
                         "need two versions of one architecture, e.g. a base model and a fine-tuned copy")


@torch.no_grad()
def task_vector(pretrained, finetuned) -> TaskVector:
    """tau = theta_finetuned - theta_pretrained (float32) for every floating tensor. Either
    argument is a model or a state dict; load LoRA policies with ``load_model``, which merges the
    adapter into its base so that the difference covers every weight the adapter changed."""
    pre, ft = float_tensors(pretrained), float_tensors(finetuned)
    _check_same_names(pre, ft, "the pretrained model", "the fine-tuned model")
    return {name: ft[name].float() - pre[name].float() for name in pre}


def negate(tau: TaskVector) -> TaskVector:
    """-tau: applied, it moves a model away from the fine-tuned behaviour ("forgetting")."""
    return {name: -t for name, t in tau.items()}


def add(*taus: TaskVector) -> TaskVector:
    """The sum of task vectors (multi-task "addition")."""
    if not taus:
        raise ValueError("add needs at least one task vector")
    for i, other in enumerate(taus[1:], start=2):
        _check_same_names(taus[0], other, "task vector 1", f"task vector {i}")
    return {name: sum(tau[name] for tau in taus) for name in taus[0]}


def analogy(tau_a: TaskVector, tau_b: TaskVector, tau_c: TaskVector) -> TaskVector:
    """tau_C + (tau_B - tau_A): "A is to B as C is to D" estimates D's task vector."""
    _check_same_names(tau_a, tau_b, "task vector A", "task vector B")
    _check_same_names(tau_a, tau_c, "task vector A", "task vector C")
    return {name: tau_c[name] + (tau_b[name] - tau_a[name]) for name in tau_a}


def _targets(model: torch.nn.Module, tau: TaskVector) -> dict[str, torch.Tensor]:
    params = float_tensors(model)
    missing = sorted(set(tau) - set(params))
    if missing:
        raise ValueError(f"the task vector has tensors this model lacks ({', '.join(missing[:5])}); apply it "
                         "to the model it was made from")
    for name, t in tau.items():
        if params[name].shape != t.shape:
            raise ValueError(f"task vector tensor {name} has shape {tuple(t.shape)}, the model's "
                             f"{tuple(params[name].shape)}; apply it to the model it was made from")
    return {name: params[name] for name in tau}


@torch.no_grad()
def apply_task_vector(model: torch.nn.Module, tau: TaskVector, coefficient: float = 1.0) -> None:
    """theta <- theta + coefficient * tau, in place (in float32, rounded to each tensor's dtype)."""
    for name, param in _targets(model, tau).items():
        param.copy_((param.float() + coefficient * tau[name].to(param.device)).to(param.dtype))


@contextmanager
def task_vector_applied(model: torch.nn.Module, tau: TaskVector, coefficient: float) -> Iterator[None]:
    """``apply_task_vector`` within the block; the original weights are copied and put back on
    exit bit for bit (subtracting the same vector again would be off by float rounding)."""
    targets = _targets(model, tau)
    saved = {name: p.detach().clone() for name, p in targets.items()}
    try:
        apply_task_vector(model, tau, coefficient)
        yield
    finally:
        with torch.no_grad():
            for name, p in targets.items():
                p.copy_(saved[name])


def choose_coefficient(model: torch.nn.Module, tau: TaskVector, coefficients: Sequence[float],
                       metric: Callable[[torch.nn.Module], float], higher_is_better: bool = False,
                       on_done: Callable[[dict], None] | None = None) -> tuple[float, list[dict]]:
    """The coefficient in ``coefficients`` whose edited model scores best on ``metric`` (e.g.
    held-out loss), and the table of (coefficient, value). The model is unchanged afterwards."""
    if not coefficients:
        raise ValueError("coefficients is empty; give the values to try, e.g. 0 0.25 0.5 1")
    rows = []
    for c in coefficients:
        with task_vector_applied(model, tau, c):
            rows.append({"coefficient": float(c), "value": float(metric(model))})
        if on_done is not None:
            on_done(rows[-1])
    pick = max if higher_is_better else min
    best = pick(rows, key=lambda r: r["value"] if math.isfinite(r["value"]) else (-math.inf if higher_is_better else math.inf))
    return best["coefficient"], rows


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, batch_size: int = 4) -> float:
    """Mean next-token loss (nats per token) of ``model`` on ``windows`` (N, W)."""
    from alignlab.models.scoring import target_logprobs

    hidden = final_hidden(model, windows, batch_size)[:, :-1]  # (N, W-1, D)
    targets = windows[:, 1:].to(hidden.device)
    return -target_logprobs(model, hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)).double().mean().item()


def save_task_vector(tau: TaskVector, path: str | Path, metadata: dict[str, object] | None = None) -> None:
    """Write ``tau`` as a safetensors file with string metadata (what it was made from, and how)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "alignlab-task-vector", **{k: v if isinstance(v, str) else json.dumps(v)
                                                 for k, v in (metadata or {}).items()}}
    tmp = path.with_name(f".{path.name}.tmp")  # write, then rename: readers never see half a file
    save_file({n: t.detach().contiguous().cpu() for n, t in tau.items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def load_task_vector(path: str | Path) -> tuple[TaskVector, dict[str, str]]:
    """(tau, metadata) from a file written by ``save_task_vector``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task vector file {path} does not exist; make one with "
                                "`alignlab surgery task-vector make`")
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
        tau = {name: fh.get_tensor(name) for name in fh.keys()}
    return tau, metadata


def norms_by_layer(tau: TaskVector, model: torch.nn.Module | None = None) -> dict[str, float]:
    """||tau|| per top-level block ('layers.3', 'embed_tokens', ...), relative to ||theta|| when a
    model is given: which parts of the network fine-tuning moved."""
    params = float_tensors(model) if model is not None else {}
    squares: dict[str, list[float]] = {}
    for name, t in tau.items():
        parts = name.split(".")
        key = ".".join(parts[parts.index("layers"):parts.index("layers") + 2]) if "layers" in parts else parts[-2]
        entry = squares.setdefault(key, [0.0, 0.0])
        entry[0] += t.double().pow(2).sum().item()
        if name in params:
            entry[1] += params[name].double().pow(2).sum().item()
    return {k: (math.sqrt(a) / math.sqrt(b) if b > 0 else math.sqrt(a)) for k, (a, b) in squares.items()}


# -- stitching ------------------------------------------------------------------------------------

class Stitch(torch.nn.Module):
    """The stitching layer: an affine map D -> D on the residual stream, optionally after RMS
    normalisation of its input (the two models' residual streams can differ in scale by orders
    of magnitude, which a plain linear map learns slowly)."""

    def __init__(self, dim: int, normalize: bool = False):
        super().__init__()
        self.linear = torch.nn.Linear(dim, dim)
        self.normalize = normalize

    def features(self, h: torch.Tensor) -> torch.Tensor:
        if not self.normalize:
            return h
        return h * torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(h.dtype)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(h))

    @torch.no_grad()
    def fit_least_squares(self, source: torch.Tensor, target: torch.Tensor) -> None:
        """Set the map to the least-squares regression of ``target`` (n, D) on ``source`` (n, D)."""
        x = self.features(source.double())
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1)  # (n, D+1)
        solution = torch.linalg.lstsq(x.cpu(), target.double().cpu(), driver="gelsd").solution  # (D+1, D)
        self.linear.weight.copy_(solution[:-1].T)
        self.linear.bias.copy_(solution[-1])


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass once the wanted layer's input is read."""


@torch.no_grad()
def residual_at(model, windows: torch.Tensor, layer: int, batch_size: int = 4) -> torch.Tensor:
    """The residual stream (N, W, D) entering decoder layer ``layer``; the layers above it are not run."""
    captured = []

    def grab(module, args, kwargs):
        captured.append((args[0] if args else kwargs["hidden_states"]).detach())
        raise _Stop

    handle = decoder_layers(model)[layer].register_forward_pre_hook(grab, with_kwargs=True)
    device = next(model.parameters()).device
    try:
        for start in range(0, len(windows), batch_size):
            ids = windows[start:start + batch_size].to(device)
            try:
                decoder(model)(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            except _Stop:  # the hook has what it needs; the layers above are deliberately not run
                continue
    finally:
        handle.remove()
    return torch.cat(captured)


def stitched_nll(top_model, ids: torch.Tensor, residual: torch.Tensor, layer: int) -> torch.Tensor:
    """Next-token losses (B, W-1) of ``top_model`` when the residual stream entering its layer
    ``layer`` is replaced by ``residual`` (B, W, D). Differentiable in ``residual``.

    Run as the top model's whole forward pass with the replacement made by a hook, so the body's
    own masks and rotary embeddings apply; its bottom layers run for nothing (time, not
    correctness: their output is discarded and, frozen, they record no graph).
    """
    from alignlab.models.scoring import target_logprobs

    def replace(module, args, kwargs):
        if args:
            return (residual, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": residual}

    handle = decoder_layers(top_model)[layer].register_forward_pre_hook(replace, with_kwargs=True)
    try:
        hidden = decoder(top_model)(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    use_cache=False).last_hidden_state[:, :-1]  # (B, W-1, D)
    finally:
        handle.remove()
    logp = target_logprobs(top_model, hidden.reshape(-1, hidden.shape[-1]), ids[:, 1:].reshape(-1))
    return -logp.reshape(ids.shape[0], -1)


@contextmanager
def frozen(*models: torch.nn.Module) -> Iterator[None]:
    """Parameters of ``models`` do not require gradients within the block (their flags restored after)."""
    flags = [(p, p.requires_grad) for m in models for p in m.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def randomly_initialised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A fresh model of the same class and config with the library's random initialisation (the
    random-bottom control of stitching)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(model.config)
    dtype = next(model.parameters()).dtype
    return fresh.to(dtype=dtype, device=next(model.parameters()).device).eval()


def check_stitchable(bottom, top, layer: int) -> None:
    """Refuse two models whose residual streams differ in width, or a layer outside 1..L-1 of the top model."""
    d_a = bottom.get_input_embeddings().weight.shape[1]
    d_b = top.get_input_embeddings().weight.shape[1]
    if d_a != d_b:
        raise ValueError(f"the bottom model's hidden size is {d_a} and the top model's {d_b}; stitching here "
                         "needs models of the same hidden size (e.g. a model and its fine-tuned copy)")
    for model, name in ((bottom, "bottom"), (top, "top")):
        count = len(decoder_layers(model))
        if not 1 <= layer <= count - 1:
            raise ValueError(f"layer = {layer}: the {name} model has {count} layers, so layer must be in "
                             f"1..{count - 1} (k bottom layers of A, then B from its layer k)")


def train_stitch(bottom, top, windows: torch.Tensor, layer: int, steps: int = 100, lr: float = 1e-3,
                 batch_size: int = 4, normalize: bool = False, init: str = "least-squares", seed: int = 0,
                 on_step: Callable[[int, float], None] | None = None) -> Stitch:
    """Train a ``Stitch`` from ``bottom``'s residual stream entering layer ``layer`` to ``top``'s,
    on the next-token loss of the stitched model over ``windows`` (N, W); both models frozen.

    ``init``: 'least-squares' starts from the regression of top's residual stream on bottom's
    (a good start that the loss then refines), 'identity' from the identity map, 'random' from
    PyTorch's default initialisation.
    """
    check_stitchable(bottom, top, layer)
    source = residual_at(bottom, windows, layer, batch_size)  # (N, W, D)
    dim = source.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stitch = Stitch(dim, normalize).to(source.device)
    if init == "least-squares":
        target = residual_at(top, windows, layer, batch_size)
        stitch.fit_least_squares(source.reshape(-1, dim), target.reshape(-1, dim))
    elif init == "identity":
        with torch.no_grad():
            stitch.linear.weight.copy_(torch.eye(dim))
            stitch.linear.bias.zero_()
    elif init != "random":
        raise ValueError(f"init = '{init}'; accepted: least-squares, identity, random")
    optimizer = torch.optim.Adam(stitch.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    with frozen(bottom, top):
        for step in range(steps):
            batch = torch.randint(len(windows), (min(batch_size, len(windows)),), generator=order)
            residual = stitch(source[batch].to(torch.float32)).to(source.dtype)  # (B, W, D)
            loss = stitched_nll(top, windows[batch].to(source.device), residual, layer).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step, loss.item())
    return stitch.eval()


@torch.no_grad()
def stitched_loss(bottom, top, stitch: Stitch, windows: torch.Tensor, layer: int, batch_size: int = 4) -> float:
    """Mean next-token loss of bottom[:layer] -> stitch -> top[layer:] on ``windows``."""
    total, count = 0.0, 0
    device = next(top.parameters()).device
    for start in range(0, len(windows), batch_size):
        ids = windows[start:start + batch_size].to(device)
        source = residual_at(bottom, ids, layer, batch_size)
        nll = stitched_nll(top, ids, stitch(source.float()).to(source.dtype), layer)
        total += nll.double().sum().item()
        count += nll.numel()
    return total / count


def heldout_windows(tokenizer, text: Path | None, context: int, max_tokens: int, field_name: str = "text"):
    """Windows of held-out text for the surgery measurements, refusing a missing file or a budget
    too small to measure with, naming the option."""
    if text is None:
        raise ValueError(f"{field_name} is missing: give a held-out text file (.txt, or .jsonl with a 'text' "
                         f"field per row) with --{field_name.replace('_', '-')} FILE; a few thousand tokens is enough")
    if max_tokens < 2:
        raise ValueError(f"max_tokens = {max_tokens}; give at least a few hundred")
    return text_windows(tokenizer, read_text(text), context, max_tokens)
