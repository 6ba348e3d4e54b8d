"""A cache folder that is either complete or absent.

A folder is built under a temporary name, given a manifest (every file with its size, and a
fingerprint of what it was built from), then renamed into place. A reader trusts a folder only
if its manifest is there, the fingerprint matches and every listed file has its listed size; a
folder left by a killed process, or damaged later, is removed and rebuilt, never used.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator

MANIFEST = "alignlab-manifest.json"

_LISTENER: ContextVar[Callable[[str], None] | None] = ContextVar("alignlab_build_listener", default=None)


@contextmanager
def reporting(listener: Callable[[str], None]) -> Iterator[None]:
    """Send what a cache build says (the embedded model's first-use conversion, step by step) to
    ``listener`` as well as to stderr, for the builds this context starts (a web page shows it)."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def say(message: str) -> None:
    """Tell the person (stderr, and the listener of ``reporting`` if any) how a build goes."""
    print(f"alignlab: {message}", file=sys.stderr, flush=True)
    listener = _LISTENER.get()
    if listener is not None:
        listener(message)


@contextmanager
def ticking(message: str, every: float = 5.0) -> Iterator[None]:
    """``say(message)`` now, and to the listener every ``every`` seconds with the time so far,
    until the block ends: a long step with no progress of its own still shows it is alive."""
    say(message)
    listener = _LISTENER.get()
    if listener is None:
        yield
        return
    start, done = time.time(), threading.Event()

    def tick() -> None:
        while not done.wait(every):
            listener(f"{message} ({time.time() - start:.0f} s)")

    thread = threading.Thread(target=tick, name="alignlab-build-ticker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def manifest_problem(folder: Path, fingerprint: dict[str, Any]) -> str | None:
    """Why ``folder`` cannot be trusted, or None when it is complete."""
    if not folder.exists():
        return "absent"
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no manifest (a build was interrupted)"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "manifest unreadable"
    if manifest.get("fingerprint") != fingerprint:
        return "built from something else (fingerprint differs)"
    for name, size in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, expected {size}"
    return None


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_folder(target: Path, fingerprint: dict[str, Any], build: Callable[[Path], None],
                  what: str) -> Path:
    """Return ``target`` once it is complete, building it with ``build(tmp_folder)`` if needed.

    Safe against concurrent callers (a file lock) and against a builder killed half-way (the
    half-built folder never has the final name, and stale ones are swept on the next build).
    """
    if manifest_problem(target, fingerprint) is None:
        return target
    with _locked(target.parent / f".{target.name}.lock"):
        problem = manifest_problem(target, fingerprint)
        if problem is None:
            return target
        if problem != "absent":
            print(f"alignlab: cached {what} at {target} is not usable ({problem}); rebuilding it.",
                  file=sys.stderr)
            shutil.rmtree(target)
        for stale in target.parent.glob(f".{target.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = target.parent / f".{target.name}.building-{os.getpid()}-{int(time.time())}"
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = {"fingerprint": fingerprint, "files": files, "built": time.time()}
            with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
