"""alignlab's process reward model training (`alignlab prm train`, train/prm.py) against TRL 1.13's
PRMTrainer (``trl.experimental.prm``), on the same stepwise records and the same backbone.

The two are different methods, and the benchmark says so rather than hiding it:

    alignlab (train_prm)                           TRL 1.13 PRMTrainer
    the backbone is frozen: ONE forward pass        fine-tunes a token-classification model: the
      without grad over the training records;         backbone and a 2-way head ('score') on the
      the states at each step's last token            final states, trained at each step's last
      (--pooling last; layer --layer, 0 = the         token (the labelled position) by AdamW, one
      final states after the norm) are cached         optimizer step per --batch records, for
    a linear head on the cached, standardised         --trl-epochs passes over the records
      features, fitted by L-BFGS to the optimum
      of mean BCE + l2 ||w||^2 (convex: no
      learning rate, no epochs, no mini-batches)

``--trl-train head`` makes TRL's model the same as alignlab's (the backbone frozen, only 'score'
trained, so both fit a linear function of the same final states at the same positions); TRL then
still runs the backbone on every batch of every epoch and moves the head by AdamW steps, where
alignlab runs it once and solves for the head. ``--trl-train full`` (the default) is how TRL's
PRM trainer is normally used.

The same data: ``make_chains(--chains, --seed)`` arithmetic chains (data/chains.py), each with its
right solution and one planted slip (one step's result off by one, carried on as a person would:
that step wrong, the rest right), judged by ``judge_chain``, written by ``chain_record`` +
``write_feedback`` in alignlab's layout (alignlab reads it) and in TRL's stepwise columns
(prompt / completions / labels; TRL reads it); the prompt is ``chain_prompt`` (--shots worked
examples). The same held-out split (alignlab's ``split``, whole prompts, --eval-fraction): TRL
trains on exactly the records alignlab trains on, in file order (sequential sampler).

The same token ids: by default (``--trl-tokenize shared``) TRL is given alignlab's tokenization
(``encode_steps``: BOS + prompt, each step tokenized on its own and appended) as ``input_ids`` and
a label at each step's last token (-100 elsewhere), so both read the same positions.
``--trl-tokenize own`` lets TRL tokenize its stepwise file (it drops each step's "\\n" and appends
its step_separator "\\n" to every step, so the last step gains a token); the report counts the
records whose ids or labelled positions then differ.

The same model: TRL loads the backbone folder alignlab's loader makes (for 'gemma-3-270m' the
cached safetensors folder under $ALIGNLAB_HOME/cache or ~/.cache/alignlab; for 'tiny' the tiny
model saved with ``save_pretrained``). transformers has no token-classification class for Gemma 3,
so the TRL child composes one from transformers' own parts (GenericForTokenClassification +
Gemma3PreTrainedModel, as transformers builds GemmaForTokenClassification); its 'score' starts at
zero, which is where alignlab's head starts (fit_step_head zeroes it). TRL's batches are padded on
the right, as alignlab's (the saved Gemma tokenizer says 'left'; with rotary positions a row's
shift changes nothing but rounding, and the cost is the same). float32 on both sides, no
gradient checkpointing (TRL's config default is on; --trl-gradient-checkpointing), bf16 off (TRL's
default is on), dropout off (TRL's default), AdamW (--trl-optim) at --lr, linear decay, clipping 1.0.

What is measured (each trainer in its own child process; TRL in its own virtual environment,
``.bench-venvs/trl-1.13``, made on first use: torch (the release .venv runs) installed first and
pinned, then trl==1.13.0 and the transformers release .venv runs, which TRL 1.13 accepts):

- time per --batch records: TRL's wall time of its optimizer steps after --warmup steps, divided
  by the records those steps trained on, times --batch (= its mean s/step when every batch is
  full); alignlab's wall time of its whole training (the feature pass plus the L-BFGS fit),
  divided by its training records, times --batch. alignlab has no per-batch optimizer step: this
  is its training cost per --batch records of data, for one pass, and it needs only one pass.
- time to a trained model: from the child's start (before its imports) to the end of alignlab's
  fit / TRL's last optimizer step, model loading included; alignlab's whole ``train_prm`` call
  (which also evaluates on the training and held-out records and saves the head) is printed beside.
- peak RSS: the child's ``ru_maxrss`` at that moment.
- the loss at the first step: alignlab's first L-BFGS evaluation (over all training steps) and
  TRL's first batch. Both heads start at zero, so both are ln 2 = 0.693147 by construction: equal,
  but that says nothing about positions. The check that does: the loss of alignlab's *fitted*
  head on TRL's first batch, computed by each side's own code (alignlab: its step features, its
  head, BCE; TRL: its token-classification model with alignlab's head folded into 'score'
  (standardisation included), its own loss). They agree only when the setups are matched
  (--pooling last, --layer 0, shared tokenization); otherwise both numbers are printed and the
  report says they are not comparable.
- held-out step accuracy of each trained model (P(right) > 0.5 against the gold label), beside the
  share of right steps (what always answering "right" scores): one TRL epoch at a fine-tuning
  learning rate is not a converged model, so the time-to-model ratio is a lower bound on TRL's
  time to a model as good as alignlab's only where its accuracy is no better.

    .venv/bin/python benchmarks/bench_prm.py --model tiny                 # quick check (a minute or two)
    .venv/bin/python benchmarks/bench_prm.py                              # embedded Gemma 3 270M, TRL full
    .venv/bin/python benchmarks/bench_prm.py --trl-train head             # TRL on alignlab's model (frozen backbone)
    .venv/bin/python benchmarks/bench_prm.py --trl-tokenize own           # TRL tokenizes its stepwise file
    .venv/bin/python benchmarks/bench_prm.py --threads 1 --repeats 2      # steadier on a shared machine

The report ends with the project's target: alignlab at least 1.5x faster than TRL (time per
--batch records) at no more memory (peak RSS).
"""

