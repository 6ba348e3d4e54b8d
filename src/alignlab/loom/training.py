"""Training from the loom: a reward model, DPO or a process reward model on what the loom recorded.

The recorded feedback is exported (loom/export.py) into the job's folder and the ordinary
command (`alignlab reward train`, `alignlab dpo` or `alignlab prm train`) runs on those files in a
child process, so the web app never waits on it. The job's state and progress (read from the
child's progress bar) are kept in the store's ``jobs`` table; when the run succeeds its result is
added to the loom's models (a policy generates beside the base model; a reward model scores
nodes; a process reward model gives each step of a node its P(right)).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from alignlab.loom import schema as t
from alignlab.loom.events import Invalid, NotFound
from alignlab.loom.ids import new_id
from alignlab.loom.store import Store

TRAIN_KINDS = ("reward", "dpo", "prm")

PROGRESS = re.compile(r"(\d+)/(\d+) \[[^\]\r\n]*(?:step/s|s/step)")
"""Optimizer steps in the training bar (unit 'step'), not the weight-loading or feature bars."""

EXTRA = {
    "reward": ("--lr", "--epochs", "--batch-size", "--weight-decay", "--warmup-steps", "--max-grad-norm", "--seed",
               "--max-length", "--pooling", "--layer", "--standardize", "--label-noise", "--head-l2",
               "--eval-fraction", "--early-stop", "--ensemble", "--lora-r", "--lora-alpha", "--last-layers"),
    "dpo": ("--lr", "--epochs", "--batch-size", "--weight-decay", "--warmup-steps", "--max-grad-norm", "--seed",
            "--max-length", "--loss", "--beta", "--label-noise", "--sft-weight", "--grad-accum", "--lora-r",
            "--lora-alpha", "--add-eos"),
    "prm": ("--layer", "--pooling", "--l2", "--aggregate", "--max-length", "--eval-fraction", "--seed", "--dtype"),
}
"""Options a loom may pass on to each training command (``extra``): its hyperparameters, not its
files (--data, --out, --resume) or anything else on the machine."""


@dataclass
class TrainRequest:
    kind: str
    """'reward' (a reward model from comparisons, rankings, process pairs, thumbs, ratings, edits, demonstrations),
    'dpo', or 'prm' (a process reward model from judged steps)."""
    model: str = ""
    """The model to start from (default: the loom's first model)."""
    trees: list[str] | None = None
    """Trees whose feedback to use (default: all)."""
    data: list[str] = field(default_factory=list)
    """Which exports to train on (see loom/export.py KINDS); empty: pairs and process, or steps for prm."""
    max_steps: int = 20
    """Optimizer steps (not prm's: its head is fitted to the optimum)."""
    lora: bool = True
    """DPO: train LoRA adapters (fast); False: the whole model."""
    mode: str = "head"
    """Reward model: what trains (head, last, lora, full)."""
    extra: list[str] = field(default_factory=list)
    """More options passed to the command as they are, e.g. ['--beta', '0.2']."""

    def check(self) -> None:
        from alignlab.loom.export import KINDS

        if self.kind not in TRAIN_KINDS:
            raise Invalid(f"'kind' is {self.kind!r}; train 'reward', 'dpo' or 'prm'", field="kind")
        if not isinstance(self.data, list):
            raise Invalid("'data' must be a list of export names", field="data")
        if not self.data:
            self.data = ["steps"] if self.kind == "prm" else ["pairs", "process"]
        bad = [d for d in self.data if d not in KINDS]
        if bad:
            raise Invalid(f"'data' must name exports among {', '.join(KINDS)}; got {self.data}", field="data")
        if self.kind == "prm" and self.data != ["steps"]:
            raise Invalid(f"a process reward model trains on judged steps: use data ['steps'], not {self.data}",
                          field="data")
        if self.kind != "prm" and "steps" in self.data:
            raise Invalid("step judgements train a process reward model, not a reward model or DPO: train kind "
                          "'prm' (alignlab loom train --kind prm, or 'Train process model' in the page)",
                          field="data")
        if self.kind == "dpo" and any(d not in ("pairs", "process") for d in self.data):
            raise Invalid("DPO trains on preference pairs: use data 'pairs' and/or 'process'", field="data")
        if not isinstance(self.max_steps, int) or not 1 <= self.max_steps <= 100000:
            raise Invalid("'max_steps' must be an integer from 1 to 100000", field="max_steps")
        if not all(isinstance(x, str) for x in self.extra):
            raise Invalid("'extra' must be a list of strings", field="extra")
        for x in self.extra:
            flag = x.split("=", 1)[0]
            if flag.startswith("-") and flag not in EXTRA[self.kind]:
                raise Invalid(f"'extra' passes {flag}, which a loom may not set for {self.kind} training; allowed: "
                              f"{', '.join(EXTRA[self.kind])}", field="extra")
        if self.extra and not self.extra[0].startswith("--"):
            raise Invalid(f"'extra' must start with an option (e.g. ['--lr', '1e-4']), not {self.extra[0]!r}",
                          field="extra")


def _now() -> datetime:
    return datetime.now(UTC)


def prepare(store: Store, spec: TrainRequest, folder: Path, base_model: str) -> list[str]:
    """Export the data into ``folder`` and return the command line to run."""
    from alignlab.data.formats import write_feedback
    from alignlab.loom.export import records

    spec.check()
    files, total, exported = [], 0, {}
    for kind in spec.data:
        found, _ = records(store, kind, spec.trees)
        exported[kind] = found
        if found:
            path = folder / f"{kind}.jsonl"
            write_feedback(path, found)
            files.append(str(path))
            total += len(found)
    if not files:
        what = "judge some steps of a node first" if spec.kind == "prm" else "compare or rank some continuations first"
        raise Invalid(f"the loom has recorded no {' or '.join(spec.data)} yet: {what}", field="data")
    out = folder / "result"
    command = [sys.executable, "-m", "alignlab.cli"]
    if spec.kind == "prm":
        # Whole responses the model later scores (as a reward) are cut the way most judged ones were.
        splits = Counter(r.meta.get("split_by", "lines") for r in exported["steps"])
        command += ["prm", "train", "--data", files[0], "--model", base_model, "--split-by",
                    splits.most_common(1)[0][0], "--out", str(out)]
    elif spec.kind == "reward":
        command += ["reward", "train", "--data", ",".join(files), "--model", base_model, "--mode", spec.mode,
                    "--max-steps", str(spec.max_steps), "--out", str(out)]
    else:
        command += ["dpo", "--data", ",".join(files), "--model", base_model, "--max-steps", str(spec.max_steps),
                    "--out", str(out), "--kl-prompts", "0"] + (["--lora"] if spec.lora else [])
    return command + list(spec.extra)


def start(app, spec: TrainRequest, author: str) -> dict:
    """Start a training job in the background; returns the job."""
    store: Store = app.state.store
    base = spec.model or app.state.models.default()
    job_id = new_id()
    folder = Path(app.state.settings.data_dir) / "jobs" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    try:
        command = prepare(store, spec, folder, base)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a refused request leaves nothing behind
        raise
    at = _now()
    with store.engine.begin() as c:
        c.execute(t.jobs.insert().values(id=job_id, kind=spec.kind, state="running", progress=0.0, message="starting",
                                          config={**asdict(spec), "model": base, "command": command[3:]},
                                          result=None, author=author, created_at=at, updated_at=at))
    thread = threading.Thread(target=_watch, args=(app, job_id, command, folder, spec.kind, author), daemon=True,
                              name=f"loom-train-{job_id}")
    thread.start()
    app.state.jobs[job_id] = thread
    return job(app, job_id)


def _update(store: Store, job_id: str, **values) -> None:
    with store.engine.begin() as c:
        c.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(updated_at=_now(), **values))


