"""`alignlab experiment`: run (or resume) the writing-prompts experiment and print where its
report is."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

from alignlab.cli import Command
from alignlab.errors import AlignlabError
from alignlab.experiment.active import STUDY_STAGES as ACTIVE_STAGES
from alignlab.experiment.active import ActiveProfile, get_active_profile, run_active_stages
from alignlab.experiment.active import profile_from_dict as active_profile_from_dict
from alignlab.experiment.pipeline import STAGES, Experiment, run_stages
from alignlab.experiment.process import STUDY_STAGES as PROCESS_STAGES
from alignlab.experiment.process import ProcessProfile, get_process_profile, run_process_stages
from alignlab.experiment.process import profile_from_dict as process_profile_from_dict
from alignlab.experiment.profiles import Profile, get_profile
from alignlab.fileio import atomic_write_json
from alignlab.runs import Run, find_run


@dataclass
class ExperimentConfig:
    """The writing-prompts RLHF experiment: base samples, simulated labels, a proxy reward model,
    best-of-n / DPO / PPO over a sweep of pressure, gold evaluation, Goodhart fits, a report."""

    study: Literal["rlhf", "process", "active"] = "rlhf"
    """Which study: 'rlhf' (the writing-prompts RLHF experiment), 'process' (outcome against process supervision at equal labelling cost, on arithmetic chains) or 'active' (which comparisons to ask for: query strategies against random, in labels saved)."""
    profile: Literal["test", "quick", "standard", "full"] = "quick"
    """Size: 'test' (tiny model, minutes), 'quick' (embedded model, within 15 min on a 2-core CPU), 'standard' (90 min), 'full' (a GPU)."""
    model: str | None = None
    """Replace the profile's model (a name or local folder)."""
    dtype: Literal["auto", "float32", "bfloat16"] | None = None
    """Replace the profile's precision ('auto', the profiles' default: bfloat16 where it runs natively, else float32)."""
    task: str = "writing-prompts"
    """The task: 'writing-prompts' or a prompts file (.txt lines or .jsonl 'prompt'); the gold judge reads any text."""
    seed: int = 0
    """Seed for prompt choice, sampling, labelling and training."""
    resume: str | None = None
    """Resume this experiment (id or folder) after its last finished stage."""
    stop_after: str | None = None
    """Stop after this stage (rlhf: prompts, vocabulary, samples, labels, reward, bon, dpo, ppo, rloo, grpo, evaluate, report; process: prompts, policy, vocabulary, samples, features, fits, decomposition, rl, report; active: prompts, vocabulary, samples, features, rounds, report)."""
    isolate: bool = True
    """Run each stage in a fresh process: peak memory is then the largest stage's, not what earlier stages left behind."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stages_of(exp: Experiment) -> tuple[str, ...]:
    if isinstance(exp.profile, ActiveProfile):
        return ACTIVE_STAGES
    return PROCESS_STAGES if isinstance(exp.profile, ProcessProfile) else STAGES


def open_experiment(config: ExperimentConfig, progress: bool = True) -> Experiment:
    """A new experiment folder, or the one ``config.resume`` names (with its own profile and seed)."""
    if config.resume:
        info = find_run(config.resume)
        if info.kind != "experiment":
            raise ValueError(f"run {info.id} is a '{info.kind}' run, not an experiment")
        saved = json.loads((info.path / "profile.json").read_text())
        if saved.get("study") == "process":
            profile = process_profile_from_dict(saved)
        elif saved.get("study") == "active":
            profile = active_profile_from_dict(saved)
        else:
            profile = Profile(**{k: tuple(v) if isinstance(v, list) and k != "notes" else v for k, v in saved.items()})
        exp = Experiment(Run(info.id, info.path), profile, int(info.config.get("seed", 0)), progress, _log,
                         task=info.config.get("task") or "writing-prompts")
    elif config.study == "active":
        profile = get_active_profile(config.profile, model=config.model, dtype=config.dtype)
        run = Run.create("experiment", config, seed=config.seed)
        atomic_write_json(run.path / "profile.json", dataclasses.asdict(profile))
        exp = Experiment(run, profile, config.seed, progress, _log, task=config.task)
    elif config.study == "process":
        if config.task != "writing-prompts":
            raise ValueError("--task: the process study has its own task (arithmetic chains); leave --task out")
        profile = get_process_profile(config.profile, model=config.model, dtype=config.dtype)
        run = Run.create("experiment", config, seed=config.seed)
        atomic_write_json(run.path / "profile.json", dataclasses.asdict(profile))
        exp = Experiment(run, profile, config.seed, progress, _log, task="arithmetic-chains")
    else:
        exp = None
    if exp is not None:
        if config.stop_after is not None and config.stop_after not in stages_of(exp):
            raise ValueError(f"--stop-after {config.stop_after!r}: the stages are {', '.join(stages_of(exp))}")
        return exp
    if config.stop_after is not None and config.stop_after not in STAGES:
        raise ValueError(f"--stop-after {config.stop_after!r}: the stages are {', '.join(STAGES)}")
    profile = get_profile(config.profile, model=config.model, dtype=config.dtype)
    run = Run.create("experiment", config, seed=config.seed)
    atomic_write_json(run.path / "profile.json", dataclasses.asdict(profile))
    return Experiment(run, profile, config.seed, progress, _log, task=config.task)


def _die_with_parent() -> None:
    """In a stage's child process: end when the parent does (Linux), so a killed experiment
    leaves no stage running behind it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: a stage outlives a killed parent and finishes (its marker is still atomic)


