"""Decomposed evaluation of long outputs: judge a response chunk by chunk, each chunk with a
model-written summary of the chunks before it (recursive reward modelling; Wu et al. 2021,
"Recursively Summarizing Books with Human Feedback").

A judge with a window of ``window`` tokens cannot read a longer response whole. Two ways to
judge it anyway:

- truncated: judge the first ``window`` tokens and ignore the rest (``judge_truncated``);
- decomposed: cut the response into chunks of at most ``window`` tokens and judge each one as
  the response to the original prompt plus a short summary of the story so far, then aggregate
  the chunk judgements (``judge_decomposed``). The summaries are recursive, summary_k =
  summarize(summary_{k-1} + chunk_{k-1}), so what a judgement reads stays bounded however long
  the response grows: the prompt, one summary and one chunk.

``decomposition_agreement`` measures both against a gold judge that reads the whole response:
for responses of growing length, how often each orders a within-prompt pair as gold does.
docs/process.md ("Decomposed evaluation of long outputs") has the measurement and its reading.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from alignlab.cli import Command
from alignlab.models.scoring import encode_continuation
from alignlab.train.reward_fn import RewardFn

Summarizer = Callable[[Sequence[str]], list[str]]
"""summarize(texts) -> one short summary per text (batched: a model summarizes many at once)."""

GoldFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]
"""gold(prompts, responses) -> one score per pair, reading each response whole (GoldJudge.score)."""

CONTEXT_TEMPLATE = "{prompt}\nStory so far (summary): {summary}\nThe story continues:"
"""The prompt chunk k >= 1 is judged under: the original prompt, then the summary of chunks
0..k-1 on its own line, then a line the chunk continues (chunks after the first start with the
whitespace they were cut at, as a sampled response starts after "Story:"). Chunk 0 is judged
under the original prompt alone: nothing comes before it."""

SUMMARY_EXAMPLES = (
    "Text: Snow had covered the forest for weeks when the fox found the key. It was small and golden, and it "
    "hummed when she held it in her teeth.\n"
    "Summary: In a snowy forest, a fox finds a small golden key that hums.\n\n"
    "Text: In a snowy forest, a fox finds a small golden key that hums. She tried it in every hollow tree until "
    "one creaked open. Inside was a warm den full of berries.\n"
    "Summary: A fox finds a humming golden key in a snowy forest, and it opens a hollow tree with a warm den "
    "full of berries.\n\n"
    "Text: The night nurse counted the pills twice. Room 12 had been quiet all evening, but now a radio was "
    "playing an old waltz, and nobody on the ward owned a radio.\n"
    "Summary: On a quiet ward at night, a nurse hears an old waltz from a radio that nobody owns.\n\n"
)
"""The few-shot examples the summarizer continues. The second shows the recursive step: the
text is an earlier summary followed by the next part, and the summary folds both into one."""

SUMMARY_TEMPLATE = SUMMARY_EXAMPLES + "Text: {text}\nSummary:"
"""What the summarizing model continues; {text} has its whitespace runs collapsed to one space."""

AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "mean": lambda scores: math.fsum(scores) / len(scores),
    "min": min,
    "last": lambda scores: scores[-1],
}
"""How chunk judgements become one reward: 'mean' (every part counts alike; blind to how many
parts there are), 'min' (a response is as good as its worst part) or 'last' (the final chunk's
judgement, the one made with the summary of everything before it)."""

_PIECE = re.compile(r"\s*\S+|\s+")  # a word with the whitespace before it, or trailing whitespace


# --- chunks and the two judgements ----------------------------------------------------------------

def token_count(tokenizer, text: str) -> int:
    """Tokens of ``text`` read as a response (no BOS), as a reward model encodes it."""
    return len(encode_continuation(tokenizer, text))


def chunk_response(tokenizer, response: str, window: int) -> list[str]:
    """Consecutive chunks of ``response`` of at most ``window`` tokens each (each chunk tokenized
    on its own), cut before the whitespace that precedes a word; a single word longer than the
    window is cut between characters (a single character of more tokens than the window stays
    whole). Lossless: ``"".join(chunks) == response``. An empty response is one empty chunk."""
    if window < 1:
        raise ValueError(f"window is {window}; a chunk needs at least 1 token")
    chunks: list[str] = []
    current = ""
    for piece in _PIECE.findall(response):
        if token_count(tokenizer, current + piece) <= window:
            current += piece
            continue
        if current:
            chunks.append(current)
            current = ""
        if token_count(tokenizer, piece) <= window:
            current = piece
            continue
        for char in piece:  # one word over the window on its own: no word boundary to cut at
            if current and token_count(tokenizer, current + char) > window:
                chunks.append(current)
                current = ""
            current += char
    if current or not chunks:
        chunks.append(current)
    return chunks


def truncate(tokenizer, response: str, window: int) -> str:
    """The text of the first ``window`` tokens of ``response`` (the response itself when it fits)."""
    ids = encode_continuation(tokenizer, response)
    return response if len(ids) <= window else tokenizer.decode(ids[:window])


def chunk_prompt(prompt: str, summary: str | None) -> str:
    """The prompt a chunk is judged under: ``prompt`` for the first chunk (``summary`` None),
    else CONTEXT_TEMPLATE filled in."""
    return prompt if summary is None else CONTEXT_TEMPLATE.format(prompt=prompt, summary=summary)


@dataclass
class ChunkedJudgement:
    """One response judged chunk by chunk."""

    chunks: list[str]
    summaries: list[str | None]
    """summaries[k]: the summary of chunks 0..k-1 that chunk k was judged with (None for chunk 0)."""
    scores: list[float]
    """The reward of each chunk under its prompt (chunk_prompt(prompt, summaries[k]))."""
    value: float
    """The scores aggregated."""


def judge_chunks(reward_fn: RewardFn, prompts: Sequence[str], responses: Sequence[str], tokenizer, window: int,
                 summarize: Summarizer, aggregate: str = "mean") -> list[ChunkedJudgement]:
    """Each response judged chunk by chunk (see the module docstring), with its chunks, the
    summaries they were judged with and their scores. Summaries of a given depth are written
    for all responses in one call of ``summarize``; every chunk is scored in one call of
    ``reward_fn``."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate {aggregate!r}: use one of {', '.join(AGGREGATES)}")
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; give one prompt per response")
    chunked = [chunk_response(tokenizer, r, window) for r in responses]
    summaries: list[list[str | None]] = [[None] for _ in chunked]
    for k in range(1, max((len(c) for c in chunked), default=0)):
        rows = [i for i, c in enumerate(chunked) if len(c) > k]
        texts = [(summaries[i][k - 1] or "") + chunked[i][k - 1] for i in rows]
        written = list(summarize(texts))
        if len(written) != len(texts):
            raise ValueError(f"the summarizer returned {len(written)} summaries for {len(texts)} texts; "
                             "it must return one per text")
        for i, summary in zip(rows, written):
            summaries[i].append(summary.strip())
    pairs = [(chunk_prompt(prompts[i], summaries[i][k]), chunk)
             for i, chunks in enumerate(chunked) for k, chunk in enumerate(chunks)]
    flat = [float(v) for v in reward_fn([p for p, _ in pairs], [c for _, c in pairs])]
    out, at = [], 0
    for chunks, context in zip(chunked, summaries):
        scores = flat[at:at + len(chunks)]
        at += len(chunks)
        out.append(ChunkedJudgement(chunks, context, scores, AGGREGATES[aggregate](scores)))
    return out


