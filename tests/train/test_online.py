"""RLOO and GRPO on the PPO toy: an SFT'd tiny model that writes words from a list of ten, rewarded for 'cat'."""

import json
import random

import numpy as np
import pytest
import torch

from alignlab.data import Demonstration, write_feedback
from alignlab.fileio import read_jsonl
from alignlab.pressure import read_ledger
from alignlab.train.grpo import GRPOConfig, train_grpo
from alignlab.train.rloo import RLOOConfig, train_rloo
from alignlab.train.sft import SFTConfig, train_sft
from tests.train.launch import two_and_one
from tests.train.rewards_for_tests import WORDS

REWARD = "tests.train.rewards_for_tests:cat_share"
GOLD = "tests.train.rewards_for_tests:cat_in_moderation"
METHODS = {"rloo": (RLOOConfig, train_rloo), "grpo": (GRPOConfig, train_grpo)}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(policy folder, prompts file): the tiny model taught to write ten-word strings from WORDS."""
    folder = tmp_path_factory.mktemp("online")
    rng = random.Random(0)
    prompts = [f"Tell me about thing {i}." for i in range(8)]
    write_feedback(folder / "demos.jsonl", [Demonstration(p, " " + " ".join(rng.choice(WORDS) for _ in range(10)))
                                            for p in prompts for _ in range(8)])
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    train_sft(SFTConfig(data=str(folder / "demos.jsonl"), model="tiny", epochs=4, batch_size=8, lr=1e-2,
                        kl_prompts=0, add_eos=False, out=folder / "sft"), progress=False)
    return folder / "sft", folder / "prompts.txt"


def metrics(run):
    return [m for m in read_jsonl(run.path / "metrics.jsonl") if "objective/scores" in m]


@pytest.mark.parametrize("method,extra", [("rloo", {}), ("rloo", {"kl_in": "loss"}),
                                          ("grpo", {}), ("grpo", {"loss_type": "grpo", "kl_in": "reward"})])
def test_online_method_raises_a_known_reward(toy, method, extra):
    policy, prompts = toy
    config_cls, train = METHODS[method]
    run = train(config_cls(prompts=prompts, reward=REWARD, gold=GOLD, model=str(policy), iterations=16,
                           prompts_per_iteration=4, group_size=4, max_new_tokens=10, kl_coef=0.01, lr=3e-3,
                           sample_every=8, **extra), progress=False)
    m = metrics(run)
    # The SFT'd policy writes 'cat' about one word in ten; the first rollout (before any update) shows it.
    start = np.mean([x["objective/scores"] for x in m[:2]])
    end = np.mean([x["objective/scores"] for x in m[-4:]])
    assert start < 0.2 and end > 2 * start + 0.1, (start, end)
    for name in ("objective/kl", "objective/kl_k3", "objective/entropy", "objective/rlhf_reward", "loss/policy_avg",
                 "policy/clipfrac_avg", "val/ratio", "grad_norm", "eos_rate", "response_length", "reward_std"):
        assert name in m[0], name
    assert m[0]["val/ratio"] == pytest.approx(1.0, abs=1e-4)  # on-policy: the sampler's log-probs are the policy's
    pressure = json.loads((run.path / "pressure.json").read_text())
    assert pressure["method"] == method and len(pressure["entries"]) == 16
    ledger = read_ledger(run.path)  # the gold judge watched every rollout
    assert ledger.has_gold and ledger.points[-1].kl > 0
    assert len(read_jsonl(run.path / "samples.jsonl")) == 32  # 16 rows at iterations 8 and 16
    assert (run.path / "policy").exists()


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_resume_after_a_stop_gives_identical_weights(toy, method):
    from safetensors.torch import load_file

    policy, prompts = toy
    config_cls, train = METHODS[method]
    common = dict(prompts=prompts, reward=REWARD, model=str(policy), iterations=4, prompts_per_iteration=2,
                  group_size=3, minibatch_size=3, max_new_tokens=6, lr=1e-3, checkpoint_every=1, sample_every=0,
                  epochs=2, lora=True, lora_r=4)
    whole = train(config_cls(**common), progress=False)
    part = train(config_cls(**common, stop_after=2), progress=False)
    assert not (part.path / "policy").exists()
    train(config_cls(resume=part.id), progress=False)
    key = lambda r: [(x["objective/scores"], x["objective/kl"], x["loss/policy_avg"]) for x in metrics(r)]  # noqa: E731
    assert key(whole) == key(part)
    a = load_file(str(whole.path / "policy" / "adapter_model.safetensors"))
    b = load_file(str(part.path / "policy" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_micro_batches_accumulate_to_the_whole_minibatch(toy):
    policy, prompts = toy
    common = dict(prompts=prompts, reward=REWARD, model=str(policy), iterations=2, prompts_per_iteration=2,
                  group_size=4, max_new_tokens=6, lr=1e-3, sample_every=0)
    for config_cls, train, extra in [(RLOOConfig, train_rloo, {}), (GRPOConfig, train_grpo, {"loss_type": "grpo"}),
                                     (GRPOConfig, train_grpo, {"loss_type": "dapo"})]:
        whole = train(config_cls(**common, **extra), progress=False)
        split = train(config_cls(**common, **extra, micro_batch_size=2), progress=False)
        for a, b in zip(metrics(whole), metrics(split)):
            assert a["loss/policy_avg"] == pytest.approx(b["loss/policy_avg"], rel=1e-4, abs=1e-6)
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)


def test_online_methods_refuse_settings_that_cannot_work(toy):
    policy, prompts = toy
    for config_cls, train, bad, message in [
            (RLOOConfig, train_rloo, dict(group_size=1), "baseline batch"),
            (GRPOConfig, train_grpo, dict(group_size=1), "group of 2"),
            (RLOOConfig, train_rloo, dict(temperature=0), "temperature"),
            (GRPOConfig, train_grpo, dict(minibatch_size=3), "split"),
            (RLOOConfig, train_rloo, dict(reward="nope"), "neither"),
            (RLOOConfig, train_rloo, dict(prompts=None), "--prompts")]:
        with pytest.raises(ValueError, match=message):
            train(config_cls(**{"prompts": prompts, "reward": REWARD, "model": str(policy), **bad}), progress=False)


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_two_processes_match_one(toy, tmp_path, method):
    policy, prompts = toy
    one, two = two_and_one([method, "--prompts", str(prompts), "--reward", REWARD, "--model", str(policy),
                            "--iterations", "2", "--prompts-per-iteration", "2", "--group-size", "2",
                            "--max-new-tokens", "6", "--lr", "1e-3", "--sample-every", "0"], tmp_path)
    get = lambda rows: [(m["objective/scores"], m["objective/kl"], m["grad_norm"]) for m in rows]  # noqa: E731
    assert len(one) == 2
    for a, b in zip(get(one), get(two)):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-5)
