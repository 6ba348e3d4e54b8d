"""Options every trainer shares, documented once (the docstring under a field is its --help).

A trainer's config inherits the groups it uses and redeclares a field only where its meaning
or default differs (e.g. the learning rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
class MonitorOptions:
    """White-box monitors watching the run from the inside (docs/whitebox.md)."""

    monitor: str = ""
    """Comma-separated monitors to attach: audit (blocked gradients), clip (which tensors' gradients are clipped), curvature (Hessian top eigenvalue and trace), or 'all'; results and red flags go to the run folder's monitors/."""
    monitor_every: int = 10
    """Run the audit and curvature monitors at step 1 and every this many optimizer steps (clip attribution runs every step)."""
