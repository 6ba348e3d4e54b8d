"""Sampling with per-token log-probs, top-k alternatives and a token-by-token stream.

For every generated token we record its id and text, its log-prob under the raw model
(temperature 1, no truncation: the quantity KL accounting needs), its log-prob under the
distribution actually sampled from (temperature, top-k, top-p), and the model's top
alternatives at that position. Each row of a batch draws from its own seeded generator, so a
prompt sampled in a batch gets the same tokens as when sampled alone with the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from alignlab.models.kernels import few_row_linears
from alignlab.models.tokens import PieceText, encode_prompt, eos_ids, left_pad
from alignlab.models.forward import SHARED_PREFIX_MIN, hidden_states, output_logits
from alignlab.models.vocab import vocabulary

# Top-p without a full sort: look for the nucleus among the top candidates first and widen only
# when they do not hold enough mass. A full sort of 262,144 logits costs ~10 ms a row here.
NUCLEUS_CANDIDATES = (1024, 16384)


@dataclass
class SampleConfig:
    """How to sample continuations."""

    max_new_tokens: int = field(default=48, metadata={"aliases": ["--max-tokens"]})
    """Largest number of tokens generated per continuation."""
    min_new_tokens: int = 0
    """End-of-sequence is not allowed before this many tokens."""
    temperature: float = 1.0
    """Logits are divided by this before sampling; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1 = off)."""
    top_k: int = 0
    """Keep only the k most likely tokens before top-p (0 = off)."""
    stop: list[str] = field(default_factory=list)
    """Stop a continuation once its text contains any of these strings (the string is kept)."""
    seed: int = 0
    """Row i of a batch samples with seed + i, so results reproduce and do not depend on batching."""
    alternatives: int = 5
    """How many top alternatives (by raw log-prob) to record for each generated token."""
    entropy: bool = field(default=False, metadata={"cli": False})
    """Also record the entropy of each step's sampling distribution (temperature applied; top-k/top-p not)."""
    hidden: bool = field(default=False, metadata={"cli": False})
    """Also keep each token's final hidden state (last layer, after the final norm: the row its logits
    came from), so a value head can read the states without another pass (train/ppo.py)."""

    def check(self) -> None:
        """Refuse settings that cannot work, naming the field."""
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens is {self.max_new_tokens}; it must be at least 1")
        if self.temperature < 0:
            raise ValueError(f"temperature is {self.temperature}; use 0 (greedy) or a positive value")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p is {self.top_p}; it must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k is {self.top_k}; use 0 (off) or a positive count")
        if self.alternatives < 0:
            raise ValueError(f"alternatives is {self.alternatives}; it must be 0 or more")
        if any(not s for s in self.stop):
            raise ValueError("stop contains an empty string; every stop string needs a character")


@dataclass
class Alternative:
    id: int
    text: str
    logprob: float


@dataclass
class Token:
    """One generated token."""

    id: int
    text: str
    """The text this token added to the continuation ('' while a multi-byte character is incomplete)."""
    logprob: float
    """Log-prob under the raw model (temperature 1, no truncation)."""
    sample_logprob: float
    """Log-prob under the distribution sampled from (after temperature, top-k, top-p)."""
    alternatives: list[Alternative]
    entropy: float | None = None
    """Entropy (nats) of the distribution at temperature this token was drawn from, when asked for."""
    hidden: torch.Tensor | None = field(default=None, repr=False)
    """(D,) the final hidden state this token's logits came from, when asked for (not serialised)."""

    def to_dict(self) -> dict:
        out = {"id": self.id, "text": self.text, "logprob": self.logprob, "sample_logprob": self.sample_logprob,
               "alternatives": [[a.id, a.text, a.logprob] for a in self.alternatives]}
        if self.entropy is not None:
            out["entropy"] = self.entropy
        return out


