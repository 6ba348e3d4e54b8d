"""alignlab's PPO (`alignlab ppo`, train/ppo.py) against TRL 1.12's PPOTrainer, on the same work.

TRL removed PPO after 1.12.0 (its last home was ``trl.experimental.ppo``), and .venv holds a newer
TRL. So this script installs trl==1.12.0 on first use into ``.bench-deps/trl-1.12.0`` (ignored by
git), without dependencies (TRL's requirements are checked against .venv and any gap is named),
and runs the TRL side in a child whose PYTHONPATH puts that folder first. The child refuses to run
with any other TRL version.

Both sides run the same RLHF loop, with:

- the same policy: alignlab's ``load_model(--model)``; TRL gets it saved with ``save_pretrained``
  and reloaded with ``AutoModelForCausalLM``; the same frozen reference (a copy of the policy in
  full mode; the policy with its adapters disabled in LoRA mode, on both sides);
- the same reward model: an alignlab reward model folder (``save_reward_model``; by default a fresh
  one in mode 'head': the base model with alignlab's seeded N(0, 1/sqrt(d+1)) head, bias 0; or
  ``--reward-model FOLDER``) for alignlab, and for TRL an ``AutoModelForSequenceClassification``
  (Gemma3TextForSequenceClassification) with the same backbone weights and that head as its
  ``score`` layer. The TRL child checks, with TRL's own ``get_reward``, that it scores a few
  token sequences as alignlab's reward model does (the report prints the largest difference);
- the same value initialisation as far as the designs allow: alignlab's value head sits on the
  policy body (``--value-init zero``: weight and bias 0; ``reward_model``: the reward model's
  head); TRL's value model is a separate sequence classifier made of the policy's weights with
  the same head (zero, or the reward model's), so both start with the same value function;
- the same prompts (only prompts of one token length, so neither side pads them), the same prompts
  in each rollout (TRL reads them in the order alignlab's seeded shuffle visits them), the same
  rollout batch, PPO epochs, minibatches (one optimizer step per minibatch on both sides: TRL with
  per_device_train_batch_size = the rollout batch, gradient_accumulation_steps 1,
  num_mini_batches = batch / minibatch), clip ranges, vf coefficient, gamma, lambda, fixed KL
  coefficient and estimator, sampling temperature (top-k/top-p off), learning rate with linear
  decay, AdamW (eps 1e-5, no weight decay), float32, full fine-tuning or LoRA (alignlab's
  LORA_TARGETS, r, alpha, no dropout; alignlab's adapter initialisation copied into TRL's);
- the same response length and end: at most ``--max-new-tokens`` tokens (TRL's
  ``response_length``); generation ends at EOS on both sides (TRL ``stop_token='eos'``: its
  generate stops when every row has ended and it truncates each row after its first EOS), and
  ``missing_eos_penalty`` is subtracted from the score of a row that never ended, on both sides;
- no gradient clipping: TRL 1.12's PPO loop calls ``optimizer.step()`` without clipping (it
  ignores ``max_grad_norm``), so alignlab runs with ``max_grad_norm 0`` (it still measures the
  norm for its log); no gradient checkpointing (TRL's config default is on, but its PPO loop
  never enables it; off here), no sample tables or completions, no checkpoint inside the timed
  iterations.

What each side computes per iteration (rollout batch B, response length R, minibatch size m):

    alignlab                                         TRL 1.12
    1. generate: its KV-cache sampler, R steps       1. generate: transformers' generate(), R steps,
       (logits of the last position only), keeping      keeping every step's (B, V) scores
       each drawn token's log-prob, entropy and
       final hidden state
    2. policy log-probs from the sampler (no pass);  2. policy log-probs from the generation scores
       values: the value head on the sampler's          (no pass); value: a pass of the separate
       hidden states (no pass)                          value model's backbone
    3. reference pass (response logits only)         3. reference pass (logits of every position)
    4. reward model pass (re-tokenized text)         4. reward model pass (the token ids)
    5. per-token KL rewards, GAE, whitening          5. the same
    6. epochs x B/m minibatches: ONE body pass       6. epochs x B/m minibatches: a policy pass
       (policy + value heads) with grad, logits of      (logits of every position, then the entropy
       the response positions only; backward            of every response position) AND a value-
       through one body; AdamW over the policy          model backbone pass, both with grad;
       (+ value head)                                   backward through both; AdamW over the
                                                        policy AND the whole value model

So TRL trains twice the parameters in full mode (a separate critic of the policy's size) and,
in LoRA mode, the adapters plus a fully trainable value model (its default: only the policy gets
``peft_config``); alignlab's critic is a head on the policy body. These are the designs being
compared, not settings; the report prints each side's trainable parameters and the work it did
(decode steps, (rows, length) of every pass with and without grad, decoder-layer forwards).

Each trainer runs in its own subprocess. A global optimizer-step hook (the same code on both
sides) timestamps every PPO iteration at its last optimizer step (the epochs x minibatches-th),
so an iteration's time holds a whole cycle: rollout, scoring, optimisation and the bookkeeping
(logging) between two iterations. s/iter is the wall time of the ``--iterations`` measured
iterations (after ``--warmup`` iterations) divided by their count; peak RSS is the child's
``ru_maxrss`` at the end of the last measured iteration (the child stops there, so alignlab's
final policy save is not counted), and "train peak" is the highest RSS a 10 ms poller saw during
the measured iterations.

    .venv/bin/python benchmarks/bench_ppo.py --model tiny --iterations 2       # quick check
    .venv/bin/python benchmarks/bench_ppo.py                                    # embedded Gemma 3 270M, full
    .venv/bin/python benchmarks/bench_ppo.py --mode lora
    .venv/bin/python benchmarks/bench_ppo.py --model tiny --profile torch       # where each iteration's time goes
    .venv/bin/python benchmarks/bench_ppo.py --threads 1 --repeats 2            # steadier on a shared machine

The report also prints how busy the rest of the machine was during the measured iterations
(``others``, in cores): a timing taken while other processes competed for the cores is not worth
comparing. The tiny model keeps Gemma's 262,144-token output layer, which dominates its steps.

Needs the bench extra (``pip install -e ".[bench]"``: datasets, psutil) and network access for the
one-time trl==1.12.0 download. The report ends with the project's target: at least 2x TRL's speed
at no more memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from _common import QUESTIONS, TOPICS, Done, cpu_counters, optimizer_kind, train_until_done

TRL_VERSION = "1.12.0"
"""The last TRL release that ships PPOTrainer (trl.experimental.ppo)."""
SPEED_TARGET = 2.0
"""The project's target: alignlab's PPO at least this many times TRL's speed, at no more memory."""
DEPS = Path(__file__).resolve().parent.parent / ".bench-deps" / f"trl-{TRL_VERSION}"
"""Where this script installs it: outside .venv, ignored by git."""


