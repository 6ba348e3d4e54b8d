"""The reward-model trainer on the tiny model: learning, saving, resuming, several processes."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignlab.cli import main
from alignlab.data import PreferencePair, Thumbs, write_feedback
from alignlab.errors import NonFiniteError
from alignlab.fileio import read_jsonl
from alignlab.train.reward import RewardTrainConfig, train_reward
from alignlab.train.reward_model import (RewardModel, configure_trainable, load_reward_model, pad_right,
                                         save_reward_model, starts_of)

ALIGNLAB = str(Path(sys.executable).parent / "alignlab")
GOOD = ["wonderful", "great", "lovely", "superb", "delightful"]
BAD = ["awful", "terrible", "boring", "dreadful", "bad"]
FILLER = ["the", "film", "was", "a", "story", "with", "actors", "and", "music", "plot"]


def sentence(rng, words):
    w = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
    w.insert(rng.randint(0, len(w)), rng.choice(words))
    return " " + " ".join(w) + "."


@pytest.fixture(scope="module")
def separable(tmp_path_factory):
    """Pairs whose chosen response holds a positive word and the rejected one a negative word."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("rm") / "pairs.jsonl"
    write_feedback(path, [PreferencePair(f"Review {i}:", sentence(rng, GOOD), sentence(rng, BAD)) for i in range(160)])
    return path


def summary(run):
    return json.loads((run.path / "summary.json").read_text())


def test_tiny_model_separates_an_easy_preference_set(separable):
    run = train_reward(RewardTrainConfig(data=str(separable), model="tiny", mode="full", epochs=3, lr=1e-3,
                                         eval_fraction=0.25), progress=False)
    s = summary(run)
    assert s["eval/choices"] == 40 and s["eval/accuracy"] > 0.9, s
    metrics = [m for m in read_jsonl(run.path / "metrics.jsonl") if "loss" in m]
    assert len(metrics) == 45 and metrics[-1]["loss"] < metrics[0]["loss"]  # 120 choices / 8 x 3 epochs
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "grad_norm"} <= set(metrics[0])


def test_parameters_change_after_a_step_only_where_the_mode_trains(separable, tiny):
    for mode, moved, fixed in [("head", "head.weight", "lm.model.layers.1.mlp.up_proj.weight"),
                               ("last", "lm.model.layers.1.mlp.up_proj.weight", "lm.model.layers.0.mlp.up_proj.weight")]:
        run = train_reward(RewardTrainConfig(data=str(separable), model="tiny", mode=mode, max_steps=1, lr=1e-2,
                                             last_layers=1), progress=False)
        rm = load_reward_model(run.path / "model")
        before = RewardModel(*tiny, seed=0)
        params, start = dict(rm.named_parameters()), dict(before.named_parameters())
        assert not torch.equal(params[moved], start[moved]), mode
        assert torch.equal(params[fixed], start[fixed]), mode


def test_head_initialisation_follows_the_spec(tiny):
    rm = RewardModel(*tiny, ensemble=50, seed=1)
    d = tiny[0].config.hidden_size
    assert float(rm.head.weight.std()) == pytest.approx(1 / (d + 1) ** 0.5, rel=0.1)
    assert torch.equal(rm.head.bias, torch.zeros(50))


def test_reward_is_read_at_the_last_real_token_never_a_pad(tiny):
    rm = RewardModel(*tiny, seed=0).eval()
    a, b = rm.encode("Prompt", " a short answer"), rm.encode("Prompt", " a much longer answer with many more words")
    with torch.no_grad():
        alone = [float(rm(torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long))) for x in (a, b)]
        ids, mask = pad_right([a, b], rm.pad_id)
        right = rm(ids, mask)[:, 0].tolist()
        width = max(len(a), len(b))
        left_ids = torch.tensor([[0] * (width - len(a)) + a, b])
        left_mask = torch.tensor([[0] * (width - len(a)) + [1] * len(a), [1] * len(b)])
        left = rm(left_ids, left_mask)[:, 0].tolist()
        other_pad = ids.clone()
        other_pad[0, len(a):] = 12345  # what sits in the padding must not matter
        padded_junk = rm(other_pad, mask)[:, 0].tolist()
    assert right == pytest.approx(alone, abs=1e-5)
    assert left == pytest.approx(alone, abs=1e-5)
    assert padded_junk == pytest.approx(alone, abs=1e-5)


