"""The reward trainer's options for a frozen-backbone head: the layer it reads, an L2 penalty on
its weight, early stopping on held-out loss, and the held-out split by prompt (tiny model)."""

import json
import random
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from alignlab.data import PreferencePair, Ranking, write_feedback
from alignlab.feedback.choices import to_choices
from alignlab.models.forward import decoder
from alignlab.train.hooks import Hooks
from alignlab.train.reward import (RewardTrainConfig, batch_losses, build_items, cached_features, head_l2_penalty,
                                   load_choices, split, train_reward)
from alignlab.train.reward_model import (RewardModel, configure_trainable, load_reward_model, pad_right,
                                         save_reward_model, starts_of)

GOOD = ["wonderful", "great", "lovely", "superb", "delightful"]
BAD = ["awful", "terrible", "boring", "dreadful", "bad"]
FILLER = ["the", "film", "was", "a", "story", "with", "actors", "and", "music", "plot"]
TEMPLATE = "You are a film critic. Read the review below and answer in one sentence. Review:"


def sentence(rng, words):
    w = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
    w.insert(rng.randint(0, len(w)), rng.choice(words))
    return " " + " ".join(w) + "."


def noisy_pairs(path, prompts=60, per_prompt=2, flipped=0.2, seed=0):
    """Pairs where the chosen response holds a positive word, a share ``flipped`` the other way
    round, several pairs per prompt: a head learns the signal first, then fits the noise."""
    rng = random.Random(seed)
    records = []
    for i in range(prompts):
        for _ in range(per_prompt):
            good, bad = sentence(rng, GOOD), sentence(rng, BAD)
            if rng.random() < flipped:
                good, bad = bad, good
            records.append(PreferencePair(f"Review {i}:", good, bad))
    write_feedback(path, records)
    return path


def summary(run):
    return json.loads((run.path / "summary.json").read_text())


class Recorder:
    """A training hook that keeps the loss, the monitors' recomputed loss and the head after each step."""

    def __init__(self):
        self.loss, self.recomputed, self.heads = {}, {}, {}

    def after_backward(self, ctx):
        self.loss[ctx.step] = float(ctx.loss)
        self.recomputed[ctx.step] = float(ctx.loss_fn())

    def after_step(self, ctx):
        self.heads[ctx.step] = (ctx.model.head.weight.detach().clone(), ctx.model.head.bias.detach().clone())


# -- layer -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("packing", ["1", "0"])
def test_a_layer_reads_what_transformers_returns_as_that_layers_hidden_states(tiny, monkeypatch, packing):
    monkeypatch.setenv("ALIGNLAB_PACKING", packing)
    lm, tok = tiny
    body = decoder(lm)
    rm = RewardModel(lm, tok, seed=0, pooling="mean", layer=1).eval()
    # A shared template (the prefix-sharing path) and rows of different lengths (padding).
    rows = [rm.encode(TEMPLATE + " one", " a short answer"), rm.encode(TEMPLATE + " two", " a much longer answer with words"),
            rm.encode(TEMPLATE + " one", " x")]
    ids, mask = pad_right(rows, rm.pad_id)
    with torch.no_grad():
        expected = torch.stack([body(input_ids=torch.tensor([list(r)]), output_hidden_states=True)
                                .hidden_states[1][0, r.start:].mean(0) for r in rows])
        got = rm.features(ids, mask, starts_of(rows))
        final = RewardModel(lm, tok, seed=0, pooling="mean").features(ids, mask, starts_of(rows))
        last = RewardModel(lm, tok, seed=0, pooling="last", layer=1).features(ids, mask)
        as_many_as_the_model = RewardModel(lm, tok, seed=0, pooling="mean", layer=2).features(ids, mask, starts_of(rows))
        expected_last = torch.stack([body(input_ids=torch.tensor([list(r)]), output_hidden_states=True)
                                     .hidden_states[1][0, -1] for r in rows])
    assert torch.allclose(got, expected, atol=1e-5)
    assert (got - final).abs().max() > 0.1  # layer 1 is not the final layer: the comparison can fail
    assert torch.allclose(last, expected_last, atol=1e-5)
    assert torch.allclose(as_many_as_the_model, final, atol=1e-6)  # layer = number of layers: the final states