from __future__ import annotations

import argparse
import json
import math
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
from pathlib import Path

from _common import cpu_counters, optimizer_kind

TRL_VERSION = "1.13.0"
"""The TRL release compared against."""
TARGET = 1.5
"""The project's target for this trainer: alignlab at least this many times faster than TRL, at no more memory."""
TRL_VENV = Path(__file__).resolve().parent.parent / ".bench-venvs" / f"trl-{TRL_VERSION.rsplit('.', 1)[0]}"
"""TRL's own virtual environment, outside .venv, ignored by git."""
LN2 = math.log(2.0)


# -- TRL 1.13 in its own environment ------------------------------------------------------------------

def ensure_trl_venv() -> tuple[str, str]:
    """(TRL's python, a description of its versions); makes TRL_VENV on first use."""
    from importlib.metadata import version

    python = TRL_VENV / "bin" / "python"
    probe = _probe(python)
    if probe is None:
        torch = version("torch").split("+")[0]  # the releases .venv runs, so both sides run the same code
        transformers = version("transformers")
        print(f"making {TRL_VENV} (torch=={torch}, trl=={TRL_VERSION}, transformers=={transformers}, peft, "
              "accelerate, datasets, psutil); first use only, a few minutes...", flush=True)
        if not python.exists():
            _pip_step([sys.executable, "-m", "venv", str(TRL_VENV)])
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        _pip_step(pip + [f"torch=={torch}"])  # first and pinned: a looser requirement fetches a CUDA build
        _pip_step(pip + [f"trl=={TRL_VERSION}", f"transformers=={transformers}", "peft", "accelerate", "datasets",
                         "psutil"])
        probe = _probe(python)
        if probe is None:
            raise SystemExit(f"{TRL_VENV} still lacks trl {TRL_VERSION} or its dependencies after installing; "
                             f"delete {TRL_VENV} and run again")
    return str(python), ", ".join(f"{k} {v}" for k, v in probe.items()) + f" (from {TRL_VENV})"


def _probe(python: Path) -> dict | None:
    """The versions TRL's environment holds, or None where it is missing or incomplete."""
    if not python.exists():
        return None
    code = ("import json, torch, transformers, trl, accelerate, datasets, psutil; "
            "from trl.experimental.prm import PRMTrainer; print(json.dumps({m.__name__: "
            "m.__version__ for m in (trl, transformers, torch, accelerate, datasets)}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1"))
    if out.returncode != 0:
        return None
    versions = json.loads(out.stdout.strip().splitlines()[-1])
    return versions if versions["trl"] == TRL_VERSION else None


def _pip_step(command: list[str]) -> None:
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed; this benchmark needs PyPI once to make {TRL_VENV}")


# -- the parent: data, shared model files, the two children ---------------------------------------

def slipped(chain, at: int) -> str:
    """The chain's solution with the result of step ``at`` off by one, carried on: that step is wrong,
    the later ones (and the answer line, which repeats the carried value) right."""
    from alignlab.data.chains import apply_op

    value, lines = chain.start, []
    for j, (op, number) in enumerate(chain.ops):
        result = apply_op(op, value, number) + (j == at)
        lines.append(f"{value} {op} {number} = {result}\n")
        value = result
    return "".join(lines) + f"Answer: {value}\n"


