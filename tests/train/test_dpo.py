"""DPO and KTO on the tiny model."""

import json

import pytest

from alignlab.data import PreferencePair, Thumbs, write_feedback
from alignlab.fileio import read_jsonl
from alignlab.train.dpo import DPOConfig, train_dpo
from tests.train.launch import two_and_one


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("dpo") / "pairs.jsonl"
    write_feedback(path, [PreferencePair(f"Describe day {i}:", " It was lovely and warm.", " It was awful and cold.")
                          for i in range(16)])
    return path


def metrics(run):
    return [m for m in read_jsonl(run.path / "metrics.jsonl") if "loss" in m]


def test_dpo_raises_the_implicit_reward_margin_and_accuracy(pairs):
    run = train_dpo(DPOConfig(data=str(pairs), model="tiny", beta=0.1, lr=5e-3, epochs=4, batch_size=4,
                              kl_prompts=2), progress=False)
    m = metrics(run)
    assert m[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at step 0
    assert m[-1]["rewards/margins"] > 0.5 and m[-1]["rewards/accuracies"] == 1.0
    assert m[-1]["loss"] < m[0]["loss"]
    for name in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "grad_norm"):
        assert name in m[0]
    pressure = json.loads((run.path / "pressure.json").read_text())
    assert pressure["beta"] == 0.1 and pressure["reference"] == "tiny" and pressure["entries"][-1]["objective/kl"] > 0


@pytest.mark.parametrize("loss", ["hinge", "ipo", "robust"])
def test_every_registered_loss_trains(pairs, loss):
    run = train_dpo(DPOConfig(data=str(pairs), model="tiny", loss=loss, lr=5e-3, max_steps=6, batch_size=4,
                              kl_prompts=0), progress=False)
    m = metrics(run)
    assert m[-1]["rewards/margins"] > m[0]["rewards/margins"]


def test_a_user_defined_loss_runs_and_a_broken_one_is_refused(pairs, tmp_path):
    mine = tmp_path / "myloss.py"
    mine.write_text(
        "import torch.nn.functional as F\n"
        "def length_normalised(pc, pr, rc, rr, beta, nc, nr):\n"
        "    return -F.logsigmoid(beta * ((pc - rc) / nc - (pr - rr) / nr))\n"
        "def wrong_shape(pc, pr, rc, rr, beta, nc, nr):\n"
        "    return (pc - pr).sum()\n")
    run = train_dpo(DPOConfig(data=str(pairs), model="tiny", loss=f"{mine}:length_normalised", lr=5e-3, max_steps=4,
                              batch_size=4, kl_prompts=0), progress=False)
    assert metrics(run)[-1]["rewards/margins"] > 0
    with pytest.raises(ValueError, match="one finite loss per pair"):
        train_dpo(DPOConfig(data=str(pairs), model="tiny", loss=f"{mine}:wrong_shape"), progress=False)
    with pytest.raises(ValueError, match="beta"):
        train_dpo(DPOConfig(data=str(pairs), model="tiny", beta=0), progress=False)
    with pytest.raises(ValueError, match="not one of"):
        train_dpo(DPOConfig(data=str(pairs), model="tiny", loss="nonsense"), progress=False)


def test_kto_runs_on_unpaired_thumbs(tmp_path):
    path = tmp_path / "thumbs.jsonl"
    write_feedback(path, [Thumbs(f"Day {i}:", " lovely and warm." if i % 2 else " awful and cold.", bool(i % 2))
                          for i in range(16)])
    run = train_dpo(DPOConfig(data=str(path), model="tiny", loss="kto", lr=5e-3, epochs=3, batch_size=4,
                              kl_prompts=0), progress=False)
    m = metrics(run)
    assert m[-1]["rewards/chosen"] > m[-1]["rewards/rejected"]
    assert m[-1]["loss"] < m[0]["loss"]


def test_lora_reference_is_the_model_with_adapters_disabled_and_resume_matches(pairs):
    common = dict(data=str(pairs), model="tiny", lora=True, lora_r=4, lr=5e-3, max_steps=4, batch_size=4,
                  kl_prompts=1, checkpoint_every=1)
    whole = train_dpo(DPOConfig(**common), progress=False)
    part = train_dpo(DPOConfig(**common, stop_after=2), progress=False)
    train_dpo(DPOConfig(resume=part.id), progress=False)
    assert [m["loss"] for m in metrics(whole)] == [m["loss"] for m in metrics(part)]
    assert metrics(whole)[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)


def test_snapshots_along_the_way_load_as_policies(pairs):
    from alignlab.models import load_model
    from alignlab.train.policy import snapshots

    run = train_dpo(DPOConfig(data=str(pairs), model="tiny", lora=True, lora_r=4, lr=5e-3, max_steps=5, batch_size=4,
                              kl_prompts=0, snapshot_every=2), progress=False)
    found = snapshots(run.path)
    assert [step for step, _ in found] == [2, 4]  # the last step is the final policy, not a snapshot
    info = json.loads((found[0][1] / "alignlab_policy.json").read_text())
    assert info["step"] == 2 and info["method"] == "dpo" and info["lora"]
    model, _ = load_model(str(found[1][1]))
    final, _ = load_model(str(run.path / "policy"))
    differ = [name for (name, a), (_, b) in zip(model.named_parameters(), final.named_parameters()) if not a.equal(b)]
    assert differ  # step 4 is not step 5


def test_two_processes_match_one(pairs, tmp_path):
    one, two = two_and_one(["dpo", "--data", str(pairs), "--model", "tiny", "--max-steps", "2", "--batch-size", "4",
                            "--lr", "1e-3", "--kl-prompts", "0"], tmp_path)
    get = lambda rows: [(m["loss"], m["grad_norm"], m["rewards/margins"]) for m in rows]  # noqa: E731
    assert len(one) == 2
    for a, b in zip(get(one), get(two)):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
