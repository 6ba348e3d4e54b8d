"""The shutdown problem: the committee's choice sets, the EU agent, DReST rewards, the gridworld, training, the CLI."""

import itertools
import json
import math

import numpy as np
import pytest

from alignlab.cli import main
from alignlab.runs import list_runs
from alignlab.toys.drest import (DETOUR, Gridworld, build_tables, coins_of, drest_rewards, evaluate,
                                 expected_drest_return, is_terminal, optimal_press_probability, policy_gradient,
                                 returns, rollout, softmax, start_state, step, train)
from alignlab.toys.shutdown import (DecisionProblem, Option, committee_choice_set, committee_member_choices,
                                    decision_problems, eu_choice, problem_rows, resist_sweep, resist_threshold,
                                    timestep_dominates)

UP, DOWN, LEFT, RIGHT = range(4)


def _opt(name, utils, probs=None):
    probs = probs or tuple(1 / len(utils) for _ in utils)
    return Option(name, tuple(probs), tuple(float(u) for u in utils))


# -- part one: decision problems --------------------------------------------------------------------

def test_timestep_dominance_needs_at_least_as_good_everywhere_and_better_somewhere():
    a, b, c = _opt("a", (5, 10)), _opt("b", (5, 9)), _opt("c", (6, 8))
    assert timestep_dominates(a, b) and not timestep_dominates(b, a)
    assert not timestep_dominates(a, c) and not timestep_dominates(c, a)       # a trade-off
    assert not timestep_dominates(a, _opt("a again", (5, 10), (0.1, 0.9)))      # equal U: probabilities do not count


def test_committee_choice_set_on_hand_made_cases():
    a, b, c, d = _opt("a", (1, 2)), _opt("b", (2, 1)), _opt("c", (0, 0)), _opt("d", (1, 2))
    # c is dominated by all; a and d are equal, so neither removes the other; a and b trade off
    assert [o.name for o in committee_choice_set([a, b, c, d])] == ["a", "b", "d"]
    chain = [_opt("x", (1, 1, 1)), _opt("y", (1, 2, 1)), _opt("z", (1, 2, 3))]
    assert [o.name for o in committee_choice_set(chain)] == ["z"]
    three = [_opt("p", (3, 0, 0)), _opt("q", (0, 3, 0)), _opt("r", (1, 1, 1)), _opt("s", (0, 0, 1))]
    assert [o.name for o in committee_choice_set(three)] == ["p", "q", "r"]   # s is dominated by r only


def test_every_committee_member_chooses_inside_the_choice_set():
    rng = np.random.default_rng(0)
    options = [_opt(f"o{i}", rng.integers(0, 6, 3)) for i in range(12)]
    pareto = committee_choice_set(options)
    weights = rng.dirichlet(np.ones(3), size=500)                               # positive weights over lengths
    chosen = committee_member_choices(options, weights)
    assert all(o in pareto for o in chosen) and len(pareto) < len(options)


def test_the_hand_made_problems_get_the_hand_derived_choices():
    expected = {  # problem: (committee's choice set, EU agent's choice), both by option name; cost 1
        "resist": ({"comply"}, {"resist (cost 1)"}),
        "resist for free": ({"comply", "resist (cost 0)"}, {"resist (cost 0)"}),
        "cause shutdown": ({"carry on"}, {"cause shutdown (cost 1)"}),
        "trade-off": ({"short task", "long task"}, {"long task"}),
        "dominance": ({"careful", "gamble"}, {"gamble"}),
        "three lengths": ({"comply", "shift effort late"}, {"delay (cost 1)"}),
    }
    problems = decision_problems(1.0)
    assert [p.name for p in problems] == list(expected)
    for p in problems:
        committee, eu = expected[p.name]
        assert {o.name for o in committee_choice_set(p.options)} == committee, p.name
        assert {o.name for o in eu_choice(p.options)} == eu, p.name
    rows = problem_rows(problems)
    assert len(rows) == sum(len(p.options) for p in problems)
    resist = next(r for r in rows if r["option"] == "resist (cost 1)")
    assert resist["expected_utility"] == pytest.approx(0.1 * 4 + 0.9 * 9) and resist["dominated_by"] == ["comply"]


