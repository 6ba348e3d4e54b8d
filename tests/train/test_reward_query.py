"""`alignlab reward query`: one round of active queries on the tiny model, from a pool file and
the comparisons answered so far."""

import json
import subprocess
import sys

import pytest

from alignlab.fileio import write_jsonl
from alignlab.train.reward_query import RewardQueryConfig, query

POOL = [{"prompt": "Write about the sea.", "responses": ["The sea hums.", "Waves fold in.", "Salt and foam.",
                                                         "Gulls over water."]},
        {"prompt": "Write about a city.", "completion": "Lights on glass."},
        {"prompt": "Write about a city.", "completion": "Trains at dawn."},
        {"prompt": "Write about a city.", "completion": "Trains at dawn."},  # a duplicate is one candidate
        {"prompt": "Write about snow.", "completion": "Only one candidate."}]  # nothing to compare: left out


def _config(tmp_path, **overrides):
    write_jsonl(tmp_path / "pool.jsonl", POOL)
    return RewardQueryConfig(pool=tmp_path / "pool.jsonl", model="tiny", layer=1, members=8, **overrides)


@pytest.mark.parametrize("strategy", ["random", "uncertainty", "information", "thompson"])
def test_a_round_asks_new_within_prompt_pairs_and_skips_answered_ones(tmp_path, strategy):
    write_jsonl(tmp_path / "answered.jsonl", [{"kind": "pair", "prompt": "Write about the sea.",
                                               "chosen": "Waves fold in.", "rejected": "The sea hums."}])
    rows, seen = query(_config(tmp_path, data=str(tmp_path / "answered.jsonl"), strategy=strategy, count=20),
                       progress=False)
    # the sea: 6 pairs, one answered; the city: 1 pair (the duplicate is one candidate); snow: none
    assert seen["pool_pairs"] == 7 and seen["open_pairs"] == 6 and seen["answered"] == 1
    assert len(rows) == 6
    asked = {(r["prompt"], frozenset((r["response_a"], r["response_b"]))) for r in rows}
    assert len(asked) == 6
    assert ("Write about the sea.", frozenset(("Waves fold in.", "The sea hums."))) not in asked
    for r in rows:
        assert 0.0 <= r["information"] <= 0.6932 and 0.0 <= r["p_a_preferred"] <= 1.0
        assert r["response_a"] != r["response_b"] and r["strategy"] == strategy
    if strategy == "information":
        values = [r["information"] for r in rows]
        assert values == sorted(values, reverse=True)  # best first


def test_a_first_round_reads_the_prior_and_bad_pools_are_named(tmp_path):
    rows, seen = query(_config(tmp_path, count=2), progress=False)
    assert len(rows) == 2 and seen["answered"] == 0
    with pytest.raises(ValueError, match="bootstrap resamples answered comparisons"):
        query(_config(tmp_path, posterior="bootstrap"), progress=False)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "responses": "not a list"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl line 1: needs 'responses'"):
        query(RewardQueryConfig(pool=tmp_path / "bad.jsonl", model="tiny", layer=1), progress=False)


def test_the_command_writes_the_pairs_and_says_how_to_answer_them(tmp_path):
    _config(tmp_path)
    out = tmp_path / "ask.jsonl"
    done = subprocess.run([sys.executable, "-m", "alignlab.cli", "reward", "query", "--pool", str(tmp_path / "pool.jsonl"),
                           "--model", "tiny", "--layer", "1", "--count", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and "3 pairs asked (information)" in done.stderr and '"chosen"' in done.stderr
