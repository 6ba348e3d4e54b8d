"""What the alignlab-versus-TRL trainer benchmarks (bench_reward.py, bench_dpo.py) share.

- the synthetic preference set both trainers learn from;
- the options every such benchmark takes (model, mode, steps, batch, threads, repeats, ...);
- one child process per trainer run, so that neither trainer's memory or threads leak into the
  other's measurement;
- ``StepClock``: a global optimizer-step hook, so the same code times both trainers, with an RSS
  poller, the machine's load during the measured steps and optional profiling;
- the report: timings, step-0 and per-step losses, token positions run, ratios, the target.

A benchmark script supplies ``prepare(args, work) -> spec`` (data and model files for both
children), one worker function per trainer, and a header for its report.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

# -- the synthetic preference set -----------------------------------------------------------------

TOPICS = [
    "keep basil alive indoors", "learn to touch type", "fix a squeaky door", "save money on groceries",
    "sleep better", "start running", "clean a cast iron pan", "write a cover letter",
    "prepare for a job interview", "reduce screen time", "bake bread at home", "learn a new language",
    "organise a small kitchen", "care for a succulent", "plan a weekend hike", "brew better coffee",
    "study for exams", "stay focused while working from home", "repot a plant", "teach a puppy to sit",
    "remove a coffee stain", "start a vegetable garden", "back up a laptop", "choose a bicycle",
    "cook rice on the stove", "improve my handwriting", "memorise a speech", "keep a journal",
    "pack for a long flight", "lower the heating bill", "make friends in a new city", "read more books",
]
QUESTIONS = ["How do I {t}?", "What is the best way to {t}?", "Any tips to {t}?", "Can you explain how to {t}?",
             "I want to {t}. Where should I start?"]
GOOD = [
    "Start by setting aside {n} minutes a day to {t}, and keep the time fixed.",
    "A simple routine works best: pick one small step and repeat it every day for {n} days.",
    "Write down what worked and what did not, then adjust your next attempt.",
    "If something goes wrong, slow down and check each step again before you continue.",
    "Most people see clear progress within {n} weeks if they stay consistent.",
    "Keep the things you need within reach, so that the habit costs no extra effort.",
    "Ask a friend to join you; having someone to check in with makes it easier to keep going.",
    "Avoid changing everything at once, because that usually leads to frustration.",
    "Track your progress with a short checklist and review it every {n} days.",
    "Read the instructions that came with your tools before you begin, they often save time.",
    "Set a concrete goal, for example {n} sessions this month, rather than a vague wish.",
    "When you get stuck, look for a short guide or video from a reliable source.",
    "Reward yourself after each milestone; small rewards help the routine stick.",
    "Prepare everything the evening before, so you can start right away.",
    "Be patient with yourself: a missed day is normal, just continue the next one.",
]
BAD = [
    "I am not sure, maybe search online for it.",
    "Just do it, it is not that hard.",
    "There are many ways and all of them are fine, I guess.",
    "Honestly it depends on a lot of things that I cannot know.",
    "You could try something, or maybe not, it is up to you.",
    "People have different opinions about this, so there is no answer.",
    "I would not bother with it at all, to be honest.",
    "Whatever you think is best will probably work out somehow.",
    "This question comes up a lot and nobody really agrees on it.",
    "It takes about {n} years to get it right, if you ever do.",
    "My cousin tried once and gave up after {n} days.",
    "It is complicated and hard to explain in a few words.",
    "Some say yes and some say no; {n} percent of people never manage it.",
    "You probably need expensive equipment for that anyway.",
    "Just wait and see what happens, things usually sort themselves out.",
]


def _response(rng: random.Random, pool: list[str], topic: str, tokenizer, low: int, high: int) -> str:
    """A few sentences from ``pool`` whose length is a random target in [low, high] tokens."""
    target = rng.randint(low, high)
    sentences = rng.sample(pool, len(pool))
    words: list[str] = []
    for sentence in sentences:
        words += sentence.format(n=rng.randint(2, 30), t=topic).split()
        if len(tokenizer(" " + " ".join(words), add_special_tokens=False)["input_ids"]) >= target:
            break
    while len(words) > 3 and len(tokenizer(" " + " ".join(words), add_special_tokens=False)["input_ids"]) > high:
        words.pop()
    return " " + " ".join(words)


def make_pairs(n: int, seed: int, tokenizer, low: int = 20, high: int = 80):
    """``n`` PreferencePairs with unique texts: mostly a concrete answer preferred over a vague one."""
    from alignlab.data import PreferencePair

    rng = random.Random(seed)
    pairs, seen = [], set()
    while len(pairs) < n:
        topic = rng.choice(TOPICS)
        prompt = f"Question: {rng.choice(QUESTIONS).format(t=topic)}\nAnswer:"
        chosen = _response(rng, GOOD, topic, tokenizer, low, high)
        rejected = _response(rng, BAD, topic, tokenizer, low, high)
        if rng.random() < 0.15:  # some pairs where the preferred answer is the shorter one
            chosen = _response(rng, GOOD, topic, tokenizer, low, (low + high) // 2)
        key_c, key_r = (prompt, chosen), (prompt, rejected)
        if chosen == rejected or key_c in seen or key_r in seen:
            continue
        seen.update((key_c, key_r))
        if rng.random() < 0.2:  # label noise, so that the loss stays informative after a few steps
            chosen, rejected = rejected, chosen
        pairs.append(PreferencePair(prompt, chosen, rejected))
    return pairs


# -- options and the parent's loop ------------------------------------------------------------------

def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every trainer-versus-TRL benchmark takes (and the hidden ones of its children)."""
    parser.add_argument("--model", default="gemma-3-270m", help="'gemma-3-270m' (default), 'tiny' or a local HF folder")
    parser.add_argument("--mode", default="full", choices=["full", "lora"])
    parser.add_argument("--steps", type=int, default=10, help="measured optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    parser.add_argument("--batch", type=int, default=8, help="preference pairs per optimizer step")
    parser.add_argument("--lr", type=float, default=0.0, help="learning rate (0: alignlab's default for the mode)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=float, default=32.0)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="run both trainers this many times, alternating order")
    parser.add_argument("--trl-optim", default="adamw_torch_fused",
                        help="TRL's optim (its default is adamw_torch_fused; adamw_torch is the per-parameter loop)")
    parser.add_argument("--trl-gradient-checkpointing", action="store_true", help="TRL's default; off here")
    parser.add_argument("--profile", default="none", choices=["none", "torch", "python"],
                        help="profile the measured steps of both children and print the tables")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in each child (0: torch's default, one per core); 1 is steadier "
                             "when other processes share the cores")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)


def compare(script: str, args, prepare: Callable[..., dict], report: Callable[[dict, list], None]) -> None:
    """Prepare the shared files, run both trainers ``--repeats`` times (alternating which goes
    first, so that a slow phase of the machine does not always hit the same one), report."""
    work = Path(tempfile.mkdtemp(prefix=f"{Path(script).stem.replace('_', '-')}-"))
    try:
        spec = prepare(args, work)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        runs = []
        for i in range(args.repeats):
            run = {}
            for name in (["alignlab", "TRL"] if i % 2 == 0 else ["TRL", "alignlab"]):
                print(f"run {i + 1}/{args.repeats}: {name}...", flush=True)
                run[name] = run_child(script, name.lower() if name == "TRL" else name, spec_path, work)
            runs.append(run)
        report(spec, runs)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_child(script: str, which: str, spec_path: Path, work: Path) -> dict:
    """Run ``script --worker which`` in a fresh interpreter, offline, and return its result."""
    out = work / f"result-{which}.json"
    out.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false",
               HF_DATASETS_CACHE=str(work / "hf-datasets"),
               ALIGNLAB_RUNS_DIR=str(work / f"runs-{which}-{time.time_ns()}"), WANDB_DISABLED="true")
    threads = json.loads(spec_path.read_text())["threads"]
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    log = work / f"log-{which}.txt"
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, script, "--worker", which, "--spec", str(spec_path),
                               "--result", str(out)], env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text()[-4000:]
        raise SystemExit(f"the {which} child failed (exit {proc.returncode}); the end of its log:\n{tail}")
    return json.loads(out.read_text())