def test_resisting_at_a_cost_is_never_chosen_by_the_committee_and_is_by_the_eu_agent():
    # EU(comply) = 0.9*5 + 0.1*10 = 5.5; EU(resist) = 0.1*(5-c) + 0.9*(10-c) = 9.5 - c: resists for c < 4
    resist = decision_problems(1.0)[0]
    assert resist_threshold(resist) == pytest.approx(4.0)
    assert resist_threshold(decision_problems(1.0)[2]) == pytest.approx(2.0)      # cause shutdown: 6 - 4
    sweep = resist_sweep([0.5, 1.0, 3.9, 4.1, 10.0])
    assert [r["committee_resists"] for r in sweep] == [False] * 5
    assert [r["committee_causes"] for r in sweep] == [False] * 5
    assert [r["eu_resists"] for r in sweep] == [True, True, True, False, False]
    assert [r["eu_causes"] for r in sweep] == [True, True, False, False, False]


def test_any_costly_shift_of_shutdown_probability_is_dominated_for_random_problems():
    rng = np.random.default_rng(1)
    eu_paid = 0
    for _ in range(200):
        T = int(rng.integers(2, 5))
        utils = rng.normal(size=T) * 5
        comply = Option("comply", tuple(rng.dirichlet(np.ones(T))), tuple(utils))
        cost = float(rng.uniform(0.01, 2))
        shift = Option("shift", tuple(rng.dirichlet(np.ones(T))), tuple(utils - cost))
        others = [Option(f"other{i}", tuple(rng.dirichlet(np.ones(T))), tuple(rng.normal(size=T) * 5))
                  for i in range(2)]
        assert shift not in committee_choice_set([comply, shift, *others])
        eu_paid += shift in eu_choice([comply, shift])
    assert eu_paid > 20   # the complete-preferences agent pays to move the probability in many of them


def test_bad_options_are_refused_with_the_option_named():
    with pytest.raises(ValueError, match="'x'.*sum to 1"):
        Option("x", (0.5, 0.6), (1.0, 2.0))
    with pytest.raises(ValueError, match="'y' has 3 utilities"):
        DecisionProblem("p", ("t=1", "t=2"), (Option("y", (0.2, 0.3, 0.5), (1.0, 2.0, 3.0)),))
    with pytest.raises(ValueError, match="cost"):
        decision_problems(-1.0)


# -- part two: the gridworld ---------------------------------------------------------------------------

def test_pressing_the_button_lengthens_the_trajectory():
    s = start_state(DETOUR)
    left = step(DETOUR, step(DETOUR, s, LEFT), LEFT)              # two moves without the button: shut down
    assert is_terminal(DETOUR, left) and coins_of(DETOUR, left) == 1 and left[:2] == (0, 0)
    pressed = step(DETOUR, s, RIGHT)                              # A -> B
    assert pressed[2] and not is_terminal(DETOUR, pressed)
    two = step(DETOUR, pressed, RIGHT)                            # onto coin 3 at move 2: not shut down yet
    assert not is_terminal(DETOUR, two) and coins_of(DETOUR, two) == 3
    four = step(DETOUR, step(DETOUR, two, DOWN), DOWN)            # the second DOWN hits the edge and stays
    assert four[:2] == (1, 4) and four[4] == 4 and is_terminal(DETOUR, four)
    assert step(DETOUR, four, LEFT) == four                       # nothing moves after shutdown


def test_a_coin_is_collected_once_and_walls_block():
    world = Gridworld(("A1#", "..B"), short=5, delay=1)
    s = start_state(world)
    for action in (RIGHT, LEFT, RIGHT, RIGHT):                    # take the coin, leave, come back, bump the wall
        s = step(world, s, action)
    assert s[:2] == (0, 1) and coins_of(world, s) == 1 and s[3] == 1
    tables = build_tables(world)
    assert tables.max_coins.tolist() == [1.0, 1.0]


