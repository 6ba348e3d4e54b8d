"""Shared fixtures.

Runs are isolated per test session (ALIGNLAB_RUNS_DIR in a temporary folder); the model cache
is the user's own (or ALIGNLAB_CACHE_DIR if set), so the slow tests share one converted copy of
the embedded model across runs instead of converting it each time.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_runs(tmp_path_factory):
    old = os.environ.get("ALIGNLAB_RUNS_DIR")
    os.environ["ALIGNLAB_RUNS_DIR"] = str(tmp_path_factory.mktemp("runs"))
    os.environ.pop("ALIGNLAB_HOME", None) if "ALIGNLAB_CACHE_DIR" in os.environ else None
    yield
    if old is None:
        os.environ.pop("ALIGNLAB_RUNS_DIR", None)
    else:
        os.environ["ALIGNLAB_RUNS_DIR"] = old


@pytest.fixture(scope="session")
def tiny():
    """The tiny random Gemma 3 (2 layers, hidden 64) with the real tokenizer, float32."""
    from alignlab.models import load_model

    return load_model("tiny", seed=0)


@pytest.fixture(scope="session")
def embedded():
    """The embedded Gemma 3 270M in float32 (converted once into the shared cache)."""
    from alignlab.models import load_model

    return load_model("gemma-3-270m", dtype="float32")
