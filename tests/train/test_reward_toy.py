"""A learnable toy: a hidden linear reward over word counts, learned through the same choice
mapping and loss the trainer uses, from mixed feedback kinds and from pairs alone."""

from types import SimpleNamespace

import numpy as np
import torch
from scipy.stats import spearmanr

from alignlab.feedback.choices import to_choices
from alignlab.feedback.labelers import SimulatedLabeler
from alignlab.train.reward import RewardTrainConfig, batch_losses, build_items

WORDS = [f"w{i}" for i in range(12)]
THETA = np.random.default_rng(0).normal(size=len(WORDS))


def features(text: str) -> np.ndarray:
    counts = np.zeros(len(WORDS))
    for w in text.split():
        counts[WORDS.index(w)] += 1
    return counts


def gold(prompt: str, response: str) -> float:
    return float(THETA @ features(response))


def response(rng) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))


def mixed_records(labeler, rng, n):
    records = []
    for i in range(n):
        prompt = f"p{i}"
        kind = i % 4
        if kind == 0:
            records.append(labeler.compare(prompt, response(rng), response(rng)))
        elif kind == 1:
            records.append(labeler.rank(prompt, [response(rng) for _ in range(4)]))
        elif kind == 2:
            records.append(labeler.thumbs(prompt, response(rng), reference=0.0))
        else:
            before = response(rng)
            edit = labeler.edit(prompt, before, [response(rng) for _ in range(3)])
            records.append(edit if edit is not None else labeler.compare(prompt, before, response(rng)))
    return records


def fit(records, steps=400, seed=0):
    """Train a linear reward on the word counts with the trainer's choice loss."""
    choice_set = to_choices(records)
    items = build_items(choice_set, SimpleNamespace(encode=lambda p, r: []))
    phi = torch.tensor(np.stack([features(r) for _, r in items.texts]), dtype=torch.float32)
    torch.manual_seed(seed)
    head = torch.nn.Linear(len(WORDS), 1)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    config = RewardTrainConfig()
    reference = 0.0
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(len(items.options), (32,), generator=g).tolist()
        losses, stats = batch_losses(lambda t: head(phi[t]), items, rows, reference, config)
        opt.zero_grad()
        losses.mean().backward()
        opt.step()
        reference = 0.9 * reference + 0.1 * float(stats["batch_mean_reward"])
    return head


def held_out_spearman(head, rng) -> float:
    texts = [response(rng) for _ in range(300)]
    phi = torch.tensor(np.stack([features(t) for t in texts]), dtype=torch.float32)
    learned = head(phi)[:, 0].detach().numpy()
    return float(spearmanr(learned, [gold("", t) for t in texts]).statistic)


def test_mixed_feedback_recovers_the_hidden_ranking_better_than_pairs_alone():
    # Averaged over labelers and draws: one draw of 120 noisy records is itself noisy.
    rng = np.random.default_rng(1)
    pool = {f"c{i}": [response(rng) for _ in range(4)] for i in range(200)}
    n, mixed_rho, pairs_rho = 120, [], []
    for seed in range(4):
        labeler = SimulatedLabeler.calibrated(gold, pool, target_agreement=0.75, seed=seed)
        mixed = mixed_records(labeler, np.random.default_rng(100 + seed), n)
        assert {"pair", "ranking", "thumbs", "edit"} <= {r.kind for r in mixed}
        draw = np.random.default_rng(200 + seed)
        pairs = [labeler.compare(f"p{i}", response(draw), response(draw)) for i in range(n)]
        mixed_rho.append(held_out_spearman(fit(mixed, seed=seed), np.random.default_rng(9)))
        pairs_rho.append(held_out_spearman(fit(pairs, seed=seed), np.random.default_rng(9)))
    assert np.mean(mixed_rho) > 0.9, mixed_rho
    assert np.mean(mixed_rho) > np.mean(pairs_rho), (mixed_rho, pairs_rho)
