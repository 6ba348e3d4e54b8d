"""The process-supervision study: outcome against process supervision at equal labelling cost.

`alignlab experiment --study process` asks the question of Lightman et al. 2023 ("Let's Verify
Step by Step") and Uesato et al. 2022 on a task this machine can run: arithmetic chains
(data/chains.py) the base model sometimes gets right, with a hidden gold judge of every step.
Simulated labelers give noisy step labels (a person checking the work, stopping at the first
step they find wrong) or noisy outcome labels (a person judging the final answer), each at a
documented cost (data/chains.py). At each labelling budget and seed:

- a process reward model learns P(step right) from the step labels (train/prm.py's head on
  one layer of the frozen backbone); a response's score is its steps' aggregate (min);
- an outcome reward model, the same head on the same features, learns from the outcome labels
  (every step of a response carries its outcome label: the model predicts the final answer's
  correctness from each prefix); a response's score is its last step's;

and both are judged on held-out test chains by gold: the gold outcome of the response each one
picks from n base samples (best-of-n), and how often each orders a right and a wrong response
of the same prompt correctly. The two supervisions see exactly the same responses' features;
only the labels, and how many of them the budget buys, differ.

Stages (each cached in the experiment folder, resumable like the RLHF experiment's):

    1. prompts        train and test chains, their few-shot prompts
    2. policy         the policy that writes the solutions: the base model, or (sft_demos > 0) the
                      base model fine-tuned on worked solutions of other chains, so that it writes
                      the format and its mistakes are arithmetic (Lightman et al. fine-tuned their
                      generator to the step format the same way)
    3. vocabulary     the task's output vocabulary (fast sampling on a CPU)
    4. samples        the policy's samples of every chain, each judged step by step by gold
    5. features       every step's features at the profile's layer, one backbone pass a response
                      (the reward models read the base model, not the policy)
    6. fits           labels bought at each budget and seed, process and outcome heads fitted,
                      best-of-n and pair accuracy on the test chains
    7. decomposition  long writing-task responses judged chunk by chunk against truncated
    8. rl             RLOO against the largest-budget process and outcome models (standard only)
    9. report         summary.json and report.html
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass

from alignlab.fileio import atomic_write_json, read_jsonl, write_jsonl

GOLD_SPEC = "alignlab.feedback.gold:judge"
STUDY_STAGES = ("prompts", "policy", "vocabulary", "samples", "features", "fits", "decomposition", "rl",
                "report")
SUPERVISIONS = ("process", "outcome")


@dataclass(frozen=True)
class ProcessProfile:
    """How big each stage of the process study is."""

    model: str
    dtype: str
    train_prompts: int
    """Chains whose base samples labelers may be paid to judge."""
    samples_per_prompt: int
    test_prompts: int
    """Held-out chains every reward model is judged on."""
    bon_n: int
    """Base samples per test chain: best-of-n picks from all of them."""
    budgets: tuple[float, ...]
    """Labelling budgets, in cost units (data/chains.py: a step judged costs STEP_LABEL_COST)."""
    seeds: int
    """Independent labelings (which responses are bought, and the labelers' noise) per budget."""
    layer: int
    """Decoder layer the heads read (1-based)."""
    study: str = "process"
    l2: float = 1.0
    step_noise: float = 0.1
    """Chance a step label is flipped."""
    outcome_noise: float = 0.1
    """Chance an outcome label is flipped."""
    aggregate: str = "min"
    """How the process model's step probabilities make a response score."""
    chain_steps: tuple[int, int] = (2, 3)
    shots: int = 4
    sft_demos: int = 0
    """Worked solutions of further chains the policy is fine-tuned on first (0: sample the base model)."""
    sft_epochs: int = 1
    sft_lr: float = 5e-4
    max_new_tokens: int = 48
    temperature: float = 1.0
    restrict_vocabulary: bool = True
    vocab_pilot_prompts: int = 8
    batch_size: int = 64
    decomposition_prompts: int = 0
    """Writing-task prompts for the decomposition measurement (0: not run)."""
    decomposition_samples: int = 4
    decomposition_lengths: tuple[int, ...] = (48, 96, 192)
    decomposition_window: int = 48
    decomposition_reward: str = ""
    """The window-limited judge of the decomposition measurement ('': the gold judge reading a window at a time)."""
    rl_iterations: int = 0
    """RLOO iterations against each supervision's largest-budget model (0: no online RL stage)."""
    rl_prompts: int = 4
    rl_group: int = 4
    rl_lr: float = 1.5e-4
    rl_kl_coef: float = 0.05
    rl_eval_samples: int = 4
    """Samples per test chain for each RL policy's gold outcome rate."""
    rl_seeds: int = 1
    """RLOO runs against each model, each with its own seed; the comparison pairs test chains'
    gold outcome rates averaged over the seeds."""
    notes: tuple[str, ...] = ()


PROCESS_PROFILES: dict[str, ProcessProfile] = {
    "test": ProcessProfile(model="tiny", dtype="float32", train_prompts=8, samples_per_prompt=3, test_prompts=4,
                           bon_n=4, budgets=(12.0, 30.0), seeds=2, layer=1, chain_steps=(2, 2), shots=1,
                           max_new_tokens=16, vocab_pilot_prompts=2, batch_size=16, decomposition_prompts=2,
                           decomposition_samples=2, decomposition_lengths=(8, 16), decomposition_window=8,
                           rl_iterations=2, rl_prompts=2, rl_group=2, rl_lr=1e-3, rl_eval_samples=1,
                           rl_seeds=2, sft_demos=8),
    # Quick: 64 train and 48 test chains took 5 min 18 s (3.1 GB) from an empty cache on a 2-core
    # AVX-512 CPU; with twice the train chains and a third more test chains, 9 min 13 s, 3.1 GB
    # (docs/process.md). Sampling at 0.7: the base model's outcomes at 1.0 are right ~5% of the time.
    "quick": ProcessProfile(model="gemma-3-270m", dtype="auto", train_prompts=128, samples_per_prompt=8,
                            test_prompts=64, bon_n=16, budgets=(100.0, 200.0, 400.0, 800.0, 1600.0), seeds=3,
                            layer=9,
                            temperature=0.7, decomposition_prompts=0),
    # Standard: 39 min 32 s, 5.8 GB from an empty cache on a 2-core AVX-512 CPU with the test suite
    # beside it; process ahead at every budget by 2-5 points, RLOO against the process model +0.057
    # (+0.022 to +0.092) over the outcome model's, step accuracy 0.704 (docs/process.md).
    "standard": ProcessProfile(model="gemma-3-270m", dtype="auto", train_prompts=160, samples_per_prompt=8,
                               test_prompts=96, bon_n=16, budgets=(100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0),
                               seeds=5, layer=9, temperature=0.7, decomposition_prompts=12,
                               rl_iterations=24, rl_seeds=2),
}


def get_process_profile(name: str, **overrides) -> ProcessProfile:
    from dataclasses import replace

    if name not in PROCESS_PROFILES:
        raise ValueError(f"the process study has profiles {', '.join(PROCESS_PROFILES)}; got {name!r}")
    profile = replace(PROCESS_PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})
    if profile.dtype == "auto":
        from alignlab.models.loading import auto_dtype

        profile = replace(profile, dtype=auto_dtype())
    return profile