@dataclass
class Completion:
    """A sampled continuation of one prompt."""

    prompt: str
    prompt_ids: list[int]
    text: str
    tokens: list[Token]
    finish_reason: str
    """'eos' (the model ended it), 'stop' (a stop string appeared) or 'length' (max_new_tokens)."""
    seed: int
    stop_string: str | None = None

    @property
    def token_ids(self) -> list[int]:
        return [t.id for t in self.tokens]

    @property
    def logprob(self) -> float:
        """Sum of raw-model log-probs of the generated tokens."""
        return sum(t.logprob for t in self.tokens)

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "text": self.text, "finish_reason": self.finish_reason,
                "stop_string": self.stop_string, "seed": self.seed, "logprob": self.logprob,
                "prompt_ids": self.prompt_ids, "tokens": [t.to_dict() for t in self.tokens]}


@dataclass
class TokenEvent:
    """What the stream yields: row ``row`` of the batch got ``token``; ``finish_reason`` is set on its last token."""

    row: int
    index: int
    token: Token
    finish_reason: str | None = None
    stop_string: str | None = None


def _nucleus_mask(sorted_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep a token while the mass strictly before it (in descending order) is below top_p."""
    before = sorted_probs.cumsum(-1) - sorted_probs
    return before < top_p


DRAW_BLOCK = 1024
"""Columns per block of the two-level inverse CDF in ``_draw``."""


def _draw(probs: torch.Tensor, keep: torch.Tensor | None, uniform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF draw of one column per row among ``keep`` (None: every column); returns
    (column (B,), log-prob (B,)).

    Row i gets the first column whose cumulative kept mass exceeds ``uniform[i]`` times the row's
    total. The search goes in two levels: block totals (float32 sums of ``DRAW_BLOCK`` columns)
    accumulated in float64, then a float64 cumulative sum inside the one block the target falls
    in. A full-width float64 cumulative sum costs ~3x as much per decode step on a 262k-token
    vocabulary; the column is the same unless the target lies within float32 rounding of a
    block's edge.
    """
    kept = probs if keep is None else torch.where(keep, probs, torch.zeros((), dtype=probs.dtype))  # (B, K)
    rows, width = kept.shape
    blocks = -(-width // DRAW_BLOCK)
    padded = kept if width == blocks * DRAW_BLOCK else torch.nn.functional.pad(kept, (0, blocks * DRAW_BLOCK - width))
    tiles = padded.view(rows, blocks, DRAW_BLOCK)
    ends = tiles.sum(-1).double().cumsum(-1)  # (B, blocks): kept mass up to each block's end
    total = ends[:, -1:]  # (B, 1)
    target = uniform[:, None].double() * total  # (B, 1)
    block = torch.searchsorted(ends, target, right=True).clamp(max=blocks - 1)  # (B, 1)
    start = torch.where(block > 0, ends.gather(1, (block - 1).clamp(min=0)), torch.zeros_like(target))
    inner = tiles[torch.arange(rows), block[:, 0]].double().cumsum(-1) + start  # (B, DRAW_BLOCK)
    col = (block * DRAW_BLOCK + torch.searchsorted(inner, target, right=True)).clamp(max=width - 1)  # (B, 1)
    # A zero-mass column is reached only through rounding at an edge: take the last kept one before it.
    for r in (kept.gather(1, col)[:, 0] == 0).nonzero()[:, 0].tolist():
        before = (kept[r, :int(col[r, 0]) + 1] > 0).nonzero()
        anywhere = before if len(before) else (kept[r] > 0).nonzero()
        if not len(anywhere):
            raise ValueError(f"row {r} has no token with positive probability to sample")
        col[r, 0] = anywhere[-1, 0] if len(before) else anywhere[0, 0]
    return col[:, 0], (kept.gather(1, col).double() / total).log()[:, 0].float()


class Choice(NamedTuple):
    """One decode step's pick for every row (see ``choose_tokens``)."""

    ids: torch.Tensor
    """(B,) the chosen token ids (columns of the logits)."""
    logprob: torch.Tensor
    """(B,) their raw log-probs (temperature 1, no filtering)."""
    sample_logprob: torch.Tensor
    """(B,) their log-probs under the distribution they were drawn from."""
    raw: torch.Tensor
    """(B, V) raw log-probs of every token."""
    entropy: torch.Tensor | None
    """(B,) entropy of the temperature-scaled distribution (before filtering), if asked for."""


def _entropy(z: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    """H = logsumexp(z) - sum softmax(z) * z per row; ``probs`` is softmax(z) where already known."""
    probs = torch.softmax(z, dim=-1) if probs is None else probs
    return torch.logsumexp(z, dim=-1) - (probs * z).sum(-1)


def choose_tokens(logits: torch.Tensor, config: SampleConfig, generators: Sequence[torch.Generator],
                  banned: Sequence[int] = ()) -> Choice:
    """Pick one token per row.

    ``logits`` is (B, V) float32. ``banned`` ids get probability zero in the sampling
    distribution (not in the raw one): that is how min_new_tokens holds EOS back. With
    ``config.entropy`` the entropy of softmax(logits / temperature) comes too, reusing the
    sampling probabilities where they are that distribution.
    """
    raw = torch.log_softmax(logits, dim=-1)  # (B, V)
    rows, vocab = logits.shape
    scores = logits
    if banned:
        scores = logits.clone()
        scores[:, list(banned)] = -math.inf
    if config.temperature == 0:
        ids = scores.argmax(-1)
        entropy = _entropy(logits) if config.entropy else None
        return Choice(ids, raw.gather(1, ids[:, None])[:, 0], torch.zeros(rows), raw, entropy)
    scores = scores / config.temperature
    entropy = None
    uniform = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])  # (B,)
    if config.top_k == 0 and config.top_p >= 1.0:
        probs = torch.softmax(scores, dim=-1)  # (B, V)
        if config.entropy:
            entropy = _entropy(scores, probs) if not banned else _entropy(logits / config.temperature)
        ids, sample_lp = _draw(probs, None, uniform)
        return Choice(ids, raw.gather(1, ids[:, None])[:, 0], sample_lp, raw, entropy)
    if config.entropy:
        entropy = _entropy(scores) if not banned else _entropy(logits / config.temperature)
    ids = torch.empty(rows, dtype=torch.long)
    sample_lp = torch.empty(rows)
    pending = torch.arange(rows)
    widths = [config.top_k] if config.top_k else [*NUCLEUS_CANDIDATES, vocab]
    full_lse = None if config.top_k else torch.logsumexp(scores, dim=-1, keepdim=True)  # (B, 1)
    for width in widths:
        width = min(width, vocab)
        values, index = torch.topk(scores[pending], width, dim=-1)  # (P, K), sorted descending
        if config.top_k:
            probs = torch.softmax(values, -1)  # top-p acts on the renormalised top-k
        else:
            probs = (values - full_lse[pending]).exp()
        enough = torch.ones(len(pending), dtype=torch.bool)
        if config.top_p < 1.0 and not config.top_k and width < vocab:
            enough = probs.sum(-1) >= config.top_p  # else the nucleus reaches past these candidates
        if enough.any():
            sel = enough.nonzero()[:, 0]
            keep = values[sel] > -math.inf
            if config.top_p < 1.0:
                keep &= _nucleus_mask(probs[sel], config.top_p)
            col, lp = _draw(probs[sel], keep, uniform[pending[sel]])
            ids[pending[sel]] = index[sel].gather(1, col[:, None])[:, 0]
            sample_lp[pending[sel]] = lp
        pending = pending[~enough]
        if len(pending) == 0:
            break
    return Choice(ids, raw.gather(1, ids[:, None])[:, 0], sample_lp, raw, entropy)


def prefill(model, prompt_ids: Sequence[Sequence[int]], pad_id: int, device) -> tuple:
    """Encode the prompts for sampling: (last hidden state (B, D), KV cache, attention mask (B, T),
    next position (B, 1)).

    Work is shared where the prompts allow, without changing what is computed: each distinct
    prompt is encoded once however many rows sample from it, and a leading run of tokens that all
    the distinct prompts share (a task's template, a few-shot example) is encoded once for all of
    them. The rows' caches are then views of those encodings: row i's cache holds its prompt's
    keys and values at the positions a plain left-padded batch would give them, with the padding
    (masked out) between the shared prefix and the rest.
    """
    distinct: dict[tuple[int, ...], int] = {}
    row_of = [distinct.setdefault(tuple(ids), len(distinct)) for ids in prompt_ids]
    unique = list(distinct)
    shared = 0
    window = getattr(model.config, "sliding_window", None)  # a cache may keep only a window's tail
    if len(unique) > 1 and (window is None or max(len(u) for u in unique) <= window):
        shortest = min(len(u) for u in unique)
        while shared < shortest - 1 and all(u[shared] == unique[0][shared] for u in unique):
            shared += 1
        if shared < SHARED_PREFIX_MIN:
            shared = 0
    rows = len(unique)
    if shared:
        prefix = torch.tensor([unique[0][:shared]], device=device)
        _, cache = hidden_states(model, prefix, torch.ones_like(prefix), use_cache=True)
        cache.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=device))
        rest, rest_mask = left_pad([u[shared:] for u in unique], pad_id)
        rest, rest_mask = rest.to(device), rest_mask.to(device)
        mask = torch.cat([torch.ones((rows, shared), dtype=rest_mask.dtype, device=device), rest_mask], dim=1)
        positions = shared + (rest_mask.cumsum(-1) - 1).clamp(min=0)
        hidden, cache = hidden_states(model, rest, mask, positions, cache=cache, use_cache=True)
    else:
        ids, mask = left_pad(unique, pad_id)
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden, cache = hidden_states(model, ids, mask, positions, use_cache=True)
    index = torch.tensor(row_of, dtype=torch.long, device=device)
    if rows != len(prompt_ids):
        cache.batch_select_indices(index)
    return hidden[index, -1], cache, mask[index], positions[index, -1:] + 1


