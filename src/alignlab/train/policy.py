"""What the policy trainers (sft.py, dpo.py, ppo.py) share: loading a policy with or without
LoRA, the frozen reference it is held to, tokenized prompt/response examples, and saving a
policy folder that `alignlab generate --model` accepts.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from alignlab.fileio import atomic_write_json
from alignlab.models import load_model
from alignlab.models.tokens import encode_prompt
from alignlab.models.scoring import build_batch, encode_continuation, token_logprobs
from alignlab.models.vocab import load_vocabulary, restrict_vocabulary, vocabulary

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
POLICY_FILE = "alignlab_policy.json"


def load_policy(name: str, dtype: str = "float32", lora: bool = False, lora_r: int = 16,
                lora_alpha: float = 32.0, seed: int = 0, vocabulary: Path | None = None):
    """(model, tokenizer): the model to train; with ``lora`` wrapped by peft (adapters trainable
    only); with ``vocabulary`` its logits restricted to that file's tokens."""
    model, tokenizer = load_model(name, dtype=dtype)
    if vocabulary is not None:
        restrict_vocabulary(model, load_vocabulary(vocabulary, tokenizer))
    model.train()  # dropout stays off: Gemma 3 has none, and PPO's ratios need it off
    if lora:
        from peft import LoraConfig, get_peft_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0,
                                                     target_modules=LORA_TARGETS))
    return model, tokenizer


