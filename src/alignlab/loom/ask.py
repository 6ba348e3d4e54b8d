"""Ask me: the comparison between nodes of a tree that the loom most wants a person to judge.

The candidates are siblings (continuations of one parent, so a comparison of them is a choice
between responses to one prompt). A reward head on the loom's local model (a linear map of one
middle layer's mean states, the head `alignlab reward query` and `experiment --study active`
use) is fitted on the tree's compare judgements, every time a question is asked (a fit takes
well under a second: the person's answer is learnt from before the next question); its Laplace
posterior gives the members, and the question is the open sibling pair with the most expected
information about the head (BALD, feedback/active.py). The answer is an ordinary compare
judgement: the person can always compare any two nodes instead.

Features are computed on the model worker and kept per (model, text); a node's text as it reads
now is what a question shows, and a judgement is learnt from as it was seen (the event's texts).
"""

from __future__ import annotations

import itertools

import numpy as np

HEAD_L2 = 1.0
MEMBERS = 16


def middle_layer(depth: int) -> int:
    """The layer the head reads: about 0.6 of the way up (layer 11 of Gemma 3 270M's 18, the layer
    cross-validation chose for the writing task's proxy)."""
    return max(1, min(depth, round(depth * 11 / 18)))


def path_texts(nodes: list[dict]):
    """A function giving the whole text from the root to a node of ``nodes`` (the tree, archived
    nodes included: a live node may hang below one)."""
    by_id = {n["id"]: n for n in nodes}
    memo: dict[str, str] = {}

    def text_of(node_id: str) -> str:
        chain, current = [], node_id
        while current is not None and current not in memo:
            chain.append(current)
            current = by_id[current]["parent_id"]
        text = memo.get(current, "") if current is not None else ""
        for nid in reversed(chain):
            text += by_id[nid]["text"]
            memo[nid] = text
        return memo[node_id]

    return text_of


def candidate_pairs(nodes: list[dict], text_of) -> tuple[list[tuple[str, str]], list[str], list[int], np.ndarray]:
    """Sibling pairs of the tree's live nodes with text: (texts as (prompt, text), node ids, each
    text's group, pairs as text indices)."""
    by_parent: dict[str, list[dict]] = {}
    for n in nodes:
        if n["parent_id"] is not None and not n.get("archived") and n["text"].strip():
            by_parent.setdefault(n["parent_id"], []).append(n)
    texts, ids, groups, pairs = [], [], [], []
    for g, (parent, siblings) in enumerate(p for p in by_parent.items() if len(p[1]) >= 2):
        prompt = text_of(parent)
        start = len(texts)
        for n in siblings:
            texts.append((prompt, n["text"]))
            ids.append(n["id"])
            groups.append(g)
        pairs += [(start + i, start + j) for i, j in itertools.combinations(range(len(siblings)), 2)
                  if siblings[i]["text"] != siblings[j]["text"]]
    return texts, ids, groups, np.array(pairs, dtype=int).reshape(-1, 2)


def answered(events: list[dict]) -> list[tuple[str, str, tuple[str, str], tuple[str, str]]]:
    """(node a, node b, chosen (prompt, text), rejected (prompt, text)) of every compare judgement
    with a winner, as the person saw the texts."""
    out = []
    for e in events:
        p = e["payload"]
        if p.get("choice") not in ("a", "b") or not p.get("seen"):
            continue
        prompt, (text_a, text_b) = p["seen"]["prompt"], p["seen"]["texts"]
        win, lose = ((prompt, text_a), (prompt, text_b)) if p["choice"] == "a" else ((prompt, text_b), (prompt, text_a))
        out.append((p["a"], p["b"], win, lose))
    return out


def features(slot, texts: list[tuple[str, str]], cache: dict) -> np.ndarray:
    """The model's mean states at the middle layer of each (prompt, text), kept in ``cache``."""
    import torch

    from alignlab.train.reward import cached_features
    from alignlab.train.reward_model import RewardModel

    depth = int(getattr(slot.model.config, "num_hidden_layers", 0) or 1)
    rm = RewardModel(slot.model, slot.tokenizer, max_length=512, pooling="mean", layer=middle_layer(depth)).eval()
    with torch.no_grad():
        return cached_features(rm, [rm.encode(q, r) for q, r in texts], progress=False, cache=cache).double().numpy()


def ask(nodes: list[dict], events: list[dict], slot, cache: dict, seed: int = 0) -> dict:
    """The question to ask among the tree's ``nodes`` given its compare ``events`` (or why there is
    none), with why: its expected information and the model's uncertainty over every open question."""
    from alignlab.feedback.active import mutual_information, next_questions, pair_probabilities, posterior_samples

    texts, ids, groups, pairs = candidate_pairs(nodes, path_texts(nodes))
    judged = answered(events)
    asked_ids = {frozenset((a, b)) for a, b, _, _ in judged}
    asked = np.array([frozenset((ids[a], ids[b])) in asked_ids for a, b in pairs.tolist()], dtype=bool)
    base = {"answered": len(judged), "pairs": int(len(pairs)), "open": int((~asked).sum()) if len(pairs) else 0,
            "model": slot.name}
    if not len(pairs) or asked.all():
        why = ("no node of this tree has two siblings with different text: generate several continuations of a node"
               if not len(pairs) else "every sibling pair of this tree is judged already: generate more continuations")
        return {**base, "pair": None, "why": why}
    seen = [t for _, _, win, lose in judged for t in (win, lose)]
    raw = features(slot, texts + seen, cache)
    std = raw.std(0)
    z = (raw - raw.mean(0)) / np.where(std > 1e-6, std, 1.0)
    x = np.array([z[len(texts) + 2 * k] - z[len(texts) + 2 * k + 1] for k in range(len(judged))]).reshape(-1, z.shape[1])
    rng = np.random.default_rng(seed + len(judged))
    _, samples = posterior_samples("laplace", x, np.ones(len(x)), HEAD_L2, MEMBERS, rng)
    rewards = samples @ z[:len(texts)].T
    (k,) = next_questions("information", rewards, pairs, asked, 1, rng, np.array(groups))
    p = pair_probabilities(rewards, pairs[[k]])[:, 0]
    information = float(mutual_information(p[:, None])[0])
    uncertainty = float(mutual_information(pair_probabilities(rewards, pairs[~asked])).mean())
    a, b = pairs[k]
    return {**base, "pair": {"a": ids[a], "b": ids[b]}, "information": information, "p_a": float(p.mean()),
            "uncertainty": uncertainty,
            "why": f"the model's members disagree most here: the answer is worth {information:.3f} nats about the "
                   f"reward, against {uncertainty:.3f} on average over the {base['open']} open pairs"}