# -- TRL 1.12, beside .venv -------------------------------------------------------------------------

def ensure_trl() -> str:
    """Install trl==1.12.0 into DEPS on first use, check its version and requirements; a description."""
    if not (DEPS / "trl" / "__init__.py").exists():
        print(f"bench_ppo: installing trl=={TRL_VERSION} (the last release with PPOTrainer) into {DEPS}, "
              "without its dependencies (they come from .venv); first use only...", flush=True)
        partial = DEPS.with_name(DEPS.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                               str(partial), f"trl=={TRL_VERSION}"])
        if proc.returncode != 0:
            raise SystemExit(f"pip could not install trl=={TRL_VERSION} into {partial} (exit {proc.returncode}); "
                             "this benchmark needs network access to PyPI once")
        shutil.rmtree(DEPS, ignore_errors=True)
        partial.rename(DEPS)
    probe = subprocess.run([sys.executable, "-c", "import trl; print(trl.__version__); print(trl.__file__)"],
                           env=trl_env(dict(os.environ)), capture_output=True, text=True)
    lines = probe.stdout.split()
    if probe.returncode != 0 or not lines or lines[0] != TRL_VERSION:
        raise SystemExit(f"{DEPS} does not give trl {TRL_VERSION} (got {lines[:1] or probe.stderr[-500:]}); "
                         f"delete {DEPS} and run again to reinstall it")
    missing = unmet_requirements()
    if missing:
        raise SystemExit(f"trl {TRL_VERSION} needs what .venv lacks: {'; '.join(missing)}")
    return f"trl {TRL_VERSION} from {DEPS}"