def test_a_layer_stops_the_backbone_there_and_leaves_it_whole_afterwards(tiny):
    lm, tok = tiny
    body = decoder(lm)
    layers, norm = body.layers, body.norm
    calls = []
    handle = body.layers[1].register_forward_hook(lambda *args: calls.append(1))
    try:
        x = RewardModel(lm, tok, pooling="mean", layer=1).encode("Q:", " an answer")
        ids, mask, starts = torch.tensor([list(x)]), torch.ones(1, len(x), dtype=torch.long), starts_of([x])
        with torch.no_grad():
            RewardModel(lm, tok, pooling="mean", layer=1).features(ids, mask, starts)
            assert calls == []  # layer 2 never ran
            RewardModel(lm, tok, pooling="mean").features(ids, mask, starts)
            assert calls == [1]
    finally:
        handle.remove()
    assert body.layers is layers and body.norm is norm and len(body.layers) == 2


def test_a_layer_outside_the_backbone_or_with_a_trained_backbone_is_refused(tiny, tmp_path):
    lm, tok = tiny
    with pytest.raises(ValueError, match="2 decoder layers"):
        RewardModel(lm, tok, layer=3)
    for mode in ("last", "lora", "full"):
        with pytest.raises(ValueError, match="only mode 'head'"):
            configure_trainable(RewardModel(lm, tok, layer=1), mode, last_layers=1)
    data = noisy_pairs(tmp_path / "pairs.jsonl", prompts=4)
    with pytest.raises(ValueError, match="only mode 'head'"):
        train_reward(RewardTrainConfig(data=str(data), model="tiny", mode="last", layer=1), progress=False)


def test_a_layer_is_saved_and_a_reloaded_model_scores_the_same(tiny, tmp_path):
    lm, tok = tiny
    rm = RewardModel(lm, tok, ensemble=2, seed=3, pooling="mean", layer=1)
    with torch.no_grad():
        rm.head.weight.add_(torch.randn_like(rm.head.weight))
    rm.norm_mean.fill_(0.5)
    save_reward_model(rm, tmp_path / "rm", "head", "tiny")
    assert json.loads((tmp_path / "rm" / "reward_config.json").read_text())["layer"] == 1
    again = load_reward_model(tmp_path / "rm")
    prompts, responses = ["Q:", "Tell me", TEMPLATE], [" yes", " a story about the sea", " fine"]
    m1, s1 = rm.score(prompts, responses)
    m2, s2 = again.score(prompts, responses)
    assert again.layer == 1
    assert torch.allclose(m1, m2, atol=1e-6) and torch.allclose(s1, s2, atol=1e-6)
    final = RewardModel(lm, tok, ensemble=2, pooling="mean")
    final.load_state_dict(rm.state_dict())
    assert not torch.allclose(final.score(prompts, responses)[0], m1, atol=1e-3)  # the layer matters


def test_the_trainer_reads_the_layer_it_is_given(tmp_path):
    data = noisy_pairs(tmp_path / "pairs.jsonl", prompts=12)
    common = dict(data=str(data), model="tiny", mode="head", pooling="mean", max_steps=3, lr=1e-2, eval_fraction=0)
    at_one = load_reward_model(train_reward(RewardTrainConfig(**common, layer=1), progress=False).path / "model")
    at_end = load_reward_model(train_reward(RewardTrainConfig(**common), progress=False).path / "model")
    assert at_one.layer == 1 and at_end.layer == 0
    assert not torch.allclose(at_one.head.weight, at_end.head.weight)


# -- head_l2 -----------------------------------------------------------------------------------------


def test_the_l2_penalty_is_the_coefficient_times_the_squared_weight_and_leaves_the_bias_alone():
    head = torch.nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 2.0]]))
        head.bias.copy_(torch.tensor([5.0, -7.0]))
    penalty = head_l2_penalty(head, 0.1)
    assert float(penalty.detach()) == pytest.approx(0.1 * (1 + 4 + 9 + 1 + 0 + 4))
    penalty.backward()
    assert torch.allclose(head.weight.grad, 0.2 * head.weight) and head.bias.grad is None


