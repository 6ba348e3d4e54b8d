"""Best-of-n: sample n responses per prompt, keep the one the reward likes best.

No weights change, yet it is optimisation all the same, and its pressure has a closed form:
KL(best-of-n || base) = log n - (n - 1)/n nats (exact for distinct samples, an upper bound with
ties). One run samples max(n) responses per prompt once and reads every smaller n off the same
samples (the first n of them), so a sweep over n costs one sampling pass.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from alignlab.models.vocab import load_vocabulary, restrict_vocabulary
from alignlab.runs import Run
from alignlab.train.components import best_of_n_kl
from alignlab.train.options import VocabularyOptions
from alignlab.train.policy import write_pressure
from alignlab.train.reward_fn import load_reward


@dataclass
class BoNConfig(VocabularyOptions):
    """Best-of-n sampling against a reward."""

    prompts: Path | None = None
    """Prompts: one per line (.txt) or JSON lines with a 'prompt' field (.jsonl)."""
    samples: Path | None = None
    """Select among these responses instead of sampling: JSON lines of 'prompt' and 'responses' (>= max(n) each, base-policy samples), optionally with their 'proxy' and 'gold' scores."""
    reward: str = ""
    """A reward model folder or reward run id, or a function module:function / file.py:function (prompt, response) -> float."""
    gold: str | None = None
    """Optionally a held-out judge (same forms as --reward) to see whether the proxy's choices also please it."""
    model: str = "gemma-3-270m"
    """The base policy to sample from."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Sampling precision."""
    device: str = "auto"
    """Where the policy samples: auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N."""
    n: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    """Values of n (the pressure sweep); all are read off max(n) samples per prompt."""
    max_new_tokens: int = 48
    """Tokens per response."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: a response ends after the first one (which stays in it)."""
    temperature: float = 1.0
    """Sampling temperature of the base policy."""
    top_p: float = 1.0
    """Nucleus sampling (1 = off)."""
    top_k: int = 0
    """Top-k (0 = off)."""
    batch_size: int = 8
    """Responses sampled together."""
    seed: int = 0
    """Sampling seed."""


def run_best_of_n(config: BoNConfig, progress: bool = True) -> Run:
    """Sample, score, select for every n; write samples, selections, metrics and the pressure ledger."""
    from tqdm import tqdm

    from alignlab.data.formats import read_prompt_file
    from alignlab.models import SampleConfig, load_model, sample
    from alignlab.models.processes import resolve_device

    if not config.n or min(config.n) < 1:
        raise ValueError(f"n is {config.n}; give one or more values >= 1")
    top = max(config.n)
    given = read_samples(config.samples, top) if config.samples is not None else None
    if given is not None:
        prompts = [p for p, _ in given]
    elif config.prompts is None:
        raise ValueError("give --prompts FILE (or --samples FILE of responses to select among)")
    else:
        prompts = read_prompt_file(config.prompts)
    reward, described = load_reward(config.reward)
    gold, gold_described = load_reward(config.gold) if config.gold else (None, None)
    if given is None:
        model, tokenizer = load_model(config.model, dtype=config.dtype)
        model.to(resolve_device(config.device))
        if config.vocabulary is not None:
            restrict_vocabulary(model, load_vocabulary(config.vocabulary, tokenizer))
    sampling = SampleConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p,
                            top_k=config.top_k, seed=config.seed, alternatives=0, stop=list(config.stop))
    with Run.create("bon", config, seed=config.seed) as run:
        # 1. sample max(n) responses per prompt
        jobs = [(i, p) for i, p in enumerate(prompts) for _ in range(top)]
        texts: list[str] = [r for _, responses in given for r in responses[:top]] if given is not None else []
        for start in tqdm(range(0, len(jobs) if given is None else 0, config.batch_size), desc="sampling",
                          unit="batch", disable=not progress):
            chunk = jobs[start:start + config.batch_size]
            seeds = [config.seed + start + j for j in range(len(chunk))]
            texts += [c.text for c in sample(model, tokenizer, [p for _, p in chunk], sampling, seeds=seeds)]
        # 2. score every response with the proxy (and the gold judge, if any)
        flat_prompts = [p for _, p in jobs]
        proxy = given_scores(config.samples, "proxy", top) if given is not None else None
        if proxy is None:
            proxy = reward(flat_prompts, texts)
        proxy = proxy.reshape(len(prompts), top)  # (P, top)
        judged = given_scores(config.samples, "gold", top) if given is not None and gold else None
        if gold and judged is None:
            judged = gold(flat_prompts, texts)
        judged = judged.reshape(len(prompts), top) if judged is not None else None
        for i, prompt in enumerate(prompts):
            run.log_sample(prompt=prompt, responses=texts[i * top:(i + 1) * top], proxy=proxy[i].tolist(),
                           gold=judged[i].tolist() if judged is not None else None)
        # 3. select for each n and record the pressure
        entries = []
        for n in sorted(set(config.n)):
            best = proxy[:, :n].argmax(-1)  # (P,)
            rows = torch.arange(len(prompts))
            entry = {"n": n, "objective/kl": best_of_n_kl(n), "objective/scores": float(proxy[rows, best].mean()),
                     "proxy_mean_of_samples": float(proxy[:, :n].mean())}
            if judged is not None:
                entry["gold"] = float(judged[rows, best].mean())
                base = judged[:, 0]
                entry["gold_win_rate_vs_base"] = float(((judged[rows, best] > base).float()
                                                        + 0.5 * (judged[rows, best] == base).float()).mean())
            entries.append(entry)
            run.log_metrics(n, **entry)
        write_pressure(run.path, "bon", config.model, None, entries,
                       {"reward": described, "gold": gold_described, "kl_formula": "log n - (n-1)/n"})
        run.finish(prompts=len(prompts), n=sorted(set(config.n)), best=entries[-1])
    return run