def prepare(args, work: Path) -> dict:
    """Write the records (both layouts), the backbone folder for TRL, the token ids and the split."""
    from alignlab.data import write_feedback
    from alignlab.data.chains import chain_prompt, chain_record, judge_chain, make_chains
    from alignlab.models.loading import EMBEDDED, TINY, embedded_folder, folder_tokenizer, load_tokenizer, tiny_model
    from alignlab.train.prm import encode_steps, read_steps
    from alignlab.train.reward import split

    rng = random.Random(args.seed)
    records = []
    for chain in make_chains(args.chains, args.seed):
        prompt = chain_prompt(chain, args.shots)
        for response in (chain.solution(), slipped(chain, rng.randrange(len(chain.ops)))):
            records.append(chain_record(chain, judge_chain(chain, response), prompt=prompt))
    rng.shuffle(records)
    alignlab_data, trl_data = work / "steps.jsonl", work / "steps_trl.jsonl"
    write_feedback(alignlab_data, records)
    write_feedback(trl_data, records, style="trl")
    records = read_steps(str(alignlab_data))  # as train_prm reads them
    train_rows, eval_rows = split(len(records), args.eval_fraction, args.seed, [r.prompt for r in records])

    if args.model == EMBEDDED:
        folder = embedded_folder()
        tokenizer = folder_tokenizer(folder)  # what load_model gives alignlab
    elif args.model == TINY:
        folder, tokenizer = work / "hf-backbone", load_tokenizer()
        lm, _ = tiny_model()
        lm.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        del lm
    else:
        folder = Path(args.model).expanduser().resolve()
        tokenizer = folder_tokenizer(folder)
    encoded = []
    for r in records:  # alignlab's tokenization, with a label at each step's last token
        row = encode_steps(tokenizer, r.prompt, r.completions, args.max_length)
        labels = [-100] * len(row.ids)
        for end, label in zip(row.ends, r.labels):
            if end >= 0 and label is not None:
                labels[end] = int(label)
        encoded.append({"input_ids": row.ids, "labels": labels})
    (work / "encoded.json").write_text(json.dumps(encoded))

    def steps_of(rows):
        return [label for i in rows for label in records[i].labels if label is not None]

    lengths = [len(e["input_ids"]) for e in encoded]
    train_steps, eval_steps = steps_of(train_rows), steps_of(eval_rows)
    print(f"data: {len(records)} records ({args.chains} chains x right + slipped), {len(train_rows)} train / "
          f"{len(eval_rows)} held out; {len(train_steps)} + {len(eval_steps)} judged steps, "
          f"{sum(train_steps) / len(train_steps):.3f} of the training steps right; "
          f"{min(lengths)}..{max(lengths)} tokens (mean {statistics.mean(lengths):.0f})", flush=True)
    lr = args.lr or (1e-5 if args.trl_train == "full" else 1e-3)
    return {"model": args.model, "hf_backbone": str(folder), "alignlab_data": str(alignlab_data),
            "trl_data": str(trl_data), "encoded": str(work / "encoded.json"), "train_rows": train_rows,
            "eval_rows": eval_rows, "eval_fraction": args.eval_fraction, "batch": args.batch,
            "warmup": args.warmup, "epochs": args.trl_epochs, "trl_train": args.trl_train, "lr": lr,
            "layer": args.layer, "pooling": args.pooling, "l2": args.l2, "max_length": args.max_length,
            "seed": args.seed, "trl_tokenize": args.trl_tokenize, "trl_optim": args.trl_optim,
            "trl_gradient_checkpointing": args.trl_gradient_checkpointing, "threads": args.threads,
            "share_right_train": sum(train_steps) / len(train_steps),
            "share_right_eval": sum(eval_steps) / len(eval_steps) if eval_steps else math.nan,
            "fitted_head": str(work / "fitted-head.pt"), "work": str(work)}


def compare(args) -> None:
    """Make TRL's environment, prepare the shared files, run both trainers ``--repeats`` times
    (alternating which goes first from the second run on; alignlab goes first in the first, since
    TRL's child reads the head alignlab fitted), report."""
    trl_python, trl_source = ensure_trl_venv()
    work = Path(tempfile.mkdtemp(prefix="bench-prm-"))
    load_before = os.getloadavg()
    try:
        spec = prepare(args, work)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        runs = []
        for i in range(args.repeats):
            run = {}
            for name in (["alignlab", "TRL"] if i % 2 == 0 else ["TRL", "alignlab"]):
                print(f"run {i + 1}/{args.repeats}: {name}...", flush=True)
                python = trl_python if name == "TRL" else sys.executable
                run[name] = run_child(python, name.lower(), spec_path, work)
            runs.append(run)
        report(spec, runs, trl_source, load_before)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_child(python: str, which: str, spec_path: Path, work: Path) -> dict:
    """Run this script's ``--worker which`` with ``python``, offline, and return its result."""
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
    log = work / f"log-{which}.txt"
    with open(log, "w") as fh:
        proc = subprocess.run([python, __file__, "--worker", which, "--spec", str(spec_path), "--result", str(out)],
                              env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"the {which} child failed (exit {proc.returncode}); the end of its log:\n"
                         f"{log.read_text()[-4000:]}")
    return json.loads(out.read_text())


# -- the children -----------------------------------------------------------------------------------

