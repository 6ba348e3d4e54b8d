"""The foundation's commands: info, generate, score, runs list/show, demo."""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from alignlab.cli import Command
from alignlab.models.sampling import SampleConfig

ModelName = str


@dataclass
class ModelChoice:
    """Which model to load."""

    model: str = "gemma-3-270m"
    """'gemma-3-270m' (embedded), 'tiny' (random test model) or a local Hugging Face model folder."""
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Weights and compute precision; bfloat16 sampled ~1.7x faster than float32 on the embedded model on an AVX512-BF16 CPU but ~5x slower on an AVX2-only one; 'auto' picks bfloat16 only where it runs natively."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N."""


# -- generate ----------------------------------------------------------------------------------

@dataclass
class GenerateConfig(ModelChoice, SampleConfig):
    """Sample continuations of prompts."""

    prompt: str | None = field(default=None, metadata={"positional": True})
    """The prompt text; '-' (or no prompt and no --file) reads one prompt from standard input."""
    file: Path | None = None
    """Read prompts from a file: one per line (.txt) or JSON lines with a 'prompt' field (.jsonl)."""
    n: int = field(default=1, metadata={"short": "-n"})
    """Continuations per prompt."""
    batch_size: int = 8
    """Continuations sampled together."""
    json: bool = False
    """Print one JSON object per continuation (tokens, log-probs, alternatives) instead of text."""
    color: Literal["auto", "always", "never"] = "auto"
    """Shade tokens by probability with terminal colors."""


def read_prompts(prompt: str | None, file: Path | None) -> list[str]:
    """Prompts from an argument, a file (.txt lines or .jsonl 'prompt'), or standard input."""
    if file is not None:
        from alignlab.data.formats import read_prompt_file

        return read_prompt_file(file)
    if prompt is not None and prompt != "-":
        return [prompt]
    if sys.stdin is None or (prompt is None and sys.stdin.isatty()):
        raise ValueError("no prompt: give one as an argument, with --file, or on standard input")
    text = sys.stdin.read()
    if not text.strip():
        raise ValueError("standard input held no prompt")
    return [text.rstrip("\n")]


def _sample_config(config: SampleConfig) -> SampleConfig:
    return SampleConfig(**{k: getattr(config, k) for k in SampleConfig.__dataclass_fields__})


def run_generate(config: GenerateConfig, loaded=None) -> int:
    """Sample, print (shaded text or JSON lines) and save a run; ``loaded`` reuses a loaded model."""
    from alignlab.models import load_model, sample
    from alignlab.models.processes import resolve_device
    from alignlab.report.terminal import legend, print_completion, use_color
    from alignlab.runs import Run

    prompts = read_prompts(config.prompt, config.file)
    if config.n < 1 or config.batch_size < 1:
        raise ValueError("n and batch_size must be at least 1")
    sampling = _sample_config(config)
    sampling.check()
    started = time.time()
    model, tokenizer = loaded or load_model(config.model, dtype=config.dtype)
    model.to(resolve_device(config.device))
    loading = time.time() - started
    started = time.time()
    ready_for_decoding()  # a first use compiles the decoding kernel: not part of the tokens' rate
    setup = time.time() - started
    color = use_color(config.color) and not config.json
    jobs = [(i, p) for i, p in enumerate(prompts) for _ in range(config.n)]
    with Run.create("generate", config, seed=config.seed) as run:
        if not config.json:
            print(legend(color) + "\n")
        start, count, index = time.time(), 0, 0
        for b in range(0, len(jobs), config.batch_size):
            chunk = jobs[b:b + config.batch_size]
            seeds = [config.seed + b + j for j in range(len(chunk))]
            completions = sample(model, tokenizer, [p for _, p in chunk], sampling, seeds=seeds,
                                 progress=not config.json and sys.stderr.isatty())
            for (prompt_index, _), completion in zip(chunk, completions):
                record = {"prompt_index": prompt_index, "model": config.model, **completion.to_dict()}
                run.log_sample(**record)
                count += len(completion.tokens)
                if config.json:
                    print(json.dumps(record, ensure_ascii=False), flush=True)
                else:
                    print_completion(index, completion, color)
                index += 1
        elapsed = time.time() - start
        run.log_metrics(0, tokens=count, seconds=elapsed, tokens_per_second=count / max(elapsed, 1e-9),
                        load_seconds=round(loading, 2), setup_seconds=round(setup, 2))
        run.finish(tokens=count, seconds=round(elapsed, 2))
    print(f"run {run.id}: {count} tokens in {elapsed:.1f} s ({count / max(elapsed, 1e-9):.1f} tok/s; "
          f"before that, loading the model {loading:.1f} s{f' and preparing decoding {setup:.1f} s' if setup >= 0.05 else ''}"
          f"); saved to {run.path}", file=sys.stderr)
    return 0