def trl_env(env: dict) -> dict:
    """``env`` with DEPS first on PYTHONPATH (so its trl shadows the one in .venv)."""
    env["PYTHONPATH"] = os.pathsep.join([str(DEPS)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["TRL_EXPERIMENTAL_SILENCE"] = "1"
    return env


def unmet_requirements() -> list[str]:
    """trl 1.12's own requirements (and its 'peft' extra) that .venv does not satisfy."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    meta = next(DEPS.glob("trl-*.dist-info")) / "METADATA"
    problems = []
    for line in meta.read_text().splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not req.marker.evaluate({"extra": "peft"}):
            continue  # other extras (vllm, deepspeed, ...) are not used here
        try:
            have = version(req.name)
        except PackageNotFoundError:
            problems.append(f"{req} (not installed)")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req} (have {have})")
    return problems


# -- the parent: prompts, shared model files, the two children ---------------------------------------

def make_prompts(tokenizer) -> tuple[list[str], int]:
    """The question prompts of the most common token length (BOS included), and that length."""
    prompts = [f"Question: {q.format(t=t)}\nAnswer:" for t in TOPICS for q in QUESTIONS]
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    length = Counter(lengths).most_common(1)[0][0]
    return [p for p, n in zip(prompts, lengths) if n == length], length


def prepare(args, work: Path) -> dict:
    """Write the prompts, the policy folder, the reward model (both forms), the value head, the
    LoRA init and the prompt order, and return the spec both children read."""
    import torch

    from alignlab.models import load_model
    from alignlab.train.policy import LORA_TARGETS, load_policy
    from alignlab.train.reward_model import RewardModel, load_reward_model, save_reward_model

    lm, tok = load_model(args.model, dtype="float32")
    prompts, prompt_length = make_prompts(tok)
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    hf_policy = work / "hf-policy"
    lm.save_pretrained(str(hf_policy))
    tok.save_pretrained(str(hf_policy))

    # The reward model: alignlab's folder, and its weights as TRL's sequence classifier.
    if args.reward_model:
        rm_folder = Path(args.reward_model)
    else:
        rm_folder = work / "reward-model"
        save_reward_model(RewardModel(lm, tok, seed=args.seed), rm_folder, "head", base_model=args.model,
                          base_seed=0)
    rm = load_reward_model(rm_folder)
    if rm.pooling != "last":
        raise SystemExit(f"reward model {rm_folder} pools '{rm.pooling}'; TRL reads one position, so this "
                         "benchmark needs a last-token reward model")
    head, bias = rm.head.weight.detach().mean(0, keepdim=True), float(rm.head.bias.detach().mean())
    mean, std = float(rm.norm_mean.mean()), float(rm.norm_std.mean())
    if rm.ensemble > 1 or bias != 0.0 or mean != 0.0:
        print(f"warning: reward model {rm_folder} has {rm.ensemble} heads, bias {bias:g}, norm mean {mean:g}: "
              "TRL's score layer (one output, no bias) gets the mean head only, so scores differ by a "
              "constant", file=sys.stderr)
    torch.save({"weight": head / std}, work / "reward-head.pt")
    if rm.config["mode"] == "head" and rm.config["base_model"] == args.model:
        reward_backbone = hf_policy  # the policy's own weights
    else:  # a trained backbone (last layers, LoRA merged, or full): save it for TRL
        reward_backbone = work / "hf-reward-backbone"
        body = rm.lm.merge_and_unload() if hasattr(rm.lm, "merge_and_unload") else rm.lm
        body.save_pretrained(str(reward_backbone))
    checks = [(p, r) for p, r in zip(prompts, [" Start small and keep at it.", " I am not sure.",
                                                " Write it down every day, then review it weekly."])]
    check_ids = [list(rm.encode(p, r)) for p, r in checks]
    check_scores = rm.score([p for p, _ in checks], [r for _, r in checks])[0].tolist()

    # The value head both sides start from (alignlab: PolicyAndValue's, or _value_from_reward_model's).
    value = torch.zeros_like(head) if args.value_init == "zero" else head / std
    torch.save({"weight": value}, work / "value-head.pt")

    lora_init = work / "lora.pt"
    if args.mode == "lora":  # alignlab's adapters as load_policy draws them (A random, B zero)
        policy, _ = load_policy(args.model, "float32", True, args.lora_r, args.lora_alpha, args.seed)
        torch.save({n.split("model.layers.", 1)[1]: p.detach().clone() for n, p in policy.named_parameters()
                    if "lora_" in n}, lora_init)
        del policy
    del rm, lm

    # The prompts of every rollout, as train_ppo picks them.
    total = args.warmup + args.iterations + 1
    order = []
    for it in range(total):
        perm = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(args.seed * 7919 + it)).tolist()
        order += [perm[(it * args.batch + g) % len(prompts)] for g in range(args.batch)]
    print(f"prompts: {len(prompts)} of exactly {prompt_length} tokens (BOS included); reward model {rm_folder}")
    return {"model": args.model, "mode": args.mode, "warmup": args.warmup, "iterations": args.iterations,
            "total": total, "batch": args.batch, "minibatch": args.minibatch, "ppo_epochs": args.ppo_epochs,
            "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "kl_coef": args.kl_coef,
            "kl_estimator": args.kl_estimator, "missing_eos_penalty": args.missing_eos_penalty,
            "gamma": args.gamma, "lam": args.lam, "cliprange": args.cliprange,
            "cliprange_value": args.cliprange_value, "vf_coef": args.vf_coef,
            "lr": args.lr or (1e-4 if args.mode == "lora" else 1e-5), "seed": args.seed,
            "value_init": args.value_init, "lora_r": args.lora_r, "lora_alpha": args.lora_alpha,
            "lora_targets": LORA_TARGETS, "lora_init": str(lora_init), "prompts": str(work / "prompts.jsonl"),
            "reward_model": str(rm_folder), "reward_backbone": str(reward_backbone),
            "reward_head": str(work / "reward-head.pt"), "value_head": str(work / "value-head.pt"),
            "hf_policy": str(hf_policy), "order": order, "check_ids": check_ids, "check_scores": check_scores,
            "work": str(work), "trl_optim": args.trl_optim,
            "trl_critic_lora": args.trl_critic_lora, "profile": args.profile, "threads": args.threads}


def run_child(which: str, spec_path: Path, work: Path) -> dict:
    """Run this script's ``--worker which`` in a fresh interpreter, offline, and return its result."""
    out = work / f"result-{which}.json"
    out.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false",
               HF_DATASETS_CACHE=str(work / "hf-datasets"),
               ALIGNLAB_RUNS_DIR=str(work / f"runs-{which}-{time.time_ns()}"), WANDB_DISABLED="true")
    if which == "trl":
        env = trl_env(env)
    threads = json.loads(spec_path.read_text())["threads"]
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    log = work / f"log-{which}.txt"
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, __file__, "--worker", which, "--spec", str(spec_path),
                               "--result", str(out)], env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"the {which} child failed (exit {proc.returncode}); the end of its log:\n"
                         f"{log.read_text()[-4000:]}")
    return json.loads(out.read_text())


