"""The blocked-gradient audit and clipping attribution: every red flag fires on a model built
to have it and nothing fires on clean models."""

import json

import pytest
import torch
from torch import nn

from alignlab.train.hooks import Hooks, StepContext
from alignlab.train.loop import optimizer_step
from alignlab.whitebox.audit import audit, reachable_parameters, sensitivity
from alignlab.whitebox.clipping import ClipAttribution
from alignlab.whitebox.monitors import WhiteboxMonitor, MonitorSettings, parse_monitors


class Clean(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 8)
        self.second = nn.Linear(8, 1)

    def forward(self, x):
        return self.second(torch.tanh(self.first(x)))


class DetachedBranch(Clean):
    def __init__(self):
        super().__init__()
        self.side = nn.Linear(4, 1)

    def forward(self, x):
        return super().forward(x) + self.side(x).detach()


class Quantize(nn.Module):
    """The straight-through estimator: round in the forward pass, identity in the backward."""

    def forward(self, h):
        return h + (torch.round(h * 2) / 2 - h).detach()


class StraightThrough(Clean):
    def __init__(self):
        super().__init__()
        self.quantize = Quantize()

    def forward(self, x):
        return self.second(self.quantize(self.first(x) * 3))


class Silent(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h):
        return h * 2

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class SilentBackward(Clean):
    def forward(self, x):
        return self.second(Silent.apply(torch.tanh(self.first(x))))


def zero_hook(grad):
    return torch.zeros_like(grad)


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(16, 1, generator=g, dtype=torch.float64)


def loss_fn(model, seed=0):
    x, y = data(seed)
    return lambda: ((model(x) - y) ** 2).mean()


def make(cls):
    torch.manual_seed(0)
    return cls().double()


def checks(result):
    return {(f.check, f.where) for f in result.flags}


def test_a_clean_model_raises_no_flag():
    model = make(Clean)
    result = audit(model, loss_fn(model), sensitivity_of=4)
    assert result.flags == []
    assert len(result.sensitivity) == 4 and not any(r["mismatch"] for r in result.sensitivity)
    assert result.untraced == []  # the clean model traces, so the static scan saw it


def test_a_detached_branch_is_unreachable_recorded_at_runtime_and_seen_by_finite_differences():
    model = make(DetachedBranch)
    result = audit(model, loss_fn(model), sensitivity_of=["side.weight", "first.weight"])
    found = checks(result)
    assert ("unreachable", "side.weight") in found and ("unreachable", "side.bias") in found
    assert ("unreachable", "first.weight") not in found
    assert ("gradient-dropping-op", "DetachedBranch") in found  # the detach, in the root module's forward
    rows = {r["parameter"]: r for r in result.sensitivity}
    assert rows["side.weight"]["mismatch"] and rows["side.weight"]["autograd"] == 0.0
    assert not rows["first.weight"]["mismatch"]
    assert ("sensitivity", "side.weight") in found


def test_a_straight_through_estimator_is_found_statically_and_at_runtime():
    model = make(StraightThrough)
    result = audit(model, loss_fn(model), sensitivity_of=["first.weight"])
    found = checks(result)
    assert ("straight-through", "quantize") in found or ("straight-through", "StraightThrough") in found
    assert ("zero-derivative-op", "quantize") in found
    assert ("gradient-dropping-op", "quantize") in found  # the detach
    # Rounding makes the loss piecewise constant in the weights before it: the finite difference
    # sees none of the slope the straight-through gradient claims.
    assert ("sensitivity", "first.weight") in found


def test_a_gradient_hook_that_zeroes_a_layer_is_named():
    model = make(Clean)
    model.first.weight.register_hook(zero_hook)
    result = audit(model, loss_fn(model), sensitivity_of=["first.weight"])
    found = checks(result)
    assert ("gradient-hook", "first.weight") in found
    assert ("sensitivity", "first.weight") in found
    # the zero gradient is reported; one batch of it is not a flag by itself (LoRA's A at init)
    assert any(f.check == "zero-gradient" and f.where == "first.weight" and f.known for f in result.findings)
    assert ("gradient-hook", "second.weight") not in found


