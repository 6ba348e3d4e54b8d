"""Run the same CLI command on 2 processes (torchrun, gloo) and on 1, for equivalence tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

from alignlab.fileio import read_jsonl

BIN = Path(sys.executable).parent


def two_and_one(args: list[str], tmp_path: Path) -> tuple[list[dict], list[dict]]:
    """Metrics lines (with a 'step') of `alignlab ARGS --out one` and of the 2-process run `--out two`."""
    env = {**os.environ, "ALIGNLAB_RUNS_DIR": str(tmp_path / "runs"), "ACCELERATE_USE_CPU": "true",
           "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    two = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "alignlab.cli",
                          *args, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([str(BIN / "alignlab"), *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    runs = {json.loads((r / "config.json").read_text())["config"]["out"]: r for r in (tmp_path / "runs").iterdir()}
    metrics = lambda key: [m for m in read_jsonl(runs[str(tmp_path / key)] / "metrics.jsonl")  # noqa: E731
                           if not m.get("final")]
    return metrics("one"), metrics("two")