class Clock:
    """Phase marks from the child's start, optimizer-step timestamps (a global hook; TRL's side) and
    the peak RSS a 10 ms poller sees over the child's whole life."""

    def __init__(self):
        self.start = time.perf_counter()
        self.marks: dict[str, float] = {}
        self.steps: list[float] = []
        self.warmup = 0
        self.cpu_mark = self.cpu_end = None
        self.poll_peak = 0.0
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            self.poll_peak = max(self.poll_peak, me.memory_info().rss / 2**20)
            time.sleep(0.01)

    def mark(self, name: str) -> float:
        self.marks[name] = time.perf_counter() - self.start
        return self.marks[name]

    def install(self, warmup: int) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.warmup = warmup
        self.cpu_mark = cpu_counters() if warmup == 0 else None
        register_optimizer_step_post_hook(self._after_step)

    def _after_step(self, optimizer, *_):
        self.steps.append(time.perf_counter() - self.start)
        if len(self.steps) == self.warmup:
            self.cpu_mark = cpu_counters()

    def cores(self) -> dict:
        """Own and other cores busy between cpu_mark and now (now: the end of training)."""
        (w0, busy0, self0), (w1, busy1, self1) = self.cpu_mark, cpu_counters()
        return {"self_cores": (self1 - self0) / (w1 - w0),
                "other_cores": max(0.0, (busy1 - busy0) - (self1 - self0)) / (w1 - w0)}


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_alignlab(spec: dict, clock: Clock) -> dict:
    """`alignlab prm train` (train_prm) on the records, its phases timed by wrapping the module's
    functions (their code is alignlab's, unchanged)."""
    import torch

    import alignlab.models
    import alignlab.train.prm as prm_module
    from alignlab.train.prm import PRMTrainConfig, read_steps, train_prm

    clock.mark("imported")
    phases: dict[str, list[float]] = {}
    seen: dict = {}
    original = {name: getattr(prm_module, name) for name in ("step_table", "fit_step_head", "evaluate_prm",
                                                             "save_prm")}
    load_model = alignlab.models.load_model

    def timed(name, fn, before=None, after=None):
        def wrapper(*a, **kw):
            if before:
                before(*a, **kw)
            t0 = time.perf_counter() - clock.start
            out = fn(*a, **kw)
            phases.setdefault(name, []).append(t0)
            phases[name].append(time.perf_counter() - clock.start)
            if after:
                after(out, *a, **kw)
            return out
        return wrapper

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    fit_losses: list[float] = []

    def recording_bce(*a, **kw):
        out = bce(*a, **kw)
        if torch.is_grad_enabled():  # the closure's evaluations, not the final no-grad one
            fit_losses.append(float(out.detach()))
        return out

    def before_fit(prm, features, labels, l2):
        seen.update(prm=prm, n_features=len(labels))
        clock.cpu_mark = clock.cpu_mark or cpu_counters()
        torch.nn.functional.binary_cross_entropy_with_logits = recording_bce

    def after_fit(out, *a, **kw):
        torch.nn.functional.binary_cross_entropy_with_logits = bce
        seen["trained_at"] = clock.mark("trained")
        seen["maxrss_trained"] = maxrss_mb()
        seen["cores"] = clock.cores()
        seen["fit"] = out

    def before_features(*a, **kw):
        if "step_table" not in phases:  # the first call is the training features; later ones read the cache
            clock.cpu_mark = cpu_counters()

    prm_module.step_table = timed("step_table", original["step_table"], before_features)
    prm_module.fit_step_head = timed("fit_step_head", original["fit_step_head"], before_fit, after_fit)
    prm_module.evaluate_prm = timed("evaluate_prm", original["evaluate_prm"])
    prm_module.save_prm = timed("save_prm", original["save_prm"])
    alignlab.models.load_model = timed("load_model", load_model)
    config = PRMTrainConfig(data=spec["alignlab_data"], model=spec["model"], dtype="float32", layer=spec["layer"],
                            pooling=spec["pooling"], l2=spec["l2"], max_length=spec["max_length"],
                            eval_fraction=spec["eval_fraction"], seed=spec["seed"])
    run = train_prm(config, progress=False)
    done = clock.mark("done")
    maxrss_done = maxrss_mb()
    summary = json.loads((run.path / "summary.json").read_text())
    records = read_steps(spec["alignlab_data"])
    if [i for i in range(len(records)) if i not in set(spec["eval_rows"])] != spec["train_rows"]:
        raise RuntimeError("train_prm's held-out split differs from the benchmark's")

    # Unmeasured checks: alignlab's fitted head on TRL's first batch, by alignlab's own code.
    prm = seen["prm"]
    first = [records[i] for i in spec["train_rows"][:spec["batch"]]]
    with torch.no_grad():
        x, y, _ = original["step_table"](prm, first)
        first_batch_fitted = float(bce(prm.logits(x), y.float()))
    if not Path(spec["fitted_head"]).exists():
        torch.save({"weight": prm.head.weight.detach().clone(), "bias": prm.head.bias.detach().clone(),
                    "mean": prm.feature_mean.clone(), "std": prm.feature_std.clone()}, spec["fitted_head"])
    features_s = phases["step_table"][1] - phases["step_table"][0]
    fit_s = phases["fit_step_head"][1] - phases["fit_step_head"][0]
    n_train = len(spec["train_rows"])
    return {"train_s": features_s + fit_s, "features_s": features_s, "fit_s": fit_s,
            "per_batch_s": (features_s + fit_s) * spec["batch"] / n_train, "records_trained": n_train,
            "trained_at_s": seen["trained_at"], "load_s": phases["load_model"][1] - phases["load_model"][0],
            "imported_at_s": clock.marks["imported"], "command_s": done, "maxrss_mb": seen["maxrss_trained"],
            "maxrss_command_mb": maxrss_done, "poll_peak_mb": clock.poll_peak, **seen["cores"],
            "first_loss": fit_losses[0], "fit_evaluations": len(fit_losses),
            "fit_final_loss": seen["fit"]["train_loss"], "steps_fitted": seen["n_features"],
            "first_batch_fitted_loss": first_batch_fitted,
            "eval_step_accuracy": summary.get("eval/step_accuracy", math.nan),
            "train_step_accuracy": summary.get("train/step_accuracy", math.nan),
            "optimizer": "LBFGS (strong Wolfe) on the head, full batch", "trainable": prm.head.weight.numel() + 1,
            "forwards": "one no-grad pass over the training records (batches of 16, sorted by length)"}