def test_a_custom_function_whose_backward_returns_zeros_is_named():
    model = make(SilentBackward)
    result = audit(model, loss_fn(model), sensitivity_of=0)
    assert ("custom-backward", "Silent") in checks(result)
    assert any(f.check == "zero-gradient" and f.where == "first.weight" for f in result.findings)


def test_a_module_level_no_grad_region_and_a_host_round_trip_are_recorded():
    class Sneaky(Clean):
        def forward(self, x):
            h = self.first(x)
            if h.sum().item() > 1e9:  # a host round-trip on a tensor that carries gradient
                h = h * 2
            with torch.no_grad():
                scale = h.abs().mean()
            return self.second(torch.tanh(h) * scale)

    model = make(Sneaky)
    result = audit(model, loss_fn(model), sensitivity_of=0)
    kinds = {f.check for f in result.flags}
    assert {"host-round-trip", "no-grad-region"} <= kinds


def test_the_audit_leaves_the_gradients_of_the_step_in_place():
    model = make(Clean)
    loss_fn(model)().backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    audit(model, loss_fn(model, seed=1), sensitivity_of=2)
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, before[n]), n


def test_reachability_walks_the_whole_graph():
    model = make(DetachedBranch)
    reached = reachable_parameters(loss_fn(model)())
    assert id(model.first.weight) in reached and id(model.second.bias) in reached
    assert id(model.side.weight) not in reached


def test_finite_differences_agree_with_autograd_on_a_smooth_loss():
    model = make(Clean)
    rows = sensitivity(loss_fn(model), dict(model.named_parameters()))
    for r in rows:
        assert r["relative_error"] < 1e-4, r


# -- clipping attribution --------------------------------------------------------------------------

class Spiky(Clean):
    """A tiny parameter whose gradient dwarfs the rest's on every batch."""

    def __init__(self):
        super().__init__()
        self.spike = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return super().forward(x) + 1000.0 * self.spike


def train_steps(model, steps, max_norm, monitor=None, lr=1e-3):
    parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(parameters.values(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    hooks = Hooks([monitor] if monitor else [])
    for step in range(steps):
        fn = loss_fn(model, seed=step)
        fn().backward()
        ctx = StepContext(step + 1, model, torch.tensor(0.0), optimizer, parameters, loss_fn=fn)
        optimizer_step(ctx, scheduler, max_norm, hooks)
    return parameters


def test_a_parameter_that_dominates_every_clipped_step_is_flagged_since_the_step_it_was_seen():
    model = make(Spiky)
    monitor = WhiteboxMonitor(MonitorSettings(("clip",), every=5, max_grad_norm=0.1, window=10))
    train_steps(model, 12, 0.1, monitor)
    flags = monitor.book.sorted()
    assert [(f.check, f.where) for f in flags] == [("dominant-clip-share", "spike")]
    assert flags[0].since == 5  # the fifth clipped step is the first with enough evidence
    assert monitor.clip.records[0]["shares"]["spike"] > 0.99


def test_clipping_stays_quiet_on_a_clean_model_and_shares_add_to_one():
    model = make(Clean)
    monitor = WhiteboxMonitor(MonitorSettings(("clip",), every=5, max_grad_norm=1e-3, window=10))
    train_steps(model, 12, 1e-3, monitor)
    assert monitor.book.sorted() == []
    assert all(r["clipped"] for r in monitor.clip.records)
    for r in monitor.clip.records:
        assert sum(r["shares"].values()) == pytest.approx(1.0)


def test_shares_are_squared_norms_over_the_global_squared_norm():
    clip = ClipAttribution({"a": torch.zeros(2), "b": torch.zeros(3)})
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0, 0.0])
    clip.observe(1, {"a": a, "b": b}, 5.0, True)
    row = clip.records[0]
    assert row["shares"] == pytest.approx({"a": 9 / 25, "b": 16 / 25})
    assert row["normalised"] == pytest.approx({"a": (9 / 25) / (2 / 5), "b": (16 / 25) / (3 / 5)})


