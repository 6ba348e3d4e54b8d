"""The writing-prompts RLHF experiment, in the manner of "Learning to summarize from human
feedback" (Stiennon et al. 2020), with a Goodhart ledger (Gao, Schulman & Hilton 2022).

A hidden gold judge (feedback/gold.py) plays the people whose judgement we cannot see directly:
simulated labelers compare base-policy responses through it at a human-like agreement rate;
a proxy reward model learns from those labels; best-of-n, DPO and PPO optimize the proxy over a
sweep of pressure; every policy is then judged on held-out test prompts by gold, and gold is
plotted against sqrt(KL) to see where optimizing the proxy stops helping.

Stages (each caches its outputs in the experiment folder and is skipped on `--resume`):

    1. prompts     the task's splits: labelled prompts, PPO prompts, test prompts
    2. vocabulary  the task's output vocabulary and what restricting to it costs
    3. samples     base-policy responses for labelling and for the test prompts, gold-scored
    4. labels      a calibrated simulated labeler compares every pair of labelled responses
    5. reward      the proxy reward model (and its learning curve against gold labels)
    6. bon         best-of-n over the test prompts' base samples, a sweep of n
    7. dpo         DPO on the labelled pairs, a sweep of beta
    8. ppo         PPO against the proxy, a sweep of the KL coefficient (gold watches each rollout)
    9. rloo        RLOO against the proxy (scaled to its base spread), a sweep of the KL coefficient,
                   snapshots along training; and the weak-proxy arm
   10. grpo        GRPO likewise
   11. evaluate    every trained policy and snapshot on the test prompts: KL, proxy, gold, gold
                   win-rate, each with a 95% interval over prompts
   12. report      Gao fits, flags, the split-half overoptimization test, summary.json and report.html
"""

from __future__ import annotations

import itertools
import json
import math
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from alignlab.experiment.profiles import Profile
from alignlab.fileio import atomic_write_json, read_jsonl, write_jsonl
from alignlab.runs import Run

GOLD_SPEC = "alignlab.feedback.gold:judge"
STAGES = ("prompts", "vocabulary", "samples", "labels", "reward", "bon", "dpo", "ppo", "rloo", "grpo", "evaluate",
          "report")


