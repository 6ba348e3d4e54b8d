"""The CLI end to end on the tiny model."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignlab.cli import main
from alignlab.runs import list_runs


def run_cli(args, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_from_an_argument_writes_a_run(capsys):
    before = len(list_runs())
    code, out, err = run_cli(["generate", "Hello there", "--model", "tiny", "-n", "2", "--max-tokens", "5",
                              "--color", "never"], capsys)
    assert code == 0, err
    assert out.count("--- sample") == 2 and "Hello there" in out
    runs = list_runs()
    assert len(runs) == before + 1
    run = runs[-1]
    assert run.kind == "generate" and run.state == "finished"
    assert len(run.samples) == 2 and len(run.samples[0]["tokens"]) == 5
    assert run.env["seed"] == 0 and run.env["packages"]["torch"]
    assert run.config["max_new_tokens"] == 5 and run.metrics[0]["tokens"] == 10
    # the tokens' rate leaves out loading the model and a first use's kernel build, reported apart
    assert "tok/s; before that, loading the model" in err
    assert run.metrics[0]["load_seconds"] >= 0 and run.metrics[0]["setup_seconds"] >= 0


def test_generate_json_from_stdin(capsys, monkeypatch):
    code, out, err = run_cli(["generate", "--model", "tiny", "--json", "--max-tokens", "4", "--top-k", "10"],
                             capsys, stdin="Once upon a time\n", monkeypatch=monkeypatch)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 1 and rows[0]["prompt"] == "Once upon a time"
    token = rows[0]["tokens"][0]
    assert set(token) == {"id", "text", "logprob", "sample_logprob", "alternatives"}
    assert len(token["alternatives"]) == 5


def test_generate_from_a_jsonl_file_and_a_bad_file(capsys, tmp_path):
    good = tmp_path / "prompts.jsonl"
    good.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    code, out, _ = run_cli(["generate", "--file", str(good), "--model", "tiny", "--max-tokens", "3", "--json"], capsys)
    assert code == 0 and len(out.splitlines()) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    code, _, err = run_cli(["generate", "--file", str(bad), "--model", "tiny"], capsys)
    assert code == 1 and "bad.jsonl line 2" in err and "'prompt'" in err


def test_generate_refuses_an_unknown_model_listing_the_accepted(capsys):
    code, _, err = run_cli(["generate", "x", "--model", "no-such-model"], capsys)
    assert code == 1 and "no-such-model" in err and "gemma-3-270m" in err and "tiny" in err


def test_score_prints_a_table_and_json(capsys, tiny):
    code, out, err = run_cli(["score", "--model", "tiny", "--prompt", "The sky is", "--continuation", " blue today"], capsys)
    assert code == 0, err
    assert "perplexity" in out and '" blue"' in out
    code, out, _ = run_cli(["score", "--model", "tiny", "--prompt", "The sky is", "--continuation", " blue today",
                            "--json"], capsys)
    row = json.loads(out)
    assert len(row["tokens"]) == 2 and row["total_logprob"] < 0


def test_info_runs_list_and_show(capsys):
    code, out, _ = run_cli(["info", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["packages"]["transformers"].startswith("5.")
    assert set(info["embedded_model"]) == {"gguf", "tokenizer", "model"}
    run_cli(["generate", "abc", "--model", "tiny", "--max-tokens", "2", "--json"], capsys)
    code, out, _ = run_cli(["runs", "list"], capsys)
    assert code == 0 and "generate" in out
    run_id = list_runs()[-1].id
    code, out, _ = run_cli(["runs", "show", run_id[:19]], capsys)
    assert code == 0 and run_id in out and "max_new_tokens" in out
    code, out, _ = run_cli(["runs", "show", run_id, "--json"], capsys)
    assert json.loads(out)["id"] == run_id
    code, _, err = run_cli(["runs", "show", "nope"], capsys)
    assert code == 1 and "no run 'nope'" in err


def test_runs_show_prints_the_samples_every_trainer_writes(capsys, tmp_path):
    from alignlab.runs import Run

    shown = {}
    for kind, sample in [("ppo", {"iteration": 1, "prompt": "p", "response": " a ppo reply", "score": 0.5, "kl": 1.25}),
                         ("bon", {"prompt": "p", "responses": [" the best of n", " another"], "proxy": [1.0, 0.0]})]:
        run = Run.create(kind, {"model": "tiny"}, seed=0)
        run.log_sample(**sample)
        code, out, _ = run_cli(["runs", "show", run.id], capsys)
        text = sample.get("response") or sample["responses"][0]
        assert code == 0 and f'"p" -> "{text}"' in out
        shown[kind] = out
    assert "score 0.500 kl 1.250" in shown["ppo"]


def test_unknown_command_and_help(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "generate" in capsys.readouterr().out
    assert main(["runs"]) == 2


def test_console_script_runs_as_a_program(tmp_path):
    exe = Path(sys.executable).parent / "alignlab"
    env = {**os.environ, "ALIGNLAB_RUNS_DIR": str(tmp_path)}
    proc = subprocess.run([str(exe), "generate", "-", "--model", "tiny", "--max-tokens", "3", "--json"],
                          input="Hi", capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["prompt"] == "Hi"
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.slow
def test_demo_runs_on_the_embedded_model(capsys, embedded):
    code, out, err = run_cli(["demo", "--n", "1", "--max-new-tokens", "8", "--color", "never"], capsys)
    assert code == 0, err
    assert out.count("--- sample") == 3 and "Writing prompt" in out


def test_every_command_and_group_prints_its_help_and_exits_0(capsys):
    from alignlab.cli import COMMANDS

    for key in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([*key.split(), "--help"])
        assert done.value.code == 0, key
        assert f"alignlab {key}" in capsys.readouterr().out, key
    for group in sorted({k.split()[0] for k in COMMANDS if " " in k} - set(COMMANDS)):
        assert main([group, "--help"]) == 0, group
        out = capsys.readouterr().out
        subs = [k.split()[1] for k in COMMANDS if k.startswith(group + " ")]
        assert f"alignlab {group}" in out and all(f"  {s} " in out for s in subs), (group, out)
        assert main([group]) == 2  # a group alone: its help on stderr, and a usage error
        assert "subcommands:" in capsys.readouterr().err


def test_a_normal_generate_prints_no_deprecation_or_future_warning(tmp_path):
    env = {**os.environ, "ALIGNLAB_RUNS_DIR": str(tmp_path / "runs"), "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-m", "alignlab.cli", "generate", "Once upon a time", "--model", "tiny",
                           "--max-new-tokens", "6"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for word in ("FutureWarning", "DeprecationWarning", "deprecated"):
        assert word not in done.stderr, done.stderr[-2000:]
