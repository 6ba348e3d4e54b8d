"""The arithmetic-chain task: chains drawn deterministically, the gold step judge on hand-made
responses, lossless steps, the simulated labelers' noise and cost, and the step records."""

import json
import random

import pytest

from alignlab.data import DataError, StepLabels, read_feedback, write_feedback
from alignlab.data.chains import (
    ADD_RANGE, MAX_VALUE, MULTIPLY_RANGE, OUTCOME_LABEL_COST, SHOT_CHAINS, START_RANGE, STEP_LABEL_COST, Chain,
    ChainJudgement, chain_of, chain_prompt, chain_record, judge_chain, label_outcome, label_process, make_chains,
)

# Start with 6, then + 4, then * 3, then - 5.  ->  10, 30, 25
CHAIN = chain_of(6, (("+", 4), ("*", 3), ("-", 5)))
RIGHT = "6 + 4 = 10\n10 * 3 = 30\n30 - 5 = 25\nAnswer: 25\n"


def test_make_chains_is_deterministic_distinct_and_keeps_numbers_small():
    chains = make_chains(300, seed=1, steps=(2, 4))
    assert chains == make_chains(300, seed=1, steps=(2, 4))
    assert make_chains(40, seed=1, steps=(2, 4)) == chains[:40]
    assert chains != make_chains(300, seed=2, steps=(2, 4))
    assert len({c.id for c in chains}) == 300 and len({c.instruction() for c in chains}) == 300
    assert not {c.instruction() for c in chains} & {s.instruction() for s in SHOT_CHAINS}
    assert {len(c.ops) for c in chains} == {2, 3, 4}
    assert {op for c in chains for op, _ in c.ops} == {"+", "-", "*"}
    for c in chains:
        assert START_RANGE[0] <= c.start <= START_RANGE[1]
        for op, number in c.ops:
            low, high = MULTIPLY_RANGE if op == "*" else ADD_RANGE
            assert low <= number <= high, (c.instruction(), op, number)
        assert all(1 <= v <= MAX_VALUE for v in c.values()), c.instruction()
    assert {len(c.ops) for c in make_chains(20, seed=0, steps=(3, 3))} == {3}
    assert {len(c.ops) for c in make_chains(50, seed=0)} == {2, 3}
    with pytest.raises(ValueError, match="1 <= fewest <= most"):
        make_chains(3, seed=0, steps=(3, 2))


def test_a_chain_reads_as_words_works_out_its_values_and_round_trips():
    shot = SHOT_CHAINS[1]
    assert shot.instruction() == "Start with 2, then * 3, then + 5, then - 7."
    assert shot.values() == [6, 11, 4] and shot.answer == 4
    assert shot.solution() == "2 * 3 = 6\n6 + 5 = 11\n11 - 7 = 4\nAnswer: 4\n"
    assert Chain.from_dict(json.loads(json.dumps(CHAIN.to_dict()))) == CHAIN
    assert chain_of(6, [["+", 4], ["*", 3], ["-", 5]]).id == CHAIN.id
    with pytest.raises(ValueError, match=r"ops\[0\] is \['/', 2\]"):
        Chain.from_dict({"id": "c", "start": 3, "ops": [["/", 2]]})


def test_the_prompt_is_worked_examples_then_the_problem():
    chain = chain_of(9, (("-", 2), ("+", 6)))
    assert chain_prompt(chain, shots=1) == (
        "Problem: Start with 6, then + 3, then - 4.\nSteps:\n"
        "6 + 3 = 9\n9 - 4 = 5\nAnswer: 5\n\n"
        "Problem: Start with 9, then - 2, then + 6.\nSteps:\n")
    assert chain_prompt(chain, shots=0) == "Problem: Start with 9, then - 2, then + 6.\nSteps:\n"
    assert chain_prompt(chain).count("Problem:") == 5
    with pytest.raises(ValueError, match="give 0..5"):
        chain_prompt(chain, shots=6)


def _judge(response: str) -> ChainJudgement:
    judgement = judge_chain(CHAIN, response)
    assert "".join(judgement.steps) == response and len(judgement.labels) == len(judgement.steps)
    return judgement