def _watch(app, job_id: str, command: list[str], folder: Path, kind: str, author: str = "loom") -> None:
    store: Store = app.state.store
    log = folder / "log.txt"
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, bufsize=1)
        buffer, last = "", 0.0
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read(256)
            if not chunk:
                break
            fh.write(chunk)
            buffer = (buffer + chunk)[-2000:]
            found = PROGRESS.findall(buffer)
            if found:
                done, total = map(int, found[-1])
                progress = min(1.0, done / max(total, 1))
                if progress - last >= 0.02:
                    last = progress
                    _update(store, job_id, progress=progress, message=f"step {done} of {total}")
        code = proc.wait()
    if code != 0:
        tail = log.read_text(encoding="utf-8")[-600:]
        _update(store, job_id, state="failed", message=f"exited with status {code}: {tail.strip()[-300:]}")
        return
    result = folder / "result"
    try:
        model = app.state.models.add(str(result), {"reward": "reward", "prm": "process"}.get(kind), author=author)
    except Exception as err:  # the run succeeded; report why its result could not be added
        _update(store, job_id, state="failed", progress=1.0, message=f"trained, but not loadable: {err}")
        return
    _update(store, job_id, state="done", progress=1.0, message="done", result={"path": str(result), "model": model})


def jobs(app) -> list[dict]:
    with app.state.store.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(sa.select(t.jobs).order_by(t.jobs.c.id.desc()))]


def job(app, job_id: str) -> dict:
    with app.state.store.engine.connect() as c:
        row = c.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).first()
    if row is None:
        raise NotFound(f"no job with id {job_id!r}", field="job_id")
    return dict(row._mapping)