# -- the children -----------------------------------------------------------------------------------

class IterationClock:
    """Timestamps every PPO iteration at its last optimizer step (a global hook: the same code on
    both sides) and records the work of each iteration: decode steps, (rows, length) of every
    other forward with and without grad, and decoder-layer forwards."""

    def __init__(self, spec: dict):
        self.per_iteration = spec["ppo_epochs"] * (spec["batch"] // spec["minibatch"])
        self.warmup, self.total = spec["warmup"], spec["warmup"] + spec["iterations"]
        self.profile, self.profiler, self.profile_text = spec["profile"], None, ""
        self.start = time.perf_counter()
        self.steps = 0
        self.times: list[float] = []
        self.rss: list[float] = []
        self.work: list[dict] = []
        self.current = self._fresh()
        self.poll_peak, self.polling, self.maxrss_mb = 0.0, False, None
        self.cpu_mark = self.cpu_end = None

    @staticmethod
    def _fresh() -> dict:
        return {"decode_steps": 0, "no_grad": [], "grad": [], "layers_no_grad": 0, "layers_grad": 0,
                "first_grad_at": None}

    def install(self) -> None:
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(self._after_step)
        torch.nn.modules.module.register_module_forward_pre_hook(self._before_forward)

    def _before_forward(self, module, args):
        import torch

        grad = torch.is_grad_enabled()
        if grad and self.current["first_grad_at"] is None:  # the update starts: the rollout is over
            self.current["first_grad_at"] = time.perf_counter()
        if type(module).__name__.endswith("DecoderLayer"):
            self.current["layers_grad" if grad else "layers_no_grad"] += 1
        elif isinstance(module, torch.nn.Embedding) and module.num_embeddings > 1000 and args \
                and torch.is_tensor(args[0]) and args[0].dim() == 2:  # the token embedding: one per pass
            rows, length = args[0].shape
            if length == 1 and not grad:
                self.current["decode_steps"] += 1
            else:
                self.current["grad" if grad else "no_grad"].append([rows, length])

    def _poll(self) -> None:
        import psutil

        me = psutil.Process()
        while self.polling:
            self.poll_peak = max(self.poll_peak, me.memory_info().rss / 2**20)
            time.sleep(0.01)

    def _after_step(self, optimizer, *_):
        import psutil

        self.steps += 1
        if self.steps % self.per_iteration:
            return
        self.times.append(time.perf_counter())
        self.rss.append(psutil.Process().memory_info().rss / 2**20)
        self.work.append(self.current)
        self.current = self._fresh()
        if len(self.times) == self.warmup:
            self.cpu_mark = cpu_counters()
            self.polling = True
            threading.Thread(target=self._poll, daemon=True).start()
            self._profile(start=True)
        if len(self.times) == self.total:
            self.cpu_end = cpu_counters()
            self.polling = False
            self.maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self._profile(start=False)
            raise Done

    def _profile(self, start: bool) -> None:
        import torch

        if self.profile == "torch":
            if start:
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.profiler.__enter__()
            else:
                self.profiler.__exit__(None, None, None)
                self.profile_text = self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        elif self.profile == "python":
            import cProfile
            import io
            import pstats

            if start:
                self.profiler = cProfile.Profile()
                self.profiler.enable()
            else:
                self.profiler.disable()
                buf = io.StringIO()
                pstats.Stats(self.profiler, stream=buf).sort_stats("cumulative").print_stats(40)
                self.profile_text = buf.getvalue()

    def result(self, extra: dict) -> dict:
        measured = self.times[self.warmup - 1:]
        gaps = [b - a for a, b in zip(measured, measured[1:])]
        rollout = [w["first_grad_at"] - begin for w, begin in zip(self.work[self.warmup:], measured)]
        (w0, busy0, self0), (w1, busy1, self1) = self.cpu_mark, self.cpu_end
        return {"s_per_iter": (measured[-1] - measured[0]) / len(gaps), "iter_s": gaps,
                "median_s": statistics.median(gaps),
                "rollout_s": statistics.mean(rollout), "update_s": statistics.mean(g - r for g, r in zip(gaps, rollout)),
                "first_iter_at_s": self.times[0] - self.start,
                "self_cores": (self1 - self0) / (w1 - w0),
                "other_cores": max(0.0, (busy1 - busy0) - (self1 - self0)) / (w1 - w0),
                "maxrss_mb": self.maxrss_mb, "train_peak_mb": self.poll_peak, "rss_mb": self.rss,
                "work": self.work[self.warmup:], "profile": self.profile_text, **extra}


def trainable_count(optimizer) -> int:
    """Parameters the optimizer updates."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    return sum(p.numel() for group in optimizer.param_groups for p in group["params"])


def worker_alignlab(spec: dict, clock: IterationClock) -> dict:
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from alignlab.home import runs_dir
    from alignlab.train.ppo import PPOConfig, train_ppo

    seen = {}
    register_optimizer_step_pre_hook(lambda opt, *_: seen.setdefault("optimizer", opt) and None)
    config = PPOConfig(
        prompts=Path(spec["prompts"]), reward=spec["reward_model"], model=spec["model"], dtype="float32",
        value_init=spec["value_init"], iterations=spec["total"], rollout_batch=spec["batch"],
        ppo_epochs=spec["ppo_epochs"], minibatch_size=spec["minibatch"], max_new_tokens=spec["max_new_tokens"],
        temperature=spec["temperature"], kl_coef=spec["kl_coef"], kl_target=0.0, kl_estimator=spec["kl_estimator"],
        missing_eos_penalty=spec["missing_eos_penalty"], gamma=spec["gamma"], lam=spec["lam"],
        whiten_rewards=False, cliprange=spec["cliprange"], cliprange_value=spec["cliprange_value"],
        vf_coef=spec["vf_coef"], lr=spec["lr"], max_grad_norm=0.0, sample_every=0, seed=spec["seed"],
        checkpoint_every=10**9, lora=spec["mode"] == "lora", lora_r=spec["lora_r"], lora_alpha=spec["lora_alpha"])
    clock.install()
    train_until_done(lambda: train_ppo(config, progress=False), "alignlab")
    metrics = sorted((json.loads(line) for run in Path(runs_dir()).iterdir()
                      for line in (run / "metrics.jsonl").read_text().splitlines()), key=lambda m: m["step"])
    log = [{"score": m["objective/scores"], "kl": m["objective/kl"], "length": m["response_length"]}
           for m in metrics if "objective/scores" in m]
    return clock.result({"optimizer": optimizer_kind(seen["optimizer"]),
                         "trainable": trainable_count(seen["optimizer"]), "log": log,
                         "critic": f"a value head on the policy body (init {spec['value_init']})"})


def sequence_classifier(folder: str, head_file: str):
    """A one-output sequence classifier with ``folder``'s backbone and the head in ``head_file``."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if AutoConfig.from_pretrained(folder).model_type == "gemma3_text":
        from transformers import Gemma3TextForSequenceClassification as cls
    else:
        cls = AutoModelForSequenceClassification
    model = cls.from_pretrained(folder, num_labels=1, dtype=torch.float32)
    with torch.no_grad():
        model.score.weight.copy_(torch.load(head_file)["weight"])
    return model


def worker_trl(spec: dict, clock: IterationClock) -> dict:
    import torch
    import transformers
    import trl

    if trl.__version__ != TRL_VERSION or not Path(trl.__file__).resolve().is_relative_to(DEPS):
        raise SystemExit(f"the TRL child imported trl {trl.__version__} from {trl.__file__}; it needs "
                         f"{TRL_VERSION} from {DEPS}")
    from datasets import Dataset
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorWithPadding, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.utils import get_reward

    folder = spec["hf_policy"]
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    value_model = sequence_classifier(folder, spec["value_head"])
    reward_model = sequence_classifier(spec["reward_backbone"], spec["reward_head"])
    for model in (value_model, reward_model):
        model.config.pad_token_id = tokenizer.pad_token_id

    # TRL's reward path on alignlab's token ids must give alignlab's scores.
    pad = tokenizer.pad_token_id
    width = max(len(r) for r in spec["check_ids"])
    rows = torch.tensor([r + [pad] * (width - len(r)) for r in spec["check_ids"]])
    with torch.no_grad():
        _, scores, _ = get_reward(reward_model.eval(), rows, pad, 1)
    reward_check = max(abs(a - b) for a, b in zip(scores.tolist(), spec["check_scores"]))

    prompts = [json.loads(line)["prompt"] for line in Path(spec["prompts"]).read_text().splitlines()]
    dataset = Dataset.from_dict({"input_ids": [tokenizer(prompts[i])["input_ids"] for i in spec["order"]]})
    peft_config, critic = None, ""
    if spec["mode"] == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        peft_config = LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
                                 target_modules=spec["lora_targets"], task_type="CAUSAL_LM")
        if spec["trl_critic_lora"]:  # not TRL's default: adapters on the critic's body too, its head trained
            value_model.model = inject_adapter_in_model(
                LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
                           target_modules=spec["lora_targets"]), value_model.model)
            for name, param in value_model.named_parameters():
                param.requires_grad_("lora_" in name or name.startswith("score."))
            critic = ": LoRA on its body, --trl-critic-lora"
    batch = spec["batch"]
    args = PPOConfig(
        output_dir=str(Path(spec["work"]) / "trl-out"), per_device_train_batch_size=batch,
        gradient_accumulation_steps=1, num_mini_batches=batch // spec["minibatch"],
        num_ppo_epochs=spec["ppo_epochs"], local_rollout_forward_batch_size=batch,
        total_episodes=spec["total"] * batch, response_length=spec["max_new_tokens"], stop_token="eos",
        temperature=spec["temperature"], missing_eos_penalty=spec["missing_eos_penalty"] or None,
        kl_coef=spec["kl_coef"], kl_estimator=spec["kl_estimator"], whiten_rewards=False, gamma=spec["gamma"],
        lam=spec["lam"], cliprange=spec["cliprange"], cliprange_value=spec["cliprange_value"],
        vf_coef=spec["vf_coef"], learning_rate=spec["lr"], lr_scheduler_type="linear", warmup_steps=0,
        weight_decay=0.0, adam_epsilon=1e-5, optim=spec["trl_optim"], bf16=False, fp16=False,
        gradient_checkpointing=False, num_sample_generations=0, save_strategy="no", eval_strategy="no",
        report_to="none", disable_tqdm=True, logging_steps=1, seed=spec["seed"], dataloader_num_workers=0,
        dataloader_pin_memory=False, use_cpu=not torch.cuda.is_available())

    log: list[dict] = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "objective/scores" in logs:
                log.append({"score": logs["objective/scores"], "kl": logs["objective/kl"]})

    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=None,
                         reward_model=reward_model, train_dataset=dataset, value_model=value_model,
                         callbacks=[Record()], peft_config=peft_config)
    # alignlab's prompt order: a sequential loader instead of TRL's shuffled one
    trainer.dataloader = DataLoader(dataset, batch_size=batch, shuffle=False, drop_last=True,
                                    collate_fn=DataCollatorWithPadding(tokenizer))
    if peft_config is not None:  # start from alignlab's adapters (A is random: the same draw, not just the same law)
        init = torch.load(spec["lora_init"])
        for model in [trainer.policy_model] + ([value_model] if spec["trl_critic_lora"] else []):
            copied = 0
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if "lora_" in name:
                        param.copy_(init[name.split("model.layers.", 1)[1]])
                        copied += 1
            if copied != len(init):
                raise RuntimeError(f"copied {copied} LoRA tensors into TRL's {type(model).__name__}, alignlab has "
                                   f"{len(init)}")
    clock.install()
    train_until_done(trainer.train, "TRL")
    value_trainable = sum(p.numel() for p in value_model.parameters() if p.requires_grad)
    return clock.result({"optimizer": optimizer_kind(trainer.optimizer),
                         "trainable": trainable_count(trainer.optimizer), "log": log,
                         "reward_check": reward_check,
                         "critic": f"a separate value model ({value_trainable:,} trainable{critic}, head init "
                                   f"{spec['value_init']})",
                         "versions": f"trl {trl.__version__}, transformers {transformers.__version__}"})


