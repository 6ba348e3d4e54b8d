"""A process reward model as a reward (train/reward_fn.py, prm.py): step increments, step ends and
their tokens, GRPO's process-supervision advantages and PPO's dense rewards on hand-made numbers,
then a saved tiny model as the reward of bon, GRPO and PPO end to end."""

import json
import math
import re
import shutil

import pytest
import torch

from alignlab.cli import main
from alignlab.data.steps import split_steps
from alignlab.fileio import read_jsonl
from alignlab.train.bon import BoNConfig, run_best_of_n
from alignlab.data import steps as steps_module
from alignlab.train import grpo as grpo_module
from alignlab.train import ppo as ppo_module
from alignlab.train.grpo import GRPOConfig, loss as grpo_loss, step_advantages, train_grpo
from alignlab.train.online import step_token_positions
from alignlab.train.ppo import PPOConfig, dense_step_rewards, train_ppo
from alignlab.train.prm import PRMTrainConfig, StepScores, aggregate, load_prm, step_ends, step_increments, train_prm
from alignlab.train.reward_model import resolve_reward_model
from alignlab.train.reward_fn import load_reward, load_step_reward
from tests.train.test_prm import planted

FUNCTION = "tests.train.rewards_for_tests:vowel_share"


# -- hand-made numbers ---------------------------------------------------------------------------


def test_step_increments_sum_to_the_aggregate():
    probs = [0.9, 0.2, 0.8]
    assert step_increments(probs, "min") == pytest.approx([0.9, -0.7, 0.0])
    assert step_increments(probs, "product") == pytest.approx([0.9, 0.18 - 0.9, 0.144 - 0.18])
    assert step_increments(probs, "last") == pytest.approx([0.9, -0.7, 0.6])
    assert step_increments(probs, "mean") == pytest.approx([0.9, 0.55 - 0.9, (1.9 / 3) - 0.55])
    for how in ("min", "product", "last", "mean"):
        assert sum(step_increments(probs, how)) == pytest.approx(aggregate(probs, how))
        assert StepScores(probs, [1, 2, 3], how).score == pytest.approx(aggregate(probs, how))


def test_step_ends_are_offsets_in_the_response():
    text = "A cat.\nIt sat.\n\nDone."
    assert step_ends(text, split_steps(text, "lines")) == [7, 16, 21]
    marked = "a\u241eb c\u241ed"
    assert step_ends(marked, split_steps(marked, "marks")) == [1, 5, 7]  # the marks belong to no step


def test_a_step_ends_at_the_token_that_completes_its_last_character():
    texts = ["The", " cat", ".\n", "It", " sat", ".", ""]  # "" : EOS adds no text
    assert step_token_positions(texts, [9, 16]) == [2, 6]  # the last step ends at the last token (EOS)
    assert step_token_positions(texts, [3, 8, 16]) == [0, 2, 6]  # mid-token: the token holding the character
    # a multi-byte character: the token that completes it adds its text, the one before adds ''
    assert step_token_positions(["", "\u00e9", "\n", "x"], [2, 3]) == [2, 3]
    # an empty response's one step (ending at 0) is its last token; offsets past the text are clamped
    assert step_token_positions([""], [0]) == [0]
    assert step_token_positions(["ab", "c"], [9, 9]) == [1, 1]


