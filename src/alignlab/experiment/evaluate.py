"""Judging a trained policy on the test prompts: its KL from the base policy, proxy and gold
reward, and how often gold prefers its response to the base policy's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


@torch.no_grad()
def evaluate_policy(folder: Path, prompts: Sequence[str], n: int, max_new_tokens: int, stop: list[str],
                    reward: str, vocabulary: Path | None, seed: int, dtype: str, reference=None) -> dict:
    """Sample ``n`` responses per prompt from the policy in ``folder`` (temperature 1, no
    truncation: the policy's own distribution), score them with the proxy and gold, and measure
    KL(policy || reference) per response as the mean of sum_t (log pi - log ref) on them."""
    import json

    from alignlab.feedback.gold import judge as gold
    from alignlab.models import SampleConfig, load_model, sample, token_logprobs
    from alignlab.models.scoring import build_batch
    from alignlab.models.vocab import load_vocabulary, restrict_vocabulary
    from alignlab.train.components import kl_k3
    from alignlab.train.reward_fn import load_reward

    policy, tokenizer = load_model(str(folder), dtype=dtype)
    base = json.loads((Path(folder) / "alignlab_policy.json").read_text())["base_model"]
    if reference is None:
        reference, _ = load_model(base, dtype=dtype)
    subset = load_vocabulary(vocabulary, tokenizer) if vocabulary else None
    restrict_vocabulary(policy, subset)
    restrict_vocabulary(reference, subset)
    completions = sample(policy.eval(), tokenizer, list(prompts),
                         SampleConfig(max_new_tokens=max_new_tokens, seed=seed, alternatives=0, stop=stop), n=n)
    kept = [c for c in completions if c.token_ids]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kl1, kl3 = [], []
    for start in range(0, len(kept), 8):
        chunk = kept[start:start + 8]
        ids, mask, target = build_batch([c.prompt_ids for c in chunk], [c.token_ids for c in chunk], pad)
        ref = token_logprobs(reference, ids, mask, target)  # (b, T)
        pol = torch.zeros_like(ref)
        for i, c in enumerate(chunk):
            pol[i][target[i]] = torch.tensor([t.logprob for t in c.tokens], dtype=pol.dtype)
        tmask = target.to(ref.dtype)
        kl1 += ((pol - ref) * tmask).sum(-1).tolist()
        kl3 += (kl_k3(pol, ref) * tmask).sum(-1).tolist()
    texts = [c.text for c in completions]
    flat_prompts = [p for p in prompts for _ in range(n)]
    proxy_fn, _ = load_reward(reward)
    proxy = proxy_fn(flat_prompts, texts).tolist()
    golds = gold.score(flat_prompts, texts)
    samples = [{"prompt": p, "response": t, "proxy": s, "gold": g} for p, t, s, g in zip(flat_prompts, texts, proxy, golds)]
    return {"kl": sum(kl1) / max(1, len(kl1)), "kl_k3": sum(kl3) / max(1, len(kl3)),
            "proxy": sum(proxy) / len(proxy), "gold": sum(golds) / len(golds), "responses": len(texts),
            "response_length": sum(len(c.token_ids) for c in completions) / len(completions),
            "gold_by_prompt": [golds[i * n:(i + 1) * n] for i in range(len(prompts))], "samples": samples}