# -- the children -----------------------------------------------------------------------------------

class Done(Exception):
    """Raised from the step hook after the last measured step: nothing after it is measured."""


class StepClock:
    """Timestamps every optimizer step (a global hook: the same code measures both trainers)."""

    def __init__(self, warmup: int, steps: int, profile: str = "none"):
        self.warmup, self.total = warmup, warmup + steps
        self.start = time.perf_counter()
        self.times: list[float] = []
        self.rss: list[float] = []
        self.shapes: list[list[int]] = []
        self.poll_peak = 0.0
        self.polling = False
        self.maxrss_mb = None
        self.profile, self.profiler, self.profile_text = profile, None, ""
        self.cpu_mark = self.cpu_end = None
        self.layer_calls = 0

    def install(self) -> None:
        import torch

        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(self._after_step)
        torch.nn.modules.module.register_module_forward_pre_hook(self._before_forward)

    def _before_forward(self, module, args):
        import torch

        # Training forwards only: a reference pass computed before training (DPO) runs without autograd.
        if not torch.is_grad_enabled():
            return
        if type(module).__name__.endswith("DecoderLayer"):  # counts recomputation (gradient checkpointing)
            self.layer_calls += 1
        # The token-embedding call: records the (rows, length) of every forward pass.
        elif isinstance(module, torch.nn.Embedding) and module.num_embeddings > 1000 and args \
                and torch.is_tensor(args[0]) and args[0].dim() == 2:
            self.shapes.append(list(args[0].shape))

    def _poll(self) -> None:
        import psutil

        me = psutil.Process()
        while self.polling:
            self.poll_peak = max(self.poll_peak, me.memory_info().rss / 2**20)
            time.sleep(0.01)

    def _after_step(self, optimizer, *_):
        import psutil

        self.times.append(time.perf_counter())
        self.rss.append(psutil.Process().memory_info().rss / 2**20)
        if len(self.times) == self.warmup:
            self.cpu_mark = cpu_counters()
            self.polling = True
            threading.Thread(target=self._poll, daemon=True).start()
            self._start_profile()
        if len(self.times) == self.total:
            self.cpu_end = cpu_counters()
            self.polling = False
            self.maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self._stop_profile()
            raise Done

    def _start_profile(self) -> None:
        if self.profile == "torch":
            import torch

            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.__enter__()
        elif self.profile == "python":
            import cProfile

            self.profiler = cProfile.Profile()
            self.profiler.enable()

    def _stop_profile(self) -> None:
        if self.profiler is None:
            return
        if self.profile == "torch":
            self.profiler.__exit__(None, None, None)
            self.profile_text = self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        else:
            import io
            import pstats

            self.profiler.disable()
            buf = io.StringIO()
            pstats.Stats(self.profiler, stream=buf).sort_stats("cumulative").print_stats(40)
            self.profile_text = buf.getvalue()

    def result(self, losses: list[float], extra: dict) -> dict:
        measured = self.times[self.warmup - 1:] if self.warmup else [self.start] + self.times
        gaps = [b - a for a, b in zip(measured, measured[1:])]
        (w0, busy0, self0), (w1, busy1, self1) = self.cpu_mark, self.cpu_end
        return {"self_cores": (self1 - self0) / (w1 - w0),
                "other_cores": max(0.0, (busy1 - busy0) - (self1 - self0)) / (w1 - w0),
                "s_per_step": (measured[-1] - measured[0]) / len(gaps), "step_s": gaps,
                "median_s": statistics.median(gaps), "first_step_at_s": self.times[0] - self.start,
                "maxrss_mb": self.maxrss_mb, "train_peak_mb": self.poll_peak, "rss_mb": self.rss,
                "losses": losses, "shapes": self.shapes, "layer_calls_per_step": self.layer_calls / self.total,
                "profile": self.profile_text, **extra}