def test_monitors_do_not_change_training():
    plain = train_steps(make(Clean), 6, 0.05)
    monitor = WhiteboxMonitor(MonitorSettings(("audit", "clip"), every=2, max_grad_norm=0.05))
    watched = train_steps(make(Clean), 6, 0.05, monitor)
    for n in plain:
        assert torch.equal(plain[n], watched[n]), n
    assert len(monitor.audits) == 4  # steps 1, 2, 4 and 6


def test_unknown_monitor_names_are_refused():
    assert parse_monitors("audit, clip") == ("audit", "clip")
    assert parse_monitors("all") == ("audit", "clip", "curvature")
    with pytest.raises(ValueError, match="unknown monitor hessian"):
        parse_monitors("audit,hessian")


# -- on alignlab's models and trainers --------------------------------------------------------------

def test_the_tiny_language_model_is_clean(tiny):
    from alignlab.train.policy import LogProbs

    model, tok = tiny
    ids = torch.tensor([tok("The cat sat on the mat and looked at the dog.")["input_ids"]])
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[:, 3:] = True
    scorer = LogProbs(model)
    result = audit(model, lambda: -(scorer(ids, torch.ones_like(ids), target).sum()), sensitivity_of=3)
    assert result.flags == [], result.flags


def test_sft_with_monitors_writes_the_report_and_trains_as_without(tmp_path, monkeypatch, capsys):
    from alignlab.cli import main
    from alignlab.data import Demonstration, write_feedback
    from alignlab.runs import find_run
    from alignlab.train.sft import SFTConfig, train_sft

    monkeypatch.setenv("ALIGNLAB_RUNS_DIR", str(tmp_path / "runs"))
    demos = tmp_path / "demos.jsonl"
    write_feedback(demos, [Demonstration(f"Say something nice about item {i}:", " It is lovely.") for i in range(8)])
    assert main(["sft", "--data", str(demos), "--model", "tiny", "--max-steps", "3", "--batch-size", "4",
                 "--kl-prompts", "0", "--monitor", "audit,clip", "--monitor-every", "2"]) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    watched = runs[-1]
    monitors = watched / "monitors"
    assert json.loads((monitors / "flags.json").read_text())["flags"] == []
    assert (monitors / "clip_shares.png").stat().st_size > 1000
    assert "No red flags." in (monitors / "report.md").read_text()
    metrics = [json.loads(line) for line in (watched / "metrics.jsonl").read_text().splitlines()]
    assert "clip/top_share" in metrics[0] and "audit/flags" in metrics[0]
    plain = train_sft(SFTConfig(data=str(demos), model="tiny", max_steps=3, batch_size=4, kl_prompts=0), progress=False)
    from safetensors.torch import load_file

    a = load_file(str(next((watched / "policy").glob("*.safetensors"))))
    b = load_file(str(next((plain.path / "policy").glob("*.safetensors"))))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert find_run(watched.name).state == "finished"
    assert main(["runs", "show", watched.name]) == 0
    assert "red flags (white-box monitors" in capsys.readouterr().out


