"""Direct preference optimisation: the DPO family on preference pairs, or KTO on unpaired thumbs.

Read top to bottom: config, setup, loop. The policy is held to a frozen reference (the weak
prior) with strength beta. Reference log-probs are computed once, before training, and cached
in the run folder; with LoRA the reference is the same model with its adapters disabled, so no
second copy is ever held for the loss. A loss is any function in components.DPO_LOSSES or a
user's own, given as module:function or path/to/file.py:function, with the signature

    loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, chosen_tokens, rejected_tokens) -> (B,)

(sequence log-prob sums and token counts, all (B,) tensors; beta a float).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from alignlab.runs import Run
from alignlab.train.options import DeviceOptions, LoraOptions, MonitorOptions, OptimOptions, RunOptions, VocabularyOptions
from alignlab.train.components import DPO_LOSSES, kto_loss, make_dpo_robust, sft_term
from alignlab.train.hooks import Hooks, StepContext
from alignlab.train.loop import keep_freed_memory
from alignlab.train.loop import (accelerator_for, adamw, broadcast_run, check_finite, data_order, latest_checkpoint, linear_schedule,
                                 load_checkpoint, optimizer_step, reopen_run, save_checkpoint, sparse_embedding_gradients,
                                 truncate_metrics)
from alignlab.train.reward_fn import load_function
from alignlab.train.policy import (LogProbs, Reference, batch_tensors, load_policy, make_example, measure_kl,
                                   read_records, save_policy, save_snapshot, write_pressure)


@dataclass
class DPOConfig(DeviceOptions, MonitorOptions, RunOptions, OptimOptions, LoraOptions, VocabularyOptions):
    """Direct preference optimisation (DPO family, or KTO on thumbs)."""

    data: str = ""
    """Preference pairs (or, for --loss kto, thumbs), comma-separated files: alignlab or TRL JSONL, or Parquet."""
    model: str = "gemma-3-270m"
    """The policy to start from, also the reference: 'gemma-3-270m', 'tiny' or a local folder."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights and compute precision."""
    loss: str = "sigmoid"
    """sigmoid (DPO), hinge, ipo, robust, kto (unpaired thumbs), or your own as module:function or file.py:function."""
    beta: float = 0.1
    """Strength of the pull toward the reference (the weak prior); must be > 0."""
    label_noise: float = 0.1
    """For --loss robust: the assumed share of flipped labels (< 0.5)."""
    sft_weight: float = 0.0
    """Add this times the chosen responses' per-token NLL (keeps both likelihoods from falling)."""
    desirable_weight: float = 1.0
    """KTO: weight of thumbs-up examples."""
    undesirable_weight: float = 1.0
    """KTO: weight of thumbs-down examples."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (each process)."""
    lr: float = 0.0
    """Peak learning rate (0: 5e-6 full, 5e-5 LoRA)."""
    max_length: int = 256
    """Tokens of prompt + response kept."""
    add_eos: bool = True
    """Append EOS to each response."""
    kl_every: int = 0
    """Measure KL(policy || reference) on sampled responses every N steps (0: only at the end)."""
    kl_prompts: int = 8
    """Prompts sampled for each KL measurement (0: none)."""
    snapshot_every: int = 0
    """Also save the policy every N steps in snapshots/step-N (LoRA: the adapter only), to evaluate the path training took (0: never)."""


# -- setup ------------------------------------------------------------------------------------------


def resolve_loss(config: DPOConfig) -> Callable[..., torch.Tensor] | None:
    """The pairwise loss function (None for KTO), refusing one that cannot work before training."""
    if config.beta <= 0:
        raise ValueError(f"beta is {config.beta}; it must be > 0 (it is the strength of the pull to the reference)")
    if config.loss == "kto":
        return None
    if config.loss == "robust":
        return make_dpo_robust(config.label_noise)
    if config.loss in DPO_LOSSES:
        return DPO_LOSSES[config.loss]
    if ":" not in config.loss:
        raise ValueError(f"loss '{config.loss}' is not one of {', '.join([*DPO_LOSSES, 'kto'])} nor module:function")
    fn = load_function(config.loss, "loss")
    # A dry run on made-up numbers: the loss must give one finite value per pair.
    probe = [torch.tensor([-10.0, -12.0]), torch.tensor([-11.0, -11.0]), torch.tensor([-10.5, -11.5]),
             torch.tensor([-11.2, -11.0])]
    try:
        out = fn(*probe, config.beta, torch.tensor([5.0, 6.0]), torch.tensor([4.0, 7.0]))
    except Exception as err:  # noqa: BLE001 - the user's code: report whatever it raised
        raise ValueError(f"loss '{config.loss}' failed on a test batch: {type(err).__name__}: {err}; "
                         "its signature is (policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, "
                         "chosen_tokens, rejected_tokens) -> per-pair loss") from None
    if not isinstance(out, torch.Tensor) or out.shape != (2,) or not torch.isfinite(out).all():
        raise ValueError(f"loss '{config.loss}' returned {getattr(out, 'shape', type(out).__name__)} for 2 pairs; "
                         "it must return one finite loss per pair, shape (B,)")
    return fn