def judge_decomposed_batch(reward_fn: RewardFn, prompts: Sequence[str], responses: Sequence[str], tokenizer,
                           window: int, summarize: Summarizer, aggregate: str = "mean") -> list[float]:
    """The decomposed reward of each (prompt, response): chunk judgements aggregated."""
    return [j.value for j in judge_chunks(reward_fn, prompts, responses, tokenizer, window, summarize, aggregate)]


def judge_decomposed(reward_fn: RewardFn, prompt: str, response: str, tokenizer, window: int,
                     summarize: Summarizer, aggregate: str = "mean") -> float:
    """The decomposed reward of one response (see ``judge_decomposed_batch``)."""
    return judge_decomposed_batch(reward_fn, [prompt], [response], tokenizer, window, summarize, aggregate)[0]


def judge_truncated_batch(reward_fn: RewardFn, prompts: Sequence[str], responses: Sequence[str], tokenizer,
                          window: int) -> list[float]:
    """The reward of each response's first ``window`` tokens, under its own prompt."""
    cut = [truncate(tokenizer, r, window) for r in responses]
    return [float(v) for v in reward_fn(list(prompts), cut)]


def judge_truncated(reward_fn: RewardFn, prompt: str, response: str, tokenizer, window: int) -> float:
    """The reward of the first ``window`` tokens of one response."""
    return judge_truncated_batch(reward_fn, [prompt], [response], tokenizer, window)[0]