@torch.inference_mode()
def stream(model, tokenizer, prompts: Sequence[str | Sequence[int]], config: SampleConfig | None = None,
           seeds: Sequence[int] | None = None) -> Iterator[TokenEvent]:
    """Sample continuations of ``prompts`` together, yielding each token as it is chosen.

    Uses a KV cache: the prompts are encoded once, then one position per step.
    """
    config = config or SampleConfig()
    config.check()
    if not prompts:
        return
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    if any(not ids for ids in prompt_ids):
        raise ValueError("a prompt encodes to no tokens; give text or a tokenizer that adds BOS")
    seeds = list(seeds) if seeds is not None else [config.seed + i for i in range(len(prompts))]
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts; give one seed per prompt")
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stops = eos_ids(model, tokenizer)
    piece = PieceText(tokenizer)
    device = next(model.parameters()).device

    with few_row_linears(model):  # a short shared prompt has few rows too
        last, cache, mask, next_pos = prefill(model, prompt_ids, pad_id, device)  # last: (B, D)
    logits = output_logits(model, last).float().cpu()  # (B, V), or (B, K) over a kept subset
    subset = vocabulary(model)
    if subset is not None:  # choose among kept indices, report full-vocabulary ids
        stops_local = {int(subset.index[i]) for i in stops if i in subset}
        if not stops_local and config.max_new_tokens:
            raise ValueError("the restricted vocabulary keeps no end-of-sequence token; include the special tokens")

    rows = len(prompts)
    generated: list[list[int]] = [[] for _ in range(rows)]
    emitted = [""] * rows
    active = [True] * rows
    live = list(range(rows))  # the rows still in the batch, in batch order
    longest_stop = max((len(s) for s in config.stop), default=0)
    for step in range(config.max_new_tokens):
        banned = sorted(stops if subset is None else stops_local) if step < config.min_new_tokens else ()
        ids, raw_lp, sample_lp, raw, entropy = choose_tokens(logits, config, [generators[r] for r in live], banned)
        entropies = entropy.tolist() if entropy is not None else None  # (B,)
        if config.alternatives:
            alt_lp, alt_ids = torch.topk(raw, min(config.alternatives, raw.shape[-1]), dim=-1)  # (B, A)
            if subset is not None:
                alt_ids = subset.to_global(alt_ids)
            alt_lp, alt_ids = alt_lp.tolist(), alt_ids.tolist()
        if subset is not None:
            ids = subset.to_global(ids)
        ids_list, raw_list, sample_list = ids.tolist(), raw_lp.tolist(), sample_lp.tolist()
        for b, r in enumerate(live):
            if not active[r]:
                continue
            token_id = ids_list[b]
            generated[r].append(token_id)
            finish, stop_hit = None, None
            if token_id in stops:
                text, finish = "", "eos"
            else:
                full = tokenizer.decode(generated[r], skip_special_tokens=True)
                text = "" if full.endswith("\ufffd") else full[len(emitted[r]):]
                if text:
                    emitted[r] = full
                for s in config.stop:
                    if s in full[max(0, len(full) - len(text) - longest_stop):]:
                        finish, stop_hit = "stop", s
                        break
            if finish is None and len(generated[r]) >= config.max_new_tokens:
                finish = "length"
            alternatives = [Alternative(i, piece(i), lp)
                            for lp, i in zip(alt_lp[b], alt_ids[b])] if config.alternatives else []
            token = Token(token_id, text, raw_list[b], sample_list[b], alternatives,
                          entropies[b] if config.entropy else None, last[b].clone() if config.hidden else None)
            yield TokenEvent(r, len(generated[r]) - 1, token, finish, stop_hit)
            if finish:
                active[r] = False
        if not any(active):
            return
        keep = [b for b, r in enumerate(live) if active[r]]
        if len(live) - len(keep) >= max(1, len(live) // 4):
            # A quarter of the batch has finished: drop those rows (cache, mask, positions) so
            # the model stops computing them; each row keeps its own generator, so what it
            # samples does not depend on which rows share its batch.
            index = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(index)
            mask, next_pos, ids = mask[index], next_pos[index], ids[index.cpu()]
            live = [live[b] for b in keep]
        # Finished rows not yet dropped are fed a pad so the batch stays rectangular; their outputs are ignored.
        still = torch.tensor([active[r] for r in live])
        feed = torch.where(still, ids, torch.full_like(ids, pad_id))[:, None].to(device)
        mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=device)], dim=1)
        with few_row_linears(model):  # one position per row: models/kernels
            hidden, cache = hidden_states(model, feed, mask, next_pos, cache=cache, use_cache=True)
        next_pos = next_pos + 1
        last = hidden[:, -1]  # (B, D)
        logits = output_logits(model, last).float().cpu()