def run_experiment(config: ExperimentConfig, progress: bool = True) -> Experiment:
    exp = open_experiment(config, progress)
    _log(f"experiment {exp.run.id} ({exp.path}), profile {config.profile if not config.resume else 'as saved'}")
    if not config.isolate:
        if isinstance(exp.profile, ActiveProfile):
            results = run_active_stages(exp, config.stop_after)
        elif isinstance(exp.profile, ProcessProfile):
            results = run_process_stages(exp, config.stop_after)
        else:
            results = run_stages(exp, config.stop_after)
    else:
        for stage in stages_of(exp):
            if exp.done(stage) is None:
                command = [sys.executable, "-m", "alignlab.cli", "experiment", "--resume", exp.run.id,
                           "--stop-after", stage, "--no-isolate"]
                # the child's stdout says only "stopped after STAGE"; its progress and errors go to stderr
                code = subprocess.run(command, preexec_fn=_die_with_parent, stdout=subprocess.DEVNULL).returncode
                if code != 0:
                    raise AlignlabError(f"stage '{stage}' of experiment {exp.run.id} failed (exit code {code}); "
                                        f"fix the cause above and continue with `alignlab experiment --resume "
                                        f"{exp.run.id}`")
            if stage == config.stop_after:
                break
        results = {stage: exp.done(stage) for stage in stages_of(exp)}
    if results.get("report"):
        exp.run.finish(report=results["report"]["report"])
    return exp


def run_experiment_command(config: ExperimentConfig) -> int:
    exp = run_experiment(config)
    report = exp.done("report")
    if report is None:
        print(f"experiment {exp.run.id} stopped after stage '{config.stop_after}'; continue with "
              f"`alignlab experiment --resume {exp.run.id}`")
        return 0
    summary = json.loads(exp.file("summary.json").read_text())
    if summary.get("study") == "active":
        print(summary["headline"])
        t = summary["active"]["target"]
        print(f"label_savings ({t['strategy']}): {t['value']:.2f}x (95% CI {t['ci'][0]:.2f}-{t['ci'][1]:.2f}) "
              f"[{'met' if t['met'] else 'NOT met'}; target {t['target']}x]")
        print(f"report: {report['report']}")
        print(f"summary: {report['summary']}")
        return 0
    if summary.get("study") == "process":
        print(summary["headline"])
        step = summary["prm_step_accuracy"]
        print(f"prm_step_accuracy: {step['value']:.3f} (95% CI {step['ci'][0]:.3f}-{step['ci'][1]:.3f}) "
              f"[{'met' if step['met'] else 'NOT met'}; target {step['target']}]")
        print(f"report: {report['report']}")
        print(f"summary: {report['summary']}")
        return 0
    for name, target in summary["targets"].items():
        value = f"{target['value']:.3f}"
        if target.get("ci"):
            value += f" (95% CI {target['ci'][0]:.3f}-{target['ci'][1]:.3f})"
        elif target.get("se") is not None:
            value += f" (SE {target['se']:.3f})"
        met = {True: "met", False: "NOT met", None: "not claimed"}[target["met"]]
        print(f"{name}: {value} [{met}; target {target['target']}]")
    print(f"report: {report['report']}")
    print(f"summary: {report['summary']}")
    return 0


EXPERIMENT = Command("experiment", "the writing-prompts RLHF experiment with a Goodhart ledger and a report "
                     "(or --study process: process against outcome supervision; --study active: which comparisons to ask)",
                     ExperimentConfig, run_experiment_command)
