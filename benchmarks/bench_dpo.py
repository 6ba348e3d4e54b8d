"""alignlab's DPO training (`alignlab dpo`) against TRL's DPOTrainer, on the same work.

Both trainers minimise the sigmoid DPO loss -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))
(sequence log-prob sums of the response tokens, mean over the pairs of a batch) on one synthetic
preference set (short English answers of 20..80 tokens, benchmarks/_common.py; by default exactly
the pairs the steps use, each once), with:

- the same policy: alignlab's ``load_model(--model)``; TRL gets it saved with ``save_pretrained``
  and reloaded with ``AutoModelForCausalLM`` (the same class and attention implementation; the
  report prints both); in LoRA mode alignlab's adapter initialisation (its random A draw, B = 0)
  is copied into TRL's adapters, so the loss curves agree step by step, not only at step 0;
- the same token ids: by default TRL is given alignlab's examples (BOS + prompt, response + EOS)
  as ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` and skips its own tokenization
  (``--trl-tokenize own`` lets TRL tokenize prompt + response + EOS text itself);
- the same data order (TRL reads the pairs in the order alignlab's seeded shuffle visits them,
  with a sequential sampler), the same global batch of pairs (2B texts, chosen then rejected, in one
  forward on both sides: TRL's is 2B right-padded rows, alignlab's is packed, models/packing.py), the same number of steps, learning rate (alignlab's
  default for the mode unless ``--lr``), linear decay, gradient clipping at 1.0, AdamW without
  weight decay, float32, full fine-tuning or LoRA (alignlab's LORA_TARGETS, r, alpha, no
  dropout), the same beta, no evaluation, no checkpoint inside the timed steps, no gradient
  checkpointing (TRL's default is on; ``--trl-gradient-checkpointing``);
- reference log-probs computed once before training on both sides, outside the timed steps:
  alignlab always does so (cached in its run folder); TRL with ``precompute_ref_log_probs=True``
  (in its constructor; ``--trl-live-reference`` for TRL's default, a reference forward every
  step). Full fine-tuning: TRL then holds no reference model; alignlab holds a frozen copy of the
  policy while ``--kl-prompts`` > 0 (the CLI's default is 8: it measures KL(policy || reference)
  at the end), none with ``--kl-prompts 0``. LoRA: both use the policy with adapters disabled.
  The report says what each child held.

What differs is each trainer's own code: alignlab projects only the response positions through
the output layer, 512 rows at a time, keeping each chunk's log-softmax for backward; TRL's fused
LM head projects every position (on a CPU it does not compact to the labelled ones) in tiles and
recomputes them in backward, and computes its logging extras (entropy, mean logits, top-1).

Each trainer runs in its own subprocess. A global optimizer step hook timestamps every step:
s/step is the wall time of the ``--steps`` measured steps (after ``--warmup`` steps) divided by
their count; peak RSS is the child's ``ru_maxrss`` at the end of the last measured step (the
child stops there, so alignlab's final KL measurement, checkpoint and policy save are not
counted; the reference pass before training is, on both sides), and "train peak" is the highest
RSS a 10 ms poller saw during the measured steps. The step-0 loss must be log 2 on both sides
(the policy is its own reference), up to float noise.

    .venv/bin/python benchmarks/bench_dpo.py --model tiny --steps 2 --warmup 1   # quick check (minutes)
    .venv/bin/python benchmarks/bench_dpo.py                                      # embedded Gemma 3 270M, full
    .venv/bin/python benchmarks/bench_dpo.py --mode lora
    .venv/bin/python benchmarks/bench_dpo.py --kl-prompts 0                       # alignlab holds no reference copy
    .venv/bin/python benchmarks/bench_dpo.py --model tiny --profile torch         # where each step's time goes
    .venv/bin/python benchmarks/bench_dpo.py --threads 1 --repeats 2              # steadier on a shared machine

The tiny model is no quick DPO step: it keeps Gemma's 262,144-token output layer, which both
trainers run for every response token (TRL: every token), forward and backward.

The report also prints both loss curves, the token positions each trainer ran in its training
forwards (alignlab packs its rows: no padding, a pair's prompt once), decoder-layer forwards per step (recomputation would double them), and how
busy the rest of the machine was during the measured steps (``others``, in cores): a timing
taken while other processes competed for the cores is not worth comparing.

Needs the bench extra (``pip install -e ".[bench]"``: trl 1.x, datasets, psutil). The project's
target: alignlab at least 1.5x faster than TRL at no more memory.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from _common import StepClock, add_common_arguments, compare, make_pairs, optimizer_kind, print_comparison, \
    run_worker, train_until_done

TARGET = 1.5
"""The project's target for this trainer: alignlab at least this many times faster than TRL."""


