"""Steps as data: lossless splitting, the step-level record (TRL's stepwise-supervision columns),
its clear errors, and the round trip through TRL's layout."""

import json

import pytest

from alignlab.data import DataError, StepLabels, read_feedback, write_feedback
from alignlab.data.steps import first_wrong_step, judged_prefix, outcome_label, split_steps
from alignlab.feedback.choices import to_choices

TEXT = "First, take 3 apples. Then add 4 more!  So there are 7.\nCheck: 3 + 4 = 7.\n\nDone.\n"


@pytest.mark.parametrize("by, expected", [
    ("lines", ["First, take 3 apples. Then add 4 more!  So there are 7.\n", "Check: 3 + 4 = 7.\n\n", "Done.\n"]),
    ("paragraphs", ["First, take 3 apples. Then add 4 more!  So there are 7.\nCheck: 3 + 4 = 7.\n\n", "Done.\n"]),
    ("sentences", ["First, take 3 apples. ", "Then add 4 more!  ", "So there are 7.\n", "Check: 3 + 4 = 7.\n\n",
                   "Done.\n"]),
])
def test_splitting_is_lossless_and_keeps_whitespace_with_the_step_before(by, expected):
    steps = split_steps(TEXT, by)
    assert steps == expected and "".join(steps) == TEXT


def test_marks_split_where_a_person_put_them_and_are_removed():
    assert split_steps("a = 1␞b = 2␞␞c = 3", "marks") == ["a = 1", "b = 2", "c = 3"]
    assert split_steps("x || y", "marks", mark=" || ") == ["x", "y"]
    assert split_steps("one step", "lines") == ["one step"]
    assert split_steps("  lead\ntail", "lines") == ["  lead\n", "tail"]
    with pytest.raises(ValueError, match="use one of lines, sentences, paragraphs, marks"):
        split_steps(TEXT, "words")


def test_first_wrong_step_labels_the_steps_before_right_and_leaves_the_rest_unjudged():
    steps = split_steps(TEXT, "lines")
    record = StepLabels.first_wrong("Add the apples.", steps, 1)
    assert record.labels == [True, False, None] and record.response == TEXT
    assert first_wrong_step(record) == 1 and outcome_label(record) is False
    assert judged_prefix(record).completions == steps[:2]
    right = StepLabels.first_wrong("Add the apples.", steps, None)
    assert right.labels == [True, True, True] and outcome_label(right) is True and first_wrong_step(right) is None
    assert outcome_label(StepLabels("p", ["a", "b"], [True, None])) is None
    with pytest.raises(DataError, match="first wrong step 3 is outside the 3 steps"):
        StepLabels.first_wrong("p", steps, 3)
    with pytest.raises(DataError, match=r"'labels\[0\]' is null .* but a later step is judged"):
        judged_prefix(StepLabels("p", ["a", "b"], [None, True]))


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "completions": [], "labels": []}, "'completions' must be a non-empty list"),
    ({"prompt": "p", "completions": ["a", ""], "labels": [True, True]}, r"'completions\[1\]' must be a non-empty"),
    ({"prompt": "p", "completions": ["a", "b"], "labels": [True]}, "'labels' has 1 entries but 'completions' has 2"),
    ({"prompt": "p", "completions": ["a"], "labels": [1]}, r"'labels\[0\]' is 1; a step is labelled true"),
    ({"prompt": "p", "completions": ["a"], "labels": [None]}, "judges no step"),
])
def test_bad_step_records_name_the_field(tmp_path, row, message):
    path = tmp_path / "steps.jsonl"
    path.write_text(json.dumps({"kind": "steps", **row}) + "\n")
    with pytest.raises(DataError, match=message) as err:
        read_feedback(path)
    assert "line 1" in str(err.value)


def test_trls_stepwise_layout_reads_and_writes_with_its_newline_separator(tmp_path):
    # TRL's rows: no "kind", steps without their separator, one boolean per step
    trl = tmp_path / "trl.jsonl"
    trl.write_text(json.dumps({"prompt": "2 + 2 * 3 = ?", "completions": ["2 * 3 = 6", "2 + 6 = 8", "So 8."],
                               "labels": [True, True, True]}) + "\n")
    (record,) = read_feedback(trl).records
    assert isinstance(record, StepLabels) and record.completions == ["2 * 3 = 6\n", "2 + 6 = 8\n", "So 8."]
    assert record.response == "2 * 3 = 6\n2 + 6 = 8\nSo 8."
    out = tmp_path / "out.jsonl"
    write_feedback(out, [record], style="trl")
    assert json.loads(out.read_text()) == json.loads(trl.read_text())  # TRL's columns, unchanged
    assert read_feedback(out).records == [record]
    # a split by lines round-trips through TRL's layout; unjudged steps cannot go there
    steps = StepLabels("Add the apples.", split_steps(TEXT, "lines"), [True, False, True])
    write_feedback(out, [steps], style="trl")
    assert read_feedback(out).records == [steps]
    with pytest.raises(ValueError, match="unjudged steps"):
        write_feedback(out, [StepLabels.first_wrong("p", ["a\n", "b"], 0)], style="trl")
    # alignlab's own layout keeps everything, nulls included, and Parquet too
    for name in ("native.jsonl", "native.parquet"):
        record = StepLabels.first_wrong("p", ["a\n", "b"], 0, annotator="ann")
        write_feedback(tmp_path / name, [record])
        assert read_feedback(tmp_path / name).records == [record]


def test_an_outcome_reward_model_counts_step_labels_as_unused_and_says_why():
    choices = to_choices([StepLabels("p", ["a\n", "b"], [True, False])])
    assert choices.unused == {"steps": 1} and not choices.choices