# --- the summarizer -------------------------------------------------------------------------------

class ModelSummarizer:
    """A language model (the base policy) summarizing greedily from SUMMARY_TEMPLATE: at most
    ``max_new_tokens`` tokens, ending at the first newline. Greedy, so a text always gets the
    same summary and a judgement does not depend on a sampling seed."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 32, batch_size: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def __call__(self, texts: Sequence[str]) -> list[str]:
        from alignlab.models import SampleConfig, sample

        config = SampleConfig(max_new_tokens=self.max_new_tokens, temperature=0.0, stop=["\n"], alternatives=0)
        # The few-shot lines are one text a line: a newline inside the text would end its "Text:".
        prompts = [SUMMARY_TEMPLATE.format(text=" ".join(t.split())) for t in texts]
        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            done = sample(self.model, self.tokenizer, prompts[start:start + self.batch_size], config)
            out += [c.text.split("\n", 1)[0].strip() for c in done]
        return out


# --- agreement with gold over growing lengths ----------------------------------------------------

def _cached_reward(reward_fn: RewardFn) -> RewardFn:
    # Responses at a shorter length are prefixes of the longer ones (same seeds), so most chunks,
    # summaries and truncations repeat across lengths: each distinct one is computed once.
    seen: dict[tuple[str, str], float] = {}

    def cached(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        keys = list(zip(prompts, responses))
        todo = list(dict.fromkeys(k for k in keys if k not in seen))
        if todo:
            seen.update(zip(todo, (float(v) for v in reward_fn([p for p, _ in todo], [r for _, r in todo]))))
        return torch.tensor([seen[k] for k in keys])

    return cached


def _cached_summarizer(summarize: Summarizer) -> Summarizer:
    seen: dict[str, str] = {}

    def cached(texts: Sequence[str]) -> list[str]:
        todo = list(dict.fromkeys(t for t in texts if t not in seen))
        if todo:
            seen.update(zip(todo, summarize(todo)))
        return [seen[t] for t in texts]

    return cached


def sample_token_ids(model, tokenizer, prompts: Sequence[str], samples: int, max_new_tokens: int,
                     stop: Sequence[str] = (), seed: int = 0, batch_size: int = 16) -> list[list[list[int]]]:
    """``samples`` sampled continuations of each prompt as token ids, [prompt][sample] -> ids.
    Job j (prompt-major) is drawn with seed ``seed * 1_000_003 + j``, so its first L tokens are
    what sampling it with max_new_tokens=L would draw."""
    from alignlab.models import SampleConfig, sample

    config = SampleConfig(max_new_tokens=max_new_tokens, stop=list(stop), alternatives=0)
    jobs = [p for p in prompts for _ in range(samples)]
    ids: list[list[int]] = []
    for start in range(0, len(jobs), batch_size):
        seeds = [seed * 1_000_003 + j for j in range(start, min(start + batch_size, len(jobs)))]
        ids += [[t.id for t in c.tokens] for c in sample(model, tokenizer, jobs[start:start + batch_size], config,
                                                          seeds=seeds)]
    return [ids[i * samples:(i + 1) * samples] for i in range(len(prompts))]


def pair_accuracy(scores: Sequence[float], gold: Sequence[float], groups: Sequence[int]) -> tuple[list[float], list]:
    """(correct, cluster) for every within-group pair whose gold scores differ: 1 when ``scores``
    order it as gold does, 0.5 when the scores tie, 0 otherwise."""
    correct, clusters = [], []
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    for g, members in by_group.items():
        for a, b in itertools.combinations(members, 2):
            if gold[a] == gold[b]:
                continue
            correct.append(0.5 if scores[a] == scores[b] else float((scores[a] > scores[b]) == (gold[a] > gold[b])))
            clusters.append(g)
    return correct, clusters


def _estimate(correct: list[float], clusters: list) -> tuple[float, list[float]]:
    """Pooled accuracy with its prompt-clustered 95% interval (NaN where it cannot be had)."""
    from alignlab.pressure.stats import clustered_accuracy

    if len(set(clusters)) < 2:
        return (sum(correct) / len(correct) if correct else math.nan), [math.nan, math.nan]
    estimate = clustered_accuracy(correct, clusters)
    return estimate.value, list(estimate.ci)


def decomposition_agreement(model, tokenizer, reward_fn: RewardFn, prompts: Sequence[str], gold: GoldFn,
                            lengths: Sequence[int] = (48, 96, 192), samples: int = 4, window: int = 48,
                            summarize: Summarizer | None = None, aggregate: str = "mean",
                            stop: Sequence[str] = (), seed: int = 0, batch_size: int = 16,
                            log: Callable[[str], None] | None = None) -> list[dict]:
    """Decomposed against truncated judging, on agreement with gold, at each response length.

    ``model`` (the base policy) samples ``samples`` responses per prompt once, at the longest
    length; the response at length L is the first L tokens of each (what sampling with
    max_new_tokens=L and the same seed draws), ending earlier at a stop string or the end of
    text. ``gold`` scores each response whole. For every within-prompt pair with different gold
    scores, each judgement is right when it orders the pair as gold does (a tie counts 1/2).
    ``summarize`` defaults to ``model`` summarizing (ModelSummarizer).

    One row per length: {"length", "tokens" (mean tokens of its responses), "chunks" (mean
    chunks of ``window`` tokens), "pairs", "chunked", "chunked_ci", "truncated",
    "truncated_ci"}; accuracies are pooled over pairs with a prompt-clustered 95% interval.
    """
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths {list(lengths)}: give one or more response lengths in tokens, each at least 1")
    reward = _cached_reward(reward_fn)
    summarize = _cached_summarizer(summarize or ModelSummarizer(model, tokenizer, batch_size=batch_size))
    # 1. sample once, at the longest length
    ids = sample_token_ids(model, tokenizer, prompts, samples, max(lengths), stop, seed, batch_size)
    flat_ids = [r for rows in ids for r in rows]
    flat_prompts = [p for p in prompts for _ in range(samples)]
    groups = [i for i in range(len(prompts)) for _ in range(samples)]
    out = []
    for length in sorted(lengths):
        # 2. gold reads each response whole; 3. the two judgements read at most a window at a time
        responses = [tokenizer.decode(r[:length], skip_special_tokens=True) for r in flat_ids]
        gold_scores = [float(g) for g in gold(flat_prompts, responses)]
        judged = judge_chunks(reward, flat_prompts, responses, tokenizer, window, summarize, aggregate)
        truncated = judge_truncated_batch(reward, flat_prompts, responses, tokenizer, window)
        # 4. every within-prompt pair gold tells apart, with a prompt-clustered interval
        chunked_right, clusters = pair_accuracy([j.value for j in judged], gold_scores, groups)
        truncated_right, _ = pair_accuracy(truncated, gold_scores, groups)
        chunked, chunked_ci = _estimate(chunked_right, clusters)
        cut, cut_ci = _estimate(truncated_right, clusters)
        row = {"length": length, "tokens": sum(min(length, len(r)) for r in flat_ids) / len(flat_ids),
               "chunks": sum(len(j.chunks) for j in judged) / len(judged), "pairs": len(clusters),
               "chunked": chunked, "chunked_ci": chunked_ci, "truncated": cut, "truncated_ci": cut_ci}
        if log:
            log(format_row(row))
        out.append(row)
    return out


def format_row(row: dict) -> str:
    """One agreement row as a line of text."""
    return (f"length {row['length']:>4}: {row['tokens']:.0f} tokens, {row['chunks']:.1f} chunks, {row['pairs']} pairs;"
            f" chunked {row['chunked']:.3f} ({row['chunked_ci'][0]:.3f}-{row['chunked_ci'][1]:.3f}),"
            f" truncated {row['truncated']:.3f} ({row['truncated_ci'][0]:.3f}-{row['truncated_ci'][1]:.3f})")


# --- the command: alignlab reward chunked ---------------------------------------------------------

@dataclass
class RewardChunkedConfig:
    """Judge one long response chunk by chunk, each chunk with a summary of the ones before it."""

    model: str = ""
    """The reward: a reward model folder or reward run id, or module:function / file.py:function."""
    prompt: str = ""
    """The prompt, as the reward saw prompts (see --task)."""
    response: str = ""
    """The response to judge."""
    window: int = 48
    """Most tokens in a chunk: the context limit the chunked judgement works within."""
    aggregate: Literal["mean", "min", "last"] = "mean"
    """How chunk scores become one reward (AGGREGATES in train/decompose.py)."""
    summarizer: str = "gemma-3-270m"
    """The model that writes the summaries (a model name or local folder); its tokenizer counts tokens."""
    task: str = ""
    """Format --prompt with this task's template first (writing-prompts: as the experiment's proxy reward
    models saw their prompts); empty: use --prompt as it is."""


def run_chunked(config: RewardChunkedConfig) -> int:
    from alignlab.data.tasks import load_task
    from alignlab.models import load_model
    from alignlab.train.reward_fn import load_reward

    if not config.model or not config.response:
        raise ValueError("give --model (a reward) and --response (and --prompt)")
    reward_fn, described = load_reward(config.model)
    model, tokenizer = load_model(config.summarizer)
    prompt = load_task(config.task).format(config.prompt) if config.task else config.prompt
    judged = judge_chunks(reward_fn, [prompt], [config.response], tokenizer, config.window,
                          ModelSummarizer(model, tokenizer), config.aggregate)[0]
    for k, (chunk, summary, score) in enumerate(zip(judged.chunks, judged.summaries, judged.scores), start=1):
        print(f"chunk {k} ({token_count(tokenizer, chunk)} tokens): reward {score:.4f}")
        if summary is not None:
            print(f"  summary so far: {summary}")
        print(f"  text: {chunk.strip()}")
    print(f"chunked ({config.aggregate} of {len(judged.scores)} chunks): {judged.value:.4f}")
    print(f"truncated (first {config.window} tokens): "
          f"{judge_truncated(reward_fn, prompt, config.response, tokenizer, config.window):.4f}")
    print(f"reward: {described}", file=sys.stderr)
    return 0


REWARD_CHUNKED = Command("reward chunked", "judge a long response chunk by chunk with summaries of the story so far",
                         RewardChunkedConfig, run_chunked)
