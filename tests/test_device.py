"""--device: every training and sampling command takes it. On a machine without a GPU the CPU
paths run and a request for CUDA is refused with what torch sees; the tests marked ``cuda`` run
the commands on the GPU where torch sees one and are skipped elsewhere."""

from __future__ import annotations

import json

import pytest
import torch

from alignlab.cli import main
from alignlab.models.processes import resolve_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device here")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


def test_device_names_resolve_and_bad_ones_are_refused():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="cuda:N|no CUDA"):
        resolve_device(f"cuda:{torch.cuda.device_count() + 3}")


@no_cuda
def test_asking_for_cuda_without_one_names_what_torch_sees(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALIGNLAB_RUNS_DIR", str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        resolve_device("cuda")
    assert main(["generate", "--model", "tiny", "--device", "cuda", "--max-tokens", "2", "hello"]) == 1
    assert "--device cuda" in capsys.readouterr().err
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Day:", "chosen": " warm", "rejected": " cold"}) + "\n")
    assert main(["dpo", "--data", str(pairs), "--model", "tiny", "--device", "cuda", "--max-steps", "1"]) == 1
    assert "--device cuda" in capsys.readouterr().err


def test_the_cpu_is_taken_when_asked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALIGNLAB_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["generate", "--model", "tiny", "--device", "cpu", "--max-tokens", "3", "--json", "hello"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["tokens"]
    from alignlab.train.loop import accelerator_for

    assert accelerator_for("cpu").device.type == "cpu"


@cuda
def test_generate_score_and_every_trainer_run_on_the_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALIGNLAB_RUNS_DIR", str(tmp_path / "runs"))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Day {i}:", "chosen": " warm and bright",
                                         "rejected": " cold and grey"}) + "\n" for i in range(8)))
    thumbs = tmp_path / "thumbs.jsonl"
    thumbs.write_text("".join(json.dumps({"prompt": f"Day {i}:", "completion": " warm" if i % 2 else " cold",
                                          "label": bool(i % 2)}) + "\n" for i in range(8)))
    demos = tmp_path / "demos.jsonl"
    demos.write_text("".join(json.dumps({"prompt": f"Day {i}:", "completion": " warm and bright"}) + "\n"
                             for i in range(8)))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me about thing 1.\nTell me about thing 2.\n")
    reward = "tests.train.rewards_for_tests:vowel_share"
    commands = [
        ["generate", "--model", "tiny", "--max-tokens", "8", "-n", "4", "hello"],
        ["score", "--model", "tiny", "--prompt", "The capital of France is", "--continuation", " Paris."],
        ["reward", "train", "--data", str(pairs), "--model", "tiny", "--mode", "full", "--max-steps", "2",
         "--batch-size", "4"],
        ["sft", "--data", str(demos), "--model", "tiny", "--max-steps", "2", "--batch-size", "4"],
        ["dpo", "--data", str(pairs), "--model", "tiny", "--max-steps", "2", "--batch-size", "4"],
        ["dpo", "--data", str(thumbs), "--loss", "kto", "--model", "tiny", "--max-steps", "2", "--batch-size", "4"],
        ["ppo", "--prompts", str(prompts), "--reward", reward, "--model", "tiny", "--iterations", "1",
         "--rollout-batch", "4", "--minibatch-size", "2", "--max-new-tokens", "4"],
        ["rloo", "--prompts", str(prompts), "--reward", reward, "--model", "tiny", "--iterations", "1",
         "--max-new-tokens", "4"],
        ["grpo", "--prompts", str(prompts), "--reward", reward, "--model", "tiny", "--iterations", "1",
         "--max-new-tokens", "4"],
        ["bon", "--prompts", str(prompts), "--reward", reward, "--model", "tiny", "--n", "1", "2",
         "--max-new-tokens", "4"],
    ]
    for args in commands:
        assert main([*args, "--device", "cuda"]) == 0, (args, capsys.readouterr().err[-2000:])
