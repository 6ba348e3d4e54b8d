"""The output layer's product in either layout: the same logits, a layout measured once per
machine and then read back, and a clear error for a wrong override."""

from __future__ import annotations

import json

import pytest
import torch

from alignlab.models.forward import output_logits
from alignlab.models.kernels import layout


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A cache folder of its own and no layout chosen yet in this process."""
    monkeypatch.setenv("ALIGNLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(layout.ENV, raising=False)
    monkeypatch.setattr(layout, "_CHOSEN", {})
    return tmp_path


def test_both_layouts_give_the_same_logits(tiny, monkeypatch):
    model, _ = tiny
    hidden = torch.randn(24, model.config.hidden_size)  # more rows than the decoding kernel takes
    out = {}
    for form in layout.LAYOUTS:
        monkeypatch.setenv(layout.ENV, form)
        out[form] = output_logits(model, hidden)
        assert out[form].is_contiguous() and out[form].shape == (24, model.config.vocab_size)
    reference = torch.nn.functional.linear(hidden, model.get_output_embeddings().weight)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        reference = torch.tanh(reference / cap) * cap
    for form in layout.LAYOUTS:
        torch.testing.assert_close(out[form], reference, rtol=1e-5, atol=1e-5)


def test_the_layout_is_measured_once_and_then_read_from_the_cache(fresh):
    chosen = layout.logits_layout()
    assert chosen in layout.LAYOUTS
    saved = json.loads((fresh / "kernels" / "logits_layout.json").read_text())
    entry = saved[layout.machine_key()]
    assert entry["layout"] == chosen and entry["ms"]["rows"] > 0 and entry["ms"]["weight"] > 0
    # A later process reads the file rather than measuring again: change it and a fresh start follows it.
    other = "weight" if chosen == "rows" else "rows"
    saved[layout.machine_key()]["layout"] = other
    (fresh / "kernels" / "logits_layout.json").write_text(json.dumps(saved))
    layout._CHOSEN.clear()
    assert layout.logits_layout() == other


def test_a_damaged_layout_file_is_measured_again(fresh):
    (fresh / "kernels").mkdir()
    (fresh / "kernels" / "logits_layout.json").write_text("{not json")
    assert layout.logits_layout() in layout.LAYOUTS
    assert layout.machine_key() in json.loads((fresh / "kernels" / "logits_layout.json").read_text())


def test_a_wrong_override_is_refused_by_name(fresh, monkeypatch):
    monkeypatch.setenv(layout.ENV, "columns")
    with pytest.raises(ValueError, match="ALIGNLAB_LOGITS_LAYOUT='columns'.*'rows'.*'weight'"):
        layout.logits_layout()
    monkeypatch.setenv(layout.ENV, "Weight")
    assert layout.logits_layout() == "weight"