def profile_from_dict(data: dict) -> ProcessProfile:
    return ProcessProfile(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# -- 1. prompts -------------------------------------------------------------------------------------


def stage_prompts(exp) -> dict:
    from alignlab.data.chains import CHAIN_STOP, chain_prompt, make_chains

    p = exp.profile
    chains = make_chains(p.train_prompts + p.test_prompts, seed=exp.seed, steps=tuple(p.chain_steps))
    for name, rows in (("train", chains[:p.train_prompts]), ("test", chains[p.train_prompts:])):
        write_jsonl(exp.file(f"{name}_chains.jsonl"),
                    [{"chain": c.to_dict(), "prompt": chain_prompt(c, shots=p.shots)} for c in rows])
    return {"train": p.train_prompts, "test": p.test_prompts, "stop": list(CHAIN_STOP)}


def _chains(exp, name: str) -> list[dict]:
    return read_jsonl(exp.file(f"{name}_chains.jsonl"))


# -- 2. policy --------------------------------------------------------------------------------------


def stage_policy(exp) -> dict:
    """The base model, or the base model fine-tuned (full weights) on worked solutions of chains
    that are neither train nor test chains."""
    p = exp.profile
    if not p.sft_demos:
        return {"model": p.model, "sft": None}
    from alignlab.data.chains import chain_prompt, make_chains
    from alignlab.train.sft import SFTConfig, train_sft

    used = p.train_prompts + p.test_prompts
    demos = make_chains(used + p.sft_demos, seed=exp.seed, steps=tuple(p.chain_steps))[used:]
    write_jsonl(exp.file("sft_demos.jsonl"), [{"prompt": chain_prompt(c, shots=p.shots), "completion": c.solution()}
                                             for c in demos])
    run = train_sft(SFTConfig(data=str(exp.file("sft_demos.jsonl")), model=p.model,
                              dtype="bfloat16" if p.dtype == "bfloat16" else "float32", epochs=p.sft_epochs,
                              batch_size=8, lr=p.sft_lr, kl_prompts=0, seed=exp.seed, checkpoint_every=10_000),
                    progress=exp.progress)
    return {"model": str(run.path / "policy"), "sft": run.id, "demos": len(demos)}


def _policy(exp) -> str:
    return (exp.done("policy") or {}).get("model") or exp.profile.model


# -- 3. vocabulary ----------------------------------------------------------------------------------


def stage_vocabulary(exp) -> dict:
    p = exp.profile
    if not p.restrict_vocabulary:
        return {"restricted": False}
    from alignlab.models import load_model
    from alignlab.models.task_vocab import task_vocabulary, vocabulary_coverage
    from alignlab.models.vocab import save_vocabulary

    model, tokenizer = load_model(_policy(exp), dtype=p.dtype)
    rows = _chains(exp, "train") + _chains(exp, "test")
    texts = [r["prompt"] for r in rows]
    pilot = texts[:p.vocab_pilot_prompts]
    subset = task_vocabulary(model, tokenizer, texts, pilot, samples_per_prompt=2, max_new_tokens=p.max_new_tokens,
                             seed=exp.seed + 17, progress=exp.progress)
    held_out = [r["prompt"] for r in _chains(exp, "test")][:max(2, p.vocab_pilot_prompts // 2)]
    coverage = vocabulary_coverage(model, tokenizer, subset, held_out, max_new_tokens=p.max_new_tokens,
                                   seed=exp.seed + 29)
    save_vocabulary(exp.file("vocabulary.json"), subset, coverage=coverage.to_dict())
    return {"restricted": True, "size": len(subset), "coverage": coverage.to_dict()}


def _vocabulary(exp):
    return exp.file("vocabulary.json") if exp.file("vocabulary.json").exists() else None


# -- 4. samples -------------------------------------------------------------------------------------


def _sample(exp, model, tokenizer, prompts: list[str], n: int, seed: int) -> list[list[str]]:
    from tqdm import tqdm

    from alignlab.models import SampleConfig, sample

    p = exp.profile
    config = SampleConfig(max_new_tokens=p.max_new_tokens, seed=seed, alternatives=0, temperature=p.temperature,
                          stop=list(exp.done("prompts")["stop"]))
    jobs = [prompt for prompt in prompts for _ in range(n)]
    texts: list[str] = []
    for start in tqdm(range(0, len(jobs), p.batch_size), desc="sampling", unit="batch", disable=not exp.progress):
        chunk = jobs[start:start + p.batch_size]
        seeds = [seed * 1_000_003 + start + j for j in range(len(chunk))]
        texts += [c.text for c in sample(model, tokenizer, chunk, config, seeds=seeds)]
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


def _judged(chain: dict, response: str) -> dict:
    from alignlab.data.chains import Chain, judge_chain

    j = judge_chain(Chain.from_dict(chain), response)
    return {"response": response, "steps": j.steps, "labels": j.labels, "outcome": j.outcome,
            "first_wrong": j.first_wrong}


def stage_samples(exp) -> dict:
    """The policy's samples: samples_per_prompt per train chain, bon_n per test chain; gold judges every step."""
    from alignlab.models import load_model
    from alignlab.models.vocab import load_vocabulary, restrict_vocabulary

    p = exp.profile
    model, tokenizer = load_model(_policy(exp), dtype=p.dtype)
    if _vocabulary(exp):
        restrict_vocabulary(model, load_vocabulary(_vocabulary(exp), tokenizer))
    out = {}
    for name, n, seed in (("train", p.samples_per_prompt, exp.seed + 1), ("test", p.bon_n, exp.seed + 2)):
        rows = _chains(exp, name)
        responses = _sample(exp, model, tokenizer, [r["prompt"] for r in rows], n, seed)
        judged = [{"prompt": r["prompt"], "chain": r["chain"], "samples": [_judged(r["chain"], x) for x in rs]}
                  for r, rs in zip(rows, responses)]
        write_jsonl(exp.file(f"{name}_samples.jsonl"), judged)
        samples = [s for row in judged for s in row["samples"]]
        steps = [label for s in samples for label in s["labels"]]
        out[name] = {"responses": len(samples), "outcome_right": sum(s["outcome"] for s in samples) / len(samples),
                     "steps": len(steps), "steps_right": sum(steps) / max(1, len(steps)),
                     "prompts_mixed": sum(len({s["outcome"] for s in row["samples"]}) == 2 for row in judged)}
    return out


# -- 5. features ------------------------------------------------------------------------------------


def _steps_of(sample: dict) -> list[str]:
    """The steps a reward model reads: a response with no text is read as one empty-answer step."""
    return sample["steps"] or ["\n"]


def stage_features(exp) -> dict:
    """Every step's features at the profile's layer (train/prm.py), one backbone pass a response."""
    import torch

    from alignlab.models import load_model
    from alignlab.train.prm import ProcessRewardModel, encode_steps

    p = exp.profile
    lm, tokenizer = load_model(p.model, dtype=p.dtype)
    prm = ProcessRewardModel(lm, tokenizer, layer=p.layer)
    saved = {}
    for name in ("train", "test"):
        rows = read_jsonl(exp.file(f"{name}_samples.jsonl"))
        encoded = [encode_steps(tokenizer, row["prompt"], _steps_of(s), prm.max_length)
                   for row in rows for s in row["samples"]]
        saved[name] = prm.step_features(encoded, progress=exp.progress)
    torch.save(saved, exp.file("features.pt"))
    return {"layer": p.layer, "width": int(saved["train"][0].shape[1]), "depth": prm.depth}


# -- 6. fits ----------------------------------------------------------------------------------------


def buy_labels(samples: list[dict], budget: float, supervision: str, seed: int, step_noise: float,
               outcome_noise: float) -> tuple[list[tuple[int, list]], float]:
    """The labels ``budget`` buys: responses in an order fixed by ``seed``, each labelled (with its
    noise drawn from the same seed) until the next would overrun the budget. Budgets under one
    seed are nested: a larger one buys the smaller one's labels and more. Returns (response
    index, per-step labels) pairs and the cost spent; an outcome label is copied onto every step."""
    from alignlab.data.chains import ChainJudgement, label_outcome, label_process

    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    rng = random.Random(seed * 7919 + (0 if supervision == "process" else 1))
    bought, spent = [], 0.0
    for i in order:
        s = samples[i]
        judgement = ChainJudgement(steps=_steps_of(s), labels=s["labels"] or [False], outcome=s["outcome"],
                                   first_wrong=s["first_wrong"] if s["steps"] else 0,
                                   answer=None)
        if supervision == "process":
            labels, cost = label_process(judgement, rng, noise=step_noise)
        else:
            outcome, cost = label_outcome(judgement, rng, noise=outcome_noise)
            labels = [outcome] * len(judgement.steps)
        if spent + cost > budget:
            break
        spent += cost
        bought.append((i, labels))
    return bought, spent


def _flat(rows: list[dict]) -> list[dict]:
    return [dict(s, prompt_index=k) for k, row in enumerate(rows) for s in row["samples"]]


def _score(head, features: list, supervision: str, aggregate: str) -> list[float]:
    """One score per response: the process model's aggregate of its steps, the outcome model's last step."""
    import torch

    from alignlab.train.prm import aggregate as combine

    out = []
    with torch.no_grad():
        for f in features:
            probs = torch.sigmoid(head.logits(torch.nan_to_num(f))).tolist()
            out.append(combine(probs, aggregate) if supervision == "process" else probs[-1])
    return out


def pair_accuracy(scores: list[float], outcomes: list[bool], prompt_of: list[int]) -> dict:
    """How often a score orders a right and a wrong response of the same prompt as gold does
    (ties 1/2), pooled over prompts with a prompt-clustered 95% interval."""
    from alignlab.pressure.stats import clustered_accuracy

    judged, clusters = [], []
    by_prompt: dict[int, list[int]] = {}
    for i, k in enumerate(prompt_of):
        by_prompt.setdefault(k, []).append(i)
    for k, items in by_prompt.items():
        for a in items:
            for b in items:
                if outcomes[a] and not outcomes[b]:
                    judged.append(1.0 if scores[a] > scores[b] else 0.5 if scores[a] == scores[b] else 0.0)
                    clusters.append(k)
    if len(set(clusters)) < 2:
        return {"value": sum(judged) / len(judged) if judged else math.nan, "ci": [math.nan, math.nan],
                "pairs": len(judged)}
    estimate = clustered_accuracy(judged, clusters)
    return {"value": estimate.value, "ci": list(estimate.ci), "pairs": len(judged)}


def best_of_n_gold(scores: list[float], outcomes: list[bool], prompt_of: list[int], n: int) -> dict:
    """Expected gold outcome of the best of n by score (the order-statistic estimator over every
    sample of a prompt, ties shared), mean over prompts with a normal 95% interval over prompts."""
    from alignlab.pressure.stats import paired_difference

    per_prompt = _per_prompt_bon(scores, outcomes, prompt_of, n)
    estimate = paired_difference(per_prompt, [0.0] * len(per_prompt))
    lo, hi = estimate.ci
    return {"value": estimate.value, "ci": [max(0.0, lo), min(1.0, hi)], "se": estimate.se,
            "by_prompt": per_prompt}


def _per_prompt_bon(scores, outcomes, prompt_of, n) -> list[float]:
    from alignlab.pressure.stats import best_of_n_order_statistic

    by_prompt: dict[int, list[int]] = {}
    for i, k in enumerate(prompt_of):
        by_prompt.setdefault(k, []).append(i)
    return [best_of_n_order_statistic([scores[i] for i in items], [float(outcomes[i]) for i in items],
                                      min(n, len(items)))
            for _, items in sorted(by_prompt.items())]


def stage_fits(exp) -> dict:
    """At each budget and seed, the labels it buys under each supervision, a head fitted to them,
    and that head judged on the test chains by gold."""
    import torch

    from alignlab.models import load_model
    from alignlab.train.prm import ProcessRewardModel, fit_step_head

    p = exp.profile
    features = torch.load(exp.file("features.pt"))
    train = _flat(read_jsonl(exp.file("train_samples.jsonl")))
    test = _flat(read_jsonl(exp.file("test_samples.jsonl")))
    outcomes = [s["outcome"] for s in test]
    prompt_of = [s["prompt_index"] for s in test]
    lm, tokenizer = load_model(p.model, dtype=p.dtype)  # for the head's width and the saved models
    head = ProcessRewardModel(lm, tokenizer, layer=p.layer)
    points, models, examples = [], {}, {}
    for seed in range(p.seeds):
        for budget in p.budgets:
            for supervision in SUPERVISIONS:
                bought, spent = buy_labels(train, budget, supervision, exp.seed * 1000 + seed, p.step_noise,
                                           p.outcome_noise)
                xs, ys = [], []
                for i, labels in bought:
                    for j, label in enumerate(labels):
                        if label is not None and not torch.isnan(features["train"][i][j]).any():
                            xs.append(features["train"][i][j]), ys.append(bool(label))
                point = {"budget": budget, "seed": seed, "supervision": supervision, "spent": spent,
                         "responses_labelled": len(bought), "step_labels": len(ys)}
                if len(set(ys)) < 2:  # nothing to tell apart yet: the model is a constant
                    scores = [0.5] * len(test)
                    point["fitted"] = False
                else:
                    fit_step_head(head, torch.stack(xs), torch.tensor(ys), p.l2)
                    scores = _score(head, features["test"], supervision, p.aggregate)
                    point["fitted"] = True
                bon = best_of_n_gold(scores, outcomes, prompt_of, p.bon_n)
                accuracy = pair_accuracy(scores, outcomes, prompt_of)
                point.update({"bon_gold": bon["value"], "bon_gold_ci": bon["ci"], "bon_gold_se": bon["se"],
                              "bon_gold_by_prompt": bon["by_prompt"], "rm_accuracy": accuracy["value"],
                              "rm_accuracy_ci": accuracy["ci"], "rm_pairs": accuracy["pairs"]})
                if point["fitted"] and budget == max(p.budgets):
                    point["bon_curve"] = [{"n": n, "gold": sum(_per_prompt_bon(scores, outcomes, prompt_of, n)) /
                                           len(set(prompt_of))} for n in _powers(p.bon_n)]
                    if supervision == "process":
                        point["step_accuracy"] = _step_accuracy(head, features["test"], test)
                    if seed == 0:
                        models[supervision] = _save_head(exp, head, supervision, p)
                        examples[supervision] = _examples(head, features["test"], test)
                points.append(point)
                exp.log(f"  seed {seed} budget {budget:g} {supervision}: {len(bought)} responses, "
                        f"best-of-{p.bon_n} gold {bon['value']:.3f}, pair accuracy {accuracy['value']:.3f}")
    base = _per_prompt_bon([0.0] * len(test), outcomes, prompt_of, 1)
    oracle = _per_prompt_bon([float(o) for o in outcomes], outcomes, prompt_of, p.bon_n)
    atomic_write_json(exp.file("fits.json"), {"points": points, "examples": examples})
    return {"points": len(points), "models": models, "base_gold": sum(base) / len(base),
            "oracle_gold": sum(oracle) / len(oracle)}


def _powers(n: int) -> list[int]:
    out, k = [], 1
    while k < n:
        out.append(k)
        k *= 2
    return out + [n]


def _examples(head, features: list, test: list[dict], responses: int = 6) -> list[dict]:
    """A few test responses with gold's step labels and the head's P(right) per step, for the report."""
    import torch

    shown, seen = [], set()
    for i, s in enumerate(test):  # a right and a wrong response of each prompt, while there are some
        key = (s["prompt_index"], s["outcome"])
        if s["steps"] and key not in seen and len(shown) < responses:
            seen.add(key)
            shown.append(i)
    with torch.no_grad():
        return [{"prompt_index": test[i]["prompt_index"], "steps": test[i]["steps"], "gold": test[i]["labels"],
                 "outcome": test[i]["outcome"],
                 "p_right": torch.sigmoid(head.logits(torch.nan_to_num(features[i]))).tolist()} for i in shown]


def _step_accuracy(head, features: list, test: list[dict]) -> dict:
    """The process head's step predictions (P > 0.5) against gold's step labels on every step of
    every test response, clustered by prompt; and the share of responses whose first wrong step
    (gold's) is the first step the head puts under 0.5."""
    import torch

    from alignlab.pressure.stats import clustered_accuracy

    correct, clusters, first_found = [], [], []
    with torch.no_grad():
        for f, s in zip(features, test):
            if not s["steps"]:
                continue
            probs = torch.sigmoid(head.logits(torch.nan_to_num(f))).tolist()
            for prob, label in zip(probs, s["labels"]):
                correct.append(float((prob > 0.5) == label)), clusters.append(s["prompt_index"])
            guess = next((j for j, q in enumerate(probs) if q <= 0.5), None)
            first_found.append(guess == s["first_wrong"])
    estimate = clustered_accuracy(correct, clusters)
    right = sum(label for s in test if s["steps"] for label in s["labels"])
    return {"value": estimate.value, "ci": list(estimate.ci), "steps": len(correct),
            "majority_baseline": max(right, len(correct) - right) / max(1, len(correct)),
            "first_wrong_step_accuracy": sum(first_found) / max(1, len(first_found))}


def _save_head(exp, head, supervision: str, p: ProcessProfile) -> str:
    from alignlab.train.prm import save_prm

    folder = exp.file(f"{supervision}_model")
    save_prm(head, folder, p.model, p.aggregate if supervision == "process" else "last",
             extra={"supervision": supervision, "split_by": "lines", "budget": max(p.budgets)})
    return str(folder)


# -- 7. decomposition -------------------------------------------------------------------------------


def stage_decomposition(exp) -> dict:
    """Long writing-task responses judged a window at a time, chunk by chunk with a model-written
    summary of the earlier chunks, against the truncated whole, on agreement with gold reading
    the whole (train/decompose.py). The judge is ``decomposition_reward``; by default the gold
    judge itself reading at most a window plus a summary: a person who can check a page at a
    time, asked to judge a book."""
    p = exp.profile
    if not p.decomposition_prompts:
        return {"skipped": "the profile measures no decomposition (decomposition_prompts 0)"}
    from alignlab.data.tasks import load_task
    from alignlab.feedback.gold import judge as gold
    from alignlab.models import load_model
    from alignlab.train.decompose import decomposition_agreement
    from alignlab.train.reward_fn import load_reward

    task = load_task("writing-prompts", seed=exp.seed)
    prompts = [task.format(t) for t in sorted(task.test, key=lambda t: t.id)[:p.decomposition_prompts]]
    model, tokenizer = load_model(p.model, dtype=p.dtype)
    reward, description = load_reward(p.decomposition_reward or GOLD_SPEC)
    rows = decomposition_agreement(model, tokenizer, reward, prompts, gold.score,
                                   lengths=tuple(p.decomposition_lengths), samples=p.decomposition_samples,
                                   window=p.decomposition_window, stop=task.stop, seed=exp.seed + 41,
                                   log=exp.log if exp.progress else None)
    return {"rows": rows, "judge": description, "window": p.decomposition_window}


# -- 8. online RL -----------------------------------------------------------------------------------


def stage_rl(exp) -> dict:
    """RLOO against each supervision's largest-budget model (seed 0), on the train chains, with
    ``rl_seeds`` seeds each; the final policies' gold outcome rate on the test chains (averaged
    over the seeds, chain by chain) against the base policy's, and process against outcome."""
    p = exp.profile
    if not p.rl_iterations:
        return {"skipped": "the profile runs no online RL (rl_iterations 0)"}
    from alignlab.pressure.stats import paired_difference
    from alignlab.train.rloo import RLOOConfig, train_rloo

    write_jsonl(exp.file("rl_prompts.jsonl"), [{"prompt": r["prompt"]} for r in _chains(exp, "train")])
    test = _chains(exp, "test")
    base = [sum(s["outcome"] for s in row["samples"]) / len(row["samples"])
            for row in read_jsonl(exp.file("test_samples.jsonl"))]
    runs = {}
    for supervision, folder in exp.done("fits")["models"].items():
        seeds = []
        for k in range(max(1, p.rl_seeds)):
            seed = exp.seed + 1009 * k
            run = train_rloo(RLOOConfig(prompts=exp.file("rl_prompts.jsonl"), reward=folder, model=_policy(exp),
                                        dtype=p.dtype, iterations=p.rl_iterations, prompts_per_iteration=p.rl_prompts,
                                        group_size=p.rl_group, max_new_tokens=p.max_new_tokens,
                                        stop=list(exp.done("prompts")["stop"]), temperature=p.temperature,
                                        kl_coef=p.rl_kl_coef, lr=p.rl_lr, lora=True, lora_r=8, lora_alpha=16.0,
                                        vocabulary=_vocabulary(exp), seed=seed, checkpoint_every=10_000),
                             progress=exp.progress)
            responses = _policy_samples(exp, run.path / "policy", [r["prompt"] for r in test], p.rl_eval_samples)
            per_prompt = [sum(_judged(r["chain"], x)["outcome"] for x in rs) / len(rs)
                          for r, rs in zip(test, responses)]
            seeds.append({"seed": seed, "run": run.id, "gold": sum(per_prompt) / len(per_prompt),
                          "gold_by_prompt": per_prompt})
            exp.log(f"  RLOO on the {supervision} model, seed {seed}: gold outcome {seeds[-1]['gold']:.3f} "
                    f"(base {sum(base) / len(base):.3f})")
        per_prompt = [sum(col) / len(col) for col in zip(*(s["gold_by_prompt"] for s in seeds))]
        gain = paired_difference(per_prompt, base)
        runs[supervision] = {"run": seeds[0]["run"], "seeds": seeds, "gold": sum(per_prompt) / len(per_prompt),
                             "gain": gain.value, "gain_ci": list(gain.ci), "gold_by_prompt": per_prompt}
        exp.log(f"  RLOO on the {supervision} model ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}): gold "
                f"outcome {runs[supervision]['gold']:.3f} (gain {gain.value:+.3f}, 95% CI {gain.ci[0]:+.3f} to "
                f"{gain.ci[1]:+.3f})")
    if len(runs) == 2:
        diff = paired_difference(runs["process"]["gold_by_prompt"], runs["outcome"]["gold_by_prompt"])
        runs["process_minus_outcome"] = {"value": diff.value, "ci": list(diff.ci)}
    return {"base_gold": sum(base) / len(base), "runs": runs}


def _policy_samples(exp, folder, prompts: list[str], n: int) -> list[list[str]]:
    """``n`` samples per prompt from the trained policy in ``folder``, as the base samples were drawn."""
    from alignlab.models import load_model
    from alignlab.models.vocab import load_vocabulary, restrict_vocabulary

    policy, tokenizer = load_model(str(folder), dtype=exp.profile.dtype)
    if _vocabulary(exp):
        restrict_vocabulary(policy, load_vocabulary(_vocabulary(exp), tokenizer))
    return _sample(exp, policy.eval(), tokenizer, prompts, n, exp.seed + 5)


# -- 9. report --------------------------------------------------------------------------------------


def build_process_summary(exp) -> dict:
    """summary.json of the study: the points, the comparison at each budget, step accuracy, decomposition."""
    from alignlab.pressure.stats import paired_difference

    p = exp.profile
    points = json.loads(exp.file("fits.json").read_text())["points"]
    fits = exp.done("fits")
    comparison = []
    for budget in p.budgets:
        by = {s: [q for q in points if q["budget"] == budget and q["supervision"] == s] for s in SUPERVISIONS}
        # per prompt, the mean over seeds of each supervision's best-of-n gold; the difference is paired over prompts
        mean_by_prompt = {s: [sum(col) / len(col) for col in zip(*(q["bon_gold_by_prompt"] for q in by[s]))]
                          for s in SUPERVISIONS}
        diff = paired_difference(mean_by_prompt["process"], mean_by_prompt["outcome"])
        comparison.append({"budget": budget,
                           **{f"{s}_bon_gold": sum(mean_by_prompt[s]) / len(mean_by_prompt[s]) for s in SUPERVISIONS},
                           **{f"{s}_rm_accuracy": sum(q["rm_accuracy"] for q in by[s]) / len(by[s])
                              for s in SUPERVISIONS},
                           "process_minus_outcome": diff.value, "process_minus_outcome_ci": list(diff.ci),
                           "seeds": len(by["process"])})
    top = [q for q in points if q["budget"] == max(p.budgets) and q["supervision"] == "process" and
           q.get("step_accuracy")]
    step = top[0]["step_accuracy"] if top else {"value": math.nan, "ci": [math.nan, math.nan]}
    target = 0.75
    decomposition = (exp.done("decomposition") or {}).get("rows", [])
    public = [{k: v for k, v in q.items() if k != "bon_gold_by_prompt"} for q in points]
    return {"study": "process", "profile": asdict(p), "policy": exp.done("policy"), "samples": exp.done("samples"),
            "base_gold": fits["base_gold"], "oracle_gold": fits["oracle_gold"], "bon_n": p.bon_n,
            "process_vs_outcome": public, "comparison": comparison,
            "prm_step_accuracy": {"value": step["value"], "ci": step["ci"], "target": target,
                                  "met": bool(step["value"] >= target) if not math.isnan(step["value"]) else False,
                                  "steps": step.get("steps"), "majority_baseline": step.get("majority_baseline"),
                                  "first_wrong_step_accuracy": step.get("first_wrong_step_accuracy")},
            "decomposition": decomposition, "rl": exp.done("rl")}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def headline(summary: dict) -> str:
    """The study's answer in plain words, with its intervals, whichever way it came out."""
    parts = []
    n = summary["bon_n"]
    for c in summary["comparison"]:
        lo, hi = c["process_minus_outcome_ci"]
        verdict = ("process better" if lo > 0 else "outcome better" if hi < 0 else "no difference shown")
        parts.append(f"at {c['budget']:g} units, best-of-{n} picks a right answer {c['process_bon_gold']:.2f} of the "
                     f"time under process supervision and {c['outcome_bon_gold']:.2f} under outcome supervision "
                     f"(difference {c['process_minus_outcome']:+.2f}, 95% CI {lo:+.2f} to {hi:+.2f}: {verdict})")
    step = summary["prm_step_accuracy"]
    who = "The fine-tuned policy's" if (summary.get("policy") or {}).get("sft") else "Base"
    text = (f"{who} samples are right {summary['base_gold']:.2f} of the time; a perfect judge choosing among {n} "
            f"would be right {summary['oracle_gold']:.2f}. " + _sentence("; ".join(parts)) + ". "
            f"The process model at the largest budget judges held-out steps {step['value']:.3f} "
            f"(95% CI {step['ci'][0]:.3f}-{step['ci'][1]:.3f}) right against gold"
            + (f", where always guessing the commoner label scores {step['majority_baseline']:.3f}."
               if step.get("majority_baseline") is not None else "."))
    rl = (summary.get("rl") or {}).get("runs")
    if rl and "process_minus_outcome" in rl:
        d = rl["process_minus_outcome"]
        text += (f" RLOO against the process model reached a gold outcome rate of {rl['process']['gold']:.2f}, "
                 f"against the outcome model {rl['outcome']['gold']:.2f} (difference {d['value']:+.2f}, 95% CI "
                 f"{d['ci'][0]:+.2f} to {d['ci'][1]:+.2f}).")
    return text


def stage_report(exp) -> dict:
    from alignlab.report.process import write_process_report

    summary = build_process_summary(exp)
    summary["headline"] = headline(summary)
    atomic_write_json(exp.file("summary.json"), summary)
    report = write_process_report(exp, summary)
    return {"summary": str(exp.file("summary.json")), "report": str(report)}


STAGE_FUNCTIONS = {"prompts": stage_prompts, "policy": stage_policy, "vocabulary": stage_vocabulary,
                   "samples": stage_samples,
                   "features": stage_features, "fits": stage_fits, "decomposition": stage_decomposition,
                   "rl": stage_rl, "report": stage_report}


def run_process_stages(exp, stop_after: str | None = None) -> dict:
    """Run every stage of the study in order (cached ones are skipped); stop after ``stop_after``."""
    from alignlab.experiment.pipeline import run_stages

    return run_stages(exp, stop_after, STUDY_STAGES, STAGE_FUNCTIONS)