def test_inspect_runs_every_monitor_on_a_saved_model_and_a_text_file(tmp_path, monkeypatch, capsys):
    from alignlab.cli import main

    monkeypatch.setenv("ALIGNLAB_RUNS_DIR", str(tmp_path / "runs"))
    texts = tmp_path / "texts.txt"
    texts.write_text("The cat sat on the mat.\n\nA quiet river ran past the mill.\n\nThree birds sang at dawn.\n")
    # few products: each is a double backward through the tiny model's 262k-row embedding
    assert main(["inspect", "--model", "tiny", "--data", str(texts), "--batches", "2", "--batch-size", "2",
                 "--monitor", "audit,clip", "--sensitivity", "2"]) == 0
    assert main(["inspect", "--model", "tiny", "--data", str(texts), "--batches", "1", "--batch-size", "2",
                 "--monitor", "curvature", "--blocks", "layers", "--curvature-iterations", "3",
                 "--trace-samples", "2", "--spectrum-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("No red flags.") == 2 and "top Hessian eigenvalue" in out
    first, second = sorted((tmp_path / "runs").iterdir())
    for run, names in ((first, ("audit.json", "clip.jsonl", "clip_shares.png")),
                       (second, ("curvature.jsonl", "spectrum.json", "curvature.png", "spectrum.png"))):
        for name in ("flags.json", "report.md", *names):
            assert (run / "monitors" / name).stat().st_size > 0, name
    audits = json.loads((first / "monitors" / "audit.json").read_text())
    assert [a["step"] for a in audits] == [1, 2] and all(a["flags"] == 0 for a in audits)
    (row,) = [json.loads(line) for line in (second / "monitors" / "curvature.jsonl").read_text().splitlines()]
    assert {"hess/lmax/all", "hess/trace/all", "hess/lmax/model.layers.0", "hess/lmax/model.layers.1"} <= set(row)


def test_inspect_names_the_problem_with_bad_input(tmp_path, capsys):
    from alignlab.cli import main

    assert main(["inspect", "--model", "tiny"]) != 0
    assert "--data" in capsys.readouterr().err
    assert main(["inspect", "--model", "tiny", "--data", str(tmp_path / "missing.txt")]) != 0
    assert "does not exist" in capsys.readouterr().err
    texts = tmp_path / "t.txt"
    texts.write_text("Some text here.\n")
    assert main(["inspect", "--model", "tiny", "--data", str(texts), "--monitor", "hessian"]) != 0
    assert "unknown monitor hessian" in capsys.readouterr().err


def small_curvature(monitors=("audit", "clip", "curvature")):
    """Every monitor, at every other step, with few Hessian products (each is a double backward)."""
    return WhiteboxMonitor(MonitorSettings(monitors, every=2, max_grad_norm=1.0, sensitivity=1,
                                           curvature_iterations=3, trace_samples=2, spectrum_steps=3))


def check_monitored_run(run, monitor, audited_steps):
    flags = json.loads((run.path / "monitors" / "flags.json").read_text())["flags"]
    assert flags == [], flags
    assert [a["step"] for a in monitor.audits] == audited_steps
    assert [c["step"] for c in monitor.curvature] == audited_steps
    assert all(c["hess/trace/all"] != 0 for c in monitor.curvature)
    assert (run.path / "monitors" / "spectrum.png").exists()


def test_dpo_ppo_and_reward_training_run_every_monitor(tmp_path):
    from alignlab.data import PreferencePair, Thumbs, write_feedback
    from alignlab.train.dpo import DPOConfig, train_dpo
    from alignlab.train.ppo import PPOConfig, train_ppo
    from alignlab.train.reward import RewardTrainConfig, train_reward

    pairs = tmp_path / "pairs.jsonl"
    write_feedback(pairs, [PreferencePair(f"Describe day {i}:", " It was lovely and warm.", " It was awful and cold.")
                           for i in range(8)])
    monitor = small_curvature()
    run = train_dpo(DPOConfig(data=str(pairs), model="tiny", max_steps=2, batch_size=4, kl_prompts=0), progress=False,
                    hooks=Hooks([monitor]))
    check_monitored_run(run, monitor, [1, 2])

    thumbs = tmp_path / "thumbs.jsonl"  # KTO recomputes its loss with the step's own reference point
    write_feedback(thumbs, [Thumbs(f"Day {i}:", " lovely and warm." if i % 2 else " awful and cold.", bool(i % 2))
                            for i in range(8)])
    monitor = small_curvature()
    run = train_dpo(DPOConfig(data=str(thumbs), model="tiny", loss="kto", max_steps=2, batch_size=4, kl_prompts=0),
                    progress=False, hooks=Hooks([monitor]))
    check_monitored_run(run, monitor, [1, 2])

    monitor = small_curvature()
    run = train_reward(RewardTrainConfig(data=str(pairs), model="tiny", mode="full", max_steps=2, batch_size=4,
                                         eval_fraction=0.0), progress=False, hooks=Hooks([monitor]))
    check_monitored_run(run, monitor, [1, 2])

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me about thing 1.\nTell me about thing 2.\n")
    monitor = small_curvature()
    run = train_ppo(PPOConfig(prompts=prompts, reward="tests.train.rewards_for_tests:vowel_share", model="tiny",
                              iterations=1, rollout_batch=4, minibatch_size=2, ppo_epochs=1, max_new_tokens=4),
                    progress=False, hooks=Hooks([monitor]))
    check_monitored_run(run, monitor, [1, 2])  # one iteration: two minibatch updates


def test_a_gradient_zero_on_every_training_step_is_flagged_and_lora_at_init_is_not():
    model = make(Clean)
    model.first.weight.register_hook(zero_hook)
    monitor = WhiteboxMonitor(MonitorSettings(("audit",), every=100, sensitivity=0))
    train_steps(model, 6, 0.0, monitor)
    flags = {(f.check, f.where): f for f in monitor.book.sorted()}
    assert flags[("zero-gradient", "first.weight")].since == 5  # the fifth step makes it "most steps"
    assert ("zero-gradient", "first.bias") not in flags

    class LoraLike(nn.Module):  # y = x (W + B A): A's gradient is exactly zero while B is zero
        def __init__(self):
            super().__init__()
            self.w = nn.Linear(4, 1)
            self.a = nn.Parameter(torch.randn(2, 4, dtype=torch.float64))
            self.b = nn.Parameter(torch.zeros(1, 2, dtype=torch.float64))

        def forward(self, x):
            return self.w(x) + x @ (self.b @ self.a).T

    model = make(LoraLike)
    result = audit(model, loss_fn(model), sensitivity_of=["a", "b"])
    assert result.flags == [], result.flags
    assert any(f.check == "zero-gradient" and f.where == "a" for f in result.findings)


def test_a_resumed_run_s_monitors_go_on_from_where_it_stopped(tmp_path):
    from alignlab.data import PreferencePair, write_feedback
    from alignlab.train.dpo import DPOConfig, train_dpo

    pairs = tmp_path / "pairs.jsonl"
    write_feedback(pairs, [PreferencePair(f"Describe day {i}:", " It was lovely and warm.", " It was awful and cold.")
                           for i in range(8)])
    common = dict(data=str(pairs), model="tiny", max_steps=5, batch_size=4, kl_prompts=0, checkpoint_every=1,
                  max_grad_norm=1e-3)  # every step clips
    settings = MonitorSettings(("audit", "clip"), every=2, max_grad_norm=1e-3, sensitivity=1)
    whole_monitor = WhiteboxMonitor(settings)
    train_dpo(DPOConfig(**common), progress=False, hooks=Hooks([whole_monitor]))
    part = train_dpo(DPOConfig(**common, stop_after=3), progress=False, hooks=Hooks([WhiteboxMonitor(settings)]))
    stopped = json.loads((part.path / "monitors" / "state.json").read_text())
    assert stopped["presence"]["steps"] == 3 and [r["step"] for r in stopped["clip"]["records"]] == [1, 2, 3]
    resumed_monitor = WhiteboxMonitor(settings)
    train_dpo(DPOConfig(resume=part.id), progress=False, hooks=Hooks([resumed_monitor]))
    # the resumed monitors hold the whole run, as the uninterrupted one's do
    assert [a["step"] for a in resumed_monitor.audits] == [a["step"] for a in whole_monitor.audits] == [1, 2, 4]
    assert [r["step"] for r in resumed_monitor.clip.records] == [1, 2, 3, 4, 5]
    assert [r.step for r in resumed_monitor.clip.window] == [1, 2, 3, 4, 5]
    assert resumed_monitor.presence.steps == whole_monitor.presence.steps == 5
    assert resumed_monitor.presence.missing == whole_monitor.presence.missing
    for a, b in zip(resumed_monitor.clip.records, whole_monitor.clip.records):
        assert a["clipped"] == b["clipped"] and a["global_norm"] == pytest.approx(b["global_norm"], rel=1e-4)
    saved = [json.loads(line)["step"] for line in (part.path / "monitors" / "clip.jsonl").read_text().splitlines()]
    assert saved == [1, 2, 3, 4, 5]  # the files written at the end hold the whole run too
    assert {(f["check"], f["where"], f["since"]) for f in json.loads(
        (part.path / "monitors" / "flags.json").read_text())["flags"]} == {
        (f.check, f.where, f.since) for f in whole_monitor.book.sorted()}
