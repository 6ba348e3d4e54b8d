"""`alignlab reward layers`: the layer a reward head reads, chosen by cross-validation over prompts
(tiny model, real features, real fits)."""

import json
from types import SimpleNamespace

import pytest
import torch

from alignlab.cli import main
from alignlab.data import Rating, write_feedback
from alignlab.train.reward import batch_losses
from alignlab.train.reward_layers import (RewardLayersConfig, _Losses, fit_head, held_out, parse_layers, prompt_folds,
                                          scan_layers)
from tests.train.test_reward_head_options import noisy_pairs


def test_layers_parse_ranges_lists_and_refuse_what_the_backbone_lacks():
    assert parse_layers("", 18) == [3, 6, 9, 12, 15, 18]
    assert parse_layers("", 2) == [2]
    assert parse_layers("6-8, 11", 18) == [6, 7, 8, 11]
    with pytest.raises(ValueError, match="outside 1..2"):
        parse_layers("1-3", 2)
    with pytest.raises(ValueError, match="'x' is not a layer number"):
        parse_layers("1,x", 2)


def test_folds_keep_each_prompt_whole_and_need_enough_prompts():
    prompts = [f"p{i // 3}" for i in range(30)]  # 10 prompts, 3 items each
    folds = prompt_folds(prompts, 5, seed=0)
    for p in set(prompts):
        assert len({f for q, f in zip(prompts, folds) if q == p}) == 1
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    assert prompt_folds(prompts, 5, seed=0) == folds and prompt_folds(prompts, 5, seed=1) != folds
    with pytest.raises(ValueError, match="3 distinct prompts cannot fill 5 folds"):
        prompt_folds(["a", "b", "c"], 5, seed=0)


def test_the_head_fit_is_the_penalised_optimum():
    """On separable toy features the L-BFGS fit reaches zero gradient of mean NLL + l2 ||w||^2, and
    a larger penalty gives a smaller weight."""
    torch.manual_seed(0)
    features = torch.randn(40, 3)
    options = [[2 * i, 2 * i + 1] for i in range(20)]
    chosen = [0 if features[2 * i, 0] > features[2 * i + 1, 0] else 1 for i in range(20)]
    items = SimpleNamespace(options=options, chosen=torch.tensor(chosen), beta=torch.ones(20), margin=torch.zeros(20),
                            reference=torch.zeros(20, dtype=torch.bool), rating=torch.full((20,), float("nan")))
    rows = list(range(20))
    weights = []
    for l2 in (0.01, 1.0):
        head, z = fit_head(features, items, rows, l2)
        head.zero_grad()
        losses, _ = batch_losses(lambda t: head(z[t]), items, rows, 0.0, _Losses())
        (losses.mean() + l2 * head.weight.pow(2).sum()).backward()
        assert head.weight.grad.abs().max() < 1e-4
        weights.append(float(head.weight.norm()))
        nll, correct = held_out(head, z, items, rows)
        assert len(nll) == len(correct) == 20 and sum(correct) / 20 > 0.9  # the first feature decides
    assert weights[1] < weights[0]


def test_a_scan_finds_the_signal_and_names_the_lowest_held_out_loss(tmp_path):
    data = noisy_pairs(tmp_path / "pairs.jsonl", prompts=40, per_prompt=2, flipped=0.1)
    result = scan_layers(RewardLayersConfig(data=str(data), model="tiny", layers="1-2", folds=4, head_l2=0.01),
                         progress=False)
    assert [row["layer"] for row in result["layers"]] == [1, 2]
    assert result["choices"] == 80 and result["prompts"] == 40 and result["depth"] == 2
    assert result["best"] == min(result["layers"], key=lambda r: r["held_out_nll"])["layer"]
    for row in result["layers"]:
        low, high = row["accuracy_ci"]
        assert 0 <= low <= row["accuracy"] <= high <= 1
    # a positive word decides 90% of the labels: held-out folds see it too
    assert max(row["accuracy"] for row in result["layers"]) > 0.7
    assert min(row["held_out_nll"] for row in result["layers"]) < 0.69  # better than a coin: log 2


def test_the_command_prints_a_table_or_json_and_refuses_ratings_only(tmp_path, capsys):
    data = noisy_pairs(tmp_path / "pairs.jsonl", prompts=12, per_prompt=2)
    assert main(["reward", "layers", "--data", str(data), "--model", "tiny", "--layers", "2", "--folds", "3",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["best"] == 2 and len(out["layers"]) == 1
    assert main(["reward", "layers", "--data", str(data), "--model", "tiny", "--folds", "3"]) == 0
    text = capsys.readouterr().out
    assert "<- lowest NLL" in text and "--layer 2" in text
    ratings = tmp_path / "ratings.jsonl"
    write_feedback(ratings, [Rating(f"Review {i}:", " fine.", 4.0) for i in range(3)])
    assert main(["reward", "layers", "--data", str(ratings), "--model", "tiny"]) == 1
    assert "no choices between two or more responses" in capsys.readouterr().err
