"""Every kind of feedback grounds to the choice sets of the spec; the log-likelihood matches hand-derived values."""

import dataclasses
import math

import pytest

from alignlab.data import (
    Critique, Demonstration, Edit, KWayChoice, PreferencePair, Ranking, Rating, SpanJudgement, Stop, Thumbs,
)
from alignlab.feedback import DEFAULT_BETAS, UNUSED_REASONS, Choice, RatingTarget, choice_log_likelihood, to_choices

P = "prompt"


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def only_choice(record, **kwargs):
    out = to_choices([record], **kwargs)
    assert len(out.choices) == 1 and not out.targets and not out.unused
    return out.choices[0]


def test_a_pair_is_chosen_over_rejected_with_its_margin():
    c = only_choice(PreferencePair(P, "good", "bad", 0.5, annotator="ann"))
    assert c == Choice("pair", P, ("good", "bad"), 0, 1.0, margin=0.5, annotator="ann")
    # Bradley-Terry with a margin: log sigmoid(r_w - r_l - m) = log sigmoid(1 - 0 - 0.5)
    assert choice_log_likelihood([1.0, 0.0], c) == pytest.approx(log_sigmoid(0.5))
    assert choice_log_likelihood([1.0, 0.0], c) == pytest.approx(-0.47407698418010663)
    assert only_choice(PreferencePair(P, "a", "b")).margin == 0.0


def test_a_ranking_is_plackett_luce_with_ties_never_compared():
    # b is best, a and c tie second, d is last.
    choices = to_choices([Ranking(P, ["a", "b", "c", "d"], [2, 1, 2, 3])]).choices
    assert [(c.options, c.chosen) for c in choices] == [
        (("b", "a", "c", "d"), 0),  # b chosen from everything worse than it
        (("a", "d"), 0),  # a chosen from d only: c ties with it
        (("c", "d"), 0),
    ]
    reward = {"a": 0.5, "b": 1.0, "c": 0.0, "d": -1.0}
    total = sum(choice_log_likelihood([reward[o] for o in c.options], c) for c in choices)
    e = math.exp
    expected = (1.0 - math.log(e(1.0) + e(0.5) + e(0.0) + e(-1.0))) + (0.5 - math.log(e(0.5) + e(-1.0))) \
        + (0.0 - math.log(e(0.0) + e(-1.0)))
    assert total == pytest.approx(expected)


def test_a_strict_ranking_of_two_is_one_pair():
    choices = to_choices([Ranking(P, ["x", "y"], [2, 1])]).choices
    assert [(c.options, c.chosen) for c in choices] == [(("y", "x"), 0)]


def test_a_kway_choice_is_one_softmax_over_all_options():
    c = only_choice(KWayChoice(P, ["x", "y", "z"], 2))
    assert (c.options, c.chosen, c.reference) == (("x", "y", "z"), 2, False)
    assert choice_log_likelihood([0.0, 1.0, 2.0], c) == pytest.approx(2 - math.log(1 + math.e + math.e ** 2))
    assert choice_log_likelihood([0.0, 1.0, 2.0], c) == pytest.approx(-0.4076059644443804)


def test_thumbs_compare_the_completion_with_the_reference_point():
    up = only_choice(Thumbs(P, "c", True))
    down = only_choice(Thumbs(P, "c", False))
    assert (up.options, up.chosen, up.reference, up.beta) == (("c",), 0, True, 0.5)
    assert (down.chosen, down.reference) == (-1, True)
    # beta 0.5, reward 1, reference 0: up = log sigmoid(0.5), down = log sigmoid(-0.5)
    assert choice_log_likelihood([1.0], up) == pytest.approx(log_sigmoid(0.5))
    assert choice_log_likelihood([1.0], down) == pytest.approx(log_sigmoid(-0.5))
    assert choice_log_likelihood([1.0], down, reference_reward=1.0) == pytest.approx(math.log(0.5))


def test_an_edit_prefers_after_over_before():
    c = only_choice(Edit(P, "old text", "new text"))
    assert (c.options, c.chosen, c.beta) == (("new text", "old text"), 0, 1.0)


def test_a_stop_prefers_the_prefix_over_the_full_completion_and_nothing_else():
    c = only_choice(Stop(P, "Fine so far. Then nonsense.", 12))
    assert (c.options, c.chosen, c.beta) == (("Fine so far.", "Fine so far. Then nonsense."), 0, 0.5)
    assert only_choice(Stop(P, "abc", 0)).options == ("", "abc")  # stopped before a word: saying nothing wins


