"""The reward model: a causal-LM backbone with a scalar head read at the last real token.

Kept apart from the trainer (reward.py) because policies, the experiment and the loom load and
score with reward models without training them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignlab.fileio import atomic_write_json
from alignlab.models.forward import body_hidden_states, decoder
from alignlab.models.tokens import encode_prompt
from alignlab.models.scoring import encode_continuation
from alignlab.train.components import last_token_index

FORMAT = 1
MODES = ("head", "last", "lora", "full")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Encoded(list):
    """Token ids of prompt + response that remember where the response starts (``start``)."""

    def __init__(self, ids: Sequence[int], start: int):
        super().__init__(ids)
        self.start = start


def starts_of(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B,) response starts of encoded rows (0 for plain lists: the whole text)."""
    return torch.tensor([getattr(r, "start", 0) for r in rows], dtype=torch.long)


POOLINGS = ("last", "mean")


class RewardModel(nn.Module):
    """r(prompt, response): backbone hidden state at the last real token -> linear head.

    With ``pooling='mean'`` the head reads the mean of the final hidden states over the
    response's tokens instead: a frozen small backbone's last-token state carries little of what
    a judge of the whole response weighs (docs/reward.md has the measurement).

    With ``layer=L`` (1-based, at most the number of decoder layers) the head reads the hidden
    states decoder layer L outputs, transformers' ``output_hidden_states[L]``, and the backbone
    stops there (``layer=0``, or L equal to the number of layers: the final states after the
    final norm). The backbone's later layers are then never run.

    The head has one output per ensemble member. Its weights start N(0, 1/sqrt(d_model + 1)) and
    its bias 0 (Stiennon et al. 2020). ``norm_mean``/``norm_std`` shift and scale the output so
    that responses of a chosen policy score mean 0, std 1 (identity until set).
    """

    def __init__(self, lm: nn.Module, tokenizer, ensemble: int = 1, max_length: int = 512, seed: int = 0,
                 pooling: str = "last", layer: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.lm = lm
        layers = len(self.body.layers)
        if not 0 <= layer <= layers:
            raise ValueError(f"layer is {layer}; the backbone has {layers} decoder layers: give 1..{layers}, "
                             "or 0 for the final hidden states")
        self.layer = layer
        self.tokenizer = tokenizer
        self.max_length = max_length
        hidden = lm.config.hidden_size
        self.head = StandardizedLinear(hidden, ensemble)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nn.init.normal_(self.head.weight, std=1 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.head.bias)
        self.head.to(torch.float32)
        self.register_buffer("norm_mean", torch.zeros(ensemble))
        self.register_buffer("norm_std", torch.ones(ensemble))
        self.reference = 0.0  # thumbs' reference point: running mean reward, in raw units

    @property
    def body(self) -> nn.Module:
        return decoder(self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm)

    @property
    def ensemble(self) -> int:
        return self.head.out_features

    def encode(self, prompt: str, response: str) -> Encoded:
        """Token ids of prompt + response, keeping BOS and the end when longer than max_length."""
        prompt_ids = encode_prompt(self.tokenizer, prompt)
        ids = prompt_ids + encode_continuation(self.tokenizer, response)
        start = len(prompt_ids)
        if len(ids) > self.max_length:
            cut = len(ids) - self.max_length + 1
            ids = ids[:1] + ids[cut:]
            start = max(1, start - cut + 1)
        return Encoded(ids, start)

    @contextmanager
    def _read_layer(self) -> Iterator[None]:
        """While open, the body runs its first ``layer`` decoder layers and no final norm, so its
        ``last_hidden_state`` is what layer ``layer`` outputs.

        The body is cut rather than run whole with ``output_hidden_states``: that would run the
        layers the head never reads, and ``body_hidden_states`` (prefix sharing, packing) returns
        the last hidden state only. The layers past ``layer`` are put back on exit, so the same
        backbone still samples and scores as a whole model elsewhere."""
        body = self.body
        if self.layer in (0, len(body.layers)):
            yield
            return
        layers, norm = body.layers, body.norm
        body.layers, body.norm = layers[:self.layer], nn.Identity()
        try:
            yield
        finally:
            body.layers, body.norm = layers, norm

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The states layer ``layer`` outputs (0: the final states after the norm) at every
        position of right-padded rows: (B, T) -> (B, T, D) in the backbone's dtype."""
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        with self._read_layer():
            return body_hidden_states(self.body, input_ids, attention_mask, positions)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 starts: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden state of layer ``layer`` (0: final) at each row's last real token, or (pooling
        'mean') their mean over the response's tokens from ``starts`` (B,). (B, T) -> (B, D) float32."""
        hidden = self.hidden_states(input_ids, attention_mask)  # (B, T, D)
        last = last_token_index(attention_mask)  # (B,)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if self.pooling == "last":
            return hidden[rows, last].float()
        if starts is None:
            raise ValueError("a mean-pooling reward model needs each row's response start (encode() gives it)")
        span = torch.arange(hidden.shape[1], device=hidden.device)[None] >= starts.to(hidden.device)[:, None]
        span = span & attention_mask.bool()  # (B, T)
        span[rows, last] = True  # an empty response reads its last token
        return (hidden.float() * span[..., None]).sum(1) / span.sum(-1, keepdim=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                starts: torch.Tensor | None = None) -> torch.Tensor:
        """Raw rewards (B, K), one column per ensemble member."""
        return self.head(self.features(input_ids, attention_mask, starts))

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.norm_mean) / self.norm_std

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 8,
              progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized rewards: (mean over the ensemble (N,), std over the ensemble (N,))."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; give one each")
        was_training = self.training
        self.eval()
        rows = [self.encode(p, r) for p, r in zip(prompts, responses)]
        out = []
        starts = range(0, len(rows), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="reward", unit="batch", leave=False)
        device = self.head.weight.device
        for start in starts:
            chunk = rows[start:start + batch_size]
            ids, mask = pad_right(chunk, self.pad_id)
            out.append(self.normalize(self(ids.to(device), mask.to(device), starts_of(chunk).to(device))).cpu())
        self.train(was_training)
        values = torch.cat(out) if out else torch.zeros(0, self.ensemble)
        std = values.std(-1) if self.ensemble > 1 else torch.zeros(len(values))
        return values.mean(-1), std

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0


