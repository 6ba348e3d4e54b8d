"""Where alignlab keeps things on disk.

- ALIGNLAB_HOME, when set, holds everything: ``$ALIGNLAB_HOME/cache`` and ``$ALIGNLAB_HOME/runs``.
- Otherwise the model cache follows XDG: ``$XDG_CACHE_HOME/alignlab`` (``~/.cache/alignlab``),
  and runs go to ``$XDG_DATA_HOME/alignlab/runs`` (``~/.local/share/alignlab/runs``).
- ALIGNLAB_CACHE_DIR, ALIGNLAB_RUNS_DIR and ALIGNLAB_LOOM_DIR override one folder alone (the test suite uses
  this to isolate runs while sharing one converted copy of the embedded model).
"""

from __future__ import annotations

import os
from pathlib import Path


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The folder for converted models and other rebuildable files."""
    path = _env_path("ALIGNLAB_CACHE_DIR")
    if path is None:
        home = _env_path("ALIGNLAB_HOME")
        if home is not None:
            path = home / "cache"
        else:
            xdg = _env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
            path = xdg / "alignlab"
    return path


def _data_dir(override: str, name: str) -> Path:
    """``$override``, else ``$ALIGNLAB_HOME/name``, else ``$XDG_DATA_HOME/alignlab/name``."""
    path = _env_path(override)
    if path is None:
        home = _env_path("ALIGNLAB_HOME")
        if home is not None:
            path = home / name
        else:
            xdg = _env_path("XDG_DATA_HOME") or Path.home() / ".local" / "share"
            path = xdg / "alignlab" / name
    return path


def runs_dir() -> Path:
    """The folder that holds one sub-folder per run."""
    return _data_dir("ALIGNLAB_RUNS_DIR", "runs")


def loom_dir() -> Path:
    """The loom's data folder (its SQLite database, training jobs)."""
    return _data_dir("ALIGNLAB_LOOM_DIR", "loom")