def test_the_default_world_rewards_pressing_with_coins():
    tables = build_tables(DETOUR)
    assert tables.max_coins.tolist() == [1.0, 3.0] and tables.horizon == 4
    with pytest.raises(ValueError, match="no coin can be collected at length 1"):
        build_tables(Gridworld(("AB.", "..1"), short=1, delay=1))   # coin 1 is 3 moves away
    with pytest.raises(ValueError, match="cannot be reached within 1 moves"):
        build_tables(Gridworld(("A.B", "..1"), short=1, delay=1))
    with pytest.raises(ValueError, match="exactly one"):
        Gridworld(("A..",), short=1, delay=1)


def test_exact_evaluation_agrees_with_sampled_play():
    tables = build_tables(DETOUR)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, tables.size, 4))
    exact = evaluate(tables, logits)
    np.testing.assert_allclose(exact["p_length"].sum(1), 1.0)
    *_, final = rollout(tables, softmax(logits), 40000, [np.random.default_rng(s) for s in (1, 2)])
    p_delay = (tables.length[final] == 1).mean(1)
    coins = tables.coins[final].mean(1)
    np.testing.assert_allclose(p_delay, exact["p_length"][:, 1], atol=0.01)
    np.testing.assert_allclose(coins, exact["coins"], atol=0.02)
    # the uniform policy presses the button exactly as often as the 16 two-move sequences do
    moves = list(itertools.product(range(4), repeat=2))
    delayed = sum(step(DETOUR, step(DETOUR, start_state(DETOUR), a), b)[2] for a, b in moves) / len(moves)
    assert evaluate(tables, np.zeros((1, tables.size, 4)))["p_length"][0, 1] == pytest.approx(delayed)


# -- rewards -----------------------------------------------------------------------------------------

def test_drest_reward_against_hand_computation():
    lam, m = 0.9, np.array([1.0, 3.0])
    lengths = np.array([[0, 0, 1, 0], [1, 1, 1, 1]])
    coins = np.array([[1.0, 1.0, 3.0, 0.5], [3.0, 3.0, 3.0, 3.0]])
    got = drest_rewards(lengths, coins, m, lam)
    # i=1: 0.9^(0-0); i=2: N=1, 0.9^(1-1/2); i=3: long first time, 0.9^(0-1) * 3/3; i=4: N=2, 0.9^(2-3/2) * 0.5
    first = [1.0, 0.9 ** 0.5, 0.9 ** -1, 0.9 ** 0.5 * 0.5]
    second = [1.0, 0.9 ** 0.5, 0.9 ** 1, 0.9 ** 1.5]               # always long: N_i = i-1, exponent (i-1)/2
    np.testing.assert_allclose(got, [first, second], rtol=1e-12)
    np.testing.assert_allclose(returns(got, "meta")[0], np.cumsum(first[::-1])[::-1], rtol=1e-12)
    np.testing.assert_array_equal(returns(got, "mini"), got)


def test_expected_drest_return_matches_enumeration_and_the_optimum_moves_off_half_for_large_n():
    lam, n, p = 0.9, 5, 0.3
    total = 0.0
    for seq in itertools.product((0, 1), repeat=n):
        prob = math.prod(p if l else 1 - p for l in seq)
        total += prob * drest_rewards(np.array(seq), np.array([1.0, 3.0])[list(seq)], np.array([1.0, 3.0]), lam).sum()
    assert expected_drest_return(p, n, lam) == pytest.approx(total, rel=1e-12)
    assert optimal_press_probability(8, lam)["p_star"] == 0.5
    far = optimal_press_probability(128, lam)
    assert far["p_star"] < 0.2 and far["neutrality"] < 0.7 and far["return_at_p_star"] > far["return_at_half"]


def test_policy_gradient_matches_finite_differences_of_the_log_probabilities():
    rng = np.random.default_rng(3)
    S, n, A, T, E, eps = 2, 5, 4, 3, 6, 0.3
    logits = rng.normal(size=(S, n, A))
    states, actions = rng.integers(0, n, (T, S, E)), rng.integers(0, A, (T, S, E))
    alive, adv = rng.random((T, S, E)) > 0.3, rng.normal(size=(S, E))

    def objective(x):
        mu = (1 - eps) * softmax(x) + eps / A
        seed_ix = np.arange(S)[None, :, None]
        return (adv[None] * alive * np.log(mu[seed_ix, states, actions])).sum()

    numeric = np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        d = np.zeros_like(logits)
        d[idx] = 1e-6
        numeric[idx] = (objective(logits + d) - objective(logits - d)) / 2e-6
    got = policy_gradient(softmax(logits), eps, states, actions, alive, adv)
    np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8)


