"""Simulated labelers: Boltzmann-rational around a gold function, calibrated to human agreement, reproducible."""

import itertools
import math
import zlib

import numpy as np
import pytest

from alignlab.data import (
    Critique, Demonstration, Edit, KWayChoice, PreferencePair, Ranking, Rating, SpanJudgement, Stop, Thumbs,
    record_from_dict,
)
from alignlab.feedback import SimulatedLabeler, agreement_rate, expected_agreement

P = "Write about the sea."


def hashed_gold(prompt, response):
    """A gold score spread smoothly over 0..4, as a trained judge's would be."""
    return (zlib.crc32(f"{prompt}|{response}".encode()) % 10_000) / 2_500


def word_gold(prompt, response):
    """+1 per "good", -2 per "bad", +0.01 per word."""
    words = [w.strip(".!?,") for w in response.split()]
    return words.count("good") - 2.0 * words.count("bad") + 0.01 * len(words)


RESPONSES = {f"prompt {i}": [f"response {i}.{j}" for j in range(6)] for i in range(300)}
PAIRS = [(p, a, b) for p, rs in RESPONSES.items() for a, b in itertools.combinations(rs, 2)]  # 4,500


def test_two_calibrated_labelers_agree_three_quarters_of_the_time():
    a = SimulatedLabeler.calibrated(hashed_gold, RESPONSES, target_agreement=0.75, seed=1)
    b = SimulatedLabeler.calibrated(hashed_gold, RESPONSES, target_agreement=0.75, seed=2)
    assert a.beta == pytest.approx(b.beta) and a.name != b.name
    assert abs(agreement_rate(a, b, PAIRS) - 0.75) < 0.03


def test_calibration_hits_the_expected_agreement_and_a_higher_target_needs_a_higher_beta():
    differences = [hashed_gold(p, x) - hashed_gold(p, y) for p, x, y in PAIRS]
    low = SimulatedLabeler.calibrated(hashed_gold, RESPONSES, target_agreement=0.72)
    high = SimulatedLabeler.calibrated(hashed_gold, list(RESPONSES.items()), target_agreement=0.77)
    assert expected_agreement(low.beta, differences) == pytest.approx(0.72, abs=1e-6)
    assert expected_agreement(high.beta, differences) == pytest.approx(0.77, abs=1e-6)
    assert low.beta < high.beta
    assert expected_agreement(0.0, differences) == 0.5


def test_calibration_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="between 0.5"):
        SimulatedLabeler.calibrated(hashed_gold, RESPONSES, target_agreement=0.4)
    with pytest.raises(ValueError, match="no pairs"):
        SimulatedLabeler.calibrated(hashed_gold, {"p": ["only one"]})
    with pytest.raises(ValueError, match="tops out"):  # every pair a gold tie: agreement stays 0.5
        SimulatedLabeler.calibrated(lambda p, r: 1.0, RESPONSES)


def test_a_labeler_with_a_huge_beta_always_agrees_with_gold():
    sharp = SimulatedLabeler(hashed_gold, beta=1e9, seed=3)
    for prompt, a, b in PAIRS[:1000]:
        pair = sharp.compare(prompt, a, b)
        assert hashed_gold(prompt, pair.chosen) > hashed_gold(prompt, pair.rejected)
    rs = RESPONSES["prompt 0"]
    gold_order = sorted(range(6), key=lambda i: -hashed_gold("prompt 0", rs[i]))
    assert sharp.rank("prompt 0", rs).ranks == [gold_order.index(i) + 1 for i in range(6)]
    assert sharp.choose("prompt 0", rs).chosen == gold_order[0]
    assert agreement_rate(sharp, SimulatedLabeler(hashed_gold, beta=1e9, seed=4), PAIRS[:500]) == 1.0


def test_comparisons_follow_the_boltzmann_probability():
    labeler = SimulatedLabeler(word_gold, beta=0.8, seed=5)
    a, b = "good good", "good"  # gold gap 1.01
    wins = sum(labeler.compare(P, a, b).chosen == a for _ in range(6000)) / 6000
    assert wins == pytest.approx(1 / (1 + math.exp(-0.8 * 1.01)), abs=0.02)
    assert labeler.prefers(P, a, b) == pytest.approx(1 / (1 + math.exp(-0.8 * 1.01)))


def test_rankings_are_plackett_luce_samples():
    labeler = SimulatedLabeler(word_gold, beta=1.0, seed=6)
    options = ["good good", "good", "plain"]
    u = np.array([word_gold(P, o) for o in options])
    softmax = np.exp(u) / np.exp(u).sum()
    firsts = np.bincount([labeler.rank(P, options).ranks.index(1) for _ in range(6000)], minlength=3) / 6000
    assert firsts == pytest.approx(softmax, abs=0.02)
    chosen = np.bincount([labeler.choose(P, options).chosen for _ in range(6000)], minlength=3) / 6000
    assert chosen == pytest.approx(softmax, abs=0.02)


