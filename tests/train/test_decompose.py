"""Decomposed evaluation of long outputs (train/decompose.py): lossless chunking within the window,
the prompts each chunk is judged under, the aggregates, truncation, pair accuracy, and an end to
end agreement run and the command on the tiny model."""

import re

import pytest
import torch

from alignlab.cli import main
from alignlab.models import load_tokenizer
from alignlab.train.decompose import (ModelSummarizer, chunk_response, decomposition_agreement, judge_chunks,
                                      judge_decomposed, judge_decomposed_batch, judge_truncated, pair_accuracy,
                                      token_count)

STORY = ("The lighthouse keeper had not spoken to anyone in three winters. Every night she climbed the "
         "ninety-one steps, wiped the salt from the great lens and watched the empty sea.\n\nThen, one "
         "evening in March, a small boat came in through the fog. \"Is this the island with one telephone?\" "
         "a boy asked. She laughed for the first time in years.  ")


class WordTokenizer:
    """One token per word with the whitespace before it (trailing whitespace is a token of its own):
    chunk boundaries and truncations are then countable by hand."""

    def __init__(self):
        self.pieces: list[str] = []

    def __call__(self, text, add_special_tokens=False):
        ids = []
        for piece in re.findall(r"\s*\S+|\s+", text):
            if piece not in self.pieces:
                self.pieces.append(piece)
            ids.append(self.pieces.index(piece))
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.pieces[i] for i in ids)


class RecordingReward:
    """A reward function that records every (prompt, response) it is asked about."""

    def __init__(self, values):
        self.values = values
        self.calls: list[tuple[str, str]] = []

    def __call__(self, prompts, responses):
        self.calls += list(zip(prompts, responses))
        return torch.tensor([self.values[r] for r in responses])


def bracketing(texts):
    """A deterministic summarizer whose output shows what it read: S(text, whitespace collapsed)."""
    return ["S(" + " ".join(t.split()) + ")" for t in texts]


# --- chunking -------------------------------------------------------------------------------------

@pytest.mark.parametrize("window", [1, 5, 16, 48])
def test_chunks_are_lossless_within_the_window_and_cut_before_words(window):
    tokenizer = load_tokenizer()
    for text in (STORY, " " + STORY, "x" * 300 + " and then more", "short", "   ", ""):
        chunks = chunk_response(tokenizer, text, window)
        assert "".join(chunks) == text
        assert all(token_count(tokenizer, c) <= window for c in chunks), (window, text[:20])
        assert all(chunks) if text else chunks == [""]
    chunks = chunk_response(tokenizer, STORY, window)
    assert len(chunks) >= token_count(tokenizer, STORY) / window
    if window < 5:
        return  # the story's longer words are cut between characters at windows this small
    for chunk, after in zip(chunks, chunks[1:]):
        next_word = re.match(r"\s*\S+|\s+", after).group()
        if token_count(tokenizer, next_word) <= window:
            assert after[0].isspace(), (chunk, after)  # cut at a word boundary
            assert token_count(tokenizer, chunk + next_word) > window  # as long as the window allows


def test_chunks_on_hand_counted_tokens():
    tokenizer = WordTokenizer()
    assert chunk_response(tokenizer, " a b c d e", 2) == [" a b", " c d", " e"]
    assert chunk_response(tokenizer, "a b c\n", 3) == ["a b c", "\n"]
    with pytest.raises(ValueError, match="window is 0"):
        chunk_response(tokenizer, "a", 0)


# --- the two judgements ---------------------------------------------------------------------------

@pytest.mark.parametrize("aggregate, expected", [("mean", 8 / 3), ("min", 1.0), ("last", 2.0)])
def test_each_chunk_is_judged_under_the_prompt_and_the_summary_so_far(aggregate, expected):
    reward = RecordingReward({" a b": 1.0, " c d": 5.0, " e": 2.0})
    value = judge_decomposed(reward, "P", " a b c d e", WordTokenizer(), 2, bracketing, aggregate)
    assert value == pytest.approx(expected)
    assert reward.calls == [
        ("P", " a b"),
        ("P\nStory so far (summary): S(a b)\nThe story continues:", " c d"),
        ("P\nStory so far (summary): S(S(a b) c d)\nThe story continues:", " e"),  # summaries are recursive
    ]


def test_batched_judgement_equals_one_at_a_time_and_summarizes_each_depth_at_once():
    values = {" a b": 1.0, " c d": 5.0, " e": 2.0, " x": 7.0, " y z": 3.0}
    batches = []

    def summarize(texts):
        batches.append(list(texts))
        return bracketing(texts)

    prompts, responses = ["P", "Q", "R"], [" a b c d e", " x", " y z a b"]
    tokenizer = WordTokenizer()
    batched = judge_decomposed_batch(RecordingReward(values), prompts, responses, tokenizer, 2, summarize, "min")
    assert batches == [[" a b", " y z"], ["S(a b) c d"]]  # depth 1 for both long responses, then depth 2
    alone = [judge_decomposed(RecordingReward(values), p, r, tokenizer, 2, bracketing, "min")
             for p, r in zip(prompts, responses)]
    assert batched == alone == [1.0, 7.0, 1.0]
    judged = judge_chunks(RecordingReward(values), prompts, responses, tokenizer, 2, bracketing)
    assert [j.summaries for j in judged] == [[None, "S(a b)", "S(S(a b) c d)"], [None], [None, "S(y z)"]]
    with pytest.raises(ValueError, match="use one of mean, min, last"):
        judge_decomposed(RecordingReward(values), "P", " a", tokenizer, 2, bracketing, "max")