@torch.no_grad()
def reference_logps(reference_fn, examples, pad: int, device, batch_size: int = 8, progress: bool = False) -> torch.Tensor:
    """Sequence log-prob sums of every example under the reference, computed once. (N,)."""
    from tqdm import tqdm

    out = []
    for start in tqdm(range(0, len(examples), batch_size), desc="reference log-probs", unit="batch",
                      disable=not progress, leave=False):
        ids, mask, target = batch_tensors(examples[start:start + batch_size], pad, device)
        out.append(reference_fn(ids, mask, target).sum(-1).cpu())
    return torch.cat(out)


def mismatched(n: int, seed: int) -> list[int]:
    """For KTO's reference point: a fixed partner j != i for each example (a shifted permutation)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 17)).tolist()
    partner = [0] * n
    for k in range(n):
        partner[perm[k]] = perm[(k + 1) % n]
    return partner


def pair_losses(scorer, ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, part: list[int],
                ref_first: torch.Tensor, ref_second: torch.Tensor, loss_fn, config: DPOConfig):
    """Per-pair losses (b,) of one micro-batch whose rows are the chosen then the rejected
    responses, with the policy's sequence log-probs of each half (b,)."""
    seq = scorer(ids, mask, target).sum(-1)  # (2b,)
    pc, pr = seq[:len(part)], seq[len(part):]
    nc = target[:len(part)].sum(-1).float()
    nr = target[len(part):].sum(-1).float()
    losses = loss_fn(pc, pr, ref_first[part], ref_second[part], config.beta, nc, nr)
    if config.sft_weight:
        losses = losses + config.sft_weight * sft_term(pc, nc)
    return losses, pc, pr


def kto_losses(scorer, ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, part: list[int],
               ref_first: torch.Tensor, ref_second: torch.Tensor, labels: torch.Tensor, config: DPOConfig,
               z0: torch.Tensor | None = None, reduce=None):
    """Per-example KTO losses (b,) of one micro-batch whose rows are the examples then their
    mismatched pairs, with the policy's log-probs (b,) and the reference point z0: the policy's
    KL from the reference on the mismatched pairs, detached and >= 0, averaged over processes by
    ``reduce``; a given ``z0`` is used as it is (a monitor recomputing a step's loss)."""
    b = len(part)
    logps = scorer(ids[:b], mask[:b], target[:b]).sum(-1)  # (b,)
    if z0 is None:
        with torch.no_grad():
            mis = scorer(ids[b:], mask[b:], target[b:]).sum(-1)
        z0 = (mis - ref_second[part]).mean().clamp(min=0)
        z0 = reduce(z0) if reduce is not None else z0
    losses = kto_loss(logps, ref_first[part], labels[part], z0, config.beta, config.desirable_weight,
                      config.undesirable_weight)
    return losses, logps, z0