# -- the parent: data, shared model files, the two children ---------------------------------------

def prepare(args, work: Path) -> dict:
    """Write the pairs (alignlab and TRL layouts), the policy folder, the LoRA init, alignlab's
    token ids and the data order."""
    import torch

    from alignlab.data import write_feedback
    from alignlab.models import load_model, load_tokenizer
    from alignlab.train.dpo import DPOConfig
    from alignlab.train.loop import data_order
    from alignlab.train.policy import LORA_TARGETS, load_policy, make_example, read_records

    total = args.warmup + args.steps
    pairs = make_pairs(args.pairs or total * args.batch, args.seed, load_tokenizer())
    alignlab_data, trl_data = work / "pairs.jsonl", work / "pairs_trl.jsonl"
    write_feedback(alignlab_data, pairs)
    write_feedback(trl_data, pairs, style="trl")

    lm, tok = load_model(args.model, dtype="float32")  # what load_policy starts from
    hf = work / "hf-policy"
    lm.save_pretrained(str(hf))
    tok.save_pretrained(str(hf))
    del lm
    if args.mode == "lora":  # alignlab's LoRA A matrices (random) and B (zero), for TRL's adapters
        policy, _ = load_policy(args.model, "float32", lora=True, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                                seed=args.seed)
        torch.save({n.split("model.layers.", 1)[1]: p.detach().clone() for n, p in policy.named_parameters()
                    if "lora_" in n}, work / "lora.pt")
        del policy

    # alignlab's examples, built as train_dpo builds them: TRL gets these very ids.
    records = read_records(str(alignlab_data), ["pair"], "preference pairs")
    if [(r.prompt, r.chosen, r.rejected) for r in records] != [(p.prompt, p.chosen, p.rejected) for p in pairs]:
        raise SystemExit("alignlab read the pairs in another order than they were written; the TRL file "
                         "would then not line up with alignlab's rows")
    chosen = [make_example(tok, r.prompt, r.chosen, args.max_length, DPOConfig.add_eos) for r in records]
    rejected = [make_example(tok, r.prompt, r.rejected, args.max_length, DPOConfig.add_eos) for r in records]
    if any(c.prompt_ids != r.prompt_ids for c, r in zip(chosen, rejected)):
        raise SystemExit(f"--max-length {args.max_length} cut a prompt differently for its chosen and rejected "
                         "answers; TRL keeps one prompt per pair: raise --max-length")
    ids = {"prompt_ids": [c.prompt_ids for c in chosen], "chosen_ids": [c.response_ids for c in chosen],
           "rejected_ids": [r.response_ids for r in rejected]}
    (work / "ids.json").write_text(json.dumps(ids))

    # The rows in the order alignlab's loop visits them, whole epochs (TRL precomputes the
    # reference over all of them, as alignlab does over every pair).
    order = data_order(list(range(len(records))), total, args.batch, args.seed)

    lengths = [len(e.prompt_ids) + len(e.response_ids) for e in chosen + rejected]
    print(f"data: {len(pairs)} pairs, sequence lengths {min(lengths)}..{max(lengths)} tokens "
          f"(mean {statistics.mean(lengths):.0f}, prompt and EOS included)")
    return {"model": args.model, "mode": args.mode, "warmup": args.warmup, "steps": args.steps, "batch": args.batch,
            "lr": args.lr or (5e-5 if args.mode == "lora" else 5e-6),  # train_dpo's defaults
            "beta": args.beta, "seed": args.seed, "max_length": args.max_length,
            "lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "lora_targets": LORA_TARGETS,
            "kl_prompts": DPOConfig.kl_prompts if args.kl_prompts is None else args.kl_prompts,
            "alignlab_data": str(alignlab_data), "trl_data": str(trl_data), "ids": str(work / "ids.json"),
            "lora_init": str(work / "lora.pt"), "hf_policy": str(hf), "order": order, "work": str(work),
            "trl_tokenize": args.trl_tokenize, "trl_optim": args.trl_optim,
            "trl_live_reference": args.trl_live_reference,
            "trl_gradient_checkpointing": args.trl_gradient_checkpointing, "profile": args.profile,
            "threads": args.threads}