def test_grpo_process_advantages_follow_deepseekmath():
    # Group 1: A steps [0.9, 0.5] ending at tokens 1, 3 of 4; B [0.7, 0.1, 0.3] ending at 0, 2, 4 of 5.
    # Pooled mean 0.5, sample std sqrt(0.4 / 4) = 0.3162: normalised A [1.2649, 0], B [0.6325, -1.2649, -0.6325].
    # Group 2: C [0.2] (2 tokens), D [0.4] (1 token): mean 0.3, std 0.1414, normalised -0.7071, 0.7071.
    rewards = [[0.9, 0.5], [0.7, 0.1, 0.3], [0.2], [0.4]]
    positions = [[1, 3], [0, 2, 4], [1], [0]]
    lengths = [4, 5, 2, 1]
    out = step_advantages(rewards, positions, lengths, GRPOConfig(group_size=2))
    z = 1 / 0.31623
    expected = [[1.2649, 1.2649, 0.0, 0.0],
                [0.2 * z - 0.4 * z - 0.2 * z, -0.6 * z, -0.6 * z, -0.2 * z, -0.2 * z],
                [-0.7071, -0.7071], [0.7071]]
    for got, want in zip(out, expected):
        assert got == pytest.approx(want, abs=1e-3)
    unscaled = step_advantages(rewards, positions, lengths, GRPOConfig(group_size=2, scale_rewards="none"))
    assert unscaled[0] == pytest.approx([0.4, 0.4, 0.0, 0.0]) and unscaled[3] == pytest.approx([0.1])
    with pytest.raises(ValueError, match="groups of 3"):
        step_advantages(rewards, positions, lengths, GRPOConfig(group_size=3))


def test_grpo_loss_takes_per_token_advantages():
    torch.manual_seed(0)
    target = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    batch = {"logps": torch.randn(2, 4), "old_logps": torch.randn(2, 4), "ref_logps": torch.randn(2, 4),
             "target": target, "advantages": torch.tensor([0.5, -1.0]), "share": 1.0, "num_items": 5}
    config = GRPOConfig(group_size=2, loss_type="grpo")
    shared, _ = grpo_loss(batch, config)
    spread, _ = grpo_loss({**batch, "advantages": torch.tensor([[0.5] * 4, [-1.0] * 4])}, config)
    assert float(spread) == pytest.approx(float(shared))
    other, _ = grpo_loss({**batch, "advantages": torch.tensor([[0.5, 0.5, 0.5, 2.0], [-1.0] * 4])}, config)
    assert float(other) != pytest.approx(float(shared))


def test_ppo_dense_rewards_sit_where_each_step_ends():
    # Row 0: prompt of 2 tokens, then "The cat.\nIt sat." + EOS; min over [0.9, 0.2] -> [0.9, -0.7].
    # Row 1: prompt of 3 tokens, then "Hi!" (no EOS): one step [0.6] at its last token.
    target = torch.zeros(2, 9, dtype=torch.bool)
    target[0, 2:9] = True
    target[1, 3:5] = True
    steps = [StepScores([0.9, 0.2], [9, 16], "min"), StepScores([0.6], [3], "min")]
    texts = [["The", " cat", ".\n", "It", " sat", ".", ""], ["Hi", "!"]]
    rewards = dense_step_rewards(steps, texts, target)
    expected = torch.zeros(2, 9)
    expected[0, 2 + 2], expected[0, 2 + 6], expected[1, 3 + 1] = 0.9, -0.7, 0.6
    assert torch.allclose(rewards, expected)
    assert rewards.sum(-1).tolist() == pytest.approx([s.score for s in steps])


# -- a saved tiny process reward model -----------------------------------------------------------


@pytest.fixture(scope="module")
def prm_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prm_reward")
    data = planted(folder / "steps.jsonl", records=40)
    return train_prm(PRMTrainConfig(data=str(data), model="tiny", layer=1, l2=0.01, eval_fraction=0.0,
                                    aggregate="product"), progress=False)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prm_prompts") / "prompts.txt"
    path.write_text("\n".join(f"Task {i}:" for i in range(4)) + "\n")
    return path


