"""The `alignlab` command: thin. It finds the subcommand, builds its options from the command's
config dataclass, and calls into the room that does the work.

A room adds a command by defining a ``Command`` and listing it in COMMANDS below (as a
"module:attribute" string, imported only when that command runs, so `alignlab --help` is quick).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignlab import __version__
from alignlab.configs import add_config_arguments, config_from_args
from alignlab.errors import AlignlabError


@dataclass
class Command:
    """One subcommand: its config dataclass (options and help) and the function that runs it."""

    name: str
    help: str
    config: type
    run: Callable[[Any], int | None]
    description: str = ""


COMMANDS: dict[str, str] = {
    "info": "alignlab.commands:INFO",
    "generate": "alignlab.commands:GENERATE",
    "score": "alignlab.commands:SCORE",
    "runs list": "alignlab.commands:RUNS_LIST",
    "runs show": "alignlab.commands:RUNS_SHOW",
    "demo": "alignlab.commands:DEMO",
    "serve": "alignlab.serve.command:SERVE",
    "reward train": "alignlab.train.reward_cli:REWARD_TRAIN",
    "reward eval": "alignlab.train.reward_cli:REWARD_EVAL",
    "reward score": "alignlab.train.reward_cli:REWARD_SCORE",
    "reward layers": "alignlab.train.reward_layers:REWARD_LAYERS",
    "reward chunked": "alignlab.train.decompose:REWARD_CHUNKED",
    "reward query": "alignlab.train.reward_query:REWARD_QUERY",
    "prm train": "alignlab.train.prm:PRM_TRAIN",
    "prm eval": "alignlab.train.prm:PRM_EVAL",
    "prm score": "alignlab.train.prm:PRM_SCORE",
    "sft": "alignlab.train.policy_cli:SFT",
    "dpo": "alignlab.train.policy_cli:DPO",
    "bon": "alignlab.train.policy_cli:BON",
    "ppo": "alignlab.train.policy_cli:PPO",
    "rloo": "alignlab.train.policy_cli:RLOO",
    "grpo": "alignlab.train.policy_cli:GRPO",
    "pressure": "alignlab.pressure.command:PRESSURE",
    "experiment": "alignlab.experiment.command:EXPERIMENT",
    "forecast": "alignlab.forecast.command:FORECAST",
    "toys hills": "alignlab.toys.command:TOYS_HILLS",
    "inspect": "alignlab.whitebox.inspect_command:INSPECT",
    "toys shutdown": "alignlab.toys.command:TOYS_SHUTDOWN",
    "toys offswitch": "alignlab.toys.command:TOYS_OFFSWITCH",
    "surgery task-vector": "alignlab.whitebox.surgery_command:SURGERY_TASK_VECTOR",
    "surgery layers": "alignlab.whitebox.surgery_command:SURGERY_LAYERS",
    "surgery stitch": "alignlab.whitebox.surgery_command:SURGERY_STITCH",
    "loom": "alignlab.loom.command:LOOM",
    "loom export": "alignlab.loom.command:LOOM_EXPORT",
    "loom import": "alignlab.loom.command:LOOM_IMPORT",
    "loom train": "alignlab.loom.command:LOOM_TRAIN",
}

HELP: dict[str, str] = {
    "info": "versions, cache folders and the embedded model's status",
    "generate": "sample continuations with per-token probabilities",
    "score": "per-token log-probs of a continuation given a prompt",
    "runs": "list and show run folders ('runs list', 'runs show ID')",
    "demo": "sample a few writing prompts on the embedded model, shaded by probability",
    "reward": "reward models: 'reward train', 'reward eval', 'reward score', 'reward layers', 'reward chunked', 'reward query'",
    "prm": "process (step-level) reward models: 'prm train', 'prm eval', 'prm score'",
    "sft": "supervised fine-tuning on demonstrations",
    "dpo": "DPO-family preference optimisation (or KTO on thumbs)",
    "bon": "best-of-n sampling against a reward, over a sweep of n",
    "ppo": "RLHF with PPO against a reward model or a reward function",
    "rloo": "online RL with a leave-one-out group baseline (REINFORCE), KL leash",
    "grpo": "online RL with group-normalised advantages (GRPO and its loss variants)",
    "experiment": "the main job: writing-prompts RLHF, Goodhart ledger, HTML report",
    "pressure": "the Goodhart ledger of a policy run: KL, proxy and gold, fitted peak",
    "forecast": "Biological Anchors compute forecast",
    "inspect": "white-box monitors (blocked gradients, gradient shares, curvature) on a saved model",
    "toys": "small worlds: 'toys hills' (tessellating-hills demons), 'toys shutdown' (shutdown problem, DReST), "
            "'toys offswitch' (the off-switch game, when to ask)",
    "surgery": "edit a model: 'surgery task-vector', 'surgery layers', 'surgery stitch'",
    "loom": "steer a model by hand in a web app ('loom'; 'loom export|import|train')",
}


def load_command(key: str) -> Command:
    module, attr = COMMANDS[key].split(":")
    return getattr(importlib.import_module(module), attr)


def _top_help() -> str:
    lines = [f"alignlab {__version__}: learning from human feedback on language models", "",
             "usage: alignlab COMMAND [options]   (alignlab COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<12} {text}" for name, text in HELP.items()]
    return "\n".join(lines)


def _group_help(group: str) -> str:
    """A command group's subcommands, a line each (their own --help has the options)."""
    lines = [f"usage: alignlab {group} SUBCOMMAND [options]   (alignlab {group} SUBCOMMAND --help for its options)",
             "", f"{HELP.get(group, group)}", "", "subcommands:"]
    for key in COMMANDS:
        if key.startswith(group + " "):
            lines.append(f"  {key.split()[1]:<14} {load_command(key).help}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `alignlab` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(__version__)
        return 0
    key = argv[0]
    rest = argv[1:]
    if rest and f"{key} {rest[0]}" in COMMANDS:  # a group that is also a command ('loom', 'loom export')
        key, rest = f"{key} {rest[0]}", rest[1:]
    elif key not in COMMANDS:
        groups = sorted({k.split()[0] for k in COMMANDS if " " in k})
        if key in groups:
            asked = bool(rest) and rest[0] in ("-h", "--help")
            print(_group_help(key), file=sys.stdout if asked else sys.stderr)
            return 0 if asked else 2
        else:
            print(f"alignlab: unknown command '{key}'. Commands: {', '.join(HELP)}", file=sys.stderr)
            return 2
    command = load_command(key)
    parser = argparse.ArgumentParser(prog=f"alignlab {command.name}", description=command.description or command.help)
    add_config_arguments(parser, command.config)
    args = parser.parse_args(rest)
    try:
        config = config_from_args(command.config, args)
        return int(command.run(config) or 0)
    except (ValueError, LookupError, FileNotFoundError, AlignlabError) as err:
        # Errors the user can fix: say what was wrong, without a traceback (ALIGNLAB_DEBUG=1 shows it).
        if os.environ.get("ALIGNLAB_DEBUG"):
            raise
        print(f"alignlab {command.name}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"alignlab {command.name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