def test_mean_pooling_averages_the_response_tokens_only_under_padding_and_truncation(tiny, tmp_path):
    from alignlab.models.forward import hidden_states

    rm = RewardModel(*tiny, seed=0, pooling="mean").eval()
    a, b = rm.encode("A prompt here", " short"), rm.encode("Prompt", " a much longer answer with many more words")
    assert a.start == len(rm.encode("A prompt here", "")) and len(a) > a.start
    with torch.no_grad():
        expected = []
        for x in (a, b):  # by hand: the mean of the final hidden states from the response's first token
            h, _ = hidden_states(rm.lm, torch.tensor([list(x)]), torch.ones(1, len(x), dtype=torch.long))
            expected.append(float(rm.head(h[0, x.start:].float().mean(0))))
        ids, mask = pad_right([a, b], rm.pad_id)
        batched = rm(ids, mask, starts_of([a, b]))[:, 0].tolist()
    assert batched == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="response start"):
        rm(ids, mask)
    short = RewardModel(*tiny, seed=0, max_length=6, pooling="mean")
    cut = short.encode("A long prompt with a great many words in it", " and the answer")
    full = short.encode("A long prompt with a great many words in it", "")
    assert len(cut) == 6 and cut[0] == full[0] and cut.start == 6 - len(short.encode("", " and the answer")) + 1
    save_reward_model(rm, tmp_path / "rm", "head", "tiny")
    assert load_reward_model(tmp_path / "rm").pooling == "mean"


@pytest.mark.parametrize("mode", ["head", "last", "lora", "full"])
def test_every_mode_saves_a_folder_that_loads_back_with_one_call(tiny, tmp_path, mode):
    from alignlab.models import load_model

    lm, tok = load_model("tiny")
    rm = configure_trainable(RewardModel(lm, tok, ensemble=2, seed=3), mode, last_layers=1, lora_r=4)
    with torch.no_grad():
        for p in rm.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    rm.norm_mean.fill_(0.5)
    rm.reference = 0.25
    save_reward_model(rm, tmp_path / "rm", mode, "tiny")
    again = load_reward_model(tmp_path / "rm")
    prompts, responses = ["Q:", "Tell me"], [" yes", " a story about the sea"]
    m1, s1 = rm.score(prompts, responses)
    m2, s2 = again.score(prompts, responses)
    assert torch.allclose(m1, m2, atol=1e-5) and torch.allclose(s1, s2, atol=1e-5)
    assert again.reference == 0.25 and again.ensemble == 2


def _head(run_or_path):
    path = Path(run_or_path)
    return load_file(str(path / "reward_head.safetensors"))


