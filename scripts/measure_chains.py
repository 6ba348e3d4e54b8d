"""How often the base model gets arithmetic chains right, step by step and in outcome (docs/process.md,
"The arithmetic-chain task"): the figures the task's difficulty was tuned on.

Samples --samples responses to each of --chains chains (make_chains(chains, seed)) at the given
temperature with the task's stop strings and the full vocabulary, judges each with the gold judge,
and prints the shares with prompt-clustered 95% intervals (pressure/stats.clustered_accuracy).

    .venv/bin/python scripts/measure_chains.py                # 24 chains x 4 samples, ~3 min on a 2-core CPU
    .venv/bin/python scripts/measure_chains.py --out chains-samples.jsonl --steps 2,3
"""
import argparse
import json
import random
import time
from collections import Counter

from alignlab.data.chains import CHAIN_STOP, OUTCOME_LABEL_COST, chain_prompt, judge_chain, label_process, make_chains
from alignlab.models import SampleConfig, load_model, sample
from alignlab.pressure.stats import clustered_accuracy

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--model", default="gemma-3-270m")
parser.add_argument("--chains", type=int, default=24, help="how many chains (prompts)")
parser.add_argument("--samples", type=int, default=4, help="responses per chain")
parser.add_argument("--seed", type=int, default=0, help="make_chains seed; sampling seeds follow from it")
parser.add_argument("--steps", default="2,3", help="fewest,most operations per chain")
parser.add_argument("--shots", type=int, default=4, help="worked examples in the prompt")
parser.add_argument("--temperature", type=float, default=1.0)
parser.add_argument("--max-new-tokens", type=int, default=48)
parser.add_argument("--batch", type=int, default=96, help="responses sampled together")
parser.add_argument("--device", default="cpu")
parser.add_argument("--out", help="also write every response and its judgement here (JSON lines)")
args = parser.parse_args()

fewest, most = (int(x) for x in args.steps.split(","))
chains = make_chains(args.chains, args.seed, (fewest, most))
model, tokenizer = load_model(args.model, dtype="float32")
model.to(args.device)
config = SampleConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, stop=list(CHAIN_STOP),
                      alternatives=0)
jobs = [(c, chain_prompt(c, args.shots)) for c in chains for _ in range(args.samples)]
t0 = time.time()
completions = []
for start in range(0, len(jobs), args.batch):
    chunk = jobs[start:start + args.batch]
    seeds = [args.seed * 1_000_003 + start + j for j in range(len(chunk))]
    completions += sample(model, tokenizer, [p for _, p in chunk], config, seeds=seeds)
seconds = time.time() - t0

rows, labeler = [], random.Random(args.seed)
for (chain, _), completion in zip(jobs, completions):
    j = judge_chain(chain, completion.text)
    _, cost = label_process(j, labeler, noise=0.1)
    rows.append({"chain": chain.to_dict(), "ops": len(chain.ops), "response": completion.text,
                 "finish": completion.finish_reason, "labels": j.labels, "outcome": j.outcome,
                 "first_wrong": j.first_wrong, "answer": j.answer, "right_answer": chain.answer,
                 "well_formed": j.well_formed, "process_cost": cost})
if args.out:
    with open(args.out, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def share(name, values, clusters):
    e = clustered_accuracy([float(v) for v in values], clusters)
    print(f"{name:<34} {e.value:6.3f}  [{e.ci[0]:.3f}, {e.ci[1]:.3f}]  ({len(values)} units, {e.n} prompts)")


ids = [row["chain"]["id"] for row in rows]
print(f"{args.model}: {len(chains)} chains x {args.samples} samples, {fewest}-{most} operations, {args.shots} shots, "
      f"T={args.temperature}, max_new_tokens={args.max_new_tokens}; sampled in {seconds:.0f} s on {args.device}")
print("share (pooled, prompt-clustered SE, normal 95% CI)")
share("steps right", [label for row in rows for label in row["labels"]],
      [row["chain"]["id"] for row in rows for _ in row["labels"]])
share("first step right", [bool(row["labels"]) and row["labels"][0] for row in rows], ids)
share("outcomes right", [row["outcome"] for row in rows], ids)
share("well formed", [row["well_formed"] for row in rows], ids)
share("every step right", [bool(row["labels"]) and all(row["labels"]) for row in rows], ids)
share("outcome right, some step wrong", [row["outcome"] and not all(row["labels"]) for row in rows], ids)
share("all steps right, outcome wrong", [bool(row["labels"]) and all(row["labels"]) and not row["outcome"]
                                         for row in rows], ids)
print(f"mean steps per response: {sum(len(row['labels']) for row in rows) / len(rows):.2f}; mean step-labeling "
      f"cost (noise 0.1, stop at the first wrong): {sum(row['process_cost'] for row in rows) / len(rows):.2f} "
      f"(an outcome label: {OUTCOME_LABEL_COST})")
by_chain = {}
for row in rows:
    by_chain.setdefault(row["chain"]["id"], []).append(row["outcome"])
mixed = sum(len(set(outcomes)) == 2 for outcomes in by_chain.values())
print(f"prompts with both a right and a wrong outcome: {mixed} of {len(by_chain)}; "
      f"all right: {sum(all(o) for o in by_chain.values())}, all wrong: {sum(not any(o) for o in by_chain.values())}")
for ops in range(fewest, most + 1):
    outcomes = [row["outcome"] for row in rows if row["ops"] == ops]
    if outcomes:
        print(f"  {ops} operations: outcome right {sum(outcomes)}/{len(outcomes)}")
print("finish reasons:", dict(Counter(row["finish"] for row in rows)))
print("\nfirst samples (labels, outcome):")
for row in rows[:: max(1, len(rows) // 8)][:8]:
    print(f"--- answer {row['right_answer']}: {row['labels']} {row['outcome']}\n{row['response']!r}")
