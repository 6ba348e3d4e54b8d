"""Sizes of the writing-prompts experiment: 'test' (the tiny model, seconds), 'quick' (the
embedded model on a 2-core CPU within 15 minutes: `make demo`), 'full' (a GPU or a long CPU run).

Every number here is a choice about compute, not about the method: the stages are the same in
every profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Profile:
    """How big each stage of the experiment is."""

    model: str
    dtype: str
    """'float32', 'bfloat16' or 'auto' (resolved once, when an experiment starts, and saved with it):
    bfloat16 where this machine runs it natively (AVX512-BF16, AMX, CUDA), else float32."""
    restrict_vocabulary: bool
    """Build a task vocabulary and compute logits over it only (models/vocab.py)."""
    max_new_tokens: int
    rm_prompts: int
    """Training prompts whose base samples are labelled for the proxy reward model."""
    samples_per_prompt: int
    """Base samples per labelled prompt; every pair of them is compared."""
    test_prompts: int
    """Held-out test prompts every policy is evaluated on."""
    bon_n: tuple[int, ...]
    """Best-of-n pressure sweep."""
    dpo_betas: tuple[float, ...]
    """DPO pressure sweep (smaller beta, more pressure)."""
    ppo_kl_coefs: tuple[float, ...]
    """PPO pressure sweep: fixed KL coefficients (smaller, more pressure)."""
    ppo_iterations: int
    eval_samples: int = 2
    """Samples per test prompt for each trained policy."""
    rm_mode: str = "head"
    rm_pooling: str = "mean"
    """The proxy's head reads the mean over the response's tokens: on the frozen 270M backbone the
    last-token state predicted gold pairs at chance (51%), the response mean at 63% (docs/experiment.md)."""
    rm_epochs: int = 30
    """Passes over the labels (cheap for a head on cached features)."""
    rm_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    """Shares of the labels the reward-model learning curve trains on."""
    vocab_pilot_prompts: int = 16
    agreement: float = 0.75
    """Simulated labelers agree with each other this often (people: 0.72..0.77)."""
    batch_size: int = 16
    """Responses sampled together (on a 2-core CPU 64 gave 1.4x the tokens per second of 32)."""
    dpo_epochs: int = 1
    dpo_max_pairs: int = 0
    """Train DPO on the first this many labelled pairs (0: all)."""
    dpo_batch: int = 8
    dpo_grad_accum: int = 2
    """Micro-batches per DPO step: the same step in halves, to bound memory (7.4 GB at 1 on the quick profile)."""
    dpo_lr: float = 5e-4
    dpo_snapshot_every: int = 0
    """Save DPO's policy every N steps and evaluate each: gold against KL along training (0: the end only)."""
    ppo_rollout: int = 8
    ppo_minibatch: int = 4
    ppo_epochs: int = 2
    ppo_lr: float = 3e-4
    lora: bool = True
    lora_r: int = 8
    notes: list[str] = field(default_factory=list)


PROFILES: dict[str, Profile] = {
    # The tiny random model writes word salad; restricted to the tokens of the task's own prompts
    # (no pilot samples) its salad is English words from the prompts, which the gold judge can
    # tell apart, so every stage has a signal to work with.
    "test": Profile(model="tiny", dtype="float32", restrict_vocabulary=True, max_new_tokens=24, rm_prompts=8,
                    samples_per_prompt=3, test_prompts=4, bon_n=(1, 2, 4), dpo_betas=(0.1,), ppo_kl_coefs=(0.05,),
                    ppo_iterations=3, eval_samples=1, vocab_pilot_prompts=0, batch_size=8, dpo_batch=4,
                    ppo_rollout=4, ppo_minibatch=2, ppo_epochs=1, dpo_lr=1e-3, ppo_lr=1e-3, agreement=0.6,
                    dpo_snapshot_every=2),
    "quick": Profile(model="gemma-3-270m", dtype="auto", restrict_vocabulary=True, max_new_tokens=48,
                     rm_prompts=48, samples_per_prompt=4, test_prompts=24, bon_n=(1, 2, 4, 8),
                     dpo_betas=(0.1,), dpo_max_pairs=64, dpo_snapshot_every=2, ppo_kl_coefs=(0.02,),
                     ppo_iterations=6, ppo_lr=1e-4, vocab_pilot_prompts=8, batch_size=64),
    "full": Profile(model="gemma-3-270m", dtype="auto", restrict_vocabulary=True, max_new_tokens=96,
                    rm_prompts=600, samples_per_prompt=4, test_prompts=200, bon_n=(1, 2, 4, 8, 16, 32, 64),
                    dpo_betas=(0.5, 0.1, 0.03, 0.01), ppo_kl_coefs=(0.1, 0.03, 0.01, 0.003), ppo_iterations=200,
                    eval_samples=4, rm_mode="last", rm_epochs=3, vocab_pilot_prompts=64, dpo_epochs=2, ppo_rollout=32,
                    ppo_minibatch=8, ppo_epochs=4, lora_r=16),
}


def get_profile(name: str, **overrides) -> Profile:
    """A named profile with any fields replaced (None values are ignored) and its dtype resolved."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    profile = replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})
    if profile.dtype == "auto":
        from alignlab.models.loading import auto_dtype

        profile = replace(profile, dtype=auto_dtype())
    return profile
