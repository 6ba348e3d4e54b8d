"""Tessellating hills: the gradient, the participation ratio, reproducibility, batching, the CLI."""

import json
import math

import pytest
import torch

from alignlab.cli import main
from alignlab.runs import list_runs
from alignlab.toys.hills import (History, Landscape, demons, hills_grad, hills_loss, make_landscape,
                                 participation_ratio, simulate, splotches)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The steps here are tiny; a second OpenMP thread only waits on a busy core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _point(dim, seeds, eps_count, scale=3.0, seed=123):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(len(seeds), eps_count, dim + 1, generator=gen, dtype=torch.float64) * scale


def test_landscape_has_integer_wave_numbers_in_range_and_depends_only_on_its_seed():
    land, _ = make_landscape(6, [3, 4])
    assert land.k.shape == (2, 6 * 5, 6) and land.k0.shape == (2, 30) and land.s.shape == (2, 6, 5)
    for k in (land.k, land.k0):
        assert torch.equal(k, k.round()) and k.min() == -2 and k.max() == 2
    alone, _ = make_landscape(6, [4])
    assert torch.equal(alone.k[0], land.k[1]) and torch.equal(alone.c[0], land.c[1])
    assert not torch.equal(land.k[0], land.k[1])


def test_splotch_matches_the_formula_written_out_for_one_coordinate():
    land, _ = make_landscape(3, [0])
    x = _point(3, [0], 1)
    j = 2
    expected = 0.0
    for w in range(5):
        phi = sum(land.k[0, j * 5 + w, i].item() * x[0, 0, 1 + i].item() for i in range(3))
        phi += land.k0[0, j * 5 + w].item() * x[0, 0, 0].item()
        expected += land.s[0, j, w].item() * math.sin(phi) + land.c[0, j, w].item() * math.cos(phi)
    assert splotches(land, x)[0, 0, j].item() == pytest.approx(expected, rel=1e-12)
    eps = torch.tensor([0.01], dtype=torch.float64)
    loss, splotch = hills_loss(land, x, eps)
    assert loss.item() == pytest.approx(-x[0, 0, 0].item() + splotch.item(), rel=1e-12)


def test_closed_form_gradient_matches_finite_differences_and_autograd():
    seeds, dim = [0, 7], 5
    land, _ = make_landscape(dim, seeds)
    eps = torch.tensor([0.0025, 0.3], dtype=torch.float64)  # a large eps so the splotch part matters
    x = _point(dim, seeds, 2)
    loss, splotch, grad = hills_grad(land, x, eps)
    ref_loss, ref_splotch = hills_loss(land, x, eps)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(splotch, ref_splotch, rtol=1e-12, atol=1e-12)
    h = 1e-6
    numeric = torch.zeros_like(x)
    for i in range(dim + 1):
        step = torch.zeros_like(x)
        step[..., i] = h
        numeric[..., i] = (hills_loss(land, x + step, eps)[0] - hills_loss(land, x - step, eps)[0]) / (2 * h)
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-7)
    xa = x.clone().requires_grad_(True)
    hills_loss(land, xa, eps)[0].sum().backward()
    torch.testing.assert_close(grad, xa.grad, rtol=1e-10, atol=1e-12)
    assert grad[:, 1, 1:].abs().amax() > 0.1  # the splotch part of the gradient is exercised, not only -1 on x0


