"""`alignlab sft | dpo | bon | ppo | rloo | grpo`: thin wrappers that run a trainer and report where its policy went."""

from __future__ import annotations

import json
import os
import sys

from alignlab.cli import Command
from alignlab.train.bon import BoNConfig
from alignlab.train.dpo import DPOConfig, train_dpo
from alignlab.train.grpo import GRPOConfig
from alignlab.train.ppo import PPOConfig
from alignlab.train.rloo import RLOOConfig
from alignlab.train.sft import SFTConfig, train_sft


def _report(run, method: str) -> int:
    from alignlab.whitebox.monitors import read_flags

    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under a multi-process launcher only the main process reports
    status = json.loads((run.path / "status.json").read_text())
    summary = status.get("summary", {})
    if status["state"] == "finished":
        kl = summary.get("kl")
        print(f"{method}: policy saved to {summary.get('policy')}"
              + (f"; KL(policy || reference) = {kl:.3f} nats per response" if kl is not None else ""))
    flags = read_flags(run.path)
    if flags:
        print(f"{len(flags)} red flag(s) from the white-box monitors: {run.path / 'monitors' / 'report.md'}")
    print(f"run {run.id}: {run.path}", file=sys.stderr)
    return 0


def run_sft(config: SFTConfig) -> int:
    from alignlab.whitebox.monitors import hooks_for

    return _report(train_sft(config, progress=sys.stderr.isatty(), hooks=hooks_for(config)), "sft")


def run_dpo(config: DPOConfig) -> int:
    from alignlab.whitebox.monitors import hooks_for

    return _report(train_dpo(config, progress=sys.stderr.isatty(), hooks=hooks_for(config)), "dpo")


def run_bon(config: BoNConfig) -> int:
    from alignlab.train.bon import print_report, run_best_of_n

    print_report(run_best_of_n(config, progress=sys.stderr.isatty()))
    return 0


def run_ppo(config: PPOConfig) -> int:
    from alignlab.train.ppo import train_ppo
    from alignlab.whitebox.monitors import hooks_for

    return _report(train_ppo(config, progress=sys.stderr.isatty(), hooks=hooks_for(config)), "ppo")


def run_rloo(config: RLOOConfig) -> int:
    from alignlab.train.rloo import train_rloo
    from alignlab.whitebox.monitors import hooks_for

    return _report(train_rloo(config, progress=sys.stderr.isatty(), hooks=hooks_for(config)), "rloo")


def run_grpo(config: GRPOConfig) -> int:
    from alignlab.train.grpo import train_grpo
    from alignlab.whitebox.monitors import hooks_for

    return _report(train_grpo(config, progress=sys.stderr.isatty(), hooks=hooks_for(config)), "grpo")


SFT = Command("sft", "supervised fine-tuning on demonstrations", SFTConfig, run_sft)
DPO = Command("dpo", "DPO-family preference optimisation (or KTO on thumbs)", DPOConfig, run_dpo)
BON = Command("bon", "best-of-n sampling against a reward, over a sweep of n", BoNConfig, run_bon)
PPO = Command("ppo", "RLHF with PPO against a reward model or a reward function", PPOConfig, run_ppo)
RLOO = Command("rloo", "online RL: REINFORCE with a leave-one-out group baseline, KL leash to the reference",
               RLOOConfig, run_rloo)
GRPO = Command("grpo", "online RL: GRPO (grpo, bnpo, dr_grpo, dapo losses), KL leash to the reference", GRPOConfig,
               run_grpo)