def test_a_right_response_is_right_at_every_step_and_in_outcome():
    j = _judge(RIGHT)
    assert j.labels == [True] * 4 and j.outcome and j.first_wrong is None and j.answer == 25 and j.well_formed
    # The sampler keeps the stop string and what its last token carried: it rides on the last step.
    j = _judge(RIGHT + "\nProblem: Start")
    assert j.labels == [True] * 4 and j.outcome and j.steps[-1] == "Answer: 25\n\nProblem: Start"
    j = _judge(RIGHT.rstrip("\n") + "\nProblem: Start with")
    assert j.labels == [True] * 4 and j.outcome


def test_a_slip_makes_that_step_wrong_and_the_carried_step_after_it_right():
    j = _judge("6 + 4 = 10\n10 * 3 = 31\n31 - 5 = 26\nAnswer: 26\n")
    assert j.labels == [True, False, True, True]
    assert not j.outcome and j.first_wrong == 1 and j.answer == 26 and j.well_formed
    # Going on from the true value after a slip is not carrying the written one forward; the
    # answer line copies the result written just before it, so it is right, and so is the outcome.
    j = _judge("6 + 4 = 10\n10 * 3 = 31\n30 - 5 = 25\nAnswer: 25\n")
    assert j.labels == [True, False, False, True] and j.outcome


@pytest.mark.parametrize("response, labels", [
    ("6 + 4 = 10\n10 + 3 = 13\n13 - 5 = 8\nAnswer: 8\n", [True, False, True, True]),      # added instead
    ("6 + 4 = 10\n10 * 4 = 40\n40 - 5 = 35\nAnswer: 35\n", [True, False, True, True]),     # wrong number
    ("6 + 4 = 10\n12 * 3 = 36\n36 - 5 = 31\nAnswer: 31\n", [True, False, True, True]),     # wrong start
    ("6 - 4 = 2\n2 * 3 = 6\n6 - 5 = 1\nAnswer: 1\n", [False, True, True, True]),
])
def test_a_wrong_operation_is_a_wrong_step(response, labels):
    j = _judge(response)
    assert j.labels == labels and not j.outcome and j.first_wrong == labels.index(False)


def test_a_response_that_stops_early_has_right_steps_and_a_wrong_outcome():
    j = _judge("6 + 4 = 10\n10 * 3 = 30\n30 - 5 = 25\n")
    assert j.labels == [True, True, True] and not j.outcome and j.first_wrong is None and j.answer is None
    assert not j.well_formed
    j = _judge("6 + 4 = 10\n\n")
    assert j.labels == [True] and not j.outcome


def test_extra_and_garbage_lines_are_wrong_steps():
    j = _judge(RIGHT + "So the answer is 25.\n")
    assert j.labels == [True, True, True, True, False] and not j.outcome and j.first_wrong == 4
    j = _judge(RIGHT + "Answer: 25\n")
    assert j.labels == [True, True, True, True, False] and not j.outcome
    j = _judge("6 + 4 = 10\nlet me think\n30 - 5 = 25\nAnswer: 25\n")
    # The unreadable line is wrong; the true value (30) is carried past it.
    assert j.labels == [True, False, True, True] and j.outcome and not j.well_formed
    assert _judge("\n6 + 4 = 10\n").labels == [False, False]  # a blank first line takes step 0's place
    # A line too many before a right answer: the lines after it are out of place and the outcome is wrong.
    j = _judge("6 + 4 = 10\n6 + 4 = 10\n10 * 3 = 30\n30 - 5 = 25\nAnswer: 25\n")
    assert j.labels == [True, False, False, False, False] and j.answer == 25 and not j.outcome


def test_the_answer_can_be_right_by_a_wrong_path():
    j = _judge("6 + 4 = 10\nAnswer: 25\n")
    assert j.labels == [True, False] and j.outcome and j.first_wrong == 1 and not j.well_formed


def test_times_signs_minus_signs_and_spacing_are_read():
    assert _judge("6+4=10\n10 × 3 = 30\n30 − 5 = 25\nAnswer:25\n").labels == [True] * 4
    assert _judge("6 + 4 = 10\n10 x 3 = 30\n  30 -   5 = 25\nAnswer: 25").labels == [True] * 4
    assert _judge("6 + 4 = 10\n10 / 3 = 30\n").labels == [True, False]