def test_a_bad_span_is_removed_for_the_preferred_option_and_a_good_span_kept():
    text = "Keep this. Drop this. End."
    bad = only_choice(SpanJudgement(P, text, 11, 22, "bad"))
    good = only_choice(SpanJudgement(P, text, 11, 22, "good"))
    assert bad.options == ("Keep this. End.", text) and bad.chosen == 0
    assert good.options == (text, "Keep this. End.") and good.chosen == 0


def test_a_demonstration_is_preferred_over_each_policy_sample_weighted_to_count_once():
    demo = Demonstration(P, "written by hand")
    samples = {P: ["sample one", "written by hand", "sample two"], "other": ["x"]}
    choices = to_choices([demo], policy_samples=samples).choices
    assert [(c.options, c.chosen, c.weight) for c in choices] == [
        (("written by hand", "sample one"), 0, 0.5), (("written by hand", "sample two"), 0, 0.5)]


def test_a_rating_becomes_a_regression_target_on_minus_one_to_one():
    out = to_choices([Rating(P, "c", 4.0), Rating(P, "c", 7.0), Rating(P, "c", 1.0),
                      Rating(P, "c", 2.5, scale_min=0.0, scale_max=10.0, annotator="ann")])
    assert not out.choices
    assert [t.value for t in out.targets] == pytest.approx([0.0, 1.0, -1.0, -0.5])
    assert out.targets[3] == RatingTarget("rating", P, "c", -0.5, 1.0, annotator="ann")


def test_records_without_signal_are_counted_per_kind():
    out = to_choices([
        Critique(P, "c", "too long"),
        Demonstration(P, "demo"),  # no policy samples given
        Demonstration(P, "demo"),
        PreferencePair(P, "same", "same"),
        Edit(P, "same", "same"),
        Ranking(P, ["a", "b"], [1, 1]),
        Stop(P, "abc", 3),
    ])
    assert out.choices == [] and out.targets == []
    assert out.unused == {"critique": 1, "demonstration": 2, "pair": 1, "edit": 1, "ranking": 1, "stop": 1}
    assert set(out.unused) <= set(UNUSED_REASONS)


def test_a_batch_may_mix_every_kind():
    records = [PreferencePair(P, "a", "b"), Ranking(P, ["a", "b", "c"], [1, 2, 3]), KWayChoice(P, ["a", "b"], 1),
               Thumbs(P, "a", True), Rating(P, "a", 3), Demonstration(P, "d"), Edit(P, "a", "b"), Stop(P, "a b", 1),
               SpanJudgement(P, "a b", 0, 1, "good"), Critique(P, "a", "t")]
    out = to_choices(records, policy_samples={P: ["s"]})
    assert [c.kind for c in out.choices] == ["pair", "ranking", "ranking", "kway", "thumbs", "demonstration",
                                             "edit", "stop", "span"]
    assert len(out.targets) == 1 and out.unused == {"critique": 1}


def test_betas_default_per_kind_and_can_be_overridden():
    assert DEFAULT_BETAS["pair"] == 1.0 and DEFAULT_BETAS["thumbs"] == 0.5
    out = to_choices([PreferencePair(P, "a", "b"), Thumbs(P, "c", True)], betas={"thumbs": 2.0})
    assert [c.beta for c in out.choices] == [1.0, 2.0]
    with pytest.raises(ValueError, match="unknown kind 'thumb'"):
        to_choices([], betas={"thumb": 1.0})
    with pytest.raises(ValueError, match="positive finite"):
        to_choices([], betas={"pair": 0.0})
    with pytest.raises(TypeError, match="not a feedback record"):
        to_choices([{"prompt": "p"}])


@pytest.mark.parametrize("reference", [False, True])
def test_the_choice_probabilities_sum_to_one_over_the_set(reference):
    rewards = [0.3, -1.2, 2.0]
    base = Choice("kway", P, ("x", "y", "z"), 0, 0.7, reference=reference, margin=0.0)
    outcomes = [0, 1, 2] + ([-1] if reference else [])
    total = sum(math.exp(choice_log_likelihood(rewards, dataclasses.replace(base, chosen=k), 0.4)) for k in outcomes)
    assert total == pytest.approx(1.0)


def test_the_log_likelihood_is_stable_for_large_rewards_and_checks_its_inputs():
    c = Choice("pair", P, ("a", "b"), 0, 1.0)
    assert choice_log_likelihood([1000.0, 0.0], c) == pytest.approx(0.0)
    assert choice_log_likelihood([0.0, 1000.0], c) == pytest.approx(-1000.0)
    with pytest.raises(ValueError, match="one reward per option"):
        choice_log_likelihood([1.0], c)
    with pytest.raises(ValueError, match="no reference point"):
        choice_log_likelihood([1.0, 0.0], dataclasses.replace(c, chosen=-1))
