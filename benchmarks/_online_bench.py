"""What bench_rloo.py and bench_grpo.py share: alignlab's group trainers against TRL 1.16's, on the same work.

- TRL 1.16 in its own virtual environment, ``.bench-venvs/trl-1.16`` (ignored by git), made on
  first use: ``python -m venv``, then the torch release .venv runs (pinned and installed first: a
  looser requirement fetches a multi-GB CUDA build), then trl==1.16.0, peft, accelerate, psutil.
  (bench_ppo.py installs its TRL 1.12 into .bench-deps without dependencies instead; 1.16 gets a
  whole environment so that its own pins of transformers, peft and accelerate apply.)
- the reward: ``reward(prompt, response)``, a plain function of the text that both sides call
  (alignlab as ``--reward _online_bench:reward``, TRL through ``trl_reward``);
- the shared files: the prompts (bench_ppo.py's prompts of one token length, so neither side
  pads them), the policy saved as a Hugging Face folder for TRL, alignlab's LoRA initialisation,
  and the prompts of every step in alignlab's seeded order (TRL reads them unshuffled);
- one child per trainer run (this machine's .venv python for alignlab, the TRL venv's python for
  TRL), timed by bench_ppo.py's ``IterationClock`` (a global optimizer-step hook, the same code on
  both sides; here one rollout = one optimizer step), plus the load average (``os.getloadavg``) at
  the start and end of the measured steps and the highest one the parent saw while the child ran;
- the report and its target: at least 2x TRL's speed at no more memory.

A benchmark script supplies the method: a function that builds alignlab's train call from the
spec, one that builds TRL's trainer, and a header line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import optimizer_kind, train_until_done
from bench_ppo import IterationClock, describe_work, make_prompts, trainable_count

TRL_VERSION = "1.16.0"
"""The TRL release compared against (the latest 1.16 on PyPI when these benchmarks were written)."""
SPEED_TARGET = 2.0
"""The project's target: alignlab at least this many times TRL's speed, at no more memory."""
TRL_VENV = Path(__file__).resolve().parent.parent / ".bench-venvs" / f"trl-{TRL_VERSION.rsplit('.', 1)[0]}"
"""TRL's own virtual environment, outside .venv, ignored by git."""


# -- the reward both sides optimise -------------------------------------------------------------------

ACTION_WORDS = frozenset("start keep write set track review pick plan practice check prepare add use try make "
                         "ask read repeat note choose clean save".split())


def reward(prompt: str, response: str) -> float:
    """Concrete, non-repetitive answers of some length score higher; a few microseconds per call, so
    neither side's time is the reward's."""
    words = [w.strip(".,;:!?\"'()").lower() for w in response.split()]
    words = [w for w in words if w]
    if not words:
        return 0.0
    length = min(len(words), 24) / 24
    concrete = sum(w in ACTION_WORDS for w in words) / len(words)
    repeated = 1.0 - len(set(words)) / len(words)
    return 0.5 * length + 2.0 * concrete - repeated


def trl_reward(prompts: list, completions: list, **kwargs) -> list[float]:
    """``reward`` in TRL's reward-function form."""
    return [reward(p, c) for p, c in zip(prompts, completions)]


# -- TRL 1.16 in its own environment ------------------------------------------------------------------

def ensure_trl_venv() -> tuple[str, str]:
    """(TRL's python, a description of its versions); makes TRL_VENV on first use."""
    from importlib.metadata import version

    python = TRL_VENV / "bin" / "python"
    probe = _probe(python)
    if probe is None:
        torch = version("torch").split("+")[0]  # the release .venv runs, so both sides get the same torch
        print(f"making {TRL_VENV} (torch=={torch}, trl=={TRL_VERSION}, peft, accelerate, psutil); first use only, "
              "a few minutes...", flush=True)
        if not python.exists():
            _pip_step([sys.executable, "-m", "venv", str(TRL_VENV)])
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        _pip_step(pip + [f"torch=={torch}"])  # first and pinned: a looser requirement fetches a CUDA build
        _pip_step(pip + [f"trl=={TRL_VERSION}", "peft", "accelerate", "psutil"])
        probe = _probe(python)
        if probe is None:
            raise SystemExit(f"{TRL_VENV} still lacks trl {TRL_VERSION} or its dependencies after installing; "
                             f"delete {TRL_VENV} and run again")
    return str(python), ", ".join(f"{k} {v}" for k, v in probe.items()) + f" (from {TRL_VENV})"


