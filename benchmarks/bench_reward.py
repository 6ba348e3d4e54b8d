"""alignlab's reward-model training against TRL's RewardTrainer, on the same work.

Both trainers fit a Bradley-Terry reward model (-log sigmoid(r_chosen - r_rejected)) to one
synthetic preference set (short English answers of 20..80 tokens), with:

- the same backbone: alignlab's ``load_model(--model)``; TRL gets it saved with ``save_pretrained``
  and reloaded as ``Gemma3TextForSequenceClassification`` (num_labels=1, pad_token_id set);
- the same head at step 0: alignlab's N(0, 1/sqrt(d+1)) head weight is copied into TRL's
  ``score`` layer (alignlab's bias starts at 0 and a pairwise loss never moves it); in LoRA
  mode alignlab's adapter initialisation (the same random A draw, B = 0) is copied too, so the
  two loss curves agree step by step, not only at step 0;
- the same token ids (by default TRL is given alignlab's tokenization as ``chosen_ids`` /
  ``rejected_ids``; ``--trl-tokenize own`` lets TRL tokenize its prompt/chosen/rejected file,
  which appends an EOS token and reads the reward there);
- the same data order (TRL reads the pairs in the order alignlab's seeded shuffle visits them,
  with a sequential sampler), the same global batch of pairs, learning rate, linear decay,
  gradient clipping at 1.0, AdamW without weight decay, float32, full fine-tuning or LoRA
  (alignlab's LORA_TARGETS, r, alpha, no dropout), no evaluation, no checkpoint inside the
  timed steps, no gradient checkpointing (TRL's default is on; ``--trl-gradient-checkpointing``).

Each trainer runs in its own subprocess. A global optimizer step hook timestamps every step:
s/step is the wall time of the ``--steps`` measured steps (after ``--warmup`` steps) divided by
their count; peak RSS is the child's ``ru_maxrss`` at the end of the last measured step (the
child stops there, so alignlab's final checkpoint and model save are not counted), and "train
peak" is the highest RSS a 10 ms poller saw during the measured steps.

    .venv/bin/python benchmarks/bench_reward.py --model tiny                 # quick check
    .venv/bin/python benchmarks/bench_reward.py                              # embedded Gemma 3 270M, full
    .venv/bin/python benchmarks/bench_reward.py --mode lora
    .venv/bin/python benchmarks/bench_reward.py --model tiny --profile torch # where each step's time goes
    .venv/bin/python benchmarks/bench_reward.py --trl-optim adamw_torch      # TRL on alignlab's AdamW code
    .venv/bin/python benchmarks/bench_reward.py --threads 1 --repeats 2      # steadier on a shared machine

The report also prints both loss curves, the token positions each trainer ran (alignlab packs
its rows: no padding, a prompt shared by a pair's two texts once), decoder-layer forwards per step (recomputation would double them), and
how busy the rest of the machine was during the measured steps (``others``, in cores): a
timing taken while other processes competed for the cores is not worth comparing.

Needs ``pip install trl datasets`` (trl 1.x). The project's target: alignlab at least 1.3x
faster than TRL at no more memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from _common import StepClock, add_common_arguments, compare, make_pairs, optimizer_kind, print_comparison, \
    run_worker, train_until_done

TARGET = 1.3
"""The project's target for this trainer: alignlab at least this many times faster than TRL."""


# -- the parent: data, shared model files, the two children ---------------------------------------