# -- the children -----------------------------------------------------------------------------------

def _megabytes(module) -> float:
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 2**20


def _reference_held() -> str:
    """What alignlab's loop holds as its reference, found among the live objects (it is a local of train_dpo)."""
    import gc

    from alignlab.train.policy import Reference

    held = [o for o in gc.get_objects() if type(o) is Reference]
    if not held:
        return "nothing"
    if held[0].copy is None:
        return "the policy with adapters disabled"
    return f"a frozen copy of the policy ({_megabytes(held[0].copy):.0f} MB)"


def worker_alignlab(spec: dict, clock: StepClock) -> dict:
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from alignlab.train.dpo import DPOConfig, train_dpo
    from alignlab.train.hooks import Hooks

    seen = {}
    register_optimizer_step_pre_hook(
        lambda opt, *_: seen.setdefault("optimizer", optimizer_kind(opt)) and None)
    losses: list[float] = []

    class Record:
        """alignlab's own hook: each step's loss, and at step 1 what the loop holds."""

        def after_backward(self, ctx):
            losses.append(float(ctx.loss))
            if ctx.step == 1:  # a warmup step: the object scan is not timed
                seen["attention"] = ctx.model.config._attn_implementation
                seen["reference"] = _reference_held()

    config = DPOConfig(
        data=spec["alignlab_data"], model=spec["model"], dtype="float32", loss="sigmoid", beta=spec["beta"],
        lora=spec["mode"] == "lora", lora_r=spec["lora_r"], lora_alpha=spec["lora_alpha"],
        max_steps=spec["warmup"] + spec["steps"], batch_size=spec["batch"], grad_accum=1, lr=spec["lr"],
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, max_length=spec["max_length"], seed=spec["seed"],
        checkpoint_every=10**9, kl_every=0, kl_prompts=spec["kl_prompts"])
    clock.install()
    train_until_done(lambda: train_dpo(config, progress=False, hooks=Hooks([Record()])), "alignlab")
    return clock.result(losses, {
        "optimizer": seen.get("optimizer", "?"), "attention": seen.get("attention", "?"),
        "reference": f"precomputed before training; held during the steps: {seen.get('reference', '?')}"
                     + (f" (kl_prompts={spec['kl_prompts']}, for the end-of-run KL)"
                        if "copy" in seen.get("reference", "") else "")})