def train_dpo(config: DPOConfig, progress: bool = True, hooks: Hooks | None = None) -> Run:
    """Optimise (or resume) a policy on preferences; returns the run. The policy is saved in it."""
    from tqdm import tqdm

    run = None
    if config.resume is not None:
        config, run = reopen_run(config, "dpo")
    loss_fn = resolve_loss(config)
    kto = loss_fn is None
    if config.batch_size < 1 or config.grad_accum < 1 or config.epochs < 1:
        raise ValueError("batch_size, grad_accum and epochs must be at least 1")
    accelerator = accelerator_for(config.device)
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % (world * config.grad_accum):
        raise ValueError(f"batch_size {config.batch_size} does not split into {world} process(es) x "
                         f"{config.grad_accum} micro-batches; use a multiple of {world * config.grad_accum}")
    torch.manual_seed(config.seed)

    # 1. data: pairs -> (chosen, rejected) examples; thumbs -> (completion, mismatched completion)
    if kto:
        records = read_records(config.data, ["thumbs"], "thumbs (prompt/completion/label)", config.skip_bad)
    else:
        records = read_records(config.data, ["pair"], "preference pairs", config.skip_bad)
    model, tokenizer = load_policy(config.model, config.dtype, config.lora, config.lora_r, config.lora_alpha,
                                    config.seed, config.vocabulary)
    model.to(accelerator.device)  # --device: the reference copy and every tensor below follow
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ex = lambda p, r: make_example(tokenizer, p, r, config.max_length, config.add_eos)  # noqa: E731
    if kto:
        partner = mismatched(len(records), config.seed)
        first = [ex(r.prompt, r.completion) for r in records]
        second = [ex(r.prompt, records[partner[i]].completion) for i, r in enumerate(records)]
        labels = torch.tensor([bool(r.label) for r in records])
    else:
        first = [ex(r.prompt, r.chosen) for r in records]
        second = [ex(r.prompt, r.rejected) for r in records]
    # With LoRA the reference costs nothing (adapters off). A full fine-tune needs a frozen copy
    # only to measure KL during training: its log-probs on the data come from the policy itself
    # before the first step, and the end-of-run KL loads a fresh copy then (~1 GB not held).
    reference = Reference(model) if (config.lora or (config.kl_prompts and config.kl_every)) else None
    if run is None:
        run = Run.create("dpo", config, seed=config.seed) if accelerator.is_main_process else None
        run = broadcast_run(accelerator, run)

    # 2. reference log-probs, once (cached in the run folder for resuming)
    cache = run.path / "reference_logps.pt"
    if cache.exists():
        ref_first, ref_second = torch.load(cache)
    elif config.resume and latest_checkpoint(run.path) is not None:
        raise FileNotFoundError(f"{cache} is missing: the reference log-probs of a resumed run cannot be "
                                "recomputed from the trained policy; start the run again")
    else:
        scorer = reference.token_logprobs if reference is not None else LogProbs(model).eval()
        with torch.no_grad():
            ref_first = reference_logps(scorer, first, pad, accelerator.device, progress=progress)
            ref_second = reference_logps(scorer, second, pad, accelerator.device, progress=progress)
        model.train()
        if accelerator.is_main_process:
            torch.save((ref_first, ref_second), cache)
    ref_first, ref_second = ref_first.to(accelerator.device), ref_second.to(accelerator.device)
    if kto:
        labels = labels.to(accelerator.device)

    keep_freed_memory()  # reuse freed blocks: no page faults every step (train/loop.py)
    if world == 1:
        sparse_embedding_gradients(model)  # exact; saves a dense 262k-row gradient a step
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    plain = LogProbs(model)  # outside DDP: what monitors recompute the loss through
    module = accelerator.prepare(plain)
    optimizer = adamw(trainable.values(), lr=config.lr or (5e-5 if config.lora else 5e-6),
                                  weight_decay=config.weight_decay)
    total = config.max_steps or config.epochs * -(-len(records) // config.batch_size)
    scheduler = linear_schedule(optimizer, config.warmup_steps, total)
    order = data_order(list(range(len(records))), total, config.batch_size, config.seed)
    kl_prompts = sorted({r.prompt for r in records})[:config.kl_prompts]

    start, ledger = 0, []
    checkpoint = latest_checkpoint(run.path) if config.resume else None
    if checkpoint is not None:
        start, extra = load_checkpoint(checkpoint, trainable, optimizer, scheduler)
        ledger = extra.get("ledger", [])
        if accelerator.is_main_process:
            truncate_metrics(run.path, start)
        if hooks is not None:
            hooks.resume(run)

    # 3. the loop
    local = config.batch_size // world
    micro = local // config.grad_accum
    stop_at = min(total, start + config.stop_after) if config.stop_after else total
    bar = tqdm(total=total, initial=start, desc=config.loss, unit="step",
               disable=not (progress and accelerator.is_main_process))
    for step in range(start, stop_at):
        rows = order[step * config.batch_size:(step + 1) * config.batch_size]
        mine = rows[rank * local:(rank + 1) * local]
        sums: dict[str, float] = {}
        for m in range(config.grad_accum):
            part = mine[m * micro:(m + 1) * micro]
            sync = accelerator.no_sync(module) if m < config.grad_accum - 1 else contextlib.nullcontext()
            with sync:
                # One forward for both halves of the batch: (2b, T)
                ids, mask, target = batch_tensors([first[i] for i in part] + [second[i] for i in part], pad,
                                                  accelerator.device)
                if kto:
                    losses, logps, z0 = kto_losses(module, ids, mask, target, part, ref_first, ref_second, labels,
                                                   config, reduce=lambda z: accelerator.reduce(z.reshape(1), "mean")[0])
                    stats = _kto_stats(logps, ref_first[part], labels[part], config.beta, z0)
                else:
                    losses, pc, pr = pair_losses(module, ids, mask, target, part, ref_first, ref_second, loss_fn, config)
                    stats = _dpo_stats(pc, pr, ref_first[part], ref_second[part], config.beta)
                loss = losses.sum() / config.batch_size * world
                check_finite(loss, step, f"{config.loss} loss", f"rows {part[:8]}")
                accelerator.backward(loss)
            for k, v in {"loss": float(loss.detach()) / world, **stats}.items():
                sums[k] = sums.get(k, 0.0) + v * (1.0 if k == "loss" else len(part) / local)
        if kto:  # the step's last micro-batch, with the reference point z0 it trained with
            def recompute(ids=ids, mask=mask, target=target, part=part, z0=z0):
                return kto_losses(plain, ids, mask, target, part, ref_first, ref_second, labels, config,
                                  z0=z0)[0].sum() / config.batch_size * world
        else:
            def recompute(ids=ids, mask=mask, target=target, part=part):
                return pair_losses(plain, ids, mask, target, part, ref_first, ref_second, loss_fn,
                                   config)[0].sum() / config.batch_size * world
        ctx = StepContext(step + 1, model, torch.tensor(sums["loss"]), optimizer, trainable, loss_fn=recompute)
        optimizer_step(ctx, scheduler, config.max_grad_norm, hooks)
        metrics = {k: float(accelerator.reduce(torch.tensor([v], device=accelerator.device), "sum" if k == "loss" else "mean"))
                   for k, v in sums.items()}
        metrics.update({"grad_norm": ctx.grad_norm, "grad_clipped": ctx.clipped,
                        "learning_rate": scheduler.get_last_lr()[0], **ctx.metrics})
        if "rewards/chosen" in metrics:
            metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        if config.kl_every and (step + 1) % config.kl_every == 0 and reference is not None and config.kl_prompts:
            entry = {"step": step + 1, **measure_kl(model, reference, tokenizer, kl_prompts, seed=config.seed)}
            ledger.append(entry)
            metrics.update({k: v for k, v in entry.items() if k.startswith("objective/")})
        if accelerator.is_main_process:
            run.log_metrics(step + 1, **metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        if config.snapshot_every and (step + 1) % config.snapshot_every == 0 and step + 1 < total:
            if accelerator.is_main_process:
                save_snapshot(model, tokenizer, run.path, step + 1, config.model, "dpo",
                              {"run": run.id, "beta": config.beta, "loss": config.loss})
            accelerator.wait_for_everyone()
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
            print(f"alignlab dpo: stopped at step {stop_at} of {total}; continue with "
                  f"`alignlab dpo --resume {run.id}`", file=sys.stderr)
        return run

    # 4. the pressure ledger and the saved policy
    if accelerator.is_main_process:
        if reference is None and config.kl_prompts:
            reference = Reference.frozen(load_policy(config.model, config.dtype,
                                                     vocabulary=config.vocabulary)[0].to(accelerator.device))
        if reference is not None and config.kl_prompts and (not ledger or ledger[-1]["step"] != total):
            ledger.append({"step": total, **measure_kl(model, reference, tokenizer, kl_prompts, seed=config.seed)})
        write_pressure(run.path, "dpo", config.model, config.beta, ledger, {"loss": config.loss})
        out = save_policy(model, tokenizer, config.out or run.path / "policy", config.model, "dpo",
                          {"run": run.id, "beta": config.beta, "loss": config.loss})
        final = ledger[-1] if ledger else {}
        run.log_metrics(total, final=True, **{k: v for k, v in final.items() if k.startswith("objective/")})
        run.finish(policy=str(out), records=len(records), steps=total, beta=config.beta, kl=final.get("objective/kl"))
    accelerator.wait_for_everyone()
    return run


def _dpo_stats(pc, pr, rc, rr, beta) -> dict[str, float]:
    """The field's metric names: implicit rewards beta * (log pi - log ref), their margin and accuracy."""
    with torch.no_grad():
        chosen, rejected = beta * (pc - rc), beta * (pr - rr)
        return {"rewards/chosen": float(chosen.mean()), "rewards/rejected": float(rejected.mean()),
                "rewards/accuracies": float((chosen > rejected).float().mean()),
                "logps/chosen": float(pc.mean()), "logps/rejected": float(pr.mean())}


def _kto_stats(logps, ref, labels, beta, z0) -> dict[str, float]:
    with torch.no_grad():
        reward = beta * (logps - ref)
        good, bad = reward[labels], reward[~labels]
        return {"rewards/chosen": float(good.mean()) if len(good) else 0.0,
                "rewards/rejected": float(bad.mean()) if len(bad) else 0.0, "kl": float(z0)}
