"""A reward to optimise against: a saved reward model, a process reward model, or any Python function.

``load_reward(spec)`` accepts a reward model folder or run id (`reward train`), a process reward
model folder or run id (`prm train`), or a function given as module:function or
path/to/file.py:function with the signature (prompt: str, response: str) -> float. It returns
one callable: (prompts, responses) -> tensor (N,) of rewards. A process reward model scores a
response by its steps (cut as its training steps were) aggregated as it was trained to
(`prm train --aggregate`); ``load_step_reward`` gives the steps' scores themselves and where each
step ends, for the trainers that place a reward at every step (GRPO's --process-rewards, PPO's
--dense-rewards).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

RewardFn = Callable[[Sequence[str], Sequence[str]], torch.Tensor]
StepRewardFn = Callable[[Sequence[str], Sequence[str]], list]  # -> list[StepScores], one per response


def load_function(spec: str, what: str = "function") -> Callable:
    """Import ``module:function`` or ``file.py:function``."""
    if ":" not in spec:
        raise ValueError(f"{what} '{spec}' is not module:function or file.py:function")
    target, name = spec.rsplit(":", 1)
    if target.endswith(".py"):
        if not Path(target).exists():
            raise FileNotFoundError(f"{what} file {target} does not exist")
        loader_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        # Like uvicorn's app loading: modules in the working directory are importable.
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ValueError(f"{what} '{spec}': cannot import '{target}' ({err})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{what} '{spec}': '{target}' has no function '{name}'")
    return fn


def process_model_folder(spec: str) -> Path | None:
    """The process reward model folder ``spec`` names (a folder or a `prm train` run id), or None."""
    from alignlab.train.prm import resolve_prm

    if not str(spec):
        return None  # '' would name the working directory, or the only run there is
    try:
        return resolve_prm(spec)
    except FileNotFoundError:
        return None


def load_step_reward(spec: str, aggregate: str | None = None) -> tuple[StepRewardFn, str]:
    """(step reward function, description) of a process reward model: (prompts, responses) ->
    one ``StepScores`` per response (train/prm.py: each step's P(right), the character offset where
    it ends, and the response's score by ``aggregate``, default the model's own)."""
    from alignlab.train.prm import AGGREGATES, load_prm

    if aggregate is not None and aggregate not in AGGREGATES:
        raise ValueError(f"aggregate {aggregate!r}: use one of {', '.join(AGGREGATES)}")
    folder = process_model_folder(spec)
    if folder is None:
        raise ValueError(f"reward '{spec}' is not a process reward model (a folder with prm_config.json or the run id "
                         "`alignlab prm train` printed); per-step rewards come only from one")
    prm = load_prm(folder)
    how = aggregate or prm.aggregate

    def steps(prompts: Sequence[str], responses: Sequence[str]) -> list:
        return prm.score_responses(list(prompts), list(responses), how)  # batched by step_features

    return steps, f"process reward model {folder} (aggregate {how})"


def load_reward(spec: str, batch_size: int = 8, aggregate: str | None = None) -> tuple[RewardFn, str]:
    """(reward function, description). Refuses a function that does not return one finite number.
    A callable object with a ``score(prompts, responses) -> list[float]`` method is scored in
    batches through it (the gold judge is one). ``aggregate`` overrides a process reward model's
    own (min, product, last, mean); it means nothing for any other reward."""
    from alignlab.train.reward_model import resolve_reward_model

    if process_model_folder(spec) is not None:
        steps, described = load_step_reward(spec, aggregate)

        def from_process_model(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
            return torch.tensor([s.score for s in steps(prompts, responses)])

        return from_process_model, described
    if aggregate is not None:
        raise ValueError(f"aggregate {aggregate!r} is for a process reward model; reward '{spec}' is not one")
    is_model = False
    try:
        folder = resolve_reward_model(spec)
        is_model = True
    except (FileNotFoundError, ValueError):
        folder = None
    if is_model:
        from alignlab.train.reward_model import load_reward_model

        rm = load_reward_model(folder)

        def from_model(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
            return rm.score(list(prompts), list(responses), batch_size=batch_size)[0]

        return from_model, f"reward model {folder}"
    if ":" not in spec:
        raise ValueError(f"reward '{spec}' is neither a reward model folder or run id (reward or process reward "
                         "model), nor module:function")
    fn = load_function(spec, "reward")
    probe = fn("A test prompt", "A test response.")
    if isinstance(probe, bool) or not isinstance(probe, (int, float)) or not math.isfinite(float(probe)):
        raise ValueError(f"reward '{spec}' returned {probe!r} for one (prompt, response); it must return one "
                         "finite number: def reward(prompt: str, response: str) -> float")

    batched = getattr(fn, "score", None)  # an object may also score a whole batch at once

    def from_function(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        if callable(batched):
            values = [float(v) for v in batched(list(prompts), list(responses))]
        else:
            values = [float(fn(p, r)) for p, r in zip(prompts, responses)]
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"reward '{spec}' returned a non-finite value for response {bad[0]}")
        return torch.tensor(values)

    return from_function, f"function {spec}"