def _probe(python: Path) -> dict | None:
    """The versions TRL's environment holds, or None where it is missing or incomplete."""
    if not python.exists():
        return None
    code = ("import json, torch, transformers, trl, peft, accelerate, datasets, psutil; print(json.dumps({m.__name__: "
            "m.__version__ for m in (trl, transformers, torch, peft, accelerate)}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    versions = json.loads(out.stdout.strip().splitlines()[-1])
    return versions if versions["trl"] == TRL_VERSION else None


def _pip_step(command: list[str]) -> None:
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed; this benchmark needs PyPI once to make {TRL_VENV}")


# -- options and the parent -------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both group benchmarks take (and the hidden ones of their children)."""
    parser.add_argument("--model", default="gemma-3-270m", help="'gemma-3-270m' (default), 'tiny' or a local HF folder")
    parser.add_argument("--mode", default="full", choices=["full", "lora"])
    parser.add_argument("--steps", type=int, default=3, help="measured optimizer steps (one rollout each)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps first (at least 1)")
    parser.add_argument("--prompts-per-step", type=int, default=4, help="distinct prompts per rollout")
    parser.add_argument("--group", type=int, default=4, help="samples per prompt (num_generations)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="longest response (max_completion_length)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.05, help="KL coefficient (> 0, so both sides run a reference)")
    parser.add_argument("--lr", type=float, default=0.0, help="learning rate (0: alignlab's default for the mode)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=float, default=32.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="run both trainers this many times, alternating order")
    parser.add_argument("--trl-optim", default="adamw_torch_fused",
                        help="TRL's optim (alignlab uses fused AdamW where torch has it)")
    parser.add_argument("--trl-gradient-checkpointing", action="store_true", help="TRL's config default; off here")
    parser.add_argument("--profile", default="none", choices=["none", "torch", "python"],
                        help="profile the measured steps of both children and print the tables")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in each child (0: torch's default, one per core)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)


def prepare(args, work: Path, method: dict) -> dict:
    """Write the prompts, the policy as an HF folder, the LoRA init and the prompt order; the spec."""
    import torch

    from alignlab.models import load_model
    from alignlab.train.policy import LORA_TARGETS, load_policy

    lm, tok = load_model(args.model, dtype="float32")
    prompts, prompt_length = make_prompts(tok)
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    hf_policy = work / "hf-policy"
    lm.save_pretrained(str(hf_policy))
    tok.save_pretrained(str(hf_policy))
    del lm
    lora_init = work / "lora.pt"
    if args.mode == "lora":  # alignlab's adapters as load_policy draws them (A random, B zero), for TRL to copy
        policy, _ = load_policy(args.model, "float32", True, args.lora_r, args.lora_alpha, args.seed)
        torch.save({n.split("model.layers.", 1)[1]: p.detach().clone() for n, p in policy.named_parameters()
                    if "lora_" in n}, lora_init)
        del policy
    total = args.warmup + args.steps + 1  # one spare, so that neither trainer ends before the clock stops it
    order = []  # the prompts of every rollout, as train/online.py picks them
    for it in range(total):
        perm = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(args.seed * 7919 + it)).tolist()
        order += [perm[(it * args.prompts_per_step + g) % len(prompts)] for g in range(args.prompts_per_step)]
    print(f"prompts: {len(prompts)} of exactly {prompt_length} tokens (BOS included)")
    return {"model": args.model, "mode": args.mode, "warmup": args.warmup, "steps": args.steps, "total": total,
            "prompts_per_step": args.prompts_per_step, "group": args.group, "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature, "beta": args.beta,
            "lr": args.lr or (1.5e-4 if args.mode == "lora" else 1e-5), "seed": args.seed,
            "lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "lora_targets": LORA_TARGETS,
            "lora_init": str(lora_init), "prompts": str(work / "prompts.jsonl"), "hf_policy": str(hf_policy),
            "order": order, "work": str(work), "trl_optim": args.trl_optim,
            "trl_gradient_checkpointing": args.trl_gradient_checkpointing, "profile": args.profile,
            "threads": args.threads, "method": method}


def compare(script: str, args, method: dict, header: Callable[[dict], str]) -> None:
    """Make TRL's environment, prepare the shared files, run both trainers ``--repeats`` times
    (alternating which goes first, so that a slow phase of the machine does not always hit the same
    one), report."""
    if args.steps < 1 or args.warmup < 1:
        raise SystemExit("--steps and --warmup must be at least 1")
    if args.beta <= 0:
        raise SystemExit("--beta must be > 0: the benchmark compares trainers that both run a reference")
    trl_python, trl_source = ensure_trl_venv()
    work = Path(tempfile.mkdtemp(prefix=f"{Path(script).stem.replace('_', '-')}-"))
    load_before = os.getloadavg()
    try:
        spec = prepare(args, work, method)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        runs = []
        for i in range(args.repeats):
            run = {}
            for name in (["alignlab", "TRL"] if i % 2 == 0 else ["TRL", "alignlab"]):
                print(f"run {i + 1}/{args.repeats}: {name}...", flush=True)
                python = trl_python if name == "TRL" else sys.executable
                run[name] = run_child(script, python, name.lower(), spec_path, work)
            runs.append(run)
        print(f"\n{header(spec)}; {trl_source}")
        report(spec, runs, load_before)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_child(script: str, python: str, which: str, spec_path: Path, work: Path) -> dict:
    """Run ``script --worker which`` with ``python``, offline, and return its result (with the
    highest 1-minute load average seen while it ran)."""
    out = work / f"result-{which}.json"
    out.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false",
               HF_DATASETS_CACHE=str(work / "hf-datasets"), TRL_EXPERIMENTAL_SILENCE="1",
               ALIGNLAB_RUNS_DIR=str(work / f"runs-{which}-{time.time_ns()}"), WANDB_DISABLED="true")
    env.pop("PYTHONPATH", None)  # the TRL child must import its own environment's packages only
    threads = json.loads(spec_path.read_text())["threads"]
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    loads, running = [], True

    def watch():
        while running:
            loads.append(os.getloadavg()[0])
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()
    log = work / f"log-{which}.txt"
    with open(log, "w") as fh:
        proc = subprocess.run([python, script, "--worker", which, "--spec", str(spec_path), "--result", str(out)],
                              env=env, stdout=fh, stderr=subprocess.STDOUT)
    running = False
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"the {which} child failed (exit {proc.returncode}); the end of its log:\n"
                         f"{log.read_text()[-4000:]}")
    return {**json.loads(out.read_text()), "load_max": max(loads)}


