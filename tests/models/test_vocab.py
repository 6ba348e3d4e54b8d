import copy
import json

import pytest
import torch

from alignlab.models import SampleConfig, sample, token_logprobs
from alignlab.models.forward import hidden_states, output_logits
from alignlab.models.scoring import build_batch
from alignlab.models.task_vocab import task_vocabulary, vocabulary_coverage
from alignlab.models.vocab import (VocabularySubset, load_vocabulary, restrict_vocabulary, save_vocabulary,
                                   special_ids, vocabulary)

PROMPTS = ["The cat sat on the", "Once upon a time", "Write a story about a dragon."]


@pytest.fixture
def model(tiny):
    model, tokenizer = tiny
    restricted = copy.deepcopy(model)
    yield restricted, tokenizer
    restrict_vocabulary(restricted, None)


def test_restricted_log_probs_are_the_full_ones_renormalised_over_the_kept_set(model):
    model, tokenizer = model
    completions = sample(model, tokenizer, PROMPTS, SampleConfig(max_new_tokens=6, seed=0, alternatives=0))
    ids, mask, target = build_batch([c.prompt_ids for c in completions], [c.token_ids for c in completions],
                                    tokenizer.pad_token_id)
    full = token_logprobs(model, ids, mask, target)
    kept = {int(i) for i in ids.flatten()} | set(range(0, 5000))
    subset = VocabularySubset(kept, model.config.vocab_size, tokenizer)
    # the expected value by hand: log p(x) - log p(S) with p the full softmax at each position
    hidden, _ = hidden_states(model, ids, mask)
    logp = torch.log_softmax(output_logits(model, hidden).float(), -1)  # (B, T, V)
    log_z = torch.logsumexp(logp[..., subset.ids], -1)  # (B, T)
    expected = torch.zeros_like(full)
    expected[:, 1:] = torch.where(target[:, 1:], full[:, 1:] - log_z[:, :-1], 0.0)
    restrict_vocabulary(model, subset)
    assert vocabulary(model) is subset
    restricted = token_logprobs(model, ids, mask, target)
    torch.testing.assert_close(restricted, expected, atol=1e-5, rtol=1e-5)
    assert (restricted[target] > full[target]).all()  # renormalising over fewer tokens raises every one


def test_sampling_under_a_restriction_emits_kept_tokens_only_and_the_whole_set_changes_nothing(model):
    model, tokenizer = model
    config = SampleConfig(max_new_tokens=12, seed=3, alternatives=4, top_k=0, top_p=1.0)
    before = sample(model, tokenizer, PROMPTS, config)
    restrict_vocabulary(model, VocabularySubset(range(model.config.vocab_size), model.config.vocab_size))
    same = sample(model, tokenizer, PROMPTS, config)
    assert [c.token_ids for c in same] == [c.token_ids for c in before]
    kept = set(range(1000, 3000)) | special_ids(tokenizer, model)
    restrict_vocabulary(model, VocabularySubset(kept, model.config.vocab_size, tokenizer))
    for c in sample(model, tokenizer, PROMPTS, config):
        assert set(c.token_ids) <= kept
        assert all(a.id in kept for t in c.tokens for a in t.alternatives)


def test_scoring_a_token_outside_the_set_is_refused_with_its_id(model):
    model, tokenizer = model
    restrict_vocabulary(model, VocabularySubset(range(10, 20), model.config.vocab_size, tokenizer))
    ids, mask, target = build_batch([[2, 10]], [[11, 5000]], tokenizer.pad_token_id)
    with pytest.raises(ValueError, match="token 5000 .* outside the restricted vocabulary of 10 tokens"):
        token_logprobs(model, ids, mask, target)


def test_gradients_reach_the_kept_rows_of_a_trainable_output_layer(model):
    model, tokenizer = model
    restrict_vocabulary(model, VocabularySubset(range(100, 400), model.config.vocab_size, tokenizer))
    ids, mask, target = build_batch([[2, 150, 160]], [[170, 180]], tokenizer.pad_token_id)
    token_logprobs(model, ids, mask, target).sum().backward()
    grad = model.get_output_embeddings().weight.grad
    rows = set(grad.abs().sum(-1).nonzero()[:, 0].tolist())
    # every kept row gets the softmax's gradient; outside them only the (tied) input rows do
    assert rows >= set(range(100, 400)) and rows <= set(range(100, 400)) | {2}
    model.zero_grad()


def test_a_policy_loads_with_a_vocabulary_file_and_its_frozen_reference_shares_it(tmp_path, tiny):
    from alignlab.train.policy import Reference, load_policy

    save_vocabulary(tmp_path / "v.json", VocabularySubset(range(0, 3000), tiny[0].config.vocab_size))
    policy, tokenizer = load_policy("tiny", vocabulary=tmp_path / "v.json")
    assert len(vocabulary(policy)) == 3000
    reference = Reference(policy)
    ids, mask, target = build_batch([[2, 150]], [[170, 180]], tokenizer.pad_token_id)
    torch.testing.assert_close(reference.token_logprobs(ids, mask, target), token_logprobs(policy, ids, mask, target))


def test_task_vocabulary_keeps_text_samples_alternatives_and_specials_and_coverage_measures_it(model, tmp_path):
    model, tokenizer = model
    subset = task_vocabulary(model, tokenizer, ["A dragon guards the lighthouse."], PROMPTS[:2], samples_per_prompt=2,
                             max_new_tokens=8, alternatives=16)
    for token in tokenizer("A dragon guards the lighthouse.", add_special_tokens=False)["input_ids"]:
        assert token in subset
    assert special_ids(tokenizer, model) <= set(subset.to_list())
    assert 50 < len(subset) < model.config.vocab_size
    whole = VocabularySubset(range(model.config.vocab_size), model.config.vocab_size)
    full = vocabulary_coverage(model, tokenizer, whole, PROMPTS, max_new_tokens=8)
    assert full.mass_inside == pytest.approx(1.0) and full.kl_per_token == pytest.approx(0.0, abs=1e-5)
    part = vocabulary_coverage(model, tokenizer, subset, PROMPTS, max_new_tokens=8)
    assert 0 < part.mass_inside < 1 and part.kl_per_token > 0
    assert part.kl_per_token == pytest.approx(-torch.log(torch.tensor(part.mass_inside)).item(), rel=0.5)
    assert vocabulary(model) is None  # measuring restores what was there
    save_vocabulary(tmp_path / "v.json", subset, coverage=part.to_dict())
    assert load_vocabulary(tmp_path / "v.json").to_list() == subset.to_list()
    (tmp_path / "bad.json").write_text(json.dumps({"ids": [1, 2]}))
    with pytest.raises(ValueError, match="field 'vocab_size' is missing"):
        load_vocabulary(tmp_path / "bad.json")