def worker_trl(spec: dict, clock: StepClock) -> dict:
    import torch
    import transformers
    import trl
    from datasets import Dataset, load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    losses: list[float] = []

    class Recording(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:  # alignlab's token ids, taken as they are
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            losses.append(float((out[0] if return_outputs else out).detach()))
            return out

    folder = spec["hf_policy"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)

    if spec["trl_tokenize"] == "shared":  # the rows of TRL's file, as alignlab tokenized them
        dataset = Dataset.from_dict(json.loads(Path(spec["ids"]).read_text()))
    else:
        dataset = load_dataset("json", data_files=spec["trl_data"], split="train")
    dataset = dataset.select(spec["order"])

    peft_config = None
    if spec["mode"] == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
                                 target_modules=spec["lora_targets"], task_type="CAUSAL_LM")
    elif spec["mode"] != "full":
        raise SystemExit(f"mode {spec['mode']}: the TRL side supports full and lora")
    args = DPOConfig(
        output_dir=str(Path(spec["work"]) / "trl-out"), per_device_train_batch_size=spec["batch"],
        gradient_accumulation_steps=1, max_steps=spec["warmup"] + spec["steps"], learning_rate=spec["lr"],
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim=spec["trl_optim"],
        bf16=False, fp16=False, gradient_checkpointing=spec["trl_gradient_checkpointing"],
        max_length=spec["max_length"], beta=spec["beta"], loss_type=["sigmoid"],
        precompute_ref_log_probs=not spec["trl_live_reference"],
        logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
        seed=spec["seed"], data_seed=spec["seed"], train_sampling_strategy="sequential",
        dataloader_num_workers=0, dataloader_pin_memory=False, use_cpu=not torch.cuda.is_available())
    trainer = Recording(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                        peft_config=peft_config)
    if peft_config is not None:  # start from alignlab's adapters (A is random: the same draw, not just the same law)
        init = torch.load(spec["lora_init"])
        copied = 0
        with torch.no_grad():
            for name, param in trainer.model.named_parameters():
                if "lora_" in name:
                    param.copy_(init[name.split("model.layers.", 1)[1]])
                    copied += 1
        if copied != len(init):
            raise RuntimeError(f"copied {copied} LoRA tensors into TRL's model, alignlab has {len(init)}")
    if trainer.ref_model is not None:
        held = f"a reference model ({_megabytes(trainer.ref_model):.0f} MB)"
    else:
        held = "the policy with adapters disabled" if peft_config is not None else "nothing"
    when = ("precomputed in the constructor (precompute_ref_log_probs=True)" if args.precompute_ref_log_probs
            else "a reference forward every step (TRL's default)")
    clock.install()
    train_until_done(trainer.train, "TRL")
    return clock.result(losses, {"optimizer": optimizer_kind(trainer.optimizer),
                                 "attention": model.config._attn_implementation,
                                 "reference": f"{when}; held during the steps: {held}",
                                 "versions": f"trl {trl.__version__}, transformers {transformers.__version__}"})


# -- the report -------------------------------------------------------------------------------------

def report(spec: dict, runs: list[dict[str, dict]]) -> None:
    a, t = runs[0]["alignlab"], runs[0]["TRL"]
    print(f"\nmodel {spec['model']}, mode {spec['mode']}, sigmoid DPO with beta {spec['beta']:g}, {spec['batch']} "
          f"pairs/step ({2 * spec['batch']} sequences), {spec['steps']} measured steps after {spec['warmup']}, "
          f"lr {spec['lr']:g}, float32, {a['threads']} torch threads")
    print(f"reference log-probs:\n  alignlab: {a['reference']}\n  TRL: {t['reference']}")
    ids = "alignlab's" if spec["trl_tokenize"] == "shared" else "its own"
    print(f"attention: alignlab {a['attention']}, TRL {t['attention']}; TRL's token ids: {ids}")
    print_comparison(runs, TARGET, step0_expected=math.log(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--pairs", type=int, default=0,
                        help="pairs in the synthetic set (0: as many as the steps use, (warmup + steps) x batch: "
                             "each side's reference pass before training then covers exactly them)")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO's beta, on both sides (both default to 0.1)")
    parser.add_argument("--kl-prompts", type=int, default=None,
                        help="alignlab's --kl-prompts (default: its own, 8); > 0 keeps a frozen reference copy "
                             "in full fine-tuning")
    parser.add_argument("--trl-live-reference", action="store_true",
                        help="TRL's default: reference log-probs from a forward every step, not precomputed")
    parser.add_argument("--trl-tokenize", default="shared", choices=["shared", "own"],
                        help="shared: TRL gets alignlab's token ids; own: TRL tokenizes prompt + response + EOS")
    args = parser.parse_args()
    if args.worker:
        return run_worker({"alignlab": worker_alignlab, "trl": worker_trl}, args.worker, args.spec, args.result)
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    compare(__file__, args, prepare, report)


if __name__ == "__main__":
    main()