class Experiment:
    """An experiment folder (a run of kind 'experiment') and its cached stages."""

    def __init__(self, run: Run, profile: Profile, seed: int, progress: bool = True, log: Callable = print,
                 task: str = "writing-prompts"):
        self.run = run
        self.task = task
        self.path = run.path
        self.profile = profile
        self.seed = seed
        self.progress = progress
        self.log = log
        (self.path / "stages").mkdir(exist_ok=True)

    def done(self, stage: str) -> dict | None:
        marker = self.path / "stages" / f"{stage}.json"
        return json.loads(marker.read_text()) if marker.exists() else None

    def stage(self, name: str, fn: Callable[[Experiment], dict]) -> dict:
        """Run ``fn`` unless its stage is already done; its result (JSON) marks it done, atomically."""
        cached = self.done(name)
        if cached is not None:
            self.log(f"[{name}] cached")
            return cached
        self.log(f"[{name}] ...")
        start = time.time()
        result = fn(self)
        result["seconds"] = round(time.time() - start, 1)
        result["peak_rss_mb_so_far"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        atomic_write_json(self.path / "stages" / f"{name}.json", result)
        self.log(f"[{name}] done in {result['seconds']:.0f} s")
        return result

    def file(self, name: str) -> Path:
        return self.path / name


# -- 1. prompts -----------------------------------------------------------------------------------


def stage_prompts(exp: Experiment) -> dict:
    from alignlab.data.tasks import load_task

    task = load_task(exp.task, seed=exp.seed)
    p = exp.profile
    rng = random.Random(exp.seed)
    train = list(task.train)
    rng.shuffle(train)
    needed = p.rm_prompts + max(p.ppo_rollout * p.ppo_iterations, p.rl_prompts * p.rl_iterations, 1)
    if len(train) < p.rm_prompts + 1 or len(task.test) < p.test_prompts:
        raise ValueError(f"the task has {len(train)} train and {len(task.test)} test prompts; the profile needs "
                         f"{p.rm_prompts}+ and {p.test_prompts}")
    rm = train[:p.rm_prompts]
    ppo = train[p.rm_prompts:needed] or train[:1]
    test = sorted(task.test, key=lambda t: t.id)[:p.test_prompts]
    for name, rows in (("rm_prompts", rm), ("ppo_prompts", ppo), ("test_prompts", test)):
        write_jsonl(exp.file(f"{name}.jsonl"), [{"prompt": task.format(t), "task_prompt": t.text} for t in rows])
    return {"task": task.name, "rm_prompts": len(rm), "ppo_prompts": len(ppo), "test_prompts": len(test),
            "stop": list(task.stop)}


def prompts_of(exp: Experiment, name: str) -> list[str]:
    return [row["prompt"] for row in read_jsonl(exp.file(f"{name}.jsonl"))]


# -- 2. vocabulary ----------------------------------------------------------------------------------


def stage_vocabulary(exp: Experiment) -> dict:
    p = exp.profile
    if not p.restrict_vocabulary:
        return {"restricted": False}
    from alignlab.data.tasks import load_task
    from alignlab.models import load_model
    from alignlab.models.task_vocab import task_vocabulary, vocabulary_coverage
    from alignlab.models.vocab import save_vocabulary

    task = load_task(exp.task, seed=exp.seed)
    model, tokenizer = load_model(p.model, dtype=p.dtype)
    texts = [task.format(t) for t in task.prompts]  # every prompt of every split: their tokens are inputs
    pilot = prompts_of(exp, "rm_prompts")[:p.vocab_pilot_prompts]
    subset = task_vocabulary(model, tokenizer, texts, pilot, samples_per_prompt=2, max_new_tokens=p.max_new_tokens,
                             seed=exp.seed + 17, progress=exp.progress)
    held_out = prompts_of(exp, "test_prompts")[:max(2, p.vocab_pilot_prompts // 2)]
    coverage = vocabulary_coverage(model, tokenizer, subset, held_out, max_new_tokens=p.max_new_tokens,
                                   seed=exp.seed + 29)
    save_vocabulary(exp.file("vocabulary.json"), subset, coverage=coverage.to_dict())
    return {"restricted": True, "size": len(subset), "full_size": subset.vocab_size, "coverage": coverage.to_dict()}


def vocabulary_file(exp: Experiment) -> Path | None:
    return exp.file("vocabulary.json") if exp.file("vocabulary.json").exists() else None


# -- 3. samples -------------------------------------------------------------------------------------


def _sample_all(exp: Experiment, model, tokenizer, prompts: list[str], n: int, seed: int) -> list[list[str]]:
    from tqdm import tqdm

    from alignlab.models import SampleConfig, sample

    p = exp.profile
    config = SampleConfig(max_new_tokens=p.max_new_tokens, seed=seed, alternatives=0,
                          stop=list(exp.done("prompts")["stop"]))
    jobs = [(i, prompt) for i, prompt in enumerate(prompts) for _ in range(n)]
    texts: list[str] = []
    for start in tqdm(range(0, len(jobs), p.batch_size), desc="sampling", unit="batch", disable=not exp.progress):
        chunk = jobs[start:start + p.batch_size]
        seeds = [seed * 1_000_003 + start + j for j in range(len(chunk))]
        texts += [c.text for c in sample(model, tokenizer, [q for _, q in chunk], config, seeds=seeds)]
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


def stage_samples(exp: Experiment) -> dict:
    """Base-policy responses: samples_per_prompt for each labelled prompt, max(n) for each test prompt."""
    from alignlab.feedback.gold import judge as gold
    from alignlab.models import load_model
    from alignlab.models.vocab import load_vocabulary, restrict_vocabulary

    p = exp.profile
    model, tokenizer = load_model(p.model, dtype=p.dtype)
    if vocabulary_file(exp):
        restrict_vocabulary(model, load_vocabulary(vocabulary_file(exp), tokenizer))
    out = {}
    for name, n, seed in (("rm", p.samples_per_prompt, exp.seed + 1), ("test", max(p.bon_n), exp.seed + 2)):
        prompts = prompts_of(exp, f"{name}_prompts")
        responses = _sample_all(exp, model, tokenizer, prompts, n, seed)
        flat_p = [q for q, rs in zip(prompts, responses) for _ in rs]
        flat_r = [r for rs in responses for r in rs]
        scores = gold.score(flat_p, flat_r)
        rows = [{"prompt": q, "responses": rs, "gold": scores[i * n:(i + 1) * n]}
                for i, (q, rs) in enumerate(zip(prompts, responses))]
        write_jsonl(exp.file(f"{name}_samples.jsonl"), rows)
        out[name] = {"prompts": len(prompts), "responses": len(flat_r), "gold_mean": sum(scores) / len(scores)}
    if vocabulary_file(exp):
        out["vocabulary_extended_by"] = _cover_retokenized(exp, tokenizer)
    return out


def _cover_retokenized(exp: Experiment, tokenizer) -> int:
    """Trainers read responses as text and tokenize it again, which can merge pieces into tokens
    the sampler never chose (' g' + 'et' -> ' get'). Those few tokens join the vocabulary, so
    every later stage can score its data; the base samples were drawn without them."""
    from alignlab.models.vocab import VocabularySubset, load_vocabulary, save_vocabulary

    path = vocabulary_file(exp)
    subset = load_vocabulary(path, tokenizer)
    ids = set(subset.to_list())
    for name in ("rm", "test"):
        for row in read_jsonl(exp.file(f"{name}_samples.jsonl")):
            for response in row["responses"]:
                ids.update(tokenizer(response, add_special_tokens=False)["input_ids"])
    added = len(ids) - len(subset)
    data = json.loads(path.read_text())
    save_vocabulary(path, VocabularySubset(ids, subset.vocab_size), coverage=data.get("coverage"),
                    added_from_retokenized_samples=added)
    return added


# -- 4. labels --------------------------------------------------------------------------------------


def stage_labels(exp: Experiment) -> dict:
    """Every pair of a labelled prompt's responses, compared by a labeler calibrated so that two
    such labelers agree ``agreement`` of the time; how often its choice matches gold is recorded."""
    from alignlab.data.formats import write_feedback
    from alignlab.feedback.gold import judge as gold
    from alignlab.feedback.labelers import SimulatedLabeler

    rows = read_jsonl(exp.file("rm_samples.jsonl"))
    labeler = SimulatedLabeler.calibrated(gold, [(r["prompt"], r["responses"]) for r in rows],
                                          target_agreement=exp.profile.agreement, seed=exp.seed, name="labeler-0")
    pairs, agree, ties = [], 0, 0
    for row in rows:
        for (a, ga), (b, gb) in itertools.combinations(zip(row["responses"], row["gold"]), 2):
            if a == b:
                continue
            pair = labeler.compare(row["prompt"], a, b)
            pairs.append(pair)
            if ga == gb:
                ties += 1
            else:
                agree += (pair.chosen == a) == (ga > gb)
    if not pairs:
        raise ValueError("no distinct response pairs to label: raise samples_per_prompt or max_new_tokens")
    write_feedback(exp.file("comparisons.jsonl"), pairs)
    return {"pairs": len(pairs), "labeler_beta": labeler.beta, "target_agreement": exp.profile.agreement,
            "agreement_with_gold": agree / max(1, len(pairs) - ties), "gold_ties": ties}


# -- 5. reward --------------------------------------------------------------------------------------


def gold_pairs(exp: Experiment, per_prompt: int | None = None) -> list[tuple[str, str, str]]:
    """Held-out (prompt, better, worse) pairs by noise-free gold, from the test prompts' base samples:
    every within-prompt pair whose gold differs (``per_prompt``: a random subset of each prompt's)."""
    rng = random.Random(exp.seed + 3)
    out = []
    for row in read_jsonl(exp.file("test_samples.jsonl")):
        pairs = [(i, j) for i, j in itertools.combinations(range(len(row["responses"])), 2)
                 if row["gold"][i] != row["gold"][j] and row["responses"][i] != row["responses"][j]]
        if per_prompt is not None:
            pairs = rng.sample(pairs, min(per_prompt, len(pairs)))
        for i, j in pairs:
            better, worse = (i, j) if row["gold"][i] > row["gold"][j] else (j, i)
            out.append((row["prompt"], row["responses"][better], row["responses"][worse]))
    return out


def _proxy_scores(rm, texts: list[tuple[str, str]], mode: str, cache: dict, progress: bool):
    """The proxy's (normalised, ensemble-mean) score of each (prompt, response)."""
    import torch

    from alignlab.train.reward import cached_features

    with torch.no_grad():
        if mode == "head":
            features = cached_features(rm, [rm.encode(q, r) for q, r in texts], progress=progress, cache=cache)
            return rm.normalize(rm.head(features)).mean(-1)
        return rm.score([q for q, _ in texts], [r for _, r in texts])[0]


def within_prompt_spread(scores, groups: list[int]) -> float:
    """The root mean within-prompt variance of scores (the spread a group baseline sees)."""
    import numpy as np

    values, at, variances = np.asarray(scores, dtype=float), 0, []
    for size in groups:
        if size > 1:
            variances.append(values[at:at + size].var(ddof=1))
        at += size
    return float(np.sqrt(np.mean(variances))) if variances else 1.0


def stage_reward(exp: Experiment) -> dict:
    """The proxy reward model on all labels, and its learning curve: models on growing shares of
    the labels, each scored on every held-out within-prompt pair of the test prompts' base
    samples ordered by noise-free gold, with a prompt-clustered 95% interval. Each model's
    within-prompt spread on the labelled prompts' samples is recorded (online RL divides the
    proxy by it). The final proxy also scores every test sample once (best-of-n selects on those)."""
    from alignlab.pressure.stats import clustered_accuracy
    from alignlab.train.reward import RewardTrainConfig, train_reward
    from alignlab.train.reward_model import load_reward_model, resolve_reward_model

    p = exp.profile
    pairs = read_jsonl(exp.file("comparisons.jsonl"))
    test = read_jsonl(exp.file("test_samples.jsonl"))
    labelled = read_jsonl(exp.file("rm_samples.jsonl"))
    held_out = gold_pairs(exp)
    texts = [(row["prompt"], r) for row in test for r in row["responses"]]
    where = {t: i for i, t in enumerate(texts)}
    train_texts = [(row["prompt"], r) for row in labelled for r in row["responses"]]
    cache: dict = {}  # head mode: one frozen backbone, so features are computed once per text
    curve, main, scores = [], None, None
    fractions = sorted(set(p.rm_fractions) | {1.0} | ({p.weak_proxy_fraction} if p.weak_proxy_fraction else set()))
    for fraction in fractions:
        count = max(2, round(len(pairs) * fraction))
        data = exp.file(f"comparisons-{count}.jsonl")
        write_jsonl(data, pairs[:count])
        run = train_reward(RewardTrainConfig(data=str(data), model=p.model, dtype=p.dtype, mode=p.rm_mode,
                                             pooling=p.rm_pooling, epochs=p.rm_epochs, seed=exp.seed,
                                             **_reward_options(p)),
                           progress=exp.progress, feature_cache=cache if p.rm_mode == "head" else None)
        rm = load_reward_model(resolve_reward_model(run.id))
        scores = _proxy_scores(rm, texts, p.rm_mode, cache, exp.progress)
        spread = within_prompt_spread(_proxy_scores(rm, train_texts, p.rm_mode, cache, exp.progress).tolist(),
                                      [len(row["responses"]) for row in labelled])
        correct = [1.0 if scores[where[(q, b)]] > scores[where[(q, w)]] else
                   0.5 if scores[where[(q, b)]] == scores[where[(q, w)]] else 0.0 for q, b, w in held_out]
        accuracy = (clustered_accuracy(correct, [q for q, _, _ in held_out]).to_dict() if len(held_out) > 1
                    else {"value": math.nan, "ci": [math.nan, math.nan]})
        curve.append({"fraction": fraction, "pairs": count, "run": run.id, "gold_accuracy": accuracy["value"],
                      "gold_accuracy_ci": accuracy["ci"], "spread": spread})
        exp.log(f"  reward model on {count} pairs: accuracy against gold on {len(held_out)} held-out pairs "
                f"{accuracy['value']:.3f} (95% CI {accuracy['ci'][0]:.3f}-{accuracy['ci'][1]:.3f}, clustered by prompt)")
        if fraction == 1.0:
            main, main_scores = run, scores
        del rm
    n = len(test[0]["responses"])
    for i, row in enumerate(test):  # the final proxy's scores, for best-of-n
        row["proxy"] = main_scores[i * n:(i + 1) * n].tolist()
    write_jsonl(exp.file("test_samples.jsonl"), test)
    final = next(c for c in curve if c["fraction"] == 1.0)
    weak = next((c for c in curve if c["fraction"] == p.weak_proxy_fraction), None) if p.weak_proxy_fraction else None
    return {"run": main.id, "curve": curve, "held_out_pairs": len(held_out),
            "held_out_prompts": len({q for q, _, _ in held_out}), "gold_accuracy": final["gold_accuracy"],
            "gold_accuracy_ci": final["gold_accuracy_ci"], "spread": final["spread"],
            "weak": {"run": weak["run"], "fraction": weak["fraction"], "spread": weak["spread"],
                     "gold_accuracy": weak["gold_accuracy"]} if weak else None}


def _reward_options(p: Profile) -> dict:
    """The profile's reward-head choices: the layer it reads, standardised features, its L2
    penalty, early stopping on held-out prompts (10% of the labelled prompts; no held-out split
    without it)."""
    return {"layer": p.rm_layer, "head_l2": p.rm_l2, "early_stop": p.rm_early_stop, "standardize": p.rm_standardize,
            "eval_fraction": 0.1 if p.rm_early_stop else 0.0}


def reward_spec(exp: Experiment) -> str:
    return exp.done("reward")["run"]


# -- 6. best-of-n -----------------------------------------------------------------------------------


def stage_bon(exp: Experiment) -> dict:
    from alignlab.train.bon import BoNConfig, run_best_of_n

    p = exp.profile
    run = run_best_of_n(BoNConfig(samples=exp.file("test_samples.jsonl"), reward=reward_spec(exp), gold=GOLD_SPEC,
                                  model=p.model, dtype=p.dtype, n=list(p.bon_n), seed=exp.seed),
                        progress=exp.progress)
    return {"run": run.id}


# -- 7. DPO -----------------------------------------------------------------------------------------


def stage_dpo(exp: Experiment) -> dict:
    from alignlab.train.dpo import DPOConfig, train_dpo

    p = exp.profile
    data = exp.file("comparisons.jsonl")
    if p.dpo_max_pairs:  # a seeded sample spread over every labelled prompt, in the labels' order
        data = exp.file(f"dpo-pairs-{p.dpo_max_pairs}.jsonl")
        pairs = read_jsonl(exp.file("comparisons.jsonl"))
        chosen = sorted(random.Random(exp.seed + 7).sample(range(len(pairs)), min(p.dpo_max_pairs, len(pairs))))
        write_jsonl(data, [pairs[i] for i in chosen])
    runs = []
    for beta in p.dpo_betas:
        run = train_dpo(DPOConfig(data=str(data), model=p.model, dtype=p.dtype, beta=beta,
                                  epochs=p.dpo_epochs, batch_size=p.dpo_batch, grad_accum=p.dpo_grad_accum, lr=p.dpo_lr, lora=p.lora,
                                  lora_r=p.lora_r, lora_alpha=2.0 * p.lora_r, add_eos=False, kl_prompts=0,
                                  vocabulary=vocabulary_file(exp), seed=exp.seed, checkpoint_every=10_000,
                                  snapshot_every=p.dpo_snapshot_every),
                        progress=exp.progress)
        runs.append({"beta": beta, "run": run.id})
    return {"runs": runs}


# -- 8. PPO -----------------------------------------------------------------------------------------


def stage_ppo(exp: Experiment) -> dict:
    """PPO against the proxy scaled to its within-prompt spread (as the group methods see it),
    with a constant learning rate and Monte-Carlo returns (GAE lambda 1): with a value head that
    starts at zero, lambda 0.95 gave the first of 48 tokens 9% of the score's credit."""
    from alignlab.train.ppo import PPOConfig, train_ppo

    p = exp.profile
    runs = []
    for coef in p.ppo_kl_coefs:
        run = train_ppo(PPOConfig(prompts=exp.file("ppo_prompts.jsonl"), reward=reward_spec(exp), gold=GOLD_SPEC,
                                  model=p.model, dtype=p.dtype, iterations=p.ppo_iterations,
                                  rollout_batch=p.ppo_rollout, minibatch_size=p.ppo_minibatch,
                                  ppo_epochs=p.ppo_epochs, max_new_tokens=p.max_new_tokens,
                                  stop=list(exp.done("prompts")["stop"]), temperature=1.0, kl_coef=coef,
                                  lr=p.ppo_lr, lora=p.lora, lora_r=p.lora_r, lora_alpha=2.0 * p.lora_r,
                                  reward_scale=max(exp.done("reward").get("spread", 1.0), 1e-6),
                                  lr_schedule="constant", lam=1.0, snapshot_every=p.ppo_snapshot_every,
                                  missing_eos_penalty=0.0, sample_every=max(1, p.ppo_iterations // 2),
                                  vocabulary=vocabulary_file(exp), seed=exp.seed, checkpoint_every=10_000),
                        progress=exp.progress)
        runs.append({"kl_coef": coef, "run": run.id})
    return {"runs": runs}


# -- 9-10. RLOO and GRPO ----------------------------------------------------------------------------


def _online_runs(exp: Experiment, method: str, kl_coefs: tuple[float, ...]) -> dict:
    """One run per KL coefficient against the proxy (scaled to its within-prompt spread on the
    labelled prompts' base samples, so beta is per unit of the spread a group baseline sees);
    and, for the headline method at its first coefficient, runs with further seeds (final policy
    only) and one against the weak proxy. Only the headline method's proxy and weak-proxy runs
    save snapshots (each one evaluated costs about a minute on a 2-core CPU); the other methods
    are evaluated at the end."""
    from alignlab.train.grpo import GRPOConfig, train_grpo
    from alignlab.train.rloo import RLOOConfig, train_rloo

    p = exp.profile
    config_cls, train = {"rloo": (RLOOConfig, train_rloo), "grpo": (GRPOConfig, train_grpo)}[method]
    reward = exp.done("reward")
    iterations = p.rl_iterations
    arms = [(coef, reward["run"], reward["spread"], "proxy", exp.seed, iterations, p.rl_lr) for coef in kl_coefs]
    if method == p.online_method and kl_coefs:
        arms += [(kl_coefs[0], reward["run"], reward["spread"], f"seed {exp.seed + k}", exp.seed + k, iterations,
                  p.rl_lr) for k in range(1, p.rl_seeds)]
        if reward.get("weak"):
            weak_coef = kl_coefs[0] if p.weak_proxy_kl_coef is None else p.weak_proxy_kl_coef
            arms.append((weak_coef, reward["weak"]["run"], reward["weak"]["spread"], "weak proxy", exp.seed,
                         p.weak_proxy_iterations or iterations, p.weak_proxy_lr or p.rl_lr))
    snapshots = method == p.online_method
    runs = []
    for coef, proxy, spread, arm, seed, iterations, lr in arms:
        run = train(config_cls(prompts=exp.file("ppo_prompts.jsonl"), reward=proxy, gold=GOLD_SPEC, model=p.model,
                               dtype=p.dtype, iterations=iterations, prompts_per_iteration=p.rl_prompts,
                               group_size=p.rl_group, max_new_tokens=p.max_new_tokens,
                               stop=list(exp.done("prompts")["stop"]), temperature=1.0, kl_coef=coef,
                               reward_scale=max(spread, 1e-6), lr=lr, lora=p.lora, lora_r=p.lora_r,
                               lora_alpha=2.0 * p.lora_r, sample_every=max(1, iterations // 2),
                               snapshot_every=(0 if not snapshots or arm not in ("proxy", "weak proxy") else
                                               p.weak_proxy_snapshot_every or p.rl_snapshot_every
                                               if arm == "weak proxy" else p.rl_snapshot_every),
                               vocabulary=vocabulary_file(exp), seed=seed, checkpoint_every=10_000),
                      progress=exp.progress)
        runs.append({"kl_coef": coef, "run": run.id, "arm": arm, "reward": proxy, "iterations": iterations})
    return {"runs": runs}


def stage_rloo(exp: Experiment) -> dict:
    return _online_runs(exp, "rloo", exp.profile.rloo_kl_coefs)


def stage_grpo(exp: Experiment) -> dict:
    return _online_runs(exp, "grpo", exp.profile.grpo_kl_coefs)


# -- 11. evaluate ------------------------------------------------------------------------------------


def stage_evaluate(exp: Experiment) -> dict:
    """Every trained policy and snapshot answers the test prompts; gold and the proxy judge the
    answers; the gold win-rate against the base samples of the same prompt gets a 95% interval
    over prompts (pressure/stats.py). Per-prompt means are kept for the paired tests of the report."""
    from alignlab.experiment.evaluate import evaluate_policy
    from alignlab.models import load_model
    from alignlab.pressure.stats import paired_win_rate
    from alignlab.runs import find_run
    from alignlab.train.policy import snapshots
    from alignlab.train.reward_fn import load_reward

    p = exp.profile
    test = read_jsonl(exp.file("test_samples.jsonl"))
    base_gold = [row["gold"] for row in test]
    policies = []  # (method, setting, run record, step or None for the final policy, folder)
    for method, key in (("dpo", "beta"), ("ppo", "kl_coef"), ("rloo", "kl_coef"), ("grpo", "kl_coef")):
        for r in (exp.done(method) or {}).get("runs", []):
            path = find_run(r["run"]).path
            setting = f"{key}={r[key]:g}" + (f" ({r['arm']})" if r.get("arm", "proxy") != "proxy" else "")
            policies += [(method, f"{setting} step {step}", r, step, folder) for step, folder in snapshots(path)]
            policies.append((method, setting, r, None, path / "policy"))
    reference, _ = load_model(p.model, dtype=p.dtype)  # the base policy, shared by every evaluation
    results = []
    n = p.eval_samples
    for method, setting, record, step, folder in policies:
        evaluation = evaluate_policy(folder, [row["prompt"] for row in test], n, p.max_new_tokens,
                                     list(exp.done("prompts")["stop"]), reward_spec(exp), vocabulary_file(exp),
                                     seed=exp.seed + 5, dtype=p.dtype, reference=reference)
        gold_by_prompt = evaluation.pop("gold_by_prompt")
        win = paired_win_rate(gold_by_prompt, base_gold)
        samples = evaluation.pop("samples")
        proxy = [s["proxy"] for s in samples]
        extra = {}
        if record.get("reward", reward_spec(exp)) != reward_spec(exp):  # the weak arm: the proxy it optimised too
            own, _ = load_reward(record["reward"])
            own_scores = own([s["prompt"] for s in samples], [s["response"] for s in samples]).tolist()
            extra = {"own_proxy": sum(own_scores) / len(own_scores),
                     "own_proxy_by_prompt": [sum(own_scores[i * n:(i + 1) * n]) / n for i in range(len(test))]}
        name = "test_samples.jsonl" if step is None else f"test_samples-step-{step:07d}.jsonl"
        write_jsonl(find_run(record["run"]).path / name, samples)
        results.append({"method": method, "setting": setting, "run": record["run"], "step": step,
                        "arm": record.get("arm", "proxy"), **evaluation, "gold_win_rate": win.value,
                        "gold_win_rate_ci": list(win.ci), "gold_win_rate_se": win.se,
                        "gold_by_prompt": [sum(g) / len(g) for g in gold_by_prompt],
                        "proxy_by_prompt": [sum(proxy[i * n:(i + 1) * n]) / n for i in range(len(test))], **extra})
        exp.log(f"  {method} {setting}: KL {evaluation['kl']:.3f}, proxy {evaluation['proxy']:.4f}, "
                f"gold {evaluation['gold']:.4f}, gold win-rate vs base {win.value:.3f} "
                f"(95% CI {win.ci[0]:.3f}-{win.ci[1]:.3f})")
    return {"policies": results}


# -- 12. report -------------------------------------------------------------------------------------


def stage_report(exp: Experiment) -> dict:
    from alignlab.experiment.summary import build_summary
    from alignlab.report.experiment import write_report

    summary = build_summary(exp)
    atomic_write_json(exp.file("summary.json"), summary)
    report = write_report(exp, summary)
    return {"summary": str(exp.file("summary.json")), "report": str(report)}


STAGE_FUNCTIONS: dict[str, Callable[[Experiment], dict]] = {
    "prompts": stage_prompts, "vocabulary": stage_vocabulary, "samples": stage_samples, "labels": stage_labels,
    "reward": stage_reward, "bon": stage_bon, "dpo": stage_dpo, "ppo": stage_ppo, "rloo": stage_rloo,
    "grpo": stage_grpo, "evaluate": stage_evaluate, "report": stage_report,
}


def run_stages(exp: Experiment, stop_after: str | None = None, order: tuple[str, ...] = STAGES,
               functions: dict | None = None) -> dict:
    """Run every stage of ``order`` (default: this experiment's) in turn, cached ones skipped;
    stop after ``stop_after`` if given. The studies pass their own stages and functions."""
    functions = STAGE_FUNCTIONS if functions is None else functions
    if stop_after is not None and stop_after not in order:
        raise ValueError(f"unknown stage {stop_after!r}; stages are {', '.join(order)}")
    results = {}
    for name in order:
        results[name] = exp.stage(name, functions[name])
        if name == stop_after:
            break
    return results


def profile_dict(profile: Profile) -> dict:
    return asdict(profile)


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
