"""Options every trainer shares, documented once (the docstring under a field is its --help).

A trainer's config inherits the groups it uses and redeclares a field only where its meaning
or default differs (e.g. the learning rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass
class OptimOptions:
    """How long and how hard to train."""

    epochs: int = 1
    """Passes over the training data."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: as many as the epochs give)."""
    batch_size: int = 8
    """Examples per optimizer step, across all processes and micro-batches."""
    warmup_steps: int = 0
    """Linear warm-up steps; the rate then decays linearly to 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""


@dataclass
class LoraOptions:
    """Low-rank adapters instead of full fine-tuning."""

    lora: bool = False
    """Train LoRA adapters only; the reference is then the model with adapters disabled."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: float = 32.0
    """LoRA scale numerator."""


@dataclass
class RunOptions:
    """Seeds, checkpoints, resuming and where the result goes."""

    skip_bad: bool = False
    """Skip malformed lines of the data files (they are counted and reported) instead of stopping."""
    seed: int = 0
    """Seed for the data order and initialisations."""
    checkpoint_every: int = 50
    """Save a resumable checkpoint every this many steps."""
    stop_after: int = 0
    """Stop after this many steps of this invocation, leaving a resumable run (0: run to the end)."""
    resume: str | None = None
    """Resume this run (id or folder) from its last checkpoint; the other options come from the run."""
    out: Path | None = None
    """Where to save the result (default: inside the run folder)."""


@dataclass
class VocabularyOptions:
    """A restricted output vocabulary (models/vocab.py)."""

    vocabulary: Path | None = None
    """A vocabulary file (JSON of kept token ids): logits over those tokens only, renormalised (fast on a CPU)."""


@dataclass
class DeviceOptions:
    """Where to train."""

    device: str = "auto"
    """Where the model trains: auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N (one process; several GPUs: accelerate launch)."""


@dataclass
class MonitorOptions:
    """White-box monitors watching the run from the inside (docs/whitebox.md)."""

    monitor: str = ""
    """Comma-separated monitors to attach: audit (blocked gradients), clip (which tensors' gradients are clipped), curvature (Hessian top eigenvalue and trace), or 'all'; results and red flags go to the run folder's monitors/."""
    monitor_every: int = 10
    """Run the audit and curvature monitors at step 1 and every this many optimizer steps (clip attribution runs every step)."""


@dataclass
class OnlineOptions:
    """Online RL with a group of samples per prompt (RLOO, GRPO): what is sampled, scored and held."""

    prompts: Path | None = None
    """Training prompts: one per line (.txt) or JSON lines with a 'prompt' field (.jsonl)."""
    reward: str = ""
    """A reward model folder or reward run id, or a function module:function / file.py:function (prompt, response) -> float."""
    gold: str | None = None
    """Optionally a held-out judge (same forms as --reward), never trained on: scores each rollout for the ledger."""
    model: str = "gemma-3-270m"
    """The initial policy, also the frozen reference (the weak prior)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights and compute precision."""
    iterations: int = 100
    """Rollouts (generate, score, update) to run."""
    prompts_per_iteration: int = 4
    """Prompts per rollout, across processes; each is answered group_size times."""
    group_size: int = 4
    """Samples per prompt (TRL's num_generations); the group is the baseline."""
    minibatch_size: int = 0
    """Rollout rows per optimizer step, across processes (0: the whole rollout, one step per epoch)."""
    micro_batch_size: int = 0
    """Rows per forward/backward pass within a step (gradient accumulation; 0: the whole minibatch at once)."""
    epochs: int = 1
    """Passes over each rollout (1: on-policy, the ratio is 1 at the first step)."""
    max_new_tokens: int = 32
    """Longest response."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: a response ends after the first one (which stays in it and counts as a proper end, like EOS)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are computed on logits divided by it."""
    kl_coef: float = 0.05
    """beta: weight of KL(policy || reference), per nat of the sequence's KL."""
    reward_scale: float = 1.0
    """Scores are divided by this before the KL penalty: pass the proxy's spread so beta is per unit of it."""
    missing_eos_penalty: float = 0.0
    """Subtracted from the score of a response that never emitted EOS or a stop string (0: off)."""
    cliprange: float = 0.2
    """Ratio clip epsilon (low side; and high side unless cliprange_high is set)."""
    cliprange_high: float = 0.0
    """Upper ratio clip (DAPO's clip-higher; 0: same as cliprange)."""
    lr: float = 0.0
    """Learning rate (0: 1e-5 full, 1.5e-4 LoRA)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """Constant, or annealed linearly to 0 over the run."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: off)."""
    sample_every: int = 10
    """Print and save a sample table (prompt, response, score, KL) every N iterations (0: never)."""
    seed: int = 0
    """Seed for prompt order, sampling and minibatch order."""
    checkpoint_every: int = 10
    """Save a resumable checkpoint every this many iterations."""
    snapshot_every: int = 0
    """Also save the policy every N iterations in snapshots/step-N (LoRA: the adapter only), to evaluate the path training took (0: never)."""
    stop_after: int = 0
    """Stop after this many iterations of this invocation, leaving a resumable run (0: run to the end)."""
    resume: str | None = None
    """Resume this run (id or folder) from its last checkpoint."""
    out: Path | None = None
    """Where to save the policy (default: the run folder's 'policy')."""