def test_resume_equals_an_uninterrupted_run(separable):
    cfg = dict(data=str(separable), model="tiny", mode="last", max_steps=6, checkpoint_every=2, lr=1e-3, seed=4)
    whole = train_reward(RewardTrainConfig(**cfg), progress=False)
    part = train_reward(RewardTrainConfig(**cfg, stop_after=3), progress=False)
    assert not (part.path / "model").exists()
    resumed = train_reward(RewardTrainConfig(resume=part.id), progress=False)
    assert resumed.id == part.id
    a, b = _head(whole.path / "model"), _head(part.path / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = lambda r: [m["loss"] for m in read_jsonl(r.path / "metrics.jsonl") if "loss" in m]  # noqa: E731
    assert losses(whole) == losses(part) and len(losses(part)) == 6


def test_a_run_killed_mid_training_resumes_to_the_same_weights(separable, tmp_path):
    env = {**os.environ, "ALIGNLAB_RUNS_DIR": str(tmp_path)}
    args = [ALIGNLAB, "reward", "train", "--data", str(separable), "--model", "tiny", "--mode", "last",
            "--max-steps", "200", "--checkpoint-every", "1", "--lr", "1e-3", "--batch-size", "4"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    def newest_step() -> int:  # only the newest two checkpoints are kept, so look at any of them
        return max((int(p.name.split("-")[1]) for p in tmp_path.glob("*/checkpoints/step-???????")), default=0)

    while time.time() < deadline and newest_step() < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = list(tmp_path.iterdir())
    assert not (run_dir / "model").exists(), "the run finished before it could be killed"
    subprocess.run(args[:3] + ["--resume", run_dir.name], env=env, check=True, capture_output=True, timeout=300)
    whole = tmp_path / "whole"
    subprocess.run(args + ["--out", str(whole)], env=env, check=True, capture_output=True, timeout=300)
    a, b = _head(whole), _head(run_dir / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_with_the_step_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_feedback(path, [PreferencePair("p", " a", " b", margin=1e39), PreferencePair("q", " c", " d")])
    with pytest.raises(NonFiniteError, match="step 0"):
        train_reward(RewardTrainConfig(data=str(path), model="tiny", eval_fraction=0, batch_size=2), progress=False)


def test_settings_that_cannot_work_are_refused(separable):
    for bad, message in [(dict(betas="thumbs=-1"), "betas"), (dict(label_noise=0.7), "label_noise"),
                         (dict(data=""), "no data"), (dict(eval_fraction=1.0), "eval_fraction")]:
        with pytest.raises(ValueError, match=message):
            train_reward(RewardTrainConfig(**{"data": str(separable), "model": "tiny", **bad}), progress=False)


def test_two_processes_match_one_at_the_same_global_batch(separable, tmp_path):
    common = ["reward", "train", "--data", str(separable), "--model", "tiny", "--mode", "last", "--max-steps", "3",
              "--batch-size", "8", "--lr", "1e-3", "--out"]
    env = {**os.environ, "ALIGNLAB_RUNS_DIR": str(tmp_path / "runs"), "ACCELERATE_USE_CPU": "true",
           "GLOO_SOCKET_IFNAME": "lo"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "alignlab.cli", *common,
                          str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([ALIGNLAB, *common, str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = _head(tmp_path / "one"), _head(tmp_path / "two")
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    runs = {json.loads((r / "config.json").read_text())["config"]["out"]: r for r in (tmp_path / "runs").iterdir()}
    norms = lambda r: [m["grad_norm"] for m in read_jsonl(r / "metrics.jsonl") if "grad_norm" in m]  # noqa: E731
    # The gradient each step is the same average over the global batch (not a per-process one, nor a sum).
    assert norms(runs[str(tmp_path / "one")]) == pytest.approx(norms(runs[str(tmp_path / "two")]), rel=1e-4)


def test_cli_train_eval_score_end_to_end(separable, tmp_path, capsys):
    rng = random.Random(5)
    thumbs = tmp_path / "thumbs.jsonl"
    write_feedback(thumbs, [Thumbs(f"T{i}:", sentence(rng, GOOD if i % 2 else BAD), bool(i % 2), annotator=f"a{i % 3}")
                            for i in range(40)])
    assert main(["reward", "train", "--data", f"{separable},{thumbs}", "--model", "tiny", "--mode", "head",
                 "--epochs", "2", "--lr", "1e-2", "--ensemble", "3", "--out", str(tmp_path / "rm")]) == 0
    assert "reward model saved" in capsys.readouterr().out
    assert main(["reward", "eval", "--model", str(tmp_path / "rm"), "--data", f"{separable},{thumbs}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["by_kind"]) == {"pair", "thumbs"} and set(result["by_annotator"]) >= {"a0", "a1", "a2"}
    assert result["ensemble_std_mean"] > 0 and result["reliability"]
    assert main(["reward", "eval", "--model", str(tmp_path / "rm"), "--data", str(separable)]) == 0
    out = capsys.readouterr().out
    assert "calibration" in out and "length bias" in out and "reliability plot" in out
    assert main(["reward", "score", "--model", str(tmp_path / "rm"), "--prompt", "Review:", "--response", " great."]) == 0
    float(capsys.readouterr().out.strip())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "", "rejected": "x"}\n')
    assert main(["reward", "train", "--data", str(bad), "--model", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl line 1" in err and "chosen" in err


def test_normalisation_on_a_policys_responses_and_demonstrations_grounded_by_sampling(separable, tmp_path):
    from alignlab.data import Demonstration
    from alignlab.fileio import append_jsonl

    rng = random.Random(7)
    policy = tmp_path / "policy.jsonl"
    rows = [{"prompt": f"Review {i}:", "completion": sentence(rng, GOOD + BAD)} for i in range(30)]
    for row in rows:
        append_jsonl(policy, row)
    demos = tmp_path / "demos.jsonl"
    write_feedback(demos, [Demonstration(f"Write {i}:", sentence(rng, GOOD)) for i in range(6)])
    run = train_reward(RewardTrainConfig(data=f"{separable},{demos}", model="tiny", mode="head", max_steps=5,
                                         normalize_on=policy, demo_samples=2, eval_fraction=0), progress=False)
    s = summary(run)
    assert s["choices"] == 160 + 6 * 2  # each demonstration is preferred over 2 sampled responses
    rm = load_reward_model(run.path / "model")
    mean, _ = rm.score([r["prompt"] for r in rows], [r["completion"] for r in rows])
    assert float(mean.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(mean.std()) == pytest.approx(1.0, abs=1e-3)


def test_full_mode_trains_the_embedding_with_sparse_gradients_to_the_dense_result(separable, monkeypatch):
    import alignlab.train.reward as reward
    from alignlab.models import load_model

    cfg = dict(data=str(separable), model="tiny", mode="full", max_steps=4, lr=1e-3, seed=2, weight_decay=0.01)
    seen = []
    original = reward.sparse_embedding_gradients
    monkeypatch.setattr(reward, "sparse_embedding_gradients",
                        lambda model, enable=True: seen.append(original(model, enable)) or seen[-1])
    sparse = train_reward(RewardTrainConfig(**cfg), progress=False)
    assert seen == [True, False]
    monkeypatch.setattr(reward, "sparse_embedding_gradients", lambda model, enable=True: False)
    dense = train_reward(RewardTrainConfig(**cfg), progress=False)
    a = dict(load_reward_model(sparse.path / "model").named_parameters())
    b = dict(load_reward_model(dense.path / "model").named_parameters())
    start = dict(RewardModel(*load_model("tiny"), seed=2).named_parameters())
    (embedding,) = [k for k in a if "embed_tokens" in k]
    assert not torch.allclose(a[embedding], start[embedding], atol=1e-6)  # it trained
    # head.bias is left out: a pairwise loss gives it a gradient of 0 up to rounding, which Adam
    # scales up to lr-sized steps, so it moves by rounding noise in any two runs.
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a if k != "head.bias")