def test_the_trainer_adds_the_l2_term_to_the_loss_the_monitors_recompute(tmp_path, tiny):
    data = noisy_pairs(tmp_path / "pairs.jsonl", prompts=12)
    common = dict(data=str(data), model="tiny", mode="head", pooling="mean", max_steps=6, lr=1e-2, ensemble=2,
                  eval_fraction=0, seed=5)
    plain, penalised = Recorder(), Recorder()
    train_reward(RewardTrainConfig(**common), progress=False, hooks=Hooks([plain]))
    run = train_reward(RewardTrainConfig(**common, head_l2=0.3), progress=False, hooks=Hooks([penalised]))
    w0 = RewardModel(*tiny, ensemble=2, seed=5).head.weight  # the head both runs start from
    by_hand = 0.3 * sum(float((w0[k] ** 2).sum()) for k in range(2))
    assert penalised.loss[1] - plain.loss[1] == pytest.approx(by_hand, rel=1e-5)
    assert penalised.recomputed[1] == pytest.approx(penalised.loss[1], rel=1e-6)
    logged = [m for m in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines()) if "loss/l2" in m]
    assert logged[0]["loss/l2"] == pytest.approx(by_hand, rel=1e-5)
    norm = lambda r: float(r.heads[6][0].norm())  # noqa: E731
    assert norm(penalised) < norm(plain)


# -- the held-out split and early stopping -------------------------------------------------------------


def test_the_held_out_split_never_puts_one_prompt_on_both_sides():
    rng = random.Random(3)
    records = [PreferencePair(f"P{i % 9}:", sentence(rng, GOOD), sentence(rng, BAD)) for i in range(40)]
    records += [Ranking(f"R{i}:", [sentence(rng, GOOD) for _ in range(4)], [1, 2, 3, 4]) for i in range(6)]  # 3 choices each
    items = build_items(to_choices(records), SimpleNamespace(encode=lambda p, r: []))
    n = len(items.options)
    mixed = 0
    for seed in range(10):
        for fraction in (0.1, 0.25, 0.5):
            train, held = split(n, fraction, seed, items.prompts)
            assert sorted(train + held) == list(range(n)) and held
            assert not {items.prompts[i] for i in train} & {items.prompts[i] for i in held}
            assert len(held) >= round(n * fraction)
            plain_train, plain_held = split(n, fraction, seed)
            mixed += bool({items.prompts[i] for i in plain_train} & {items.prompts[i] for i in plain_held})
    assert mixed  # an item-level split would mix them: the check above can fail
    # Distinct prompts (or none): the split is the item-level one; an empty prompt is no group.
    assert split(30, 0.2, 4, [f"p{i}" for i in range(30)]) == split(30, 0.2, 4)
    assert split(30, 0.2, 4, [""] * 30) == split(30, 0.2, 4)


def test_early_stopping_keeps_and_saves_the_epoch_with_the_lowest_held_out_loss(tmp_path, tiny):
    data = noisy_pairs(tmp_path / "pairs.jsonl")
    config = RewardTrainConfig(data=str(data), model="tiny", mode="head", pooling="mean", epochs=10, lr=1e-2,
                               eval_fraction=0.3, early_stop=True, seed=1)
    recorder = Recorder()
    run = train_reward(config, progress=False, hooks=Hooks([recorder]))
    record = summary(run)["early_stop"]
    curve = record["held_out_loss"]
    losses = [p["loss"] for p in curve]
    assert [p["epoch"] for p in curve] == list(range(1, 11))
    best = min(range(10), key=losses.__getitem__)
    assert record["best_epoch"] == curve[best]["epoch"] and record["best_loss"] == losses[best]
    assert 1 < record["best_epoch"] < 10  # planted: the noise is fitted after the signal
    # The curve, recomputed here from each epoch's head on the prompts held out by prompt.
    choice_set, _ = load_choices(config)
    rm = RewardModel(*tiny, pooling="mean")
    items = build_items(choice_set, rm)
    train_rows, eval_rows = split(len(items.options), 0.3, 1, items.prompts)
    assert not {items.prompts[i] for i in train_rows} & {items.prompts[i] for i in eval_rows}
    features = cached_features(rm, items.ids, progress=False)
    for point in curve:
        weight, bias = recorder.heads[point["step"]]
        values, _ = batch_losses(lambda t: features[t] @ weight.T + bias, items, eval_rows, 0.0, config)
        assert float(values.mean()) == pytest.approx(point["loss"], abs=1e-5)
    saved = load_file(str(run.path / "model" / "reward_head.safetensors"))
    weight, bias = recorder.heads[record["best_step"]]
    assert torch.equal(saved["head.weight"], weight) and torch.equal(saved["head.bias"], bias)
    assert not torch.equal(saved["head.weight"], recorder.heads[max(recorder.heads)][0])