def test_whitespace_is_never_a_wrong_step():
    j = _judge(RIGHT + "  \n\t")
    assert len(j.steps) == 4 and j.labels == [True] * 4 and j.outcome
    assert len(_judge("6 + 4 = 10\n  \n10 * 3 = 30\n").steps) == 2  # a line of spaces stays with the one before
    assert _judge("\n").labels == [False] and _judge("").steps == [] and not _judge("").outcome


def test_steps_are_lossless_on_any_text():
    rng = random.Random(0)
    alphabet = list("0123456789 +-*x×=\n") + ["Answer: ", "\n\n", "\nProblem:"]
    for _ in range(500):
        _judge("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))))


def test_a_noiseless_step_labeler_reproduces_gold_up_to_the_first_wrong_and_stops():
    slip = _judge("6 + 4 = 10\n10 * 3 = 31\n31 - 5 = 26\nAnswer: 26\n")
    labels, cost = label_process(slip, random.Random(0), noise=0.0)
    assert labels == [True, False, None, None] and cost == 2 * STEP_LABEL_COST
    labels, cost = label_process(_judge(RIGHT), random.Random(0), noise=0.0)
    assert labels == [True] * 4 and cost == 4 * STEP_LABEL_COST
    labels, cost = label_process(_judge(RIGHT), random.Random(0), noise=1.0)
    assert labels == [False, None, None, None] and cost == STEP_LABEL_COST
    assert label_process(_judge(""), random.Random(0)) == ([], 0.0)
    with pytest.raises(ValueError, match="noise is 1.5"):
        label_process(slip, random.Random(0), noise=1.5)


def test_labeler_noise_flips_labels_at_its_rate():
    right, draws = _judge(RIGHT), 4000
    rng = random.Random(7)
    runs = [label_process(right, rng, noise=0.5) for _ in range(draws)]
    # Each step is flipped (to wrong) half the time and the labeler stops there: the first label is
    # wrong with p 0.5 and the expected number judged is 1 + 1/2 + 1/4 + 1/8 = 1.875.
    assert sum(labels[0] is False for labels, _ in runs) / draws == pytest.approx(0.5, abs=0.04)
    assert sum(cost for _, cost in runs) / draws == pytest.approx(1.875 * STEP_LABEL_COST, abs=0.08)
    for noise in (0.1, 0.5):
        flips = sum(label_outcome(right, rng, noise)[0] is False for _ in range(draws)) / draws
        assert flips == pytest.approx(noise, abs=0.04)
    a, b = random.Random(3), random.Random(3)
    assert [label_process(right, a, 0.3) for _ in range(20)] == [label_process(right, b, 0.3) for _ in range(20)]


def test_an_outcome_label_costs_more_than_a_step_and_less_than_a_whole_response_of_steps():
    assert STEP_LABEL_COST < OUTCOME_LABEL_COST < 4 * STEP_LABEL_COST
    assert label_outcome(_judge(RIGHT), random.Random(0), noise=0.0) == (True, OUTCOME_LABEL_COST)
    assert label_outcome(_judge("6 + 4 = 10\n"), random.Random(0), noise=0.0) == (False, OUTCOME_LABEL_COST)


def test_step_records_round_trip_through_a_feedback_file(tmp_path):
    slip = _judge("6 + 4 = 10\n10 * 3 = 31\n31 - 5 = 26\nAnswer: 26\n\nProblem:")
    labels, _ = label_process(slip, random.Random(0), noise=0.0)
    records = [chain_record(CHAIN, _judge(RIGHT), annotator="gold"), chain_record(CHAIN, slip, labels)]
    assert isinstance(records[1], StepLabels) and records[1].response == "".join(slip.steps)
    assert records[1].labels == [True, False, None, None] and records[1].prompt == chain_prompt(CHAIN)
    assert records[1].meta["gold_labels"] == [True, False, True, True] and records[1].meta["gold_outcome"] is False
    path = tmp_path / "steps.jsonl"
    write_feedback(path, records)
    back = read_feedback(path).records
    assert back == records and Chain.from_dict(back[1].meta["chain"]) == CHAIN
    with pytest.raises(DataError, match="the response is empty"):
        chain_record(CHAIN, _judge(""))