def test_load_reward_gives_the_aggregate_of_the_step_scores(prm_run):
    folder = prm_run.path / "model"
    assert json.loads((folder / "prm_config.json").read_text())["split_by"] == "lines"
    prm = load_prm(folder)
    prompts = ["Task 0:", "Task 1:", "Task 2:"]
    responses = ["The film was long.\nThe plot was awful and dreadful.\n", "Music.", ""]
    expected = [aggregate(p, "product") for p in prm.score_steps(prompts[:2], [split_steps(r) for r in responses[:2]])]
    for spec in (str(folder), prm_run.id):
        reward, described = load_reward(spec)
        assert described == f"process reward model {folder} (aggregate product)"
        got = reward(prompts, responses)
        assert got.shape == (3,) and got[:2].tolist() == pytest.approx(expected, abs=1e-6)
        assert got[2] == 0.0  # no steps: one step of probability 0
    by_min, described = load_reward(str(folder), aggregate="min")
    assert described.endswith("(aggregate min)") and by_min(prompts[:1], responses[:1])[0] > got[0]  # min > product
    steps, _ = load_step_reward(prm_run.id)
    first, _, empty = steps(prompts, responses)
    assert first.ends == [19, len(responses[0])] and len(first.probabilities) == 2
    assert by_min(prompts[:1], responses[:1])[0] == pytest.approx(min(first.probabilities))
    assert empty.probabilities == [0.0] and empty.ends == [0] and empty.score == 0.0
    with pytest.raises(ValueError, match="use one of min"):
        load_reward(str(folder), aggregate="max")


def test_the_saved_split_is_used_and_old_models_split_by_lines(prm_run, tmp_path):
    config_path = prm_run.path / "model" / "prm_config.json"
    for split, steps_expected in (("sentences", 2), (None, 1)):
        copy = tmp_path / f"prm-{split}"
        shutil.copytree(prm_run.path / "model", copy)
        config = json.loads(config_path.read_text())
        if split is None:
            del config["split_by"]  # as saved before split_by was recorded
        else:
            config["split_by"] = split
        (copy / "prm_config.json").write_text(json.dumps(config))
        assert load_prm(copy).split_by == (split or "lines")
        steps, _ = load_step_reward(str(copy))
        (scored,) = steps(["Task 0:"], ["The film was long. The plot was bright."])
        assert len(scored.probabilities) == steps_expected


def test_a_process_model_is_refused_where_only_an_outcome_model_goes(prm_run, prompts, capsys):
    for ref in (prm_run.id, prm_run.path, prm_run.path / "model"):
        with pytest.raises(ValueError, match="is a process reward model"):
            resolve_reward_model(ref)
    assert main(["reward", "score", "--model", prm_run.id, "--response", "Hi."]) == 1
    assert "only an outcome reward model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a process reward model"):
        load_step_reward(FUNCTION)
    with pytest.raises(ValueError, match="is for a process reward model"):
        load_reward(FUNCTION, aggregate="min")
    with pytest.raises(ValueError, match="not a process reward model"):
        train_grpo(GRPOConfig(prompts=prompts, reward=FUNCTION, model="tiny", process_rewards=True), progress=False)
    with pytest.raises(ValueError, match="belongs to no one step"):
        train_grpo(GRPOConfig(prompts=prompts, reward=prm_run.id, model="tiny", process_rewards=True,
                              kl_in="reward"), progress=False)
    with pytest.raises(ValueError, match="not a process reward model"):
        train_ppo(PPOConfig(prompts=prompts, reward=FUNCTION, model="tiny", dense_rewards=True), progress=False)


def test_best_of_n_with_a_process_reward_model(prm_run, prompts, capsys):
    run = run_best_of_n(BoNConfig(prompts=prompts, reward=prm_run.id, model="tiny", n=[1, 2, 4], max_new_tokens=12),
                        progress=False)
    pressure = json.loads((run.path / "pressure.json").read_text())
    assert pressure["reward"] == f"process reward model {prm_run.path / 'model'} (aggregate product)"
    entries = pressure["entries"]
    scores = [e["objective/scores"] for e in entries]
    assert scores == sorted(scores) and all(0 <= s <= 1 for s in scores)
    sample = json.loads((run.path / "samples.jsonl").read_text().splitlines()[0])
    reward, _ = load_reward(prm_run.id)
    again = reward([sample["prompt"]] * 4, sample["responses"])
    assert again.tolist() == pytest.approx(sample["proxy"], abs=1e-5)
    assert main(["bon", "--prompts", str(prompts), "--reward", str(prm_run.path / "model"), "--model", "tiny",
                 "--n", "1", "2", "--max-new-tokens", "6"]) == 0
    assert "KL (nats)" in capsys.readouterr().out