def ready_for_decoding() -> None:
    """Do now what a first decoding step would do once per machine or process: build (or load)
    the decoding kernel and read (or measure) the output layer's layout."""
    from alignlab.models.kernels import kernel
    from alignlab.models.kernels.layout import logits_layout

    kernel()
    logits_layout()


GENERATE = Command("generate", "sample continuations with per-token probabilities", GenerateConfig, run_generate)


# -- score -------------------------------------------------------------------------------------

@dataclass
class ScoreConfig(ModelChoice):
    """Per-token log-probs of a continuation given a prompt."""

    prompt: str | None = None
    """The prompt (the tokenizer's BOS is added before it)."""
    continuation: str | None = None
    """The text to score after the prompt."""
    file: Path | None = None
    """JSON lines with 'prompt' and 'continuation' (or 'completion') fields, scored in batches."""
    batch_size: int = 8
    """Rows scored together."""
    json: bool = False
    """Print one JSON object per row instead of a table."""


def _score_rows(config: ScoreConfig) -> list[tuple[str, str]]:
    if config.file is None:
        if config.continuation is None:
            raise ValueError("give --continuation (and --prompt), or --file with JSON lines")
        return [(config.prompt or "", config.continuation)]
    if not config.file.exists():
        raise FileNotFoundError(f"score file {config.file} does not exist")
    rows = []
    for number, line in enumerate(config.file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{config.file} line {number}: not valid JSON ({err.msg})") from None
        cont = row.get("continuation", row.get("completion")) if isinstance(row, dict) else None
        if not isinstance(cont, str) or not isinstance(row.get("prompt", ""), str):
            raise ValueError(f"{config.file} line {number}: needs a string 'continuation' (or 'completion') "
                             "and optionally a string 'prompt'")
        rows.append((row.get("prompt", ""), cont))
    if not rows:
        raise ValueError(f"score file {config.file} holds no rows")
    return rows


def run_score(config: ScoreConfig) -> int:
    from alignlab.models import load_model, score
    from alignlab.models.processes import resolve_device
    from alignlab.runs import Run

    rows = _score_rows(config)
    model, tokenizer = load_model(config.model, dtype=config.dtype)
    model.to(resolve_device(config.device))
    with Run.create("score", config) as run:
        scored = score(model, tokenizer, [p for p, _ in rows], [c for _, c in rows],
                       batch_size=config.batch_size, progress=sys.stderr.isatty())
        for i, s in enumerate(scored):
            record = s.to_dict()
            run.log_sample(**record)
            run.log_metrics(i, total_logprob=s.total, perplexity=s.perplexity, tokens=len(s.logprobs))
            if config.json:
                print(json.dumps(record, ensure_ascii=False))
                continue
            print(f"row {i}: {len(s.logprobs)} tokens, total log-prob {s.total:.3f}, perplexity {s.perplexity:.2f}")
            print(f"  {'token':<24} {'log-prob':>9} {'prob':>7}")
            for text, lp in zip(s.token_texts, s.logprobs):
                print(f"  {json.dumps(text, ensure_ascii=False):<24} {lp:>9.3f} {math.exp(lp):>7.4f}")
    print(f"run {run.id} saved to {run.path}", file=sys.stderr)
    return 0


SCORE = Command("score", "per-token log-probs of a continuation given a prompt", ScoreConfig, run_score)


# -- info --------------------------------------------------------------------------------------

@dataclass
class InfoConfig:
    """Versions, cache folders and model status."""

    json: bool = False
    """Print the information as one JSON object."""


def collect_info() -> dict:
    """What `alignlab info` reports."""
    import torch

    from alignlab.home import cache_dir, runs_dir
    from alignlab.models.cache import manifest_problem
    from alignlab.models.loading import EMBEDDED, _fingerprint, fast_bfloat16
    from alignlab.runs import environment

    env = environment(seed=None)
    try:
        fingerprint = _fingerprint()
        status = {}
        for what, folder in (("gguf", cache_dir() / "gguf" / EMBEDDED),
                             ("tokenizer", cache_dir() / "tokenizers" / EMBEDDED),
                             ("model", cache_dir() / "models" / EMBEDDED)):
            fp = {"sha256": fingerprint["gguf_sha256"]} if what == "gguf" else fingerprint
            problem = manifest_problem(folder, fp)
            status[what] = {"path": str(folder), "ready": problem is None, "problem": problem}
    except ValueError as err:
        status = {"error": str(err)}
    return {
        "alignlab": env["packages"]["alignlab"], "python": env["python"], "packages": env["packages"],
        "torch_threads": torch.get_num_threads(), "cpu_bf16": fast_bfloat16(),
        "cuda": torch.cuda.is_available(), "cache_dir": str(cache_dir()), "runs_dir": str(runs_dir()),
        "embedded_model": status, "git_revision": env["git_revision"],
    }


def run_info(config: InfoConfig) -> int:
    info = collect_info()
    if config.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"alignlab {info['alignlab']} (python {info['python']}, git {info['git_revision']})")
    for name, version in info["packages"].items():
        print(f"  {name:<26} {version}")
    print(f"torch threads {info['torch_threads']}, CUDA {info['cuda']}, CPU bfloat16 {info['cpu_bf16']}")
    print(f"cache: {info['cache_dir']}\nruns:  {info['runs_dir']}")
    print("embedded model gemma-3-270m:")
    for what, st in info["embedded_model"].items():
        state = "ready" if isinstance(st, dict) and st.get("ready") else f"not built ({st.get('problem') if isinstance(st, dict) else st})"
        print(f"  {what:<10} {state}")
    return 0


