"""A task vector from an SFT run on the embedded model, added and negated, with its measured effect
(docs/whitebox.md, "Task vectors").

LoRA SFT of Gemma 3 270M on 54 one-sentence demonstrations written in capitals (3 epochs), then
tau = policy - base and, for coefficients -1..1.5: the held-out loss on capitalised sentences
about topics the training never saw (the task), the held-out loss on ordinary prose (the first
6,000 characters of docs/policies.md), and the share of capital letters in greedy continuations.

    .venv/bin/python scripts/task_vector_demo.py [OUT_DIR]      # ~5 min on a 2-core CPU
"""
import json
import os
import random
import sys
import time

OUT = sys.argv[1] if len(sys.argv) > 1 else "task-vector-demo"
os.makedirs(OUT, exist_ok=True)
os.environ.setdefault("ALIGNLAB_RUNS_DIR", os.path.join(OUT, "runs"))
import torch
from pathlib import Path
from alignlab.data import Demonstration, write_feedback
from alignlab.train.sft import SFTConfig, train_sft
from alignlab.models import SampleConfig, load_model, sample
from alignlab.whitebox.surgery import heldout_loss, task_vector, task_vector_applied, text_windows

TOPICS = ["the sea", "a lighthouse", "winter", "a market", "an old dog", "the moon", "a train station", "bread",
          "a violin", "rain", "a library", "mountains", "a garden", "coffee", "a bridge", "the desert",
          "a clock", "snow", "a river", "a kite", "an owl", "a ship", "the forest", "a candle"]
rng = random.Random(0)
SENT = ["{t} waits in the quiet morning light.", "nobody remembers when {t} first appeared here.",
        "we walked past {t} and said nothing at all.", "{t} looked different after the storm.",
        "my grandmother told stories about {t}.", "the children ran toward {t} laughing."]
def upper(t): return " " + rng.choice(SENT).format(t=t).upper()
train = [Demonstration(f"Write one sentence about {t}:", upper(t)) for t in TOPICS[:18] for _ in range(3)]
held_task = " ".join(upper(t).strip() for t in TOPICS[18:] for _ in range(6))
held_generic = (Path(__file__).resolve().parent.parent / "docs" / "policies.md").read_text()[:6000]
write_feedback(os.path.join(OUT, "demos.jsonl"), train)
t0 = time.time()
run = train_sft(SFTConfig(data=os.path.join(OUT, "demos.jsonl"), model="gemma-3-270m", lora=True, epochs=3, batch_size=6,
                          kl_prompts=0, out=Path(OUT) / "policy"), progress=False)
print("sft", round(time.time() - t0), "s", flush=True)
base, tok = load_model("gemma-3-270m")
tuned, _ = load_model(Path(OUT) / "policy")
tau = task_vector(base, tuned)
del tuned
print("tau tensors", len(tau), "norm", float(torch.sqrt(sum((v.double() ** 2).sum() for v in tau.values()))))
wt = text_windows(tok, held_task, context=128, max_tokens=512)
wg = text_windows(tok, held_generic, context=256, max_tokens=1024)
prompts = [f"Write one sentence about {t}:" for t in TOPICS[18:]] + ["Once upon a time", "The weather today is"]
rows = []
for c in (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5):
    with task_vector_applied(base, tau, c), torch.no_grad():
        lt, lg = heldout_loss(base, wt), heldout_loss(base, wg)
        outs = sample(base, tok, prompts, SampleConfig(max_new_tokens=20, temperature=0), seeds=list(range(len(prompts))))
    letters = "".join(o.text for o in outs)
    alpha = [ch for ch in letters if ch.isalpha()]
    share = sum(ch.isupper() for ch in alpha) / max(1, len(alpha))
    rows.append({"coefficient": c, "task_loss": lt, "generic_loss": lg, "uppercase_share": share, "sample": outs[0].text[:60]})
    print(json.dumps(rows[-1]), flush=True)
Path(OUT, "results.json").write_text(json.dumps(rows, indent=1))
