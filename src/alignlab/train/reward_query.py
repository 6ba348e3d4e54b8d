"""`alignlab reward query`: which comparisons to ask a person for next (one round).

A reward model is fitted on the comparisons answered so far (a linear head on one layer's
states of the frozen backbone, the head `reward train --mode head` fits), its posterior
(feedback/active.py: Laplace or bootstrap members) scores a pool of candidate responses, and a
query strategy picks the within-prompt pairs whose answers it most needs. The pairs go to a file
for a person (or the loom) to answer; answered, they join the data, and the next round asks again:

    alignlab reward query --pool candidates.jsonl --data answered.jsonl --count 16 --out ask.jsonl

`alignlab experiment --study active` measures what these rounds save against random questions.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import numpy as np

from alignlab.cli import Command


@dataclass
class RewardQueryConfig:
    """Choose the comparisons to ask for next from a pool of candidate responses."""

    pool: Path | None = None
    """JSON lines of candidates: {"prompt", "responses": [...]} per prompt, or {"prompt", "completion"} per response."""
    data: str = ""
    """Comparisons answered so far (feedback files, comma-separated; two-option choices are used): empty for a first round."""
    strategy: Literal["random", "uncertainty", "information", "thompson"] = "information"
    """Query strategy: random, uncertainty (the members' disagreement), information (BALD) or thompson (double Thompson sampling)."""
    count: int = 16
    """Pairs to ask for."""
    out: Path | None = None
    """Where to write the pairs (JSON lines); default: standard output."""
    model: str = "gemma-3-270m"
    """The backbone: 'gemma-3-270m', 'tiny' or a local Hugging Face folder."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    layer: int = 11
    """Decoder layer the head reads (1-based; 0: the final states)."""
    pooling: Literal["last", "mean"] = "mean"
    head_l2: float = 1.0
    """L2 penalty on the head's weights over standardised features (mean loss + head_l2 ||w||^2)."""
    posterior: Literal["laplace", "bootstrap"] = "laplace"
    """Where the members come from: a Laplace posterior around one fit, or refits on resampled answers."""
    members: int = 16
    max_length: int = 256
    seed: int = 0
    skip_bad: bool = False
    """Skip malformed lines of the data files (counted and reported)."""


def read_pool(path: Path) -> list[tuple[str, list[str]]]:
    """(prompt, distinct responses) per prompt, in the file's order."""
    from alignlab.fileio import read_jsonl

    if path is None:
        raise ValueError("--pool: give a JSON-lines file of candidate responses")
    if not Path(path).exists():
        raise FileNotFoundError(f"--pool {path} does not exist")
    grouped: dict[str, list[str]] = {}
    for i, row in enumerate(read_jsonl(path), start=1):
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, str):
            raise ValueError(f"{path} line {i}: needs a string 'prompt'")
        responses = row.get("responses", [row.get("completion", row.get("response"))])
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise ValueError(f"{path} line {i}: needs 'responses' (a list of strings) or a string 'completion'")
        bucket = grouped.setdefault(prompt, [])
        bucket.extend(r for r in responses if r not in bucket)
    pool = [(q, rs) for q, rs in grouped.items() if len(rs) >= 2]
    if not pool:
        raise ValueError(f"{path}: no prompt has two distinct candidate responses to compare")
    return pool