INFO = Command("info", "versions, cache folders and the embedded model's status", InfoConfig, run_info)


# -- runs --------------------------------------------------------------------------------------

@dataclass
class RunsListConfig:
    """List run folders, oldest first."""

    kind: str | None = None
    """Only runs of this kind (generate, score, ...)."""
    json: bool = False
    """Print one JSON object per run."""


def run_runs_list(config: RunsListConfig) -> int:
    from alignlab.home import runs_dir
    from alignlab.runs import list_runs

    runs = [r for r in list_runs() if config.kind in (None, r.kind)]
    if config.json:
        for r in runs:
            print(json.dumps({"id": r.id, "kind": r.kind, "state": r.state, "path": str(r.path),
                              "model": r.config.get("model")}))
        return 0
    if not runs:
        print(f"no runs under {runs_dir()}")
        return 0
    print(f"{'id':<44} {'kind':<10} {'state':<9} model")
    for r in runs:
        print(f"{r.id:<44} {r.kind:<10} {r.state:<9} {r.config.get('model', '')}")
    return 0


RUNS_LIST = Command("runs list", "list run folders", RunsListConfig, run_runs_list)


@dataclass
class RunsShowConfig:
    """Show one run: config, environment, status, last metrics, samples."""

    run: str = field(default="", metadata={"positional": True})
    """Run id, a unique prefix of one, or a run folder path."""
    samples: int = 3
    """How many samples to print."""
    json: bool = False
    """Print the run as one JSON object."""