def test_participation_ratio_on_hand_made_vectors():
    v = torch.tensor([[0.0, 5.0, 0.0, 0.0],      # one coordinate: 1
                      [1.0, -1.0, 1.0, -1.0],    # four equal: 4
                      [1.0, 1.0, 0.0, 0.0],      # two equal: 2
                      [2.0, 1.0, 0.0, 0.0],      # (4+1)^2 / (16+1)
                      [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)  # nothing: 0
    torch.testing.assert_close(participation_ratio(v), torch.tensor([1.0, 4.0, 2.0, 25 / 17, 0.0], dtype=torch.float64))


def test_demons_are_the_largest_coordinates_counted_from_one():
    x = torch.tensor([[100.0, 0.1, -7.0, 3.0, 0.0]])
    idx, val = demons(x, 2)
    assert idx.tolist() == [[2, 3]] and val.tolist() == [[-7.0, 3.0]]


def test_at_the_start_the_whole_step_goes_to_x0_when_eps_is_zero():
    history = simulate(4, [0.0], steps=40, lr=0.2, seeds=[0], record_every=10)
    torch.testing.assert_close(history.step_share, torch.ones_like(history.step_share))
    # x0 gains exactly lr per step plus its noise; with eps = 0 the x_j do a pure random walk
    assert history.x0[-1, 0, 0].item() == pytest.approx(40 * 0.2, abs=4 * 0.2 * math.sqrt(40 / 5))


def test_a_seed_reproduces_exactly():
    a = simulate(6, [0.0025, 0.05], steps=120, lr=0.2, seeds=[5], record_every=30)
    b = simulate(6, [0.0025, 0.05], steps=120, lr=0.2, seeds=[5], record_every=30)
    assert torch.equal(a.x, b.x) and torch.equal(a.x0, b.x0) and a.steps == b.steps == [30, 60, 90, 120]
    c = simulate(6, [0.0025, 0.05], steps=120, lr=0.2, seeds=[6], record_every=30)
    assert not torch.equal(a.x, c.x)


def test_batched_seeds_and_eps_equal_each_run_alone():
    seeds, eps = [0, 1, 2], [0.0025, 0.05]
    together = simulate(8, eps, steps=150, lr=0.2, seeds=seeds, record_every=25)
    for s, seed in enumerate(seeds):
        for e, value in enumerate(eps):
            alone = simulate(8, [value], steps=150, lr=0.2, seeds=[seed], record_every=25)
            torch.testing.assert_close(together.x[s, e], alone.x[0, 0], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(together.participation[:, s, e], alone.participation[:, 0, 0],
                                       rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(together.step_share[:, s, e], alone.step_share[:, 0, 0],
                                       rtol=1e-12, atol=1e-12)


def test_records_agree_with_the_trajectory():
    h = simulate(5, [0.01], steps=100, lr=0.2, seeds=[0, 1], record_every=40)
    assert h.steps == [40, 80, 100] and h.x0.shape == (3, 2, 1) and h.trajectory.shape == (3, 2, 1, 6)
    torch.testing.assert_close(h.trajectory[-1], h.x.float())
    torch.testing.assert_close(h.velocity[1], (h.x0[1] - h.x0[0]) / 40)
    torch.testing.assert_close(h.max_abs[-1], h.x[..., 1:].abs().amax(-1))


def test_the_cli_runs_end_to_end_and_writes_a_run_folder(capsys, tmp_path):
    code = main(["toys", "hills", "--dims", "3", "6", "--eps", "0.0025", "0.01", "--steps", "60", "--seeds", "2",
                 "--record-every", "20", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.count("0.0025") >= 2 and "x0 end" in out
    run = list_runs()[-1]
    assert run.kind == "toys-hills" and run.state == "finished" and run.config["dims"] == [3, 6]
    summary = json.loads((run.path / "summary.json").read_text())
    assert [(r["dim"], r["eps"]) for r in summary["settings"]] == [(3, 0.0025), (3, 0.01), (6, 0.0025), (6, 0.01)]
    assert summary["settings"][0]["seeds"] == [0, 1] and len(summary["settings"][0]["demons"][0]["j"]) == 3
    assert len(run.metrics) == 3 * 4 and {"x0_mean", "participation_std", "step_share_mean"} <= set(run.metrics[0])
    for name in ("hills.png", "coordinates.png", "monitors.png", "history_n3.npz", "history_n6.npz", "summary.json"):
        assert (run.path / name).stat().st_size > 0 and (tmp_path / "out" / name).exists()
    assert {"hess_lmax_mean", "grad_share_x0_mean"} <= set(run.metrics[0])
    assert set(summary["settings"][0]["monitors"]["lead"]) == {"grad_share_x0", "grad_top_share", "hess_lmax"}
    assert "warned" in out


def test_the_cli_refuses_bad_settings(capsys):
    assert main(["toys", "hills", "--dims", "0"]) == 1
    assert "dims" in capsys.readouterr().err
    assert main(["toys", "hills", "--steps", "0"]) == 1
    assert "steps = 0" in capsys.readouterr().err


# -- the monitors' view of a run -----------------------------------------------------------------

def test_the_monitors_read_the_gradient_shares_and_the_exact_top_eigenvalue():
    from alignlab.toys.hills_monitors import monitor_records

    history = simulate(4, [0.05], 40, 0.2, [0, 1], 20)
    land, _ = make_landscape(4, [0, 1])
    records = monitor_records(land, history, [0.05], iterations=200)
    eps = torch.tensor([0.05], dtype=torch.float64)
    for r in range(len(history.steps)):
        for s in range(2):
            x = history.trajectory[r, s:s + 1].double()                         # (1, 1, 5)
            one = Landscape(land.k[s:s + 1], land.k0[s:s + 1], land.s[s:s + 1], land.c[s:s + 1])
            hessian = torch.autograd.functional.hessian(lambda v: hills_loss(one, v, eps)[0].sum(), x).reshape(5, 5)
            values = torch.linalg.eigvalsh(hessian)
            top = values[values.abs().argmax()]
            assert records["hess_lmax"][r, s, 0] == pytest.approx(float(top), rel=1e-3)
            g = hills_grad(land, history.trajectory[r].double(), eps)[2][s, 0]
            assert records["grad_share_x0"][r, s, 0] == pytest.approx(float(g[0] ** 2 / (g ** 2).sum()))
            assert records["grad_top_share"][r, s, 0] == pytest.approx(float((g[1:] ** 2).max() / (g ** 2).sum()))


def test_stall_and_alarm_rules_on_hand_made_series():
    from alignlab.toys.hills_monitors import alarm_steps, first_step, lead_summary, stall_steps

    steps = list(range(10, 210, 10))                                            # 20 records
    R = len(steps)
    velocity = torch.full((R, 2, 1), 0.2, dtype=torch.float64)
    velocity[12:, 0] = 0.05                                                     # seed 0 stalls at step 130
    x0 = velocity.cumsum(0) * 10
    history = History(steps, x0, velocity, *(torch.zeros(R, 2, 1, dtype=torch.float64) for _ in range(5)),
                      trajectory=torch.zeros(R, 2, 1, 3), x=torch.zeros(2, 1, 3))
    assert stall_steps(history, 0) == [130, None]
    lmax = torch.full((R, 2, 1), 1.0, dtype=torch.float64)
    lmax[8:, 0] = 4.0                                                           # seed 0: 4x its early value at 90
    records = {"grad_share_x0": torch.ones(R, 2, 1, dtype=torch.float64),
               "grad_top_share": torch.full((R, 2, 1), 0.01, dtype=torch.float64), "hess_lmax": -lmax}
    alarms = alarm_steps(records, steps, 0)
    assert alarms == {"grad_share_x0": [None, None], "grad_top_share": [None, None], "hess_lmax": [90, None]}
    lead = lead_summary(history, records, 0)["lead"]["hess_lmax"]
    assert lead == {"seeds_with_stall_and_alarm": 1, "warned_before_stall": 1, "median_lead": 40.0}
    assert first_step(torch.tensor([[False, True], [True, True]]), [5, 6]) == [6, 5]