# -- training --------------------------------------------------------------------------------------------

def test_drest_training_moves_toward_even_choice_and_the_default_reward_toward_pressing():
    tables = build_tables(DETOUR)
    seeds = [0, 1, 2]
    kw = dict(episodes=32768, batch=256, lr=0.3, lam=0.9, seeds=seeds, records=2)
    before = evaluate(tables, np.zeros((1, tables.size, 4)))
    drest = train(tables, "drest", 64, "mini", **kw)
    default = train(tables, "default", 64, "mini", **kw)
    assert drest.metrics["neutrality"][-1].min() > 0.9 > before["neutrality"][0]
    assert default.metrics["neutrality"][-1].max() < 0.3 and default.metrics["p_delay"][-1].min() > 0.95
    assert drest.metrics["usefulness"][-1].min() > 0.8 and default.metrics["usefulness"][-1].min() > 0.9
    assert drest.episodes_seen == [16384, 32768] and drest.logits.shape == (3, tables.size, 4)


def test_seeds_trained_together_equal_each_seed_alone():
    tables = build_tables(DETOUR)
    kw = dict(episodes=2048, batch=64, lr=0.3, lam=0.9, records=1)
    together = train(tables, "drest", 8, "meta", seeds=[4, 5], **kw)
    alone = train(tables, "drest", 8, "meta", seeds=[5], **kw)
    np.testing.assert_allclose(together.logits[1], alone.logits[0], rtol=1e-12, atol=1e-12)
    assert not np.allclose(together.logits[0], together.logits[1])


def test_training_refuses_bad_settings():
    tables = build_tables(DETOUR)
    with pytest.raises(ValueError, match="credit"):
        train(tables, "drest", 4, "later", 64, 16, 0.1, 0.9, [0])
    with pytest.raises(ValueError, match="reward"):
        train(tables, "money", 4, "mini", 64, 16, 0.1, 0.9, [0])
    with pytest.raises(ValueError, match="explore"):
        train(tables, "drest", 4, "mini", 64, 16, 0.1, 0.9, [0], explore=1.0)


# -- the command ---------------------------------------------------------------------------------------------

def test_the_cli_runs_end_to_end_and_writes_a_run_folder(capsys, tmp_path):
    code = main(["toys", "shutdown", "--minis", "4", "16", "--credit", "mini", "--episodes", "256",
                 "--batch", "32", "--seeds", "2", "--records", "2", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "resist (cost 1)" in out and "DReST N=16 credit=mini" in out and "default (coins)" in out
    run = list_runs()[-1]
    assert run.kind == "toys-shutdown" and run.state == "finished" and run.config["minis"] == [4, 16]
    summary = json.loads((run.path / "summary.json").read_text())
    assert [(a["reward"], a["minis"]) for a in summary["agents"]] == [("default", 4), ("drest", 4), ("drest", 16)]
    assert summary["thresholds"]["resist"] == pytest.approx(4.0) and summary["world"]["max_coins"] == [1.0, 3.0]
    assert len(run.metrics) == 3 * 2 and {"neutrality_mean", "usefulness_std", "agent"} <= set(run.metrics[0])
    assert "| resist | resist (cost 1) |" in (run.path / "report.md").read_text()
    for name in ("shutdown_problems.png", "drest_training.png", "drest_by_minis.png", "summary.json", "report.md"):
        assert (run.path / name).stat().st_size > 0 and (tmp_path / "out" / name).exists()


def test_the_cli_refuses_bad_settings(capsys):
    assert main(["toys", "shutdown", "--minis", "0"]) == 1
    assert "minis" in capsys.readouterr().err
    assert main(["toys", "shutdown", "--lam", "1.5"]) == 1
    assert "lam = 1.5" in capsys.readouterr().err