class StandardizedLinear(nn.Linear):
    """The reward head: a linear map of features standardised per dimension,
    (x - feature_mean) / feature_std (identity until ``standardize`` sets them from training
    features). Intermediate layers' states have magnitudes in the tens to hundreds, so an
    unstandardised head moves its output by tens per optimizer step and overfits at once; on
    standardised features an L2 penalty acts on every dimension alike."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward((x - self.feature_mean) / self.feature_std)

    @torch.no_grad()
    def standardize(self, features: torch.Tensor) -> None:
        """Set the standardisation from training features (N, D); a constant dimension keeps std 1."""
        self.feature_mean.copy_(features.float().mean(0))
        std = features.float().std(0) if len(features) > 1 else torch.ones_like(self.feature_std)
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))


def pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), (B, T), padded on the right."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


def configure_trainable(rm: RewardModel, mode: str, last_layers: int = 2, lora_r: int = 16,
                        lora_alpha: float = 32.0) -> RewardModel:
    """Freeze what ``mode`` keeps fixed: 'head' (backbone frozen), 'last' (head + last k layers and
    the final norm), 'lora' (LoRA adapters on every projection + head), 'full' (everything)."""
    if mode not in MODES:
        raise ValueError(f"mode '{mode}' is not one of {', '.join(MODES)}")
    if mode != "head" and rm.layer not in (0, len(rm.body.layers)):
        # 'last' would train layers the head never reads; lora/full through a cut body are untested.
        raise ValueError(f"layer {rm.layer} reads an intermediate layer, which only mode 'head' supports; "
                         f"use --mode head or --layer 0")
    for p in rm.lm.parameters():
        p.requires_grad_(mode == "full")
    if mode == "last":
        layers = rm.body.layers
        if not 1 <= last_layers <= len(layers):
            raise ValueError(f"last_layers is {last_layers}; the model has {len(layers)} layers")
        for layer in layers[len(layers) - last_layers:]:
            layer.requires_grad_(True)
        rm.body.norm.requires_grad_(True)
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS)
        rm.lm = get_peft_model(rm.lm, config)
    rm.head.requires_grad_(True)
    return rm


def trainable_state(rm: RewardModel, mode: str) -> dict[str, torch.Tensor]:
    """The parameters a mode trains (what a checkpoint or a saved model needs beyond the base)."""
    return {name: p.detach().clone() for name, p in rm.named_parameters() if p.requires_grad}


def save_reward_model(rm: RewardModel, folder: Path, mode: str, base_model: str, base_seed: int = 0,
                      extra: dict[str, Any] | None = None) -> Path:
    """Save into ``folder`` (created atomically): config, head, and what the mode changed in the
    backbone (nothing, the last layers, a LoRA adapter, or the whole model)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.saving")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors = {"head.weight": rm.head.weight.detach().contiguous(), "head.bias": rm.head.bias.detach().contiguous(),
               "head.feature_mean": rm.head.feature_mean.contiguous(),
               "head.feature_std": rm.head.feature_std.contiguous(), "norm_mean": rm.norm_mean, "norm_std": rm.norm_std}
    if mode == "last":
        tensors.update({k: v.contiguous() for k, v in trainable_state(rm, mode).items()
                        if not k.startswith("head.")})
    save_file(tensors, str(tmp / "reward_head.safetensors"))
    if mode == "lora":
        rm.lm.save_pretrained(str(tmp / "adapter"))
    if mode == "full":
        rm.lm.save_pretrained(str(tmp / "backbone"))
        rm.tokenizer.save_pretrained(str(tmp / "backbone"))
    config = {"format": FORMAT, "kind": "reward_model", "base_model": base_model, "base_seed": base_seed,
              "mode": mode, "ensemble": rm.ensemble, "max_length": rm.max_length, "reference": rm.reference,
              "pooling": rm.pooling, "layer": rm.layer,
              "dtype": str(next(rm.lm.parameters()).dtype).removeprefix("torch."), **(extra or {})}
    atomic_write_json(tmp / "reward_config.json", config)
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def load_reward_model(folder: str | Path, dtype: str | None = None) -> RewardModel:
    """Load a reward model saved by ``save_reward_model`` (one call, whatever its mode)."""
    from safetensors.torch import load_file

    from alignlab.models import load_model

    folder = Path(folder)
    config_path = folder / "reward_config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{folder} is not a saved reward model (no reward_config.json); "
                                "train one with `alignlab reward train`")
    config = json.loads(config_path.read_text())
    dtype = dtype or config.get("dtype", "float32")
    base = str(folder / "backbone") if config["mode"] == "full" else config["base_model"]
    lm, tokenizer = load_model(base, dtype=dtype, seed=config.get("base_seed", 0))
    if config["mode"] == "lora":
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, str(folder / "adapter"))
    rm = RewardModel(lm, tokenizer, ensemble=config["ensemble"], max_length=config["max_length"],
                     pooling=config.get("pooling", "last"), layer=config.get("layer", 0))
    tensors = load_file(str(folder / "reward_head.safetensors"))
    with torch.no_grad():
        rm.head.weight.copy_(tensors.pop("head.weight"))
        rm.head.bias.copy_(tensors.pop("head.bias"))
        if "head.feature_mean" in tensors:  # models saved before standardisation read raw features
            rm.head.feature_mean.copy_(tensors.pop("head.feature_mean"))
            rm.head.feature_std.copy_(tensors.pop("head.feature_std"))
        rm.norm_mean.copy_(tensors.pop("norm_mean"))
        rm.norm_std.copy_(tensors.pop("norm_std"))
        params = dict(rm.named_parameters())
        for name, value in tensors.items():
            params[name].copy_(value)
    rm.reference = float(config.get("reference", 0.0))
    rm.config = config
    return rm.eval()