def token_classifier(folder: str, num_labels: int = 2):
    """A token-classification model of the backbone in ``folder`` ('score' new): transformers' Auto
    class, or for Gemma 3 text (which transformers gives no such class) one composed as transformers
    composes GemmaForTokenClassification."""
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification

    if AutoConfig.from_pretrained(folder).model_type == "gemma3_text":
        from transformers import Gemma3TextConfig
        from transformers.modeling_layers import GenericForTokenClassification
        from transformers.models.gemma3.modeling_gemma3 import Gemma3PreTrainedModel

        class Gemma3TextForTokenClassification(GenericForTokenClassification, Gemma3PreTrainedModel):
            config_class = Gemma3TextConfig  # not an annotation: this module's are strings, which transformers evaluates
            input_modalities = ("text",)

        cls = Gemma3TextForTokenClassification
    else:
        cls = AutoModelForTokenClassification
    return cls.from_pretrained(folder, num_labels=num_labels, dtype=torch.float32)


def worker_trl(spec: dict, clock: Clock) -> dict:
    import torch
    import transformers
    import trl

    if trl.__version__ != TRL_VERSION or not Path(trl.__file__).resolve().is_relative_to(TRL_VENV):
        raise SystemExit(f"the TRL child imported trl {trl.__version__} from {trl.__file__}; it needs "
                         f"{TRL_VERSION} from {TRL_VENV}")
    from datasets import Dataset, load_dataset
    from transformers import AutoTokenizer
    from trl.experimental.prm import PRMConfig, PRMTrainer

    clock.mark("imported")
    folder = spec["hf_backbone"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "right"  # as alignlab pads (this Gemma tokenizer says 'left'; the report prints it)
    model = token_classifier(folder)
    with torch.no_grad():  # alignlab's head starts at zero: P(right) = 0.5 at every step
        model.score.weight.zero_()
        model.score.bias.zero_()
    if spec["trl_train"] == "head":
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("score."))
    clock.mark("loaded")

    train_rows, eval_rows = spec["train_rows"], spec["eval_rows"]
    if spec["trl_tokenize"] == "shared":
        encoded = json.loads(Path(spec["encoded"]).read_text())
        as_dataset = lambda rows: Dataset.from_dict({k: [encoded[i][k] for i in rows]  # noqa: E731
                                                     for k in ("input_ids", "labels")})
        train_set, eval_set = as_dataset(train_rows), as_dataset(eval_rows)
    else:
        raw = load_dataset("json", data_files=spec["trl_data"], split="train")
        train_set, eval_set = raw.select(train_rows), raw.select(eval_rows)

    losses: list[float] = []

    class Recording(PRMTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            losses.append(float((out[0] if return_outputs else out).detach()))
            return out

    args = PRMConfig(
        output_dir=str(Path(spec["work"]) / "trl-out"), per_device_train_batch_size=spec["batch"],
        gradient_accumulation_steps=1, num_train_epochs=spec["epochs"], max_steps=-1, learning_rate=spec["lr"],
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim=spec["trl_optim"],
        bf16=False, fp16=False, gradient_checkpointing=spec["trl_gradient_checkpointing"],
        max_length=spec["max_length"], logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none",
        disable_tqdm=True, seed=spec["seed"], data_seed=spec["seed"], train_sampling_strategy="sequential",
        dataloader_num_workers=0, dataloader_pin_memory=False, use_cpu=not torch.cuda.is_available())
    trainer = Recording(model=model, args=args, train_dataset=train_set, processing_class=tokenizer)
    tokenized = trainer.train_dataset  # TRL's own tokenization in 'own' mode, alignlab's in 'shared'
    clock.mark("trainer")
    clock.install(spec["warmup"])
    trainer.train()
    trained_at = clock.steps[-1]
    maxrss = maxrss_mb()
    cores = clock.cores()
    clock.mark("train returned")

    # Step times after warm-up, per the records they trained on (the last batch of an epoch may be short).
    batch, n = spec["batch"], len(train_rows)
    sizes = [min(batch, n - s * batch) for s in range(math.ceil(n / batch))] * spec["epochs"]
    if len(clock.steps) != len(sizes):
        raise RuntimeError(f"TRL made {len(clock.steps)} optimizer steps; expected {len(sizes)}")
    if len(sizes) <= spec["warmup"]:
        raise SystemExit(f"TRL makes only {len(sizes)} steps, all warm-up; give more --chains or fewer --warmup")
    times = [clock.steps[0] - clock.marks["trainer"]] + [b - a for a, b in zip(clock.steps, clock.steps[1:])]
    measured, records = times[spec["warmup"]:], sizes[spec["warmup"]:]
    per_batch = sum(measured) / sum(records) * batch

    # Unmeasured checks: held-out step accuracy of the trained model; alignlab's fitted head on the first batch.
    model = trainer.model.eval()
    optimizer = optimizer_kind(trainer.optimizer)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    collate = trainer.data_collator

    def labelled_logits(rows):
        out = []
        with torch.no_grad():
            for s in range(0, len(rows), batch):
                b = collate([{k: rows[i][k] for k in ("input_ids", "labels")} for i in range(s, min(s + batch,
                                                                                                    len(rows)))])
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                keep = b["labels"] != -100
                out.append((logits[keep], b["labels"][keep]))
        return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])

    eval_accuracy = math.nan
    if len(eval_set):
        if spec["trl_tokenize"] == "own":
            eval_set = eval_set.map(PRMTrainer.tokenize_row, remove_columns=eval_set.column_names, fn_kwargs=dict(
                tokenizer=tokenizer, step_separator=args.step_separator, max_length=args.max_length,
                max_completion_length=args.max_completion_length, train_on_last_step_only=False, is_eval=True))
        logits, labels = labelled_logits(eval_set)
        eval_accuracy = float((logits.argmax(-1) == labels).float().mean())
    first_batch_fitted = None
    if Path(spec["fitted_head"]).exists():  # on the untrained backbone, reloaded: fine-tuning has moved the trained one
        del trainer, model
        model = token_classifier(folder).eval()
        head = torch.load(spec["fitted_head"])
        w = head["weight"][0] / head["std"]  # the standardisation folded into 'score'; class 1 = right
        with torch.no_grad():
            model.score.weight.zero_()
            model.score.bias.zero_()
            model.score.weight[1].copy_(w)
            model.score.bias[1] = head["bias"][0] - (w * head["mean"]).sum()
            b = collate([{k: tokenized[i][k] for k in ("input_ids", "labels")} for i in range(min(batch, n))])
            first_batch_fitted = float(model(**b).loss)
    encoding = [{"input_ids": list(r["input_ids"]), "labelled": [i for i, x in enumerate(r["labels"]) if x != -100]}
                for r in tokenized]
    return {"per_batch_s": per_batch, "s_per_step": statistics.mean(measured), "median_s": statistics.median(measured),
            "step_s": times, "records_trained": sum(sizes), "steps": len(sizes), "train_s": trained_at -
            clock.marks["trainer"], "trained_at_s": trained_at, "imported_at_s": clock.marks["imported"],
            "load_s": clock.marks["loaded"] - clock.marks["imported"], "maxrss_mb": maxrss,
            "poll_peak_mb": clock.poll_peak, **cores, "losses": losses, "first_loss": losses[0],
            "first_batch_fitted_loss": first_batch_fitted, "eval_step_accuracy": eval_accuracy,
            "optimizer": optimizer, "trainable": trainable,
            "forwards": f"a forward {'and backward ' if spec['trl_train'] == 'full' else ''}pass per batch of "
                        f"{batch} records, every epoch", "padding_side": padding_side, "encoding": encoding,
            "versions": f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}"}