# -- the children -----------------------------------------------------------------------------------

class RolloutClock(IterationClock):
    """bench_ppo.py's clock with one optimizer step per rollout, that also notes the machine's load
    average when the measured steps start and end."""

    def __init__(self, spec: dict):
        super().__init__({"ppo_epochs": 1, "batch": 1, "minibatch": 1, "warmup": spec["warmup"],
                          "iterations": spec["steps"], "profile": spec["profile"]})
        self.load_start = self.load_end = None

    def _after_step(self, optimizer, *args):
        if self.steps + 1 == self.warmup:
            self.load_start = os.getloadavg()
        if self.steps + 1 == self.total:
            self.load_end = os.getloadavg()
        super()._after_step(optimizer, *args)

    def result(self, extra: dict) -> dict:
        return super().result({**extra, "load_start": self.load_start, "load_end": self.load_end})


def run_worker(which: str, spec_path: str, result_path: str, workers: dict[str, Callable]) -> None:
    """The child's whole life: read the spec, run one trainer to the last measured step, write the result."""
    spec = json.loads(Path(spec_path).read_text())
    clock = RolloutClock(spec)  # started before the heavy imports: "first step at" includes them
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    result = workers[which](spec, clock)
    result["threads"] = torch.get_num_threads()
    Path(result_path).write_text(json.dumps(result))
    os._exit(0)  # skip interpreter teardown (and alignlab's final policy save)


def alignlab_fields(spec: dict) -> dict:
    """The OnlineOptions both alignlab configs (RLOOConfig, GRPOConfig) get from the spec."""
    return dict(prompts=Path(spec["prompts"]), reward="_online_bench:reward", model=spec["model"], dtype="float32",
                iterations=spec["total"], prompts_per_iteration=spec["prompts_per_step"], group_size=spec["group"],
                minibatch_size=0, micro_batch_size=0, epochs=1, max_new_tokens=spec["max_new_tokens"],
                temperature=spec["temperature"], kl_coef=spec["beta"], cliprange=0.2, lr=spec["lr"],
                lr_schedule="constant", max_grad_norm=1.0, missing_eos_penalty=0.0, sample_every=0,
                seed=spec["seed"], checkpoint_every=10**9, lora=spec["mode"] == "lora", lora_r=spec["lora_r"],
                lora_alpha=spec["lora_alpha"])