def test_a_summarizer_that_drops_texts_is_refused():
    with pytest.raises(ValueError, match="returned 0 summaries for 1 texts"):
        judge_decomposed(RecordingReward({" a b": 1.0, " c": 2.0}), "P", " a b c", WordTokenizer(), 2, lambda t: [],
                         "mean")


def test_truncated_judgement_reads_the_first_window_tokens_only():
    reward = RecordingReward({" a b": 1.0, " a b c": 4.0})
    assert judge_truncated(reward, "P", " a b c d e", WordTokenizer(), 2) == 1.0
    assert judge_truncated(reward, "P", " a b c", WordTokenizer(), 5) == 4.0  # fits: read whole
    assert reward.calls == [("P", " a b"), ("P", " a b c")]
    tokenizer = load_tokenizer()
    read = []
    judge_truncated(lambda prompts, responses: read.extend(responses) or torch.zeros(len(responses)), "P", STORY,
                    tokenizer, 12)
    assert STORY.startswith(read[0]) and token_count(tokenizer, read[0]) == 12


def test_pair_accuracy_on_hand_derived_pairs():
    # group 0: (0,1) scores 2>1 but gold 0<1: wrong; (0,2) right; (1,2) a gold tie: skipped.
    # group 1: (3,4) scores tie: 1/2. Item 5 is alone in its group.
    correct, clusters = pair_accuracy([2, 1, 3, 0.5, 0.5, 9], [0, 1, 1, 0, 1, 0], [0, 0, 0, 1, 1, 2])
    assert correct == [0.0, 1.0, 0.5]
    assert clusters == [0, 0, 1]


# --- the model-backed parts on the tiny model -----------------------------------------------------

def test_model_summarizer_writes_one_line_per_text_greedily(tiny):
    model, tokenizer = tiny
    summarize = ModelSummarizer(model, tokenizer, max_new_tokens=6, batch_size=2)
    texts = ["A fox finds a key.", "A nurse hears a waltz.\nNobody owns the radio.", "A fox finds a key."]
    summaries = summarize(texts)
    assert len(summaries) == 3 and all("\n" not in s for s in summaries)
    assert summaries[0] == summaries[2]  # greedy: the same text, the same summary, whatever the batch


def test_decomposition_agreement_end_to_end_on_the_tiny_model(tiny):
    model, tokenizer = tiny
    gold_calls = []

    def gold(prompts, responses):
        scores = [float(len(r)) for r in responses]  # longer is better, read whole
        gold_calls.append(scores)
        return scores

    def reward(prompts, responses):
        return torch.tensor([float(len(r)) for r in responses])

    prompts = ["Write a story about a fox.", "Write a story about a nurse.", "Write a story about a ship."]
    rows = decomposition_agreement(model, tokenizer, reward, prompts, gold, lengths=(12, 6), samples=3, window=6,
                                   summarize=ModelSummarizer(model, tokenizer, max_new_tokens=4), seed=1)
    assert [r["length"] for r in rows] == [6, 12]
    for row, scores in zip(rows, gold_calls):
        assert set(row) == {"length", "tokens", "chunks", "pairs", "chunked", "chunked_ci", "truncated",
                            "truncated_ci"}
        expected_pairs = sum(scores[3 * p + a] != scores[3 * p + b]
                             for p in range(3) for a, b in [(0, 1), (0, 2), (1, 2)])
        assert row["pairs"] == expected_pairs > 0
        assert 0 < row["tokens"] <= row["length"] and row["chunks"] >= 1
        for name in ("chunked", "truncated"):
            low, high = row[f"{name}_ci"]
            assert 0 <= low <= row[name] <= high <= 1
    assert rows[1]["chunks"] > rows[0]["chunks"]  # twice the length, twice the window: more chunks
    assert rows[1]["truncated"] < 1.0  # at 12 tokens the first 6 cannot see every difference in length


def test_reward_chunked_command_prints_chunks_summaries_and_both_judgements(capsys):
    response = " The fox found a golden key in the snow and carried it home to her den by the river."
    assert main(["reward", "chunked", "--model", "tests.train.rewards_for_tests:vowel_share", "--summarizer", "tiny",
                 "--prompt", "Write a fable.", "--response", response, "--window", "8", "--aggregate", "min"]) == 0
    out = capsys.readouterr().out
    assert "chunk 1 (" in out and "chunk 2 (" in out and "summary so far:" in out
    assert re.search(r"chunked \(min of \d+ chunks\): [\d.]+", out)
    assert "truncated (first 8 tokens):" in out