def answered_pairs(config: RewardQueryConfig) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) of every two-option choice in the data."""
    if not config.data.strip():
        return []
    from alignlab.train.reward import load_choices

    settings = SimpleNamespace(data=config.data, skip_bad=config.skip_bad, betas="", policy_samples=None)
    choice_set, _ = load_choices(settings)
    out = []
    for c in choice_set.choices:
        if len(c.options) == 2 and c.chosen in (0, 1):
            out.append((c.prompt, c.options[c.chosen], c.options[1 - c.chosen]))
    return out


def query(config: RewardQueryConfig, progress: bool = True) -> tuple[list[dict], dict]:
    """The pairs to ask for, best first, and what the round saw."""
    import torch

    from alignlab.feedback.active import (mutual_information, next_questions, pair_probabilities,
                                          posterior_samples)
    from alignlab.models import load_model
    from alignlab.train.reward import cached_features
    from alignlab.train.reward_model import RewardModel

    if config.count < 1:
        raise ValueError(f"count is {config.count}; ask for at least 1 pair")
    pool = read_pool(config.pool)
    answered = answered_pairs(config)
    if config.posterior == "bootstrap" and not answered:
        raise ValueError("--posterior bootstrap resamples answered comparisons: give --data, or use laplace "
                         "(its first round reads the prior)")
    texts: list[tuple[str, str]] = [(q, r) for q, rs in pool for r in rs]
    groups = np.array([i for i, (_, rs) in enumerate(pool) for _ in rs])
    index = {t: i for i, t in enumerate(texts)}
    for q, a, b in answered:
        for t in ((q, a), (q, b)):
            index.setdefault(t, len(index))
    every = list(index)
    lm, tokenizer = load_model(config.model, dtype=config.dtype)
    rm = RewardModel(lm, tokenizer, max_length=config.max_length, pooling=config.pooling, layer=config.layer).eval()
    with torch.no_grad():
        raw = cached_features(rm, [rm.encode(q, r) for q, r in every], progress=progress).double().numpy()
    std = raw.std(0)
    z = (raw - raw.mean(0)) / np.where(std > 1e-6, std, 1.0)
    x = np.array([z[index[(q, a)]] - z[index[(q, b)]] for q, a, b in answered]).reshape(-1, z.shape[1])
    rng = np.random.default_rng(config.seed)
    _, samples = posterior_samples(config.posterior, x, np.ones(len(x)), config.head_l2, config.members, rng)
    rewards = samples @ z[:len(texts)].T
    pairs = np.array([(a, b) for g in range(len(pool)) for a, b in
                      zip(*np.triu_indices(int((groups == g).sum()), k=1))], dtype=int)
    starts = np.concatenate([[0], np.cumsum([len(rs) for _, rs in pool])[:-1]])
    pairs = pairs + np.repeat(starts, [len(rs) * (len(rs) - 1) // 2 for _, rs in pool])[:, None]
    done = {(q, a, b) for q, a, b in answered} | {(q, b, a) for q, a, b in answered}
    asked = np.array([(texts[a][0], texts[a][1], texts[b][1]) in done for a, b in pairs.tolist()])
    if asked.all():
        raise ValueError(f"every pair of the pool ({len(pairs)}) is answered already: add candidates to --pool")
    chosen = next_questions(config.strategy, rewards, pairs, asked, config.count, rng, groups)
    p = pair_probabilities(rewards, pairs[chosen])
    information = mutual_information(p)
    rows = []
    for k, (a, b) in enumerate(pairs[chosen].tolist()):
        rows.append({"prompt": texts[a][0], "response_a": texts[a][1], "response_b": texts[b][1],
                     "strategy": config.strategy, "information": float(information[k]),
                     "p_a_preferred": float(p[:, k].mean()), "members_disagree": float(p[:, k].std())})
    open_information = mutual_information(pair_probabilities(rewards, pairs[~asked]))
    seen = {"answered": len(answered), "pool_prompts": len(pool), "pool_pairs": int(len(pairs)),
            "open_pairs": int((~asked).sum()), "asked": len(rows),
            "mean_information_asked": float(information.mean()) if len(rows) else math.nan,
            "mean_information_open": float(open_information.mean())}
    return rows, seen


def run_query(config: RewardQueryConfig) -> int:
    from alignlab.fileio import write_jsonl

    rows, seen = query(config, progress=sys.stderr.isatty())
    if config.out is not None:
        write_jsonl(config.out, rows)
    else:
        for row in rows:
            print(json.dumps(row))
    print(f"{seen['asked']} pairs asked ({config.strategy}) from {seen['open_pairs']} open of {seen['pool_pairs']} "
          f"in {seen['pool_prompts']} prompts, after {seen['answered']} answered; mean expected information "
          f"{seen['mean_information_asked']:.4f} nats against {seen['mean_information_open']:.4f} over every open "
          f"pair" + (f"; written to {config.out}" if config.out else ""), file=sys.stderr)
    print("answer each as a comparison line {\"kind\": \"pair\", \"prompt\", \"chosen\", \"rejected\"} in a --data "
          "file and query again",
          file=sys.stderr)
    return 0


REWARD_QUERY = Command("reward query", "choose the comparisons to ask for next from a pool of candidates "
                       "(active queries: one round)", RewardQueryConfig, run_query)