def sample(model, tokenizer, prompts: Sequence[str | Sequence[int]], config: SampleConfig | None = None,
           seeds: Sequence[int] | None = None, n: int = 1, progress: bool = False) -> list[Completion]:
    """Sample ``n`` continuations of each prompt (prompt-major order: p0 x n, p1 x n, ...).

    Copy j of prompt i gets seed ``config.seed + i * n + j`` unless ``seeds`` gives one per copy.
    """
    config = config or SampleConfig()
    expanded = [p for p in prompts for _ in range(n)]
    seeds = list(seeds) if seeds is not None else [config.seed + i for i in range(len(expanded))]
    texts = [p if isinstance(p, str) else tokenizer.decode(list(p)) for p in expanded]
    tokens: list[list[Token]] = [[] for _ in expanded]
    finish: list[str] = ["length"] * len(expanded)
    stop_strings: list[str | None] = [None] * len(expanded)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.max_new_tokens, desc="sampling", unit="step", leave=False)
    last_index = -1
    for event in stream(model, tokenizer, expanded, config, seeds):
        tokens[event.row].append(event.token)
        if event.finish_reason:
            finish[event.row], stop_strings[event.row] = event.finish_reason, event.stop_string
        if bar is not None and event.index > last_index:
            bar.update(event.index - last_index)
            last_index = event.index
    if bar is not None:
        bar.close()
    out = []
    for i, p in enumerate(expanded):
        ids = [t.id for t in tokens[i]]
        out.append(Completion(
            prompt=texts[i], prompt_ids=encode_prompt(tokenizer, p), seed=seeds[i],
            text=tokenizer.decode(ids, skip_special_tokens=True), tokens=tokens[i],
            finish_reason=finish[i], stop_string=stop_strings[i]))
    return out
