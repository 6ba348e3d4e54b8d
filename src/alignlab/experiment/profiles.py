"""Sizes of the writing-prompts experiment: 'test' (the tiny model, seconds), 'quick' (the
embedded model on a 2-core CPU within 15 minutes: `make demo`), 'standard' (90 minutes on a
2-core CPU: pressure sweeps, a weak-proxy arm, every online method), 'full' (a GPU).

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
    """PPO pressure sweep: fixed KL coefficients (smaller, more pressure); empty: no PPO stage."""
    ppo_iterations: int
    online_method: str = "rloo"
    """The online method whose gold win-rate is the run's headline, named before the run (not the best of several)."""
    rloo_kl_coefs: tuple[float, ...] = ()
    """RLOO pressure sweep (KL coefficient per nat of sequence KL, on the proxy scaled to its base spread); empty: no RLOO."""
    grpo_kl_coefs: tuple[float, ...] = ()
    """GRPO pressure sweep (k3 loss coefficient); empty: no GRPO stage."""
    rl_iterations: int = 16
    """RLOO/GRPO iterations per run."""
    rl_prompts: int = 4
    """RLOO/GRPO prompts per iteration."""
    rl_group: int = 4
    """RLOO/GRPO samples per prompt (the group that is the baseline)."""
    rl_lr: float = 1.5e-4
    """RLOO/GRPO learning rate (constant)."""
    rl_snapshot_every: int = 4
    """Save the RLOO/GRPO policy every N iterations and evaluate each snapshot on the test prompts (0: the end only)."""
    rl_seeds: int = 1
    """Run the headline method's first setting with this many seeds (the headline is seed 0's; the others give the spread across seeds)."""
    weak_proxy_fraction: float = 0.0
    """Also run the headline method against a reward model trained on this share of the labels (weak proxies overoptimize sooner; 0: no such arm)."""
    weak_proxy_iterations: int = 0
    """Iterations of the weak-proxy arm (0: rl_iterations). Longer than the headline's, so that the
    split-half test sees the arm past its gold peak; snapshots every rl_snapshot_every as before."""
    weak_proxy_kl_coef: float | None = None
    """KL coefficient of the weak-proxy arm (None: the headline's). Gao et al. (2022) ran their RL
    overoptimization curves without a KL penalty, which acts like early stopping."""
    weak_proxy_lr: float | None = None
    """Learning rate of the weak-proxy arm (None: rl_lr)."""
    weak_proxy_snapshot_every: int = 0
    """Snapshot interval of the weak-proxy arm (0: rl_snapshot_every)."""
    target_rm_accuracy: float = 0.70
    """Target: the proxy's accuracy against gold on held-out pairs."""
    target_win_rate: float = 0.70
    """Target: the headline online method's gold win-rate against the base policy."""
    target_win_rate_low: float = 0.6
    """Target: the lower end of that win-rate's 95% interval must exceed this."""
    require_goodhart: bool = False
    """Whether this profile claims the split-half overoptimization test (only a profile sized for it should)."""
    eval_samples: int = 2
    """Samples per test prompt for each trained policy."""
    rm_mode: str = "head"
    rm_pooling: str = "mean"
    """The proxy's head reads the mean over the response's tokens: on the frozen 270M backbone the
    last-token state predicted gold pairs at chance (51%), the response mean at 63% (docs/experiment.md)."""
    rm_epochs: int = 30
    """Passes over the labels (cheap for a head on cached features)."""
    rm_layer: int = 0
    """The decoder layer whose states the head reads (0: the final layer)."""
    rm_l2: float = 0.0
    """L2 penalty on the reward head's weights (on standardised features when rm_standardize)."""
    rm_standardize: bool = False
    """Standardise each feature dimension on the training texts before the head (mode 'head')."""
    rm_early_stop: bool = False
    """Keep the epoch with the best loss on held-out prompts' labels (10% of the labelled prompts)."""
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
    ppo_snapshot_every: int = 0
    """Save PPO's policy every N iterations and evaluate each snapshot (0: the end only)."""
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
                    dpo_snapshot_every=2, rloo_kl_coefs=(0.05,), grpo_kl_coefs=(0.05,), rl_iterations=2,
                    rl_prompts=2, rl_group=2, rl_lr=1e-3, rl_snapshot_every=1, rl_seeds=2, weak_proxy_fraction=0.5,
                    weak_proxy_iterations=3,
                    rm_early_stop=True, rm_l2=1e-3, rm_standardize=True),
    # The headline is RLOO at kl_coef 0.05 (named here, before any run). PPO and GRPO are in the
    # standard profile: the quick one has time for one online method.
    # Timed on a 2-core AVX2 CPU from a fresh cache (float32): 17 min 15 s with 48 test prompts,
    # snapshots every 4 iterations and 64 DPO pairs; 15 min 1 s with 40 test prompts, snapshots
    # every 8 and 48 pairs. Each policy evaluated costs ~50 s per 48 prompts (sampling 20,
    # reference log-probs 15, proxy 10) and each test prompt 8 base samples, so the quick profile
    # evaluates RLOO at its midpoint and end only, on 32 test prompts (95% intervals about
    # +-0.045), and DPO on 48 pairs: timed at 14 min 47 s, 4.4 GB (RM 0.712, RLOO 0.839).
    "quick": Profile(model="gemma-3-270m", dtype="auto", restrict_vocabulary=True, max_new_tokens=48,
                     rm_prompts=48, samples_per_prompt=4, test_prompts=32, bon_n=(1, 2, 4, 8),
                     dpo_betas=(0.1,), dpo_max_pairs=48, dpo_snapshot_every=0, ppo_kl_coefs=(),
                     ppo_iterations=6, ppo_lr=1e-4, vocab_pilot_prompts=8, batch_size=64, rloo_kl_coefs=(0.05,),
                     rl_iterations=16, rl_prompts=4, rl_group=4, rl_snapshot_every=8, rm_layer=11, rm_l2=1.0,
                     rm_standardize=True),
    # Sized for 90 minutes on a 2-core CPU (float32). RLOO at kl_coef 0.05 is the headline (named
    # here, before any run), with snapshots every 8 iterations, two further seeds (final policies:
    # the spread across seeds) and a weak-proxy arm (a reward model on a tenth of the labels, 12
    # prompts) run longer with snapshots, for the split-half test; GRPO and PPO at one
    # setting each, final policies only. The first version (150 prompts x 4 samples, layer 12, a
    # quarter of the labels for the weak arm at 24 iterations, snapshots every 6) ran 1 h 17 min
    # 35 s and reached 0.734 against gold; on its data 8 samples a prompt (28 pairs instead of 6)
    # raised a head's accuracy by ~0.02 and 5-fold cross-validation over the labelled prompts put
    # layer 11 ahead of 12. That version: 1 h 25 min 31 s, 5.2 GB, 0.770, but its weak arm (36
    # iterations at kl_coef 0.05) reached KL 17.6 with gold still rising. The weak arm now runs
    # as Gao et al. (2022) ran RL: no KL penalty, lr 3e-4, 48 iterations, snapshots every 12; an
    # exploratory run of that arm on the same weak proxy peaked in gold near KL 20-60 and fell
    # below the base policy by KL ~100 (docs/experiment.md). This version, timed on a 2-core
    # AVX-512 CPU in bfloat16 with the test suite beside it part of the time: 1 h 19 min 45 s,
    # 5.8 GB; RM 0.773, RLOO 0.892, split-half drop 0.074 (SE 0.027) with the proxy up 1.36.
    "standard": Profile(model="gemma-3-270m", dtype="auto", restrict_vocabulary=True, max_new_tokens=48,
                        rm_prompts=120, samples_per_prompt=8, test_prompts=80, bon_n=(1, 2, 4, 8, 16),
                        dpo_betas=(0.1,), dpo_max_pairs=128, dpo_snapshot_every=0, ppo_kl_coefs=(0.02,),
                        ppo_iterations=12, ppo_lr=1e-4, ppo_snapshot_every=0, vocab_pilot_prompts=16, batch_size=64,
                        rloo_kl_coefs=(0.05,), grpo_kl_coefs=(0.05,), rl_iterations=24, rl_prompts=4,
                        rl_group=4, rl_snapshot_every=8, rl_seeds=3, weak_proxy_fraction=0.1,
                        weak_proxy_iterations=48, weak_proxy_kl_coef=0.0, weak_proxy_lr=3e-4,
                        weak_proxy_snapshot_every=12, rm_layer=11, rm_l2=1.0, rm_standardize=True,
                        target_rm_accuracy=0.75, target_win_rate=0.75, target_win_rate_low=0.65,
                        require_goodhart=True),
    "full": Profile(model="gemma-3-270m", dtype="auto", restrict_vocabulary=True, max_new_tokens=96,
                    rm_prompts=600, samples_per_prompt=4, test_prompts=200, bon_n=(1, 2, 4, 8, 16, 32, 64),
                    dpo_betas=(0.5, 0.1, 0.03, 0.01), ppo_kl_coefs=(0.1, 0.03, 0.01, 0.003), ppo_iterations=200,
                    eval_samples=4, rm_mode="last", rm_epochs=3, vocab_pilot_prompts=64, dpo_epochs=2, ppo_rollout=32,
                    ppo_minibatch=8, ppo_epochs=4, lora_r=16, rloo_kl_coefs=(0.1, 0.03, 0.01),
                    grpo_kl_coefs=(0.1, 0.01), rl_iterations=200, rl_prompts=16, rl_group=4, rl_snapshot_every=25,
                    weak_proxy_fraction=0.25, target_rm_accuracy=0.75, target_win_rate=0.75,
                    target_win_rate_low=0.65, require_goodhart=True),
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