def test_thumbs_are_up_with_probability_sigmoid_of_gold_minus_reference():
    labeler = SimulatedLabeler(word_gold, beta=2.0, seed=7)
    ups = sum(labeler.thumbs(P, "good", reference=1.0).label for _ in range(6000)) / 6000
    assert ups == pytest.approx(1 / (1 + math.exp(-2.0 * 0.01)), abs=0.02)


def test_every_method_returns_a_valid_record_named_after_the_labeler():
    labeler = SimulatedLabeler(word_gold, beta=1.0, name="sim-a", seed=8)
    text = "The sea is good. The sea is bad. The sea is wide."
    made = [
        labeler.compare(P, "good", "bad"), labeler.rank(P, ["good", "bad", "plain"]),
        labeler.choose(P, ["good", "bad"]), labeler.thumbs(P, "good", 0.0), labeler.rate(P, "good"),
        labeler.demonstrate(P, ["good", "bad"]), labeler.span(P, text), labeler.critique(P, text),
        SimulatedLabeler(word_gold, beta=1e9, name="sim-a").edit(P, "bad", ["good", "bad"]),
        SimulatedLabeler(word_gold, beta=1e9, name="sim-a").stop(P, "good words then bad ones"),
    ]
    kinds = [PreferencePair, Ranking, KWayChoice, Thumbs, Rating, Demonstration, SpanJudgement, Critique, Edit, Stop]
    for record, kind in zip(made, kinds):
        assert isinstance(record, kind) and record.annotator == "sim-a"
        assert record_from_dict(record.to_dict()) == record  # passes validation again


def test_the_same_seed_gives_the_same_labels():
    def run(seed):
        labeler = SimulatedLabeler(word_gold, beta=0.5, seed=seed)
        return [labeler.compare(P, "good", "plain"), labeler.rank(P, ["a", "b", "c"]), labeler.rate(P, "good"),
                labeler.span(P, "One. Two good. Three bad.")]
    assert run(11) == run(11)
    assert any(run(11) != run(s) for s in (12, 13, 14))


def test_an_edit_goes_to_the_best_candidate_or_is_none_when_before_is_best():
    sharp = SimulatedLabeler(word_gold, beta=1e9)
    assert sharp.edit(P, "plain", ["bad", "good", "good good"]) == Edit(P, "plain", "good good",
                                                                           annotator=sharp.name)
    assert sharp.edit(P, "good good", ["bad", "good"]) is None
    assert sharp.edit(P, "plain", ["plain"]) is None  # an unchanged text is no edit


def test_a_stop_falls_on_the_word_boundary_before_things_go_bad():
    sharp = SimulatedLabeler(word_gold, beta=1e9)
    text = "good words here then bad bad"
    stop = sharp.stop(P, text)
    assert stop.stop_char == len("good words here then") and text[stop.stop_char] == " "
    assert sharp.stop(P, "good and fine words") is None  # every prefix is worse than the whole
    assert sharp.stop(P, "single") is None


def test_a_span_marks_the_sentence_that_matters_most():
    sharp = SimulatedLabeler(word_gold, beta=1e9)
    text = "The sea is wide. It is bad bad here. Waves come."
    span = sharp.span(P, text)
    assert (text[span.start:span.end], span.label) == ("It is bad bad here. ", "bad")
    text = "The sea is wide. It is good good here. Waves come."
    span = sharp.span(P, text)
    assert (text[span.start:span.end], span.label) == ("It is good good here. ", "good")


def test_ratings_are_a_noisy_monotone_map_onto_the_scale():
    sharp = SimulatedLabeler(word_gold, beta=1e9, center=0.0, spread=1.0)
    scores = [sharp.rate(P, t).score for t in ["bad bad", "bad", "plain", "good", "good good good"]]
    assert scores == sorted(scores) and scores[0] == 1.0 and scores[-1] == 7.0
    assert all(s.is_integer() for s in scores)
    assert sharp.rate(P, "plain").score == 4.0  # gold 0.01 sits at the centre: mid-scale
    fractional = sharp.rate(P, "good", scale=(0.0, 1.5))
    assert (fractional.scale_min, fractional.scale_max) == (0.0, 1.5) and not fractional.score.is_integer()
    noisy = SimulatedLabeler(word_gold, beta=0.5, seed=1)
    assert len({noisy.rate(P, "plain").score for _ in range(200)}) > 2


def test_a_critique_names_the_gold_band():
    sharp = SimulatedLabeler(word_gold, beta=1e9, center=0.0, spread=1.0)
    assert "'poor' band" in sharp.critique(P, "bad").text
    assert "'average' band" in sharp.critique(P, "plain").text
    assert "'excellent' band" in sharp.critique(P, "good good").text


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="positive finite"):
        SimulatedLabeler(word_gold, beta=0)
    with pytest.raises(ValueError, match="at least one pair"):
        agreement_rate(SimulatedLabeler(word_gold), SimulatedLabeler(word_gold), [])
    with pytest.raises(ValueError, match="at least one candidate"):
        SimulatedLabeler(word_gold).demonstrate(P, [])