class Reference:
    """The frozen reference policy. With LoRA it is the same model with its adapters disabled
    (no second copy in memory); otherwise a frozen copy made before training starts."""

    def __init__(self, policy: torch.nn.Module):
        self.policy = policy
        self.copy = None
        if not hasattr(policy, "disable_adapter"):
            self.copy = copy.deepcopy(policy).eval().requires_grad_(False)

    @classmethod
    def frozen(cls, model: torch.nn.Module) -> Reference:
        """A reference that is ``model`` itself (already a separate copy), frozen."""
        reference = cls.__new__(cls)
        reference.policy = model
        reference.copy = model.eval().requires_grad_(False)
        return reference

    @contextlib.contextmanager
    def model(self):
        if self.copy is not None:
            yield self.copy
        else:
            with self.policy.disable_adapter():
                yield self.policy

    @torch.no_grad()
    def token_logprobs(self, ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
        with self.model() as ref:
            if self.copy is not None:  # the copy scores over the same (possibly restricted) vocabulary
                restrict_vocabulary(self.copy, vocabulary(self.policy))
            return token_logprobs(ref, ids, mask, target, temperature)


@dataclass
class Example:
    prompt: str
    prompt_ids: list[int]
    response_ids: list[int]


def make_example(tokenizer, prompt: str, response: str, max_length: int, add_eos: bool = True) -> Example:
    """Prompt ids (with BOS) and response ids (with EOS when ``add_eos``), cut to ``max_length``:
    the prompt loses its start first (BOS kept), then the response its end."""
    p = encode_prompt(tokenizer, prompt)
    r = encode_continuation(tokenizer, response)
    if add_eos and tokenizer.eos_token_id is not None:
        r = r + [tokenizer.eos_token_id]
    if not r:
        raise ValueError(f"an empty response for prompt {prompt[:60]!r}; every example needs response text")
    over = len(p) + len(r) - max_length
    if over > 0:
        cut = min(over, max(0, len(p) - 1 - 16))  # keep BOS and the prompt's last 16 tokens at least
        p = p[:1] + p[1 + cut:]
        over -= cut
        if over > 0:
            r = r[:len(r) - over]
    return Example(prompt, p, r)


def batch_tensors(examples: Sequence[Example], pad_id: int, device=None):
    """(ids, attention mask, response mask), each (B, T), right-padded."""
    ids, mask, target = build_batch([e.prompt_ids for e in examples], [e.response_ids for e in examples], pad_id, "right")
    if device is not None:
        ids, mask, target = ids.to(device), mask.to(device), target.to(device)
    return ids, mask, target


def save_policy(model, tokenizer, folder: Path, base_model: str, method: str, extra: dict | None = None) -> Path:
    """Save a full model folder, or a LoRA adapter folder that names its base; both load with
    ``load_model(folder)`` and `alignlab generate --model folder`."""
    import shutil

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.saving")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    is_lora = hasattr(model, "peft_config")
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    atomic_write_json(tmp / POLICY_FILE, {"base_model": base_model, "lora": is_lora, "method": method,
                                          **(extra or {})})
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def save_snapshot(model, tokenizer, run_path: Path, step: int, base_model: str, method: str, extra: dict) -> Path:
    """The policy as it is at ``step``, in the run's snapshots/step-N (a policy folder like the
    final one): the points of a training path that an evaluation can revisit."""
    return save_policy(model, tokenizer, run_path / "snapshots" / f"step-{step:07d}", base_model, method,
                       {**extra, "step": step})


def snapshots(run_path: Path) -> list[tuple[int, Path]]:
    """A run's saved snapshots as (step, folder), in step order."""
    found = []
    for folder in sorted((Path(run_path) / "snapshots").glob("step-*")):
        if (folder / POLICY_FILE).exists():
            found.append((int(folder.name.split("-", 1)[1]), folder))
    return found


@torch.no_grad()
def measure_kl(policy, reference: Reference, tokenizer, prompts: Sequence[str], max_new_tokens: int = 48,
               seed: int = 0) -> dict[str, float]:
    """KL(policy || reference) in nats per response, estimated on samples from the policy itself
    (temperature 1, no truncation): the mean of sum_t (log pi - log ref) (k1) and of sum_t k3."""
    from alignlab.models import SampleConfig, sample
    from alignlab.train.components import kl_k3

    was_training = policy.training
    policy.eval()
    completions = sample(policy, tokenizer, list(prompts),
                         SampleConfig(max_new_tokens=max_new_tokens, seed=seed, alternatives=0))
    policy.train(was_training)
    examples = [Example(c.prompt, c.prompt_ids, c.token_ids) for c in completions if c.token_ids]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(policy.parameters()).device
    ids, mask, target = batch_tensors(examples, pad, device)
    ref = reference.token_logprobs(ids, mask, target)  # (B, T)
    pol = torch.zeros_like(ref)
    for i, c in enumerate(c for c in completions if c.token_ids):
        pol[i][target[i]] = torch.tensor([t.logprob for t in c.tokens], dtype=pol.dtype)
    tmask = target.to(ref.dtype)
    k1 = ((pol - ref) * tmask).sum(-1)
    k3 = (kl_k3(pol, ref) * tmask).sum(-1)
    return {"objective/kl": float(k1.mean()), "objective/kl_k3": float(k3.mean()),
            "objective/kl_samples": len(examples),
            "response_length": float(tmask.sum(-1).mean())}


def write_pressure(run_path: Path, method: str, reference: str, beta: float | None, entries: list[dict],
                   extra: dict | None = None) -> None:
    """pressure.json: the weak prior of this run (its reference and beta) and KL over training."""
    atomic_write_json(run_path / "pressure.json", {"method": method, "reference": reference, "beta": beta,
                                                    "entries": entries, **(extra or {})})


class LogProbs(torch.nn.Module):
    """Wraps a causal LM so that forward returns per-token log-probs of the response tokens:
    the module handed to DDP, so every process's forward goes through its wrapper."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
        return token_logprobs(self.model, ids, mask, target, temperature)  # (B, T)


def read_records(files: str, kinds: Sequence[str], what: str, skip_bad: bool = False) -> list:
    """Records of the given kinds from comma-separated feedback files; refuses files with none."""
    from alignlab.data.formats import read_feedback

    paths = [Path(f.strip()) for f in files.split(",") if f.strip()]
    if not paths:
        raise ValueError(f"no data: give --data FILE[,FILE...] with {what}")
    records = [r for p in paths for r in read_feedback(p, skip_bad=skip_bad).records]
    kept = [r for r in records if r.kind in kinds]
    if not kept:
        found = sorted({r.kind for r in records}) or ["nothing"]
        raise ValueError(f"{files} holds no {what} (found: {', '.join(found)}); this method trains on "
                         f"{' or '.join(kinds)} records")
    return kept
