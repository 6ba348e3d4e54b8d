import json
import math

import pytest

from alignlab.cli import main
from alignlab.train.bon import BoNConfig, run_best_of_n

PROXY = "tests.train.rewards_for_tests:vowel_share"


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("bon") / "prompts.txt"
    path.write_text("\n".join(f"Tell me about place {i}." for i in range(6)) + "\n")
    return path


def test_best_of_n_raises_the_proxy_with_n_and_records_the_analytic_kl(prompts):
    run = run_best_of_n(BoNConfig(prompts=prompts, reward=PROXY, gold="tests.train.rewards_for_tests:length_judge",
                                  model="tiny", n=[1, 2, 4, 8], max_new_tokens=8), progress=False)
    entries = json.loads((run.path / "pressure.json").read_text())["entries"]
    assert [e["n"] for e in entries] == [1, 2, 4, 8]
    assert [e["objective/kl"] for e in entries] == pytest.approx([math.log(n) - (n - 1) / n for n in (1, 2, 4, 8)])
    scores = [e["objective/scores"] for e in entries]
    assert scores == sorted(scores) and scores[-1] > scores[0]
    assert entries[0]["gold_win_rate_vs_base"] == 0.5  # n = 1 is the base itself: all ties
    samples = [json.loads(line) for line in (run.path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and len(samples[0]["responses"]) == 8


def test_bon_cli_and_a_reward_of_the_wrong_type_is_refused(prompts, capsys):
    assert main(["bon", "--prompts", str(prompts), "--reward", PROXY, "--model", "tiny", "--n", "1", "4",
                 "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "KL (nats)" in out and "0.636" in out  # log 4 - 3/4
    assert main(["bon", "--prompts", str(prompts), "--reward", "tests.train.rewards_for_tests:not_a_number",
                 "--model", "tiny"]) == 1
    assert "one finite number" in capsys.readouterr().err


def test_bon_selects_among_given_samples_without_a_model(tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"prompt": "p1", "responses": ["zzz", "aaa", "zzzz", "ae"]}) + "\n"
                       + json.dumps({"prompt": "p2", "responses": ["aei", "xyz", "q", "r"]}) + "\n")
    run = run_best_of_n(BoNConfig(samples=samples, reward=PROXY, model="no-such-model", n=[1, 2, 4]), progress=False)
    entries = json.loads((run.path / "pressure.json").read_text())["entries"]
    # vowel share: n=1 takes the first response, n=2 the better of the first two, n=4 the best of all
    assert [e["objective/scores"] for e in entries] == pytest.approx([(0 + 1) / 2, (1 + 1) / 2, (1 + 1) / 2])
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"prompt": "p", "responses": ["a", "b"]}) + "\n")
    with pytest.raises(ValueError, match="line 1: 2 responses, but n goes up to 4"):
        run_best_of_n(BoNConfig(samples=short, reward=PROXY, n=[1, 4]), progress=False)
