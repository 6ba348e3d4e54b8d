"""Supervised fine-tuning on demonstrations: the loss is on completion tokens only.

Read top to bottom: config, setup, loop. The loss of a global batch is the mean negative
log-likelihood per completion token over the whole batch, however it is split into
micro-batches (--grad-accum) or processes, so 1 x 8 and 8 x 1 give the same step.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Literal

import torch

from alignlab.runs import Run
from alignlab.train.options import DeviceOptions, LoraOptions, MonitorOptions, OptimOptions, RunOptions, VocabularyOptions
from alignlab.train.hooks import Hooks, StepContext
from alignlab.train.loop import keep_freed_memory
from alignlab.train.loop import (accelerator_for, adamw, broadcast_run, check_finite, data_order, latest_checkpoint, linear_schedule, load_checkpoint,
                                 optimizer_step, reopen_run, save_checkpoint, sparse_embedding_gradients, truncate_metrics)
from alignlab.train.policy import (LogProbs, Reference, batch_tensors, load_policy, make_example, measure_kl,
                                   read_records, save_policy, write_pressure)


@dataclass
class SFTConfig(DeviceOptions, MonitorOptions, RunOptions, OptimOptions, LoraOptions, VocabularyOptions):
    """Supervised fine-tuning on demonstrations."""

    data: str = ""
    """Demonstration files (prompt/completion), comma-separated: alignlab or TRL JSONL, or Parquet."""
    model: str = "gemma-3-270m"
    """The model to fine-tune: 'gemma-3-270m', 'tiny' or a local folder."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights and compute precision."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (each process)."""
    lr: float = 0.0
    """Peak learning rate (0: 2e-5 full, 2e-4 LoRA)."""
    max_length: int = 256
    """Tokens of prompt + completion kept."""
    add_eos: bool = True
    """Append EOS to each completion, so the policy learns to stop."""
    kl_every: int = 0
    """Measure KL(policy || initial model) on sampled responses every N steps (0: only at the end)."""
    kl_prompts: int = 8
    """Prompts sampled for each KL measurement (0: no KL measurement)."""


def train_sft(config: SFTConfig, progress: bool = True, hooks: Hooks | None = None) -> Run:
    """Fine-tune (or resume); returns the run. The policy is saved in the run folder."""
    from tqdm import tqdm

    run = None
    if config.resume is not None:
        config, run = reopen_run(config, "sft")
    if config.batch_size < 1 or config.grad_accum < 1 or config.epochs < 1:
        raise ValueError("batch_size, grad_accum and epochs must be at least 1")
    accelerator = accelerator_for(config.device)
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % (world * config.grad_accum):
        raise ValueError(f"batch_size {config.batch_size} does not split into {world} process(es) x "
                         f"{config.grad_accum} micro-batches; use a multiple of {world * config.grad_accum}")
    torch.manual_seed(config.seed)

    # 1. data and model
    records = read_records(config.data, ["demonstration"], "demonstrations", config.skip_bad)
    model, tokenizer = load_policy(config.model, config.dtype, config.lora, config.lora_r, config.lora_alpha,
                                    config.seed, config.vocabulary)
    model.to(accelerator.device)  # --device: every tensor below is made where the model is
    reference = Reference(model) if config.kl_prompts else None
    examples = [make_example(tokenizer, r.prompt, r.completion, config.max_length, config.add_eos) for r in records]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kl_prompts = sorted({e.prompt for e in examples})[:config.kl_prompts]
    if run is None:
        run = Run.create("sft", config, seed=config.seed) if accelerator.is_main_process else None
        run = broadcast_run(accelerator, run)

    keep_freed_memory()  # reuse freed blocks: no page faults every step (train/loop.py)
    if world == 1:
        sparse_embedding_gradients(model)  # exact; saves a dense 262k-row gradient a step
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    plain = LogProbs(model)  # outside DDP: what monitors recompute the loss through
    module = accelerator.prepare(plain)
    optimizer = adamw(trainable.values(), lr=config.lr or (2e-4 if config.lora else 2e-5),
                                  weight_decay=config.weight_decay)
    total = config.max_steps or config.epochs * -(-len(examples) // config.batch_size)
    scheduler = linear_schedule(optimizer, config.warmup_steps, total)
    order = data_order(list(range(len(examples))), total, config.batch_size, config.seed)

    start, ledger = 0, []
    checkpoint = latest_checkpoint(run.path) if config.resume else None
    if checkpoint is not None:
        start, extra = load_checkpoint(checkpoint, trainable, optimizer, scheduler)
        ledger = extra.get("ledger", [])
        if accelerator.is_main_process:
            truncate_metrics(run.path, start)
        if hooks is not None:
            hooks.resume(run)

    # 2. the loop
    local = config.batch_size // world
    micro = local // config.grad_accum
    stop_at = min(total, start + config.stop_after) if config.stop_after else total
    bar = tqdm(total=total, initial=start, desc="sft", unit="step", disable=not (progress and accelerator.is_main_process))
    for step in range(start, stop_at):
        rows = order[step * config.batch_size:(step + 1) * config.batch_size]
        batch_tokens = sum(len(examples[i].response_ids) for i in rows)  # the whole global batch
        mine = rows[rank * local:(rank + 1) * local]
        loss_sum = 0.0
        for m in range(config.grad_accum):
            part = [examples[i] for i in mine[m * micro:(m + 1) * micro]]
            ids, mask, target = batch_tensors(part, pad, accelerator.device)
            sync = accelerator.no_sync(module) if m < config.grad_accum - 1 else contextlib.nullcontext()
            with sync:
                logps = module(ids, mask, target)  # (b, T), zero off the completion
                # DDP averages over processes, so each scales by world to get the global token mean.
                loss = -(logps.sum()) / batch_tokens * world
                check_finite(loss, step, "SFT loss", f"rows {mine[:8]}")
                accelerator.backward(loss)
            loss_sum += float(loss.detach()) / world
        ctx = StepContext(step + 1, model, torch.tensor(loss_sum), optimizer, trainable,
                          loss_fn=lambda ids=ids, mask=mask, target=target:
                          -(plain(ids, mask, target).sum()) / batch_tokens * world)
        optimizer_step(ctx, scheduler, config.max_grad_norm, hooks)
        loss_global = float(accelerator.reduce(torch.tensor([loss_sum], device=accelerator.device), "sum"))
        metrics = {"loss": loss_global, "grad_norm": ctx.grad_norm, "grad_clipped": ctx.clipped,
                   "learning_rate": scheduler.get_last_lr()[0], "tokens": batch_tokens, **ctx.metrics}
        if config.kl_every and (step + 1) % config.kl_every == 0 and reference is not None:
            entry = {"step": step + 1, **measure_kl(model, reference, tokenizer, kl_prompts, seed=config.seed)}
            ledger.append(entry)
            metrics.update({k: v for k, v in entry.items() if k.startswith("objective/")})
        if accelerator.is_main_process:
            run.log_metrics(step + 1, **metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_global:.4f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == stop_at:
            if accelerator.is_main_process:
                save_checkpoint(run.path, step + 1, trainable, optimizer, scheduler, {"ledger": ledger})
            accelerator.wait_for_everyone()
    bar.close()
    if hooks is not None and accelerator.is_main_process:
        hooks.finish(run)
    sparse_embedding_gradients(model, enable=False)
    if stop_at < total:
        if accelerator.is_main_process:
            print(f"alignlab sft: stopped at step {stop_at} of {total}; continue with "
                  f"`alignlab sft --resume {run.id}`", file=sys.stderr)
        return run

    # 3. the pressure ledger and the saved policy
    if accelerator.is_main_process:
        if reference is not None and (not ledger or ledger[-1]["step"] != total):
            ledger.append({"step": total, **measure_kl(model, reference, tokenizer, kl_prompts, seed=config.seed)})
        write_pressure(run.path, "sft", config.model, None, ledger)
        out = save_policy(model, tokenizer, config.out or run.path / "policy", config.model, "sft", {"run": run.id})
        final = ledger[-1] if ledger else {}
        run.log_metrics(total, final=True, **{k: v for k, v in final.items() if k.startswith("objective/")})
        run.finish(policy=str(out), examples=len(examples), steps=total, kl=final.get("objective/kl"))
    accelerator.wait_for_everyone()
    return run