def run_worker(which: str, spec_path: str, result_path: str) -> None:
    """The child's whole life: read the spec, run one trainer to the last measured iteration, write the result."""
    spec = json.loads(Path(spec_path).read_text())
    clock = IterationClock(spec)  # started before the heavy imports: "first iteration at" includes them
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    result = {"alignlab": worker_alignlab, "trl": worker_trl}[which](spec, clock)
    result["threads"] = torch.get_num_threads()
    Path(result_path).write_text(json.dumps(result))
    os._exit(0)  # skip interpreter teardown (and anything the trainers would still do)


# -- the report -------------------------------------------------------------------------------------

def describe_work(r: dict) -> str:
    """One line: what a child computed in its first measured iteration, and its mean decode steps."""
    w = r["work"][0]
    shapes = lambda passes: ", ".join(f"{n} x {tuple(s)}" for s, n in Counter(map(tuple, passes)).items()) or "-"  # noqa: E731
    decode = statistics.mean(x["decode_steps"] for x in r["work"])
    return (f"decode steps {decode:.1f}/iter; no-grad passes {shapes(w['no_grad'])}; grad passes "
            f"{shapes(w['grad'])}; decoder-layer forwards {w['layers_no_grad']} no-grad, {w['layers_grad']} grad")


def report(spec: dict, runs: list[dict[str, dict]], trl_source: str) -> None:
    names = ["alignlab", "TRL"]
    steps = spec["ppo_epochs"] * (spec["batch"] // spec["minibatch"])
    print(f"\nmodel {spec['model']}, mode {spec['mode']}, {spec['batch']} prompts/rollout, {spec['ppo_epochs']} "
          f"epochs x {spec['batch'] // spec['minibatch']} minibatches of {spec['minibatch']} ({steps} optimizer "
          f"steps/iteration), <= {spec['max_new_tokens']} new tokens, {spec['iterations']} measured iterations "
          f"after {spec['warmup']}, lr {spec['lr']:g}, float32, {runs[0]['alignlab']['threads']} torch threads; "
          f"{trl_source}")
    for name in names:
        r = runs[0][name]
        print(f"  {name}: {r['optimizer']}, {r['trainable']:,} trainable parameters, critic: {r['critic']}"
              + (f"; {r['versions']}" if "versions" in r else ""))
    print(f"\n{'run':<4} {'trainer':<9} {'s/iter':>8} {'median':>8} {'peak RSS MB':>12} {'train peak MB':>14} "
          f"{'start->iter1 s':>15} {'own cores':>10} {'others':>7}")
    for i, run in enumerate(runs, 1):
        for name in names:
            r = run[name]
            print(f"{i:<4} {name:<9} {r['s_per_iter']:>8.3f} {r['median_s']:>8.3f} {r['maxrss_mb']:>12.0f} "
                  f"{r['train_peak_mb']:>14.0f} {r['first_iter_at_s']:>15.1f} {r['self_cores']:>10.2f} "
                  f"{r['other_cores']:>7.2f}")
    print("(own cores: CPU-seconds the child used per second of the measured iterations; others: the rest of\n"
          " the machine's busy CPU per second meanwhile: well above 0 means other processes competed for the cores)")
    a, t = runs[0]["alignlab"], runs[0]["TRL"]
    print(f"\nper measured iteration, seconds: alignlab {' '.join(f'{x:.2f}' for x in a['iter_s'])}; "
          f"TRL {' '.join(f'{x:.2f}' for x in t['iter_s'])}")
    print(f"mean split: rollout + scoring (to the first forward with grad, with the last logging) alignlab {a['rollout_s']:.2f} s, TRL "
          f"{t['rollout_s']:.2f} s; optimisation alignlab {a['update_s']:.2f} s, TRL {t['update_s']:.2f} s")
    print("work in the first measured iteration (rows, length):")
    for name in names:
        print(f"  {name}: {describe_work(runs[0][name])}")
    print(f"reward model: TRL's get_reward on alignlab's token ids vs alignlab's score: max |diff| = "
          f"{t['reward_check']:.2e}")
    series = lambda r, key: " ".join(f"{x[key]:.3f}" for x in r["log"])  # noqa: E731
    print(f"scores per logged iteration: alignlab {series(a, 'score')}; TRL {series(t, 'score')}")
    print(f"KL per logged iteration:     alignlab {series(a, 'kl')}; TRL {series(t, 'kl')}")
    print("(sampled responses differ between the trainers, so these agree only in scale)")
    speed = [run["TRL"]["s_per_iter"] / run["alignlab"]["s_per_iter"] for run in runs]
    memory = [run["TRL"]["maxrss_mb"] / run["alignlab"]["maxrss_mb"] for run in runs]
    train_mem = [run["TRL"]["train_peak_mb"] / run["alignlab"]["train_peak_mb"] for run in runs]
    print(f"\nspeed ratio (TRL s/iter / alignlab s/iter): {', '.join(f'{s:.2f}x' for s in speed)}"
          + (f"  (median {statistics.median(speed):.2f}x)" if len(runs) > 1 else ""))
    by_median = [run["TRL"]["median_s"] / run["alignlab"]["median_s"] for run in runs]
    print(f"by median iterations: {', '.join(f'{s:.2f}x' for s in by_median)}")
    print(f"memory ratio (TRL peak RSS / alignlab peak RSS): {', '.join(f'{m:.2f}' for m in memory)}; "
          f"during the iterations: {', '.join(f'{m:.2f}' for m in train_mem)}")
    met = min(speed + by_median) >= SPEED_TARGET and min(memory) >= 1.0
    print(f"target: at least {SPEED_TARGET:g}x TRL's speed at no more memory, by means and medians in every run: "
          f"{'met' if met else 'NOT met'}")
    for name in names:
        if runs[0][name]["profile"]:
            print(f"\n--- profile of {name}'s measured iterations (run 1) ---\n{runs[0][name]['profile']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", help="'gemma-3-270m' (default), 'tiny' or a local HF folder")
    parser.add_argument("--mode", default="full", choices=["full", "lora"])
    parser.add_argument("--iterations", type=int, default=5, help="measured PPO iterations")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured iterations first")
    parser.add_argument("--batch", type=int, default=8, help="prompts per rollout")
    parser.add_argument("--minibatch", type=int, default=4, help="rollout rows per optimizer step")
    parser.add_argument("--ppo-epochs", type=int, default=4, help="passes over each rollout")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="longest response (TRL's response_length)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--kl-estimator", default="k1", choices=["k1", "k3"])
    parser.add_argument("--missing-eos-penalty", type=float, default=1.0, help="0: off")
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--lam", type=float, default=0.95)
    parser.add_argument("--cliprange", type=float, default=0.2)
    parser.add_argument("--cliprange-value", type=float, default=0.2)
    parser.add_argument("--vf-coef", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=0.0, help="learning rate (0: alignlab's default for the mode)")
    parser.add_argument("--value-init", default="zero", choices=["zero", "reward_model"],
                        help="both critics' head: zero, or the reward model's head")
    parser.add_argument("--reward-model", default="",
                        help="an alignlab reward model folder (default: a fresh head-mode one over --model)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=float, default=32.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="run both trainers this many times, alternating order")
    parser.add_argument("--trl-optim", default="adamw_torch_fused",
                        help="TRL's optim (alignlab uses fused AdamW where torch has it)")
    parser.add_argument("--trl-critic-lora", action="store_true",
                        help="LoRA mode: LoRA adapters on TRL's value model too (TRL trains all of it by default)")
    parser.add_argument("--profile", default="none", choices=["none", "torch", "python"],
                        help="profile the measured iterations of both children and print the tables")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in each child (0: torch's default, one per core); 1 is steadier "
                             "when other processes share the cores")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker, args.spec, args.result)
    if args.iterations < 1 or args.warmup < 1:
        parser.error("--iterations and --warmup must be at least 1")
    if args.batch % args.minibatch:
        parser.error(f"--batch {args.batch} must be a multiple of --minibatch {args.minibatch}")
    trl_source = ensure_trl()
    work = Path(tempfile.mkdtemp(prefix="bench-ppo-"))
    try:
        spec = prepare(args, work)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        runs = []
        for i in range(args.repeats):  # alternate the order: a slow phase of the machine hits both
            run = {}
            for name in (["alignlab", "TRL"] if i % 2 == 0 else ["TRL", "alignlab"]):
                print(f"run {i + 1}/{args.repeats}: {name}...", flush=True)
                run[name] = run_child(name.lower(), spec_path, work)
            runs.append(run)
        report(spec, runs, trl_source)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
