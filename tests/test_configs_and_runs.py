import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from alignlab.configs import add_config_arguments, config_from_args, config_to_dict, field_docs
from alignlab.fileio import append_jsonl, atomic_write_json, read_jsonl
from alignlab.runs import Run, find_run, list_runs, new_run_id


@dataclass
class Example:
    name: str = field(default="", metadata={"positional": True})
    """The thing's name."""
    steps: int = field(default=3, metadata={"aliases": ["--n-steps"], "short": "-s"})
    """How many steps."""
    rate: float = 0.5
    """A rate."""
    mode: Literal["a", "b"] = "a"
    """Which mode."""
    tags: list[str] = field(default_factory=list)
    """Some tags."""
    out: Path | None = None
    """Where to write."""
    fast: bool = False
    """Go fast."""


def parse(args):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    return config_from_args(Example, parser.parse_args(args))


def test_field_docs_are_read_from_the_source():
    docs = field_docs(Example)
    assert docs["steps"] == "How many steps." and docs["fast"] == "Go fast."


def test_options_are_generated_from_the_fields():
    cfg = parse(["thing", "--n-steps", "7", "--rate", "0.1", "--mode", "b", "--tags", "x", "y",
                 "--out", "/tmp/o", "--fast"])
    assert cfg == Example("thing", 7, 0.1, "b", ["x", "y"], Path("/tmp/o"), True)
    assert parse(["-s", "2"]).steps == 2 and parse([]) == Example()
    assert parse(["--tags", "a", "--tags", "b", "c"]).tags == ["a", "b", "c"]
    assert parse([]).tags == [] and parse([]).tags is not parse([]).tags
    assert config_to_dict(cfg)["out"] == "/tmp/o"
    with pytest.raises(SystemExit):
        parse(["--mode", "c"])


def test_help_text_is_the_field_docstring(capsys):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    parser.print_help()
    out = capsys.readouterr().out
    assert "How many steps." in out and "--n-steps" in out and "--no-fast" in out


def test_run_ids_sort_by_time():
    import datetime as dt

    t0 = dt.datetime(2026, 1, 1, 12, 0, 0, 5000, tzinfo=dt.timezone.utc)
    ids = [new_run_id("zeta", t0), new_run_id("alpha", t0 + dt.timedelta(milliseconds=1)),
           new_run_id("beta", t0 + dt.timedelta(seconds=61))]
    assert sorted(ids) == ids


def test_a_run_folder_has_its_files_and_records_failure(tmp_path):
    with Run.create("unit", Example(name="x"), seed=7, root=tmp_path) as run:
        run.log_metrics(1, loss=0.5)
        run.log_sample(prompt="p", text="t")
    info = find_run(run.id, root=tmp_path)
    assert info.state == "finished" and info.config["name"] == "x"
    assert json.loads((run.path / "config.json").read_text())["docs"]["rate"] == "A rate."
    assert info.env["seed"] == 7 and "torch" in info.env["packages"]
    assert info.metrics[0]["loss"] == 0.5 and info.samples == [{"prompt": "p", "text": "t"}]
    with pytest.raises(RuntimeError):
        with Run.create("unit", Example(), root=tmp_path) as failing:
            raise RuntimeError("boom")
    assert find_run(failing.id, root=tmp_path).status["error"] == "RuntimeError: boom"
    assert [r.id for r in list_runs(tmp_path)] == sorted([run.id, failing.id])


def test_find_run_refuses_ambiguous_prefixes(tmp_path):
    a = Run.create("unit", Example(), root=tmp_path)
    Run.create("unit", Example(), root=tmp_path)
    with pytest.raises(LookupError, match="matches 2 runs"):
        find_run(a.id[:8], root=tmp_path)
    assert find_run(str(a.path)).id == a.id


def test_jsonl_tolerates_a_torn_last_line_only(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "a") as fh:
        fh.write('{"a": 2, "b"')  # a writer killed mid-line
    assert read_jsonl(path) == [{"a": 1}]
    path.write_text('{"a": 1}\n{oops\n{"a": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"k": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
