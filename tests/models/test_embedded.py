"""Slow tests on the embedded Gemma 3 270M (they share one converted copy in the user cache)."""

import math
import shutil

import pytest
import torch

from alignlab.models import SampleConfig, load_model, sample, score

pytestmark = pytest.mark.slow

PARAGRAPH = (
    "The town library opened its doors in the spring of that year. On the first morning, a small "
    "crowd gathered on the steps, waiting for the librarian to unlock the heavy wooden doors. "
    "Inside, the shelves were filled with books about history, science and art, and a reading room "
    "looked out over the river. Children sat on the floor with picture books, while their parents "
    "browsed the newspapers. By the end of the week, more than a thousand people had signed up for "
    "a library card, and the librarian said it was the busiest week she had ever seen."
)


def test_perplexity_of_english_prose_is_below_30(embedded):
    model, tok = embedded
    result = score(model, tok, [""], [PARAGRAPH])[0]
    assert len(result.logprobs) > 80
    assert result.perplexity < 30, result.perplexity


def test_embedded_sampling_batched_equals_unbatched_and_scores_match(embedded):
    model, tok = embedded
    prompts = ["Writing prompt: a dragon who is afraid of fire.\n\nStory:", "The recipe begins with"]
    cfg = SampleConfig(max_new_tokens=12, top_k=64, top_p=0.95, seed=4)
    batched = sample(model, tok, prompts, cfg)
    alone = sample(model, tok, [prompts[1]], cfg, seeds=[5])[0]
    assert alone.token_ids == batched[1].token_ids
    scored = score(model, tok, [c.prompt_ids for c in batched], [c.token_ids for c in batched])
    for c, s in zip(batched, scored):
        assert s.logprobs == pytest.approx([t.logprob for t in c.tokens], abs=2e-3)
    # A fluent base model puts real mass on what it samples.
    mean_p = math.exp(sum(c.logprob for c in batched) / sum(len(c.tokens) for c in batched))
    assert mean_p > 0.05


def test_embedded_model_is_a_plain_float_model(embedded):
    model, _ = embedded
    assert not getattr(model, "is_quantized", False)
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.vocab_size == 262144 and model.config.num_hidden_layers == 18
    assert next(model.parameters()).dtype == torch.float32


def test_a_half_written_embedded_cache_is_rebuilt_not_used(tmp_path, monkeypatch, capsys):
    from alignlab.models.cache import MANIFEST
    from alignlab.models.loading import EMBEDDED, embedded_folder

    shared = embedded_folder()  # the shared conversion (made by the fixture in a full run)
    monkeypatch.setenv("ALIGNLAB_CACHE_DIR", str(tmp_path))
    shutil.copytree(shared.parent.parent / "gguf", tmp_path / "gguf")
    shutil.copytree(shared.parent.parent / "tokenizers", tmp_path / "tokenizers")
    broken = tmp_path / "models" / EMBEDDED
    shutil.copytree(shared, broken)
    (broken / MANIFEST).unlink()  # as if the conversion had been killed before finishing
    with open(broken / "model.safetensors", "r+b") as fh:
        fh.truncate(1000)
    from alignlab.models.cache import reporting

    heard: list[str] = []
    with reporting(heard.append):  # what the loom's page shows while the model converts
        model, tok = load_model(EMBEDDED)
    assert "rebuilding" in capsys.readouterr().err
    steps = [m for m in heard if m.startswith("step ")]
    assert steps[0].startswith("step 1 of 3: de-quantizing") and steps[-1].startswith("step 3 of 3")
    assert heard[-1].startswith("converted in")
    assert (broken / MANIFEST).exists()
    assert (broken / "model.safetensors").stat().st_size == (shared / "model.safetensors").stat().st_size
    result = score(model, tok, [""], [PARAGRAPH])[0]
    assert result.perplexity < 30