def worker_alignlab(spec: dict, clock: RolloutClock, train: Callable[[], object]) -> dict:
    """Run alignlab's ``train()`` to the last measured step; the clock's result with its log."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from alignlab.home import runs_dir

    seen = {}
    register_optimizer_step_pre_hook(lambda opt, *_: seen.setdefault("optimizer", opt) and None)
    clock.install()
    train_until_done(train, "alignlab")
    metrics = sorted((json.loads(line) for run in Path(runs_dir()).iterdir() if (run / "metrics.jsonl").exists()
                      for line in (run / "metrics.jsonl").read_text().splitlines()), key=lambda m: m["step"])
    log = [{"score": m["objective/scores"], "kl": m["objective/kl"], "length": m["response_length"]}
           for m in metrics if "objective/scores" in m]
    return clock.result({"optimizer": optimizer_kind(seen["optimizer"]),
                         "trainable": trainable_count(seen["optimizer"]), "log": log,
                         "kl_is": "sequence sum of k1 (nats per response)"})


def trl_fields(spec: dict) -> dict:
    """The config fields TRL's RLOOConfig and GRPOConfig both get from the spec (see the scripts' docstrings)."""
    import torch

    rows = spec["prompts_per_step"] * spec["group"]
    return dict(
        output_dir=str(Path(spec["work"]) / "trl-out"), num_generations=spec["group"],
        per_device_train_batch_size=rows, gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1,
        max_completion_length=spec["max_new_tokens"], temperature=spec["temperature"], top_p=1.0, top_k=0,
        beta=spec["beta"], epsilon=0.2, learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, adam_epsilon=1e-5, max_grad_norm=1.0, optim=spec["trl_optim"], bf16=False, fp16=False,
        gradient_checkpointing=spec["trl_gradient_checkpointing"], use_vllm=False, shuffle_dataset=False,
        max_steps=spec["total"], save_strategy="no", eval_strategy="no", report_to="none", logging_steps=1,
        log_completions=False, disable_tqdm=True, seed=spec["seed"], dataloader_num_workers=0,
        dataloader_pin_memory=False, use_cpu=not torch.cuda.is_available())


def worker_trl(spec: dict, clock: RolloutClock, make_trainer: Callable) -> dict:
    """Build TRL's trainer with ``make_trainer(model, tokenizer, dataset, peft_config, callbacks)`` and
    run it to the last measured step; the clock's result with its log."""
    import torch
    import transformers
    import trl

    if trl.__version__ != TRL_VERSION or not Path(trl.__file__).resolve().is_relative_to(TRL_VENV):
        raise SystemExit(f"the TRL child imported trl {trl.__version__} from {trl.__file__}; it needs "
                         f"{TRL_VERSION} from {TRL_VENV}")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    folder = spec["hf_policy"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    prompts = [json.loads(line)["prompt"] for line in Path(spec["prompts"]).read_text().splitlines()]
    dataset = Dataset.from_dict({"prompt": [prompts[i] for i in spec["order"]]})  # read in order (shuffle off)
    peft_config = None
    if spec["mode"] == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
                                 target_modules=spec["lora_targets"], task_type="CAUSAL_LM")
    log: list[dict] = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                log.append({"score": logs["reward"], "kl": logs.get("kl"),
                            "length": logs.get("completions/mean_length")})

    trainer = make_trainer(policy, tokenizer, dataset, peft_config, [Record()])
    if peft_config is not None:
        copy_lora_init(trainer.model, spec["lora_init"])
    clock.install()
    train_until_done(trainer.train, "TRL")
    return clock.result({"optimizer": optimizer_kind(trainer.optimizer),
                         "trainable": trainable_count(trainer.optimizer), "log": log,
                         "kl_is": "TRL's 'kl': per-token mean", "versions": f"trl {trl.__version__}, "
                         f"transformers {transformers.__version__}, torch {torch.__version__}"})


def copy_lora_init(model, path: str) -> None:
    """Start TRL's adapters from alignlab's (A is random: the same draw, not just the same law)."""
    import torch

    init, copied = torch.load(path), 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(init[name.split("model.layers.", 1)[1]])
                copied += 1
    if copied != len(init):
        raise RuntimeError(f"copied {copied} LoRA tensors into TRL's model; alignlab has {len(init)}")


# -- the report -------------------------------------------------------------------------------------