def cpu_counters() -> tuple[float, float, float]:
    """(wall s, busy CPU-seconds of the whole machine, CPU-seconds of this process) for a load check."""
    import psutil

    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait (guest is inside user)
    me = psutil.Process().cpu_times()
    return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), me.user + me.system


def optimizer_kind(optimizer) -> str:
    """'AdamW fused' and the like: which implementation a trainer's optimizer runs."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    d = optimizer.defaults
    impl = "fused" if d.get("fused") else "foreach" if d.get("foreach") else "for-loop (default on CPU)"
    return f"{type(optimizer).__name__} {impl}"


def train_until_done(train: Callable[[], object], what: str) -> None:
    """Run ``train()`` until the clock raises Done at the last measured step; finishing first is an error."""
    try:
        train()
    except Done:
        return
    raise RuntimeError(f"{what} finished before the last measured step")


def run_worker(workers: dict[str, Callable[[dict, StepClock], dict]], which: str, spec_path: str,
               result_path: str) -> None:
    """The child's whole life: read the spec, run one trainer to the last measured step, write the result."""
    clock = StepClock(0, 0)  # started before the heavy imports: "first step at" includes them
    spec = json.loads(Path(spec_path).read_text())
    clock.warmup, clock.total, clock.profile = spec["warmup"], spec["warmup"] + spec["steps"], spec["profile"]
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    result = workers[which](spec, clock)
    result["threads"] = torch.get_num_threads()
    Path(result_path).write_text(json.dumps(result))
    os._exit(0)  # skip interpreter teardown (and any end-of-training work the trainers would still do)


