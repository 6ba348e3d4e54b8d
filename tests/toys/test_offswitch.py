"""The off-switch game against its closed form and quadrature, and the assistance game's policies."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from alignlab.cli import main
from alignlab.toys import offswitch as O


def _by_trapezoid(mu, sigma, beta):
    """The same expectation by another method: the trapezoid rule on a fine grid (the rational
    human's step placed on a grid point)."""
    u = np.concatenate([np.linspace(mu - 12 * sigma, 0.0, 400_001), np.linspace(0.0, mu + 12 * sigma, 400_001)[1:]])
    u = np.sort(u[(u >= mu - 12 * sigma) & (u <= mu + 12 * sigma)])
    allow = (u >= 0).astype(float) if beta == 0 else 1 / (1 + np.exp(-u / beta))
    if beta == 0:
        allow[u == 0] = 0.5  # the step's midpoint: the trapezoid rule's value at a jump
    return float(np.trapezoid(u * allow * stats.norm(mu, sigma).pdf(u), u)) - max(mu, 0.0)


@pytest.mark.parametrize("mu", [-1.0, -0.25, 0.0, 0.25, 1.5])
@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.1, 1.0, 4.0])
def test_the_incentive_matches_numerical_integration(mu, sigma, beta):
    assert O.incentive_exact(mu, sigma, beta) == pytest.approx(_by_trapezoid(mu, sigma, beta), abs=1e-8)


def test_a_rational_human_is_always_worth_deferring_to_and_more_so_the_less_the_robot_knows():
    for mu in (-1.0, 0.0, 0.3, 2.0):
        values = [O.incentive_closed_form(mu, s) for s in (0.01, 0.1, 0.5, 1, 2, 5)]
        assert all(v >= 0 for v in values) and values == sorted(values)
    assert O.incentive_closed_form(0.0, 1.0) == pytest.approx(1 / math.sqrt(2 * math.pi))  # E[max(U,0)], U ~ N(0,1)


def test_a_noisy_human_is_worth_deferring_to_only_above_sigma_squared_2_mu_beta():
    for mu, beta in [(0.25, 0.5), (1.0, 0.3), (-0.5, 2.0)]:
        edge = O.defer_boundary(mu, beta)
        assert edge == pytest.approx(math.sqrt(2 * abs(mu) * beta))
        assert abs(O.incentive_exact(mu, edge, beta)) < 1e-9
        assert O.incentive_exact(mu, 0.8 * edge, beta) < 0 < O.incentive_exact(mu, 1.25 * edge, beta)
    # less rational humans are worth less: the incentive falls as beta grows
    values = [O.incentive_exact(0.25, 1.0, b) for b in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)]
    assert values == sorted(values, reverse=True)


def test_the_played_games_agree_with_the_exact_incentive_and_the_closed_form():
    rows = O.incentive_grid([0.25, 1.0], [0.25, 1.0, 4.0], [0.0, 0.5, 2.0], 40_000, seed=3)
    agreement = O.grid_agreement(rows)
    assert agreement["max_z_exact"] < 4.5  # 18 cells: sampling error only
    rational = [r for r in rows if r["beta"] == 0]
    assert all(abs(r["played"] - r["closed_form"]) < 4.5 * r["stderr"] + 1e-9 for r in rational)
    assert agreement["max_abs_diff_closed_form"] == max(abs(r["played"] - r["closed_form"]) for r in rational)


def test_asking_when_it_is_worth_it_beats_never_and_always_asking():
    result = O.play_assistance(O.AssistanceGame(), 3000, seed=1)
    worth = result["policies"]["ask when worth it"]
    assert worth["minus never ask"]["ci"][0] > 0 and worth["minus always ask"]["ci"][0] > 0
    assert 0 < worth["questions"] < 1
    assert result["policies"]["never ask"]["questions"] == 0 and result["policies"]["always ask"]["questions"] == 1
    bands = [b["questions"] for b in result["asks_by_uncertainty"]]
    assert bands == sorted(bands) and bands[-1] > bands[0]  # it asks when it is unsure
    assert all(p["reward"] <= result["oracle_reward"] + 1e-12 for p in result["policies"].values())
    costly = O.play_assistance(O.AssistanceGame(ask_cost=100.0), 500, seed=1)
    assert costly["policies"]["ask when worth it"]["questions"] == 0
    assert costly["policies"]["ask when worth it"]["reward"] == pytest.approx(costly["policies"]["never ask"]["reward"])


def test_the_answers_posterior_is_the_bayes_update_of_the_particles():
    u = np.array([[[0.0, 1.0], [1.0, 0.0]]])  # one episode, two particles, two options
    p = O._answer_probabilities(u, 1.0)
    assert p[0, 0] == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)])
    assert O._answer_probabilities(u, 0.0)[0, 1].tolist() == [1.0, 0.0]


def test_the_command_prints_the_grid_and_the_closed_form_difference_as_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALIGNLAB_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["toys", "offswitch", "--format", "json", "--games", "4000", "--episodes", "300",
                 "--sigmas", "0.5", "2", "--betas", "0", "1", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["grid"]) == 2 * 2 * 2 and summary["agreement"]["max_abs_diff_closed_form"] < 0.1
    assert {"never ask", "always ask", "ask when worth it"} == set(summary["assistance"]["policies"])
    for name in ("summary.json", "report.md", "offswitch.png", "assistance.png"):
        assert (tmp_path / "out" / name).is_file()
    assert main(["toys", "offswitch", "--sigmas", "0", "--games", "10"]) == 1
    assert "sigmas must be > 0" in capsys.readouterr().err
