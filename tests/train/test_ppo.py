"""PPO on a learnable toy: an SFT'd tiny model that writes words from a list of ten, rewarded for 'cat'."""

import json
import random

import numpy as np
import pytest
import torch

from alignlab.data import Demonstration, write_feedback
from alignlab.fileio import read_jsonl
from alignlab.pressure import read_ledger
from alignlab.train.ppo import PPOConfig, train_ppo
from alignlab.train.sft import SFTConfig, train_sft
from tests.train.launch import two_and_one
from tests.train.rewards_for_tests import WORDS

REWARD = "tests.train.rewards_for_tests:cat_share"
GOLD = "tests.train.rewards_for_tests:cat_in_moderation"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(policy folder, prompts file): the tiny model taught to write ten-word strings from WORDS."""
    folder = tmp_path_factory.mktemp("ppo")
    rng = random.Random(0)
    prompts = [f"Tell me about thing {i}." for i in range(8)]
    write_feedback(folder / "demos.jsonl", [Demonstration(p, " " + " ".join(rng.choice(WORDS) for _ in range(10)))
                                            for p in prompts for _ in range(8)])
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    sft = train_sft(SFTConfig(data=str(folder / "demos.jsonl"), model="tiny", epochs=4, batch_size=8, lr=1e-2,
                              kl_prompts=0, add_eos=False, out=folder / "sft"), progress=False)
    assert sft.path.exists()
    return folder / "sft", folder / "prompts.txt"


def scores(run):
    return [m for m in read_jsonl(run.path / "metrics.jsonl") if "objective/scores" in m]


def test_ppo_raises_the_reward_several_fold_while_the_controller_holds_kl_near_target(toy):
    policy, prompts = toy
    run = train_ppo(PPOConfig(prompts=prompts, reward=REWARD, gold=GOLD, model=str(policy), iterations=40, rollout_batch=8,
                              minibatch_size=8, ppo_epochs=2, max_new_tokens=10, temperature=1.0, kl_coef=0.05,
                              kl_target=2.0, kl_horizon=200, lr=1e-3, sample_every=20, missing_eos_penalty=0.0),
                    progress=False)
    m = scores(run)
    # The SFT'd policy writes 'cat' about one word in ten (the demonstrations draw ten words uniformly);
    # the first rollout (before any update) shows it, and PPO must triple it.
    start = m[0]["objective/scores"]
    end = np.mean([x["objective/scores"] for x in m[-10:]])
    assert start < 0.2 and end > 0.3, (start, end)
    late_kl = np.mean([x["objective/kl"] for x in m[-20:]])
    assert 0.5 * 2.0 < late_kl < 2 * 2.0, late_kl
    betas = [x["objective/kl_coef"] for x in m]
    assert max(betas) != min(betas)  # the adaptive controller acted
    for name in ("objective/kl_k3", "objective/entropy", "objective/rlhf_reward", "policy/approxkl_avg",
                 "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/ratio", "val/explained_variance",
                 "eos_rate", "response_length", "grad_norm"):
        assert name in m[0], name
    pressure = json.loads((run.path / "pressure.json").read_text())
    assert pressure["method"] == "ppo" and pressure["beta"] == 0.05 and len(pressure["entries"]) == 40
    ledger = read_ledger(run.path)  # the gold judge watched every rollout
    assert ledger.has_gold and ledger.fit is not None and ledger.fit.form == "rl"
    assert ledger.points[0].gold == pytest.approx(m[0]["objective/scores"])  # they agree below a share of 0.3
    assert len(read_jsonl(run.path / "samples.jsonl")) == 16  # the sample table at iterations 20 and 40


def test_ppo_resume_equals_uninterrupted(toy):
    policy, prompts = toy
    common = dict(prompts=prompts, reward=REWARD, model=str(policy), iterations=4, rollout_batch=4, minibatch_size=2,
                  ppo_epochs=2, max_new_tokens=6, lr=1e-3, kl_target=1.0, checkpoint_every=1, sample_every=0)
    whole = train_ppo(PPOConfig(**common), progress=False)
    part = train_ppo(PPOConfig(**common, stop_after=2), progress=False)
    train_ppo(PPOConfig(resume=part.id), progress=False)
    key = lambda r: [(x["objective/scores"], x["objective/kl"], x["loss/policy_avg"], x["objective/kl_coef"])  # noqa: E731
                     for x in scores(r)]
    assert key(whole) == key(part)


def test_ppo_refuses_settings_that_cannot_work(toy):
    policy, prompts = toy
    for bad, message in [(dict(temperature=0), "temperature"), (dict(kl_target=1.0, kl_coef=0), "adaptive"),
                         (dict(rollout_batch=6, minibatch_size=4), "split"), (dict(reward="nope"), "neither"),
                         (dict(reward="tests.train.rewards_for_tests:not_a_number"), "one finite number")]:
        with pytest.raises(ValueError, match=message):
            train_ppo(PPOConfig(**{"prompts": prompts, "reward": REWARD, "model": str(policy), **bad}), progress=False)


def test_two_processes_match_one_with_one_minibatch(toy, tmp_path):
    policy, prompts = toy
    one, two = two_and_one(["ppo", "--prompts", str(prompts), "--reward", REWARD, "--model", str(policy),
                            "--iterations", "2", "--rollout-batch", "4", "--minibatch-size", "4", "--ppo-epochs", "1",
                            "--max-new-tokens", "6", "--lr", "1e-3", "--sample-every", "0"], tmp_path)
    get = lambda rows: [(m["objective/scores"], m["objective/kl"], m["loss/policy_avg"], m["grad_norm"])  # noqa: E731
                        for m in rows]
    assert len(one) == 2
    for a, b in zip(get(one), get(two)):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-5)


@pytest.mark.parametrize("vocabulary", [False, True])
def test_the_samplers_log_probs_entropies_and_values_are_the_policy_pass_ones(tiny, vocabulary, tmp_path):
    """PPO takes the rollout's log-probs and entropies from the sampler (as TRL takes them from
    generate()'s scores), and its values from the value head on the sampler's hidden states,
    instead of more passes: they must equal what the training pass computes."""
    import copy

    from alignlab.models import SampleConfig, sample
    from alignlab.models.vocab import VocabularySubset, restrict_vocabulary
    from alignlab.train.policy import Example, batch_tensors
    from alignlab.train.online import per_position
    from alignlab.train.ppo import PolicyAndValue

    model, tokenizer = tiny
    model = copy.deepcopy(model)
    if vocabulary:
        kept = set(range(5000)) | set(tokenizer.all_special_ids)
        restrict_vocabulary(model, VocabularySubset(kept, model.config.vocab_size, tokenizer))
    prompts = ["The cat sat", "Once upon a time there was", "A"]
    done = sample(model, tokenizer, prompts, SampleConfig(max_new_tokens=7, temperature=0.7, seed=3, alternatives=0,
                                                          entropy=True, hidden=True))
    examples = [Example(c.prompt, c.prompt_ids, c.token_ids) for c in done]
    ids, mask, target = batch_tensors(examples, tokenizer.pad_token_id)
    module = PolicyAndValue(model)
    torch.nn.init.normal_(module.value_head.weight, std=0.5)  # a value head that reads the states
    torch.nn.init.constant_(module.value_head.bias, 0.25)
    with torch.no_grad():
        logps, values = module(ids, mask, target, 0.7)
        kept_values = module.values_from_states(torch.stack([t.hidden for c in done for t in c.tokens]), target)
        z = module.policy(input_ids=ids, attention_mask=mask).logits[:, :-1].float() / 0.7
        if vocabulary:
            from alignlab.models.vocab import vocabulary as kept

            z = z[..., kept(model).ids]
        lp = torch.log_softmax(z, -1)
        plain_entropy = torch.zeros(ids.shape)
        plain_entropy[:, 1:] = -(lp.exp() * lp).sum(-1)
    sampled = per_position([[t.sample_logprob for t in c.tokens] for c in done], target)
    entropies = per_position([[t.entropy for t in c.tokens] for c in done], target)
    assert torch.allclose(sampled, logps, atol=1e-4)
    assert torch.allclose(entropies, plain_entropy * target, atol=1e-4)
    assert torch.allclose(kept_values, values, atol=1e-4) and bool((values[target.bool()] != 0).all())
    assert target.sum() == sum(len(c.tokens) for c in done)
    with pytest.raises(RuntimeError, match="hidden states for"):
        module.values_from_states(torch.zeros(1, model.config.hidden_size), target)


def test_reward_scale_divides_the_score_before_the_kl_penalty(toy):
    policy, prompts = toy
    common = dict(prompts=prompts, reward=REWARD, model=str(policy), iterations=1, rollout_batch=4, minibatch_size=4,
                  ppo_epochs=1, max_new_tokens=6, lr=1e-3, sample_every=0, missing_eos_penalty=0.0, kl_coef=0.1,
                  lr_schedule="constant")
    one = scores(train_ppo(PPOConfig(**common), progress=False))[0]
    four = scores(train_ppo(PPOConfig(**common, reward_scale=4.0), progress=False))[0]
    assert one["objective/scores"] == four["objective/scores"] > 0  # logged raw: the same rollout
    assert one["objective/rlhf_reward"] + 0.1 * one["objective/kl"] == pytest.approx(one["objective/scores"])
    assert four["objective/rlhf_reward"] + 0.1 * four["objective/kl"] == pytest.approx(four["objective/scores"] / 4)
    assert one["learning_rate"] == four["learning_rate"] == 1e-3  # constant: not annealed after the step