def finite_metrics(run) -> list[dict]:
    rows = [m for m in read_jsonl(run.path / "metrics.jsonl") if "objective/scores" in m]
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float):
                assert math.isfinite(value), (key, value)
    return rows


@pytest.fixture
def words_as_steps(monkeypatch):
    """The tiny random model writes no newlines: cut 'lines' at spaces instead, so the loops below
    see responses of several steps."""
    monkeypatch.setitem(steps_module._BOUNDARY, "lines", re.compile(r" +"))


def test_grpo_with_process_rewards_runs_end_to_end(prm_run, prompts, words_as_steps, monkeypatch):
    seen = []

    def recording(rewards, positions, lengths, config):
        out = step_advantages(rewards, positions, lengths, config)
        seen.append((rewards, positions, lengths, out))
        return out

    monkeypatch.setattr(grpo_module.GRPO, "step_advantages", recording)
    run = train_grpo(GRPOConfig(prompts=prompts, reward=prm_run.id, model="tiny", iterations=2,
                                prompts_per_iteration=2, group_size=3, max_new_tokens=12, lr=1e-3,
                                process_rewards=True, sample_every=0, missing_eos_penalty=0.5), progress=False)
    rows = finite_metrics(run)
    assert len(rows) == 2 and all(0 <= r["objective/scores"] <= 1 for r in rows)
    assert all(r["grad_norm"] > 0 for r in rows)  # the step advantages reached the loss
    assert (run.path / "policy").exists()
    assert len(seen) == 2 and all(len(rewards) == 6 for rewards, *_ in seen)
    rewards, positions, lengths, out = seen[0]
    assert max(len(r) for r in rewards) > 1  # several steps, each ending at its own token
    assert all(p == sorted(p) and p[-1] == n - 1 for p, n in zip(positions, lengths))
    assert any(len(set(row)) > 1 for row in out)  # advantages change along a response


def test_ppo_with_dense_rewards_and_rloo_with_a_process_model_run(prm_run, prompts, words_as_steps, monkeypatch):
    from alignlab.train.rloo import RLOOConfig, train_rloo

    seen, placing = [], ppo_module.dense_step_rewards

    def recording(steps, token_texts, target):
        out = placing(steps, token_texts, target)
        seen.append((steps, out))
        return out

    monkeypatch.setattr(ppo_module, "dense_step_rewards", recording)
    run = train_ppo(PPOConfig(prompts=prompts, reward=prm_run.id, model="tiny", iterations=2, rollout_batch=2,
                              minibatch_size=2, ppo_epochs=1, max_new_tokens=12, dense_rewards=True,
                              sample_every=0), progress=False)
    rows = finite_metrics(run)
    assert len(rows) == 2 and all(0 <= r["objective/scores"] <= 1 for r in rows)
    steps, placed = seen[0]
    assert max(len(s.probabilities) for s in steps) > 1
    assert ((placed != 0).sum(-1) > 1).any()  # rewards at several tokens of a response
    assert placed.sum(-1).tolist() == pytest.approx([s.score for s in steps], abs=1e-5)
    run = train_rloo(RLOOConfig(prompts=prompts, reward=prm_run.id, model="tiny", iterations=1,
                                prompts_per_iteration=2, group_size=2, max_new_tokens=8, sample_every=0),
                     progress=False)
    assert len(finite_metrics(run)) == 1