def report(spec: dict, runs: list[dict[str, dict]], load_before: tuple) -> None:
    """Timings, memory, load, the work each side did, its log, the ratios and the target."""
    names = ["alignlab", "TRL"]
    for name in names:
        r = runs[0][name]
        print(f"  {name}: {r['optimizer']}, {r['trainable']:,} trainable parameters, {r['threads']} torch threads"
              + (f"; {r['versions']}" if "versions" in r else ""))
    print(f"\n{'run':<4} {'trainer':<9} {'s/step':>8} {'median':>8} {'peak RSS MB':>12} {'train peak MB':>14} "
          f"{'start->step1 s':>15} {'own cores':>10} {'others':>7}  load avg 1/5/15 min (start -> end; max 1-min)")
    load = lambda t: "/".join(f"{x:.2f}" for x in t)  # noqa: E731
    for i, run in enumerate(runs, 1):
        for name in names:
            r = run[name]
            print(f"{i:<4} {name:<9} {r['s_per_iter']:>8.3f} {r['median_s']:>8.3f} {r['maxrss_mb']:>12.0f} "
                  f"{r['train_peak_mb']:>14.0f} {r['first_iter_at_s']:>15.1f} {r['self_cores']:>10.2f} "
                  f"{r['other_cores']:>7.2f}  {load(r['load_start'])} -> {load(r['load_end'])}; {r['load_max']:.2f}")
    print(f"(s/step: mean over the {spec['steps']} measured steps after {spec['warmup']} warm-up, i.e. their wall "
          "time / count; median: of the same steps. own cores: CPU-seconds the child used per second of the measured "
          "steps; others: the rest of the machine's busy CPU per second meanwhile (well above 0: other processes "
          f"competed for the cores). {os.cpu_count()} cores; load average before the benchmark {load(load_before)}, "
          f"after {load(os.getloadavg())})")
    a, t = runs[0]["alignlab"], runs[0]["TRL"]
    print(f"\nper measured step, seconds: alignlab {' '.join(f'{x:.2f}' for x in a['iter_s'])}; "
          f"TRL {' '.join(f'{x:.2f}' for x in t['iter_s'])}")
    print(f"mean split: rollout + scoring (to the first forward with grad) alignlab {a['rollout_s']:.2f} s, TRL "
          f"{t['rollout_s']:.2f} s; update alignlab {a['update_s']:.2f} s, TRL {t['update_s']:.2f} s")
    print("work in the first measured step (rows, length):")
    for name in names:
        print(f"  {name}: {describe_work(runs[0][name])}")
    for key, what in (("score", "mean reward"), ("length", "mean response length"), ("kl", "KL")):
        series = lambda r: " ".join("-" if x[key] is None else f"{x[key]:.3f}" for x in r["log"])  # noqa: E731
        print(f"{what} per logged step: alignlab {series(a)}; TRL {series(t)}")
    print(f"(KL: alignlab's is the {a['kl_is']}, {t['kl_is']}; samples differ between the trainers, so these "
          "agree only in scale)")
    speed = [run["TRL"]["s_per_iter"] / run["alignlab"]["s_per_iter"] for run in runs]
    by_median = [run["TRL"]["median_s"] / run["alignlab"]["median_s"] for run in runs]
    memory = [run["TRL"]["maxrss_mb"] / run["alignlab"]["maxrss_mb"] for run in runs]
    train_mem = [run["TRL"]["train_peak_mb"] / run["alignlab"]["train_peak_mb"] for run in runs]
    print(f"\nspeed ratio (TRL s/step / alignlab s/step), by means: {', '.join(f'{s:.2f}x' for s in speed)}"
          + (f"  (median over runs {statistics.median(speed):.2f}x)" if len(runs) > 1 else ""))
    print(f"speed ratio by medians: {', '.join(f'{s:.2f}x' for s in by_median)}")
    cpu = [(run["TRL"]["s_per_iter"] * run["TRL"]["self_cores"]) / (run["alignlab"]["s_per_iter"]
                                                                      * run["alignlab"]["self_cores"]) for run in runs]
    print(f"CPU-seconds per step (mean s/step x own cores), TRL / alignlab: {', '.join(f'{c:.2f}x' for c in cpu)} "
          "(less sensitive to other jobs taking cores, not to their sharing caches; not part of the target)")
    print(f"memory ratio (TRL peak RSS / alignlab peak RSS; >= 1: alignlab uses no more): "
          f"{', '.join(f'{m:.2f}' for m in memory)}; during the steps: {', '.join(f'{m:.2f}' for m in train_mem)}")
    met = min(speed + by_median) >= SPEED_TARGET and min(memory) >= 1.0
    print(f"target: >= {SPEED_TARGET:g}x TRL's speed at no more memory (by means and medians, peak RSS, every run): "
          f"{'met' if met else 'NOT met'}")
    for name in names:
        if runs[0][name]["profile"]:
            print(f"\n--- profile of {name}'s measured steps (run 1) ---\n{runs[0][name]['profile']}")
