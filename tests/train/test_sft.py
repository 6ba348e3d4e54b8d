"""SFT on the tiny model."""

import json

import pytest
import torch
from safetensors.torch import load_file

from alignlab.cli import main
from alignlab.data import Demonstration, PreferencePair, write_feedback
from alignlab.fileio import read_jsonl
from alignlab.models import load_model, score
from alignlab.train.hooks import Hooks
from alignlab.train.sft import SFTConfig, train_sft


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "demos.jsonl"
    write_feedback(path, [Demonstration(f"Say something nice about item {i}:", " It is lovely and bright.")
                          for i in range(16)])
    return path


def losses(run):
    return [m["loss"] for m in read_jsonl(run.path / "metrics.jsonl") if "loss" in m]


def test_sft_learns_the_demonstrations_and_saves_a_policy_generate_accepts(demos, capsys):
    run = train_sft(SFTConfig(data=str(demos), model="tiny", epochs=8, batch_size=4, lr=2e-2, kl_prompts=2),
                    progress=False)
    got = losses(run)
    assert got[-1] < 0.5 * got[0], got
    policy_dir = run.path / "policy"
    model, tok = load_model(policy_dir)
    base, _ = load_model("tiny")
    after = score(model, tok, ["Say something nice about item 3:"], [" It is lovely and bright."])[0].total
    before = score(base, tok, ["Say something nice about item 3:"], [" It is lovely and bright."])[0].total
    assert after > before + 10
    pressure = json.loads((run.path / "pressure.json").read_text())
    assert pressure["method"] == "sft" and pressure["reference"] == "tiny" and pressure["entries"][-1]["objective/kl"] > 0
    assert main(["generate", "Say something nice about item 3:", "--model", str(policy_dir), "--max-tokens", "4",
                 "--temperature", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"].startswith(" It is")


def test_loss_is_on_completion_tokens_only(demos, tmp_path):
    # Changing only the prompts' text must not change the first step's loss... unless conditioning
    # changes it; so compare against a direct computation of the completion-token NLL instead.
    run = train_sft(SFTConfig(data=str(demos), model="tiny", max_steps=1, batch_size=16, lr=1e-9, kl_prompts=0),
                    progress=False)
    model, tok = load_model("tiny")
    rows = score(model, tok, [f"Say something nice about item {i}:" for i in range(16)],
                 [tok(" It is lovely and bright.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]] * 16)
    nll = -sum(r.total for r in rows) / sum(len(r.logprobs) for r in rows)
    assert losses(run)[0] == pytest.approx(nll, rel=1e-4)


class GradCapture:
    """A training hook that keeps the gradients of every step (after backward, before clipping)."""

    def __init__(self):
        self.grads = []

    def after_backward(self, ctx):
        self.grads.append({n: p.grad.detach().clone() for n, p in ctx.parameters.items() if p.grad is not None})


def test_gradient_accumulation_1x8_equals_8x1(demos, tmp_path):
    # Compare the gradients themselves: after AdamW, float-noise gradients near zero turn into
    # +-lr updates, so weights are no fair test of the accumulation.
    common = dict(data=str(demos), model="tiny", max_steps=2, batch_size=8, lr=1e-3, kl_prompts=0, seed=3)
    one, eight = GradCapture(), GradCapture()
    a = train_sft(SFTConfig(**common, grad_accum=1, out=tmp_path / "a"), progress=False, hooks=Hooks([one]))
    b = train_sft(SFTConfig(**common, grad_accum=8, out=tmp_path / "b"), progress=False, hooks=Hooks([eight]))
    assert losses(a) == pytest.approx(losses(b), rel=1e-5)
    for g1, g8 in zip(one.grads, eight.grads):
        assert g1.keys() == g8.keys()
        for name in g1:
            relative = float((g1[name] - g8[name]).norm() / g1[name].norm())
            assert relative < 1e-4, (name, relative)
    assert len(one.grads) == 2


def test_lora_resume_equals_uninterrupted(demos):
    common = dict(data=str(demos), model="tiny", lora=True, lora_r=4, max_steps=4, batch_size=4, lr=1e-3,
                  kl_prompts=0, checkpoint_every=1)
    whole = train_sft(SFTConfig(**common), progress=False)
    part = train_sft(SFTConfig(**common, stop_after=2), progress=False)
    train_sft(SFTConfig(resume=part.id), progress=False)
    assert losses(whole) == losses(part)
    a = load_file(str(whole.path / "policy" / "adapter_model.safetensors"))
    b = load_file(str(part.path / "policy" / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sft_refuses_data_without_demonstrations(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_feedback(path, [PreferencePair("p", " a", " b")])
    with pytest.raises(ValueError, match="no demonstrations"):
        train_sft(SFTConfig(data=str(path), model="tiny"), progress=False)