# -- the report -------------------------------------------------------------------------------------

def print_comparison(runs: list[dict[str, dict]], target: float, step0_expected: float | None = None) -> None:
    """Everything after a benchmark's own header: timings, losses, shapes, ratios, the target."""
    names = ["alignlab", "TRL"]
    for name in names:
        r = runs[0][name]
        print(f"  {name}: {r['optimizer']}" + (f"; {r['versions']}" if "versions" in r else ""))
    print(f"\n{'run':<4} {'trainer':<9} {'s/step':>8} {'median':>8} {'peak RSS MB':>12} {'train peak MB':>14} "
          f"{'start->step1 s':>15} {'step-0 loss':>12} {'own cores':>10} {'others':>7}")
    for i, run in enumerate(runs, 1):
        for name in names:
            r = run[name]
            print(f"{i:<4} {name:<9} {r['s_per_step']:>8.3f} {r['median_s']:>8.3f} {r['maxrss_mb']:>12.0f} "
                  f"{r['train_peak_mb']:>14.0f} {r['first_step_at_s']:>15.1f} {r['losses'][0]:>12.6f} "
                  f"{r['self_cores']:>10.2f} {r['other_cores']:>7.2f}")
    print("(own cores: CPU-seconds the child used per second of the measured steps; others: the rest of the\n"
          " machine's busy CPU per second meanwhile: well above 0 means other processes competed for the cores)")
    a, t = runs[0]["alignlab"], runs[0]["TRL"]
    print(f"\nstep-0 loss: alignlab {a['losses'][0]:.8f}, TRL {t['losses'][0]:.8f}, "
          f"difference {a['losses'][0] - t['losses'][0]:+.2e}")
    if step0_expected is not None:
        print(f"  expected {step0_expected:.8f}: alignlab {a['losses'][0] - step0_expected:+.2e}, "
              f"TRL {t['losses'][0] - step0_expected:+.2e}")
    common = min(len(a["losses"]), len(t["losses"]))
    diffs = [abs(x - y) for x, y in zip(a["losses"][:common], t["losses"][:common])]
    print(f"loss per step, first {common}: max |alignlab - TRL| = {max(diffs):.2e}")
    print(f"  alignlab: {' '.join(f'{x:.4f}' for x in a['losses'][:common])}")
    print(f"  TRL:      {' '.join(f'{x:.4f}' for x in t['losses'][:common])}")
    print(f"decoder-layer forwards per step: alignlab {a['layer_calls_per_step']:.0f}, "
          f"TRL {t['layer_calls_per_step']:.0f} "
          "(twice the layer count would mean recomputation)")
    def positions(shapes):
        return sum(rows * length for rows, length in shapes)

    common = min(len(a["shapes"]), len(t["shapes"]))
    mine, theirs = positions(a["shapes"][:common]), positions(t["shapes"][:common])
    print(f"token positions run in the first {common} training forwards: alignlab {mine}, TRL {theirs} "
          f"({mine / max(theirs, 1):.2f}x; alignlab packs rows without padding and runs a prefix that rows share "
          f"once, models/packing.py; ALIGNLAB_PACKING=0 turns that off)")
    print(f"  (rows, length) of the first 4: alignlab {a['shapes'][:4]}, TRL {t['shapes'][:4]}")
    speed = [run["TRL"]["s_per_step"] / run["alignlab"]["s_per_step"] for run in runs]
    memory = [run["alignlab"]["maxrss_mb"] / run["TRL"]["maxrss_mb"] for run in runs]
    train_mem = [run["alignlab"]["train_peak_mb"] / run["TRL"]["train_peak_mb"] for run in runs]
    print(f"\nspeed ratio (TRL s/step / alignlab s/step): {', '.join(f'{s:.2f}x' for s in speed)}"
          + (f"  (median {statistics.median(speed):.2f}x)" if len(runs) > 1 else ""))
    print(f"memory ratio (alignlab peak RSS / TRL peak RSS): {', '.join(f'{m:.2f}' for m in memory)}; "
          f"during the steps: {', '.join(f'{m:.2f}' for m in train_mem)}")
    ok = statistics.median(speed) >= target and statistics.median(memory) <= 1.0
    print(f"target (alignlab >= {target:g}x faster at no more memory): {'met' if ok else 'NOT met'}")
    for name in names:
        if runs[0][name]["profile"]:
            print(f"\n--- profile of {name}'s measured steps (run 1) ---\n{runs[0][name]['profile']}")