def prepare(args, work: Path) -> dict:
    """Write the data (alignlab and TRL layouts), the backbone folder, the head init and the order."""
    import torch

    from alignlab.data import write_feedback
    from alignlab.models import load_model, load_tokenizer
    from alignlab.train.reward import DEFAULT_LR, RewardTrainConfig, data_order, load_choices, split
    from alignlab.train.reward_model import LORA_TARGETS, RewardModel, configure_trainable

    pairs = make_pairs(args.pairs, args.seed, load_tokenizer())
    alignlab_data, trl_data = work / "pairs.jsonl", work / "pairs_trl.jsonl"
    write_feedback(alignlab_data, pairs)
    write_feedback(trl_data, pairs, style="trl")

    torch.manual_seed(args.seed)  # as train_reward does: the LoRA init below then matches its own
    lm, tok = load_model(args.model, dtype="float32")
    rm = RewardModel(lm, tok, ensemble=1, max_length=args.max_length, seed=args.seed)  # alignlab's head init
    torch.save({"weight": rm.head.weight.detach().clone(), "bias": rm.head.bias.detach().clone()}, work / "head.pt")
    ids = {"chosen": [rm.encode(p.prompt, p.chosen) for p in pairs],
           "rejected": [rm.encode(p.prompt, p.rejected) for p in pairs]}
    (work / "ids.json").write_text(json.dumps(ids))
    hf = work / "hf-backbone"
    lm.save_pretrained(str(hf))
    tok.save_pretrained(str(hf))
    if args.mode == "lora":  # alignlab's LoRA A matrices (random) and B (zero), for TRL's adapters
        configure_trainable(rm, "lora", lora_r=args.lora_r, lora_alpha=args.lora_alpha)
        torch.save({n.split("model.layers.", 1)[1]: p.detach().clone() for n, p in rm.lm.named_parameters()
                    if "lora_" in n}, work / "lora.pt")
    del rm, lm

    # The pairs in the order alignlab's loop visits them (eval_fraction 0: every pair trains).
    total = args.warmup + args.steps
    config = RewardTrainConfig(data=str(alignlab_data), seed=args.seed, eval_fraction=0.0)
    choice_set, _ = load_choices(config)
    index = {(p.prompt, p.chosen, p.rejected): i for i, p in enumerate(pairs)}
    row_to_pair = [index[(c.prompt, c.options[0], c.options[1])] for c in choice_set.choices]
    train_rows, _ = split(len(row_to_pair), 0.0, args.seed)
    order = [row_to_pair[r] for r in data_order(train_rows, total, args.batch, args.seed)[:total * args.batch]]

    lengths = [len(x) for x in ids["chosen"] + ids["rejected"]]
    print(f"data: {len(pairs)} pairs, sequence lengths {min(lengths)}..{max(lengths)} tokens "
          f"(mean {statistics.mean(lengths):.0f}, prompt included)")
    return {"model": args.model, "mode": args.mode, "warmup": args.warmup, "steps": args.steps, "batch": args.batch,
            "lr": args.lr or DEFAULT_LR[args.mode], "seed": args.seed, "max_length": args.max_length,
            "lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "lora_targets": LORA_TARGETS,
            "alignlab_data": str(alignlab_data), "trl_data": str(trl_data), "ids": str(work / "ids.json"),
            "head": str(work / "head.pt"), "lora_init": str(work / "lora.pt"), "hf_backbone": str(hf),
            "order": order, "work": str(work),
            "trl_tokenize": args.trl_tokenize, "trl_optim": args.trl_optim,
            "trl_gradient_checkpointing": args.trl_gradient_checkpointing, "profile": args.profile,
            "threads": args.threads}


# -- the children -----------------------------------------------------------------------------------

def worker_alignlab(spec: dict, clock: StepClock) -> dict:
    import torch

    from alignlab.home import runs_dir
    from alignlab.train.reward import RewardTrainConfig, train_reward

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen = {}
    register_optimizer_step_pre_hook(
        lambda opt, *_: seen.setdefault("optimizer", optimizer_kind(opt)) and None)
    config = RewardTrainConfig(
        data=spec["alignlab_data"], model=spec["model"], dtype="float32", mode=spec["mode"],
        lora_r=spec["lora_r"], lora_alpha=spec["lora_alpha"], max_steps=spec["warmup"] + spec["steps"],
        batch_size=spec["batch"], lr=spec["lr"], warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        max_length=spec["max_length"], eval_fraction=0.0, seed=spec["seed"], checkpoint_every=10**9)
    clock.install()
    train_until_done(lambda: train_reward(config, progress=False), "alignlab")
    metrics = [json.loads(line) for run in Path(runs_dir()).iterdir()
               for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in sorted(metrics, key=lambda m: m["step"]) if "loss" in m]
    return clock.result(losses, {"optimizer": seen.get("optimizer", "?")})