def run_runs_show(config: RunsShowConfig) -> int:
    from alignlab.runs import find_run

    if not config.run:
        raise ValueError("give a run id (see `alignlab runs list`)")
    r = find_run(config.run)
    metrics, samples = r.metrics, r.samples
    if config.json:
        print(json.dumps({"id": r.id, "kind": r.kind, "path": str(r.path), "status": r.status,
                          "config": r.config, "env": r.env, "metrics": metrics,
                          "samples": samples[:config.samples]}, indent=2, default=str))
        return 0
    print(f"run {r.id} ({r.kind}, {r.state})\n  path: {r.path}")
    print("config:")
    for k, v in r.config.items():
        print(f"  {k} = {json.dumps(v)}")
    env = r.env
    print(f"env: seed {env.get('seed')}, git {env.get('git_revision')}, python {env.get('python')}, "
          f"torch {env.get('packages', {}).get('torch')}, transformers {env.get('packages', {}).get('transformers')}")
    if metrics:
        print(f"metrics: {len(metrics)} lines; last: " + json.dumps(metrics[-1]))
    from alignlab.whitebox.monitors import read_flags

    flags = read_flags(r.path)
    if flags is not None:  # the run was monitored: its red flags, or that there were none
        print(f"red flags (white-box monitors, {r.path / 'monitors' / 'report.md'}): {len(flags) or 'none'}")
        for f in flags:
            print(f"  [{f['check']}] {f['where']}: {f['what']} (since step {f['since']})")
    print(f"samples: {len(samples)}")
    for s in samples[:config.samples]:
        print(f"  {json.dumps(s.get('prompt', ''))[:60]} -> {json.dumps(sample_text(s))[:100]}"
              + "".join(f" {k} {s[k]:.3f}" for k in ("score", "kl") if isinstance(s.get(k), (int, float))))
    return 0


def sample_text(sample: dict) -> str:
    """The generated text of a samples.jsonl line, whichever command wrote it: 'text' (generate),
    'continuation', 'response' (ppo) or the first of 'responses' (bon)."""
    for key in ("text", "continuation", "response"):
        if isinstance(sample.get(key), str):
            return sample[key]
    responses = sample.get("responses")
    return responses[0] if isinstance(responses, list) and responses and isinstance(responses[0], str) else ""


RUNS_SHOW = Command("runs show", "show one run", RunsShowConfig, run_runs_show)


# -- demo --------------------------------------------------------------------------------------

DEMO_PROMPTS = [
    "Writing prompt: A lighthouse keeper finds a letter addressed to someone who will not be born "
    "for a hundred years.\n\nStory:",
    "Writing prompt: The last bakery in a city of robots gets an unexpected customer.\n\nStory:",
    "Writing prompt: Two rival cartographers are forced to share a boat down an unmapped river.\n\nStory:",
]


@dataclass
class DemoConfig:
    """Sample continuations of a few writing prompts on the embedded model, shaded by probability."""

    model: str = "gemma-3-270m"
    """The model to sample from."""
    dtype: Literal["float32", "bfloat16", "auto"] = "auto"
    """Precision; 'auto': bfloat16 where the CPU runs it natively (AVX512-BF16, AMX) or on CUDA, else float32."""
    n: int = 2
    """Continuations per prompt."""
    max_new_tokens: int = 64
    """Tokens per continuation."""
    seed: int = 0
    """Sampling seed."""
    color: Literal["auto", "always", "never"] = "auto"
    """Shade tokens by probability with terminal colors."""


def run_demo(config: DemoConfig) -> int:
    gen = GenerateConfig(model=config.model, dtype=config.dtype, n=config.n, max_new_tokens=config.max_new_tokens,
                         seed=config.seed, temperature=1.0, top_k=64, top_p=0.95, color=config.color,
                         batch_size=config.n * len(DEMO_PROMPTS), prompt=None)
    from alignlab.models import load_model

    print(f"alignlab demo: {config.model} ({config.dtype}), {len(DEMO_PROMPTS)} writing prompts x {config.n}, "
          "temperature 1.0, top-k 64, top-p 0.95", file=sys.stderr)
    loaded = load_model(config.model, dtype=config.dtype)  # converts the embedded model on first use
    with tempfile.TemporaryDirectory() as tmp:
        gen.file = Path(tmp) / "demo-prompts.jsonl"
        gen.file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in DEMO_PROMPTS), encoding="utf-8")
        return run_generate(gen, loaded)


DEMO = Command("demo", "sample a few writing prompts on the embedded model, shaded by probability", DemoConfig,
               run_demo)