def read_samples(path: Path, top: int) -> list[tuple[str, list[str]]]:
    """(prompt, responses) rows of a samples file; every row needs at least ``top`` responses."""
    from alignlab.fileio import read_jsonl

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"samples file {path} does not exist")
    rows = []
    for number, row in enumerate(read_jsonl(path), start=1):
        responses = row.get("responses") if isinstance(row, dict) else None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(responses, list):
            raise ValueError(f"{path} line {number}: each line needs 'prompt' (text) and 'responses' (a list of texts)")
        if len(responses) < top or not all(isinstance(r, str) for r in responses):
            raise ValueError(f"{path} line {number}: {len(responses)} responses, but n goes up to {top}; "
                             f"give at least {top} texts per prompt or lower n")
        rows.append((row["prompt"], responses))
    if not rows:
        raise ValueError(f"samples file {path} holds no rows")
    return rows


def given_scores(path: Path, key: str, top: int) -> torch.Tensor | None:
    """The ``key`` scores a samples file carries for every response (already computed by the same
    reward: the experiment scores its samples once), or None when any row lacks them."""
    from alignlab.fileio import read_jsonl

    values = []
    for row in read_jsonl(path):
        scores = row.get(key)
        if not isinstance(scores, list) or len(scores) < top:
            return None
        values += [float(v) for v in scores[:top]]
    return torch.tensor(values)


def format_bon(run: Run) -> str:
    """The pressure sweep as a table."""
    import json

    entries = json.loads((run.path / "pressure.json").read_text())["entries"]
    has_gold = "gold" in entries[0]
    lines = [f"{'n':>4} {'KL (nats)':>10} {'proxy of best':>14} {'proxy mean':>11}"
             + (f" {'gold of best':>13} {'gold win vs n=1':>16}" if has_gold else "")]
    for e in entries:
        line = f"{e['n']:>4} {e['objective/kl']:>10.3f} {e['objective/scores']:>14.4f} {e['proxy_mean_of_samples']:>11.4f}"
        if has_gold:
            line += f" {e['gold']:>13.4f} {e['gold_win_rate_vs_base']:>16.1%}"
        lines.append(line)
    return "\n".join(lines)


def print_report(run: Run) -> None:
    print(format_bon(run))
    print(f"run {run.id}: {run.path}", file=sys.stderr)
