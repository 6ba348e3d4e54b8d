"""Shared fixtures.

Runs are isolated per test session (ALIGNLAB_RUNS_DIR in a temporary folder); the model cache
is the user's own (or ALIGNLAB_CACHE_DIR if set), so the slow tests share one converted copy of
the embedded model across runs instead of converting it each time.

A run folder holds a whole policy (300-500 MB for the embedded model) and the suite makes dozens:
the run folders a passing test made are removed when it ends, so the suite's peak disk use is a
few runs, not all of them (a failing test's runs stay for a look). pyproject.toml also keeps only
the failed tests' tmp_path folders, and only from the last session.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


_OUTCOMES = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    item.stash.setdefault(_OUTCOMES, {})[report.when] = report.outcome
    return report


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


@pytest.fixture(autouse=True)
def _drop_passed_tests_runs(request):
    """Remove the run folders a test made once it has passed (runs made by wider fixtures stay)."""
    runs = Path(os.environ["ALIGNLAB_RUNS_DIR"])
    before = set(os.listdir(runs)) if runs.is_dir() else set()
    yield
    outcomes = request.node.stash.get(_OUTCOMES, {})
    if outcomes.get("call") != "passed" or not runs.is_dir():
        return
    for name in set(os.listdir(runs)) - before:
        shutil.rmtree(runs / name, ignore_errors=True)


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