def worker_trl(spec: dict, clock: StepClock) -> dict:
    import torch
    import transformers
    import trl
    from datasets import load_dataset
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    losses: list[float] = []

    class Recording(RewardTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            losses.append(float((out[0] if return_outputs else out).detach()))
            return out

    folder = spec["hf_backbone"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if AutoConfig.from_pretrained(folder).model_type == "gemma3_text":
        from transformers import Gemma3TextForSequenceClassification as cls
    else:
        cls = AutoModelForSequenceClassification
    try:  # TRL's own guard against the expected "score.weight missing, lm_head unexpected" report
        from trl.trainer.reward_trainer import suppress_seqcls_warning
    except ImportError:
        import contextlib
        suppress_seqcls_warning = contextlib.nullcontext
    with suppress_seqcls_warning():
        model = cls.from_pretrained(folder, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    head = torch.load(spec["head"])
    if float(head["bias"].abs().max()) != 0.0:
        print("warning: alignlab's head bias is not 0; TRL's score layer has no bias", file=sys.stderr)
    with torch.no_grad():
        model.score.weight.copy_(head["weight"])

    dataset = load_dataset("json", data_files=spec["trl_data"], split="train")
    if spec["trl_tokenize"] == "shared":  # alignlab's token ids: BOS + prompt + response, no EOS
        ids = json.loads(Path(spec["ids"]).read_text())
        dataset = dataset.add_column("chosen_ids", ids["chosen"]).add_column("rejected_ids", ids["rejected"])
    dataset = dataset.select(spec["order"])

    peft_config = None
    if spec["mode"] == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
                                 target_modules=spec["lora_targets"], task_type="SEQ_CLS")
    elif spec["mode"] != "full":
        raise SystemExit(f"mode {spec['mode']}: the TRL side supports full and lora")
    args = RewardConfig(
        output_dir=str(Path(spec["work"]) / "trl-out"), per_device_train_batch_size=spec["batch"],
        gradient_accumulation_steps=1, max_steps=spec["warmup"] + spec["steps"], learning_rate=spec["lr"],
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim=spec["trl_optim"],
        bf16=False, fp16=False, gradient_checkpointing=spec["trl_gradient_checkpointing"],
        max_length=spec["max_length"],
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
    clock.install()
    train_until_done(trainer.train, "TRL")
    return clock.result(losses, {"optimizer": optimizer_kind(trainer.optimizer),
                                 "versions": f"trl {trl.__version__}, transformers {transformers.__version__}"})


# -- the report -------------------------------------------------------------------------------------

def report(spec: dict, runs: list[dict[str, dict]]) -> None:
    print(f"\nmodel {spec['model']}, mode {spec['mode']}, {spec['batch']} pairs/step ({2 * spec['batch']} sequences), "
          f"{spec['steps']} measured steps after {spec['warmup']}, lr {spec['lr']:g}, float32, "
          f"{runs[0]['alignlab']['threads']} torch threads")
    print_comparison(runs, TARGET)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--pairs", type=int, default=256, help="pairs in the synthetic set")
    parser.add_argument("--trl-tokenize", default="shared", choices=["shared", "own"],
                        help="shared: TRL gets alignlab's token ids; own: TRL tokenizes its file (adds EOS)")
    args = parser.parse_args()
    if args.worker:
        return run_worker({"alignlab": worker_alignlab, "trl": worker_trl}, args.worker, args.spec, args.result)
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    compare(__file__, args, prepare, report)


if __name__ == "__main__":
    main()