def test_early_stopping_resumes_to_the_same_choice(tmp_path):
    data = noisy_pairs(tmp_path / "pairs.jsonl", prompts=30)
    cfg = dict(data=str(data), model="tiny", mode="head", pooling="mean", epochs=6, lr=1e-2, eval_fraction=0.3,
               early_stop=True, seed=1, checkpoint_every=4)
    whole = train_reward(RewardTrainConfig(**cfg), progress=False)
    part = train_reward(RewardTrainConfig(**cfg, stop_after=13), progress=False)
    resumed = train_reward(RewardTrainConfig(resume=part.id), progress=False)
    assert summary(resumed)["early_stop"] == summary(whole)["early_stop"]
    a = load_file(str(whole.path / "model" / "reward_head.safetensors"))
    b = load_file(str(part.path / "model" / "reward_head.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_or_a_negative_penalty_that_cannot_work_is_refused(tmp_path):
    data = noisy_pairs(tmp_path / "pairs.jsonl", prompts=4)
    for bad, message in [(dict(early_stop=True, eval_fraction=0.0), "early_stop"), (dict(head_l2=-1.0), "head_l2")]:
        with pytest.raises(ValueError, match=message):
            train_reward(RewardTrainConfig(data=str(data), model="tiny", **bad), progress=False)


# -- standardize -------------------------------------------------------------------------------------


def test_a_standardized_head_reads_features_centred_and_scaled_on_the_training_texts(tmp_path, tiny):
    data = noisy_pairs(tmp_path / "pairs.jsonl", prompts=12)
    run = train_reward(RewardTrainConfig(data=str(data), model="tiny", mode="head", pooling="mean", layer=1,
                                         max_steps=3, lr=1e-2, eval_fraction=0.25, standardize=True), progress=False)
    rm = load_reward_model(run.path / "model")
    # the saved statistics are those of the training choices' texts (held-out prompts' texts excluded)
    choice_set, _ = load_choices(RewardTrainConfig(data=str(data)))
    items = build_items(choice_set, rm)
    train_rows, held_rows = split(len(items.options), 0.25, 0, items.prompts)
    used = sorted({t for r in train_rows for t in items.options[r]})
    features = cached_features(rm, items.ids, progress=False)
    assert torch.allclose(rm.head.feature_mean, features[used].mean(0), atol=1e-5)
    assert torch.allclose(rm.head.feature_std, features[used].std(0), atol=1e-5)
    assert not torch.allclose(rm.head.feature_mean, features.mean(0), atol=1e-5)  # held-out texts left out
    # the head is linear in the standardised features, and a reloaded model scores the same
    z = (features - features[used].mean(0)) / features[used].std(0)
    assert torch.allclose(rm.head(features), z @ rm.head.weight.T + rm.head.bias, atol=1e-4)
    again = load_reward_model(run.path / "model")
    assert torch.allclose(again.score(["Q:"], [" fine"])[0], rm.score(["Q:"], [" fine"])[0], atol=1e-6)


def test_standardizing_a_trained_backbone_is_refused(tmp_path):
    data = noisy_pairs(tmp_path / "pairs.jsonl", prompts=4)
    with pytest.raises(ValueError, match="standardize needs mode 'head'"):
        train_reward(RewardTrainConfig(data=str(data), model="tiny", mode="last", standardize=True), progress=False)