def resolve_reward_model(ref: Path | str | None) -> Path:
    """A reward model folder from a path or a reward run id."""
    if ref is None:
        raise ValueError("give --model: a saved reward model folder or a reward run id")
    path = Path(ref)
    if (path / "reward_config.json").exists():
        return path
    if (path / "model" / "reward_config.json").exists():
        return path / "model"
    _refuse_process_model(path, ref)
    from alignlab.runs import find_run

    try:
        run = find_run(str(ref))
    except LookupError:
        raise FileNotFoundError(f"{ref} is neither a reward model folder (with reward_config.json) nor a run id") from None
    if (run.path / "model" / "reward_config.json").exists():
        return run.path / "model"
    _refuse_process_model(run.path, ref)
    raise FileNotFoundError(f"run {run.id} has no saved reward model (is it finished? `alignlab runs show {run.id}`)")


def _refuse_process_model(path: Path, ref) -> None:
    """A process reward model scores steps, not (prompt, response) pairs as a reward model's head
    does: where only an outcome reward model can go, say so instead of 'not found'."""
    if (path / "prm_config.json").exists() or (path / "model" / "prm_config.json").exists():
        raise ValueError(f"{ref} is a process reward model (`prm train`), and only an outcome reward model "
                         "(`reward train`) can go here; a process model is a --reward of bon, rloo, grpo and ppo, "
                         "and `alignlab prm eval` / `prm score` evaluate it")