def run_worker(which: str, spec_path: str, result_path: str) -> None:
    """The child's whole life: read the spec, train, write the result."""
    clock = Clock()  # started before the heavy imports: "time to trained model" includes them
    spec = json.loads(Path(spec_path).read_text())
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    result = {"alignlab": worker_alignlab, "trl": worker_trl}[which](spec, clock)
    result["threads"] = torch.get_num_threads()
    Path(result_path).write_text(json.dumps(result))
    os._exit(0)  # skip interpreter teardown


# -- the report -------------------------------------------------------------------------------------

def report(spec: dict, runs: list[dict[str, dict]], trl_source: str, load_before: tuple) -> None:
    names = ["alignlab", "TRL"]
    a0, t0 = runs[0]["alignlab"], runs[0]["TRL"]
    print(f"\nPRM: model {spec['model']}; alignlab layer {spec['layer']} pooling {spec['pooling']} l2 {spec['l2']:g} "
          f"(L-BFGS to the optimum); TRL {spec['trl_train']} fine-tuning, {spec['epochs']} epoch(s), batch "
          f"{spec['batch']} records, lr {spec['lr']:g} linear, tokenization {spec['trl_tokenize']}; float32; "
          f"{trl_source}")
    for name in names:
        r = runs[0][name]
        print(f"  {name}: {r['optimizer']}, {r['trainable']:,} trainable parameters, {r['threads']} torch threads; "
              f"{r['forwards']}")
    print(f"\n{'run':<4} {'trainer':<9} {'s/' + str(spec['batch']) + ' records':>14} {'train s':>8} "
          f"{'start->trained s':>17} {'peak RSS MB':>12} {'first loss':>11} {'own cores':>10} {'others':>7}")
    for i, run in enumerate(runs, 1):
        for name in names:
            r = run[name]
            print(f"{i:<4} {name:<9} {r['per_batch_s']:>14.3f} {r['train_s']:>8.1f} {r['trained_at_s']:>17.1f} "
                  f"{r['maxrss_mb']:>12.0f} {r['first_loss']:>11.6f} {r['self_cores']:>10.2f} "
                  f"{r['other_cores']:>7.2f}")
    load = lambda t: "/".join(f"{x:.2f}" for x in t)  # noqa: E731
    print(f"(s/{spec['batch']} records: TRL's optimizer steps after {spec['warmup']} warm-up step(s), time per "
          f"record x {spec['batch']}; alignlab's feature pass + fit, time per training record x {spec['batch']}. "
          "train s: the same work in total (TRL: all its steps). start->trained: child start (before imports) to "
          "the trained head / TRL's last step. peak RSS: ru_maxrss then. own cores / others: CPU-seconds per "
          f"second of training, this child / the rest of the machine. {os.cpu_count()} cores; load average "
          f"before {load(load_before)}, after {load(os.getloadavg())})")
    print(f"\nalignlab phases (run 1): imports {a0['imported_at_s']:.1f} s, model load {a0['load_s']:.1f} s, features "
          f"{a0['features_s']:.1f} s ({a0['records_trained']} records), fit {a0['fit_s']:.2f} s "
          f"({a0['fit_evaluations']} loss evaluations, {a0['steps_fitted']} steps); the whole train_prm command "
          f"(+ evaluation on train and held-out records, save) ends at {a0['command_s']:.1f} s, peak RSS "
          f"{a0['maxrss_command_mb']:.0f} MB")
    print(f"TRL phases (run 1): imports {t0['imported_at_s']:.1f} s, model load {t0['load_s']:.1f} s, "
          f"{t0['steps']} optimizer steps over {t0['records_trained']} records in {t0['train_s']:.1f} s "
          f"(mean {t0['s_per_step']:.2f} s/step after warm-up, median {t0['median_s']:.2f}); steps: "
          f"{' '.join(f'{x:.2f}' for x in t0['step_s'])}")
    print(f"TRL loss per step: {' '.join(f'{x:.4f}' for x in t0['losses'])}")

    print(f"\nloss at the first step: alignlab {a0['first_loss']:.6f} (all {a0['steps_fitted']} training steps), TRL "
          f"{t0['first_loss']:.6f} (its first batch); ln 2 = {LN2:.6f}: equal by construction, both heads start at 0")
    matched = spec["pooling"] == "last" and spec["layer"] == 0 and spec["trl_tokenize"] == "shared"
    fa, ft = a0["first_batch_fitted_loss"], t0["first_batch_fitted_loss"]
    if ft is None:
        print("alignlab's fitted head on TRL's first batch: TRL ran before any alignlab run fitted one; not checked")
    else:
        print(f"alignlab's fitted head on TRL's first batch, each side's own code: alignlab {fa:.6f}, TRL {ft:.6f}, "
              f"difference {fa - ft:+.2e}" + ("" if matched else
                                               " (NOT comparable: alignlab "
                                               + ", ".join(x for x, on in (
                                                   (f"pools '{spec['pooling']}'", spec["pooling"] != "last"),
                                                   (f"reads layer {spec['layer']}", spec["layer"] != 0),
                                                   ("tokenizes differently", spec["trl_tokenize"] != "shared"))
                                                   if on) + "; TRL reads the final states at its labelled tokens)"))
    print(f"alignlab's fitted loss on all its training steps: {a0['fit_final_loss']:.6f} (the head's optimum, "
          f"l2 {spec['l2']:g}); TRL's last batch loss: {t0['losses'][-1]:.6f}")
    mine = json.loads(Path(spec["encoded"]).read_text())
    theirs = t0["encoding"]
    mine = [mine[i] for i in spec["train_rows"]]
    ids_differ = sum(m["input_ids"] != t["input_ids"] for m, t in zip(mine, theirs))
    extended = sum(m["input_ids"] != t["input_ids"] and t["input_ids"][:len(m["input_ids"])] == m["input_ids"]
                   for m, t in zip(mine, theirs))
    labels_differ = sum([i for i, x in enumerate(m["labels"]) if x != -100] != t["labelled"]
                        for m, t in zip(mine, theirs))
    last_only = sum([i for i, x in enumerate(m["labels"]) if x != -100][:-1] == t["labelled"][:-1]
                    and [i for i, x in enumerate(m["labels"]) if x != -100] != t["labelled"] for m, t in zip(mine, theirs))
    print(f"token ids TRL trained on ({spec['trl_tokenize']}): {ids_differ} of {len(mine)} records differ from "
          f"alignlab's ({extended} only by tokens appended at the end), {labels_differ} have other labelled positions "
          f"({last_only} only the last step's); TRL's tokenizer padding side was '{t0['padding_side']}' "
          "(set to 'right')")
    print(f"held-out step accuracy: alignlab {a0['eval_step_accuracy']:.3f}, TRL {t0['eval_step_accuracy']:.3f} "
          f"after {spec['epochs']} epoch(s); always 'right' scores {spec['share_right_eval']:.3f}")

    speed = [run["TRL"]["per_batch_s"] / run["alignlab"]["per_batch_s"] for run in runs]
    whole = [run["TRL"]["trained_at_s"] / run["alignlab"]["trained_at_s"] for run in runs]
    memory = [run["TRL"]["maxrss_mb"] / run["alignlab"]["maxrss_mb"] for run in runs]
    print(f"\nspeed ratio per {spec['batch']} records (TRL / alignlab): {', '.join(f'{s:.2f}x' for s in speed)}"
          + (f"  (median {statistics.median(speed):.2f}x)" if len(runs) > 1 else ""))
    print(f"time-to-trained-model ratio (TRL start->trained / alignlab's; TRL {spec['epochs']} epoch(s), imports and "
          f"loading included): {', '.join(f'{s:.2f}x' for s in whole)}")
    print(f"memory ratio (TRL peak RSS / alignlab peak RSS; >= 1: alignlab uses no more): "
          f"{', '.join(f'{m:.2f}' for m in memory)}")
    met = min(speed) >= TARGET and min(memory) >= 1.0
    print(f"target: >= {TARGET:g}x TRL's speed per {spec['batch']} records at no more memory (every run): "
          f"{'met' if met else 'NOT met'}; by time to a trained model: "
          f"{'met' if min(whole) >= TARGET and min(memory) >= 1.0 else 'NOT met'}")
    print(f"(different methods: alignlab fits a head on a frozen backbone's cached states, TRL {spec['trl_train']}-"
          "fine-tunes; the ratios compare the cost of each tool's way of training a PRM on these records, not the "
          "same arithmetic)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", help="'gemma-3-270m' (default), 'tiny' or a local HF folder")
    parser.add_argument("--chains", type=int, default=40, help="chains; each gives a right and a slipped record")
    parser.add_argument("--shots", type=int, default=4, help="worked examples in each prompt (chain_prompt)")
    parser.add_argument("--eval-fraction", type=float, default=0.25, help="records held out, by prompt")
    parser.add_argument("--batch", type=int, default=8, help="records per TRL optimizer step")
    parser.add_argument("--warmup", type=int, default=1, help="TRL steps left out of its time per step")
    parser.add_argument("--trl-train", default="full", choices=["full", "head"],
                        help="full: TRL fine-tunes the whole model (its usual use); head: backbone frozen, as alignlab")
    parser.add_argument("--trl-epochs", type=int, default=1, help="TRL's passes over the training records")
    parser.add_argument("--lr", type=float, default=0.0, help="TRL's learning rate (0: 1e-5 full, TRL's default; "
                                                                "1e-3 head)")
    parser.add_argument("--layer", type=int, default=0, help="alignlab's layer (0: final states, as TRL's head)")
    parser.add_argument("--pooling", default="last", choices=["last", "mean"],
                        help="alignlab's pooling ('last' reads what TRL's head reads; 'mean' is alignlab's default "
                             "and costs the same)")
    parser.add_argument("--l2", type=float, default=1.0, help="alignlab's L2 penalty (its default)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--trl-tokenize", default="shared", choices=["shared", "own"],
                        help="shared: TRL gets alignlab's token ids and step ends; own: TRL tokenizes its file")
    parser.add_argument("--trl-optim", default="adamw_torch_fused", help="TRL's optim (its default)")
    parser.add_argument("--trl-gradient-checkpointing", action="store_true", help="TRL's default; off here")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in each child (0: torch's default, one per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="run both trainers this many times, alternating order")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker, args.spec, args.result)
    if args.warmup < 0 or args.trl_epochs < 1 or args.batch < 1:
        parser.error("--warmup must be 0 or more, --trl-epochs and --batch at least 1")
    compare(args)


if __name__ == "__main__":
    main()
