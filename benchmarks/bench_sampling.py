"""alignlab's sampler against transformers' `generate`, same model, prompts and settings.

Both sample exactly --tokens new tokens for --batch prompts (EOS held back until then), with
the same temperature, top-k and top-p. alignlab also records, for every token, its raw and
sampling log-probs and the top-5 alternatives, which `generate` does not; `--hf-scores` makes
transformers return its per-step scores too, for a like-for-like comparison.

    .venv/bin/python benchmarks/bench_sampling.py                      # embedded model + tiny
    .venv/bin/python benchmarks/bench_sampling.py --models tiny --repeats 5

Prints tokens/s of both and the ratio (alignlab / transformers) for each setting.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from alignlab.models import SampleConfig, load_model, sample
from alignlab.models.tokens import encode_prompt, left_pad

PROMPTS = [
    "Writing prompt: A lighthouse keeper finds a letter from the future.\n\nStory:",
    "Writing prompt: The last bakery in a city of robots.\n\nStory:",
    "Writing prompt: Two rival cartographers share a boat.\n\nStory:",
    "Writing prompt: A dragon who is afraid of fire.\n\nStory:",
    "Writing prompt: The museum's paintings rearrange themselves at night.\n\nStory:",
    "Writing prompt: A chess match that lasts a hundred years.\n\nStory:",
    "Writing prompt: A town where everyone forgets one word a day.\n\nStory:",
    "Writing prompt: A ghost who haunts a spaceship.\n\nStory:",
]

SETTINGS = {
    "gemma (T=1, top-k 64, top-p 0.95)": dict(temperature=1.0, top_k=64, top_p=0.95),
    "plain (T=1, no truncation)": dict(temperature=1.0, top_k=0, top_p=1.0),
    "nucleus (T=1, top-p 0.95)": dict(temperature=1.0, top_k=0, top_p=0.95),
}


def time_ours(model, tok, prompts, tokens, settings, seed):
    cfg = SampleConfig(max_new_tokens=tokens, min_new_tokens=tokens, seed=seed, **settings)
    start = time.perf_counter()
    out = sample(model, tok, prompts, cfg)
    elapsed = time.perf_counter() - start
    assert all(len(c.tokens) == tokens for c in out)
    return len(prompts) * tokens / elapsed


@torch.inference_mode()
def time_hf(model, tok, prompts, tokens, settings, seed, scores):
    ids, mask = left_pad([encode_prompt(tok, p) for p in prompts], tok.pad_token_id)
    torch.manual_seed(seed)
    start = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=tokens,
                         min_new_tokens=tokens, temperature=settings["temperature"],
                         top_k=settings["top_k"], top_p=settings["top_p"], pad_token_id=tok.pad_token_id,
                         output_scores=scores, return_dict_in_generate=scores)
    elapsed = time.perf_counter() - start
    seqs = out.sequences if scores else out
    assert seqs.shape[1] - ids.shape[1] == tokens
    return len(prompts) * tokens / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gemma-3-270m", "tiny"])
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--hf-scores", action="store_true", help="make generate return per-step scores too")
    args = parser.parse_args()
    prompts = PROMPTS[:args.batch]
    print(f"batch {args.batch}, {args.tokens} new tokens, median of {args.repeats} runs after a warm-up, "
          f"{torch.get_num_threads()} threads")
    print(f"{'model':<14} {'dtype':<9} {'setting':<34} {'alignlab tok/s':>15} {'transformers tok/s':>19} {'ratio':>6}")
    for name in args.models:
        for dtype in args.dtypes:
            model, tok = load_model(name, dtype=dtype)
            for label in args.settings:
                s = SETTINGS[label]
                time_ours(model, tok, prompts, 4, s, 0)
                time_hf(model, tok, prompts, 4, s, 0, args.hf_scores)
                ours = statistics.median(time_ours(model, tok, prompts, args.tokens, s, r) for r in range(args.repeats))
                hf = statistics.median(time_hf(model, tok, prompts, args.tokens, s, r, args.hf_scores)
                                       for r in range(args.repeats))
                print(f"{name:<14} {dtype:<9} {label:<34} {ours:>15.1f} {hf:>19.1f} {ours / hf:>5.2f}x", flush=True)
            del model


if __name__ == "__main__":
    main()
