"""Records validate themselves, convert to and from dicts, and the kind is inferred from the fields."""

import dataclasses

import pytest

from alignlab.data import (
    RECORD_TYPES, DataError, KWayChoice, PreferencePair, Ranking, Rating, SpanJudgement, Stop, Thumbs, infer_kind,
    record_from_dict, split_shared_prefix,
)
from tests.data.examples import EXAMPLES


def test_every_kind_has_an_example_and_its_own_kind_string():
    assert {r.kind for r in EXAMPLES} == set(RECORD_TYPES)
    assert len(RECORD_TYPES) == 11


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: r.kind)
def test_to_dict_names_the_kind_and_comes_back_equal(record):
    d = record.to_dict()
    assert d["kind"] == record.kind
    assert {"annotator", "time", "meta"} <= set(d)
    assert record_from_dict(d) == record


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: r.kind)
def test_the_kind_is_inferred_from_the_fields_when_left_out(record):
    d = record.to_dict()
    del d["kind"]
    assert infer_kind(d) == record.kind
    assert record_from_dict(d) == record


def test_the_common_fields_are_keyword_only_and_default_to_none_and_empty():
    pair = PreferencePair("p", "a", "b", 0.25)
    assert (pair.margin, pair.annotator, pair.time, pair.meta) == (0.25, None, None, {})
    assert PreferencePair.kind == "pair" and "kind" not in [f.name for f in dataclasses.fields(pair)]
    with pytest.raises(TypeError):
        PreferencePair("p", "a", "b", 0.25, "ann")  # annotator is keyword-only


def test_values_are_normalised_integral_floats_to_ints_and_numbers_to_floats():
    k = KWayChoice("p", ("a", "b"), 1.0)
    assert k.chosen == 1 and isinstance(k.chosen, int) and k.options == ["a", "b"]
    assert Rating("p", "c", 3).score == 3.0 and isinstance(Rating("p", "c", 3).score, float)


def test_extra_fields_are_kept_in_meta_and_meta_wins_on_a_clash():
    r = record_from_dict({"prompt": "p", "chosen": "a", "rejected": "b", "id": 7, "meta": {"id": 8, "x": 1}})
    assert r.meta == {"id": 8, "x": 1}
    r = record_from_dict({"prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": 9.0})
    assert r.meta == {"score_chosen": 9.0}


def test_a_null_counts_as_missing():
    r = record_from_dict({"kind": "pair", "prompt": "p", "chosen": "a", "rejected": "b", "margin": None,
                          "annotator": None})
    assert r.margin is None and r.annotator is None


@pytest.mark.parametrize("make, field, phrase", [
    (lambda: PreferencePair("p", "", "b"), "chosen", "'chosen' is empty; every pair needs both texts"),
    (lambda: PreferencePair("p", "a", 3), "rejected", "must be a string"),
    (lambda: PreferencePair("  ", "a", "b"), "prompt", "'prompt' is empty"),
    (lambda: PreferencePair("p", "a", "b", "big"), "margin", "must be a number"),
    (lambda: PreferencePair("p", "a", "b", float("nan")), "margin", "finite"),
    (lambda: Ranking("p", ["a", "b"], [1]), "ranks", "give one rank per response"),
    (lambda: Ranking("p", ["a", "b"], [0, 1]), "ranks", "ranks start at 1"),
    (lambda: Ranking("p", ["a"], [1]), "responses", "at least two"),
    (lambda: Ranking("p", ["a", "b"], ["1", "2"]), "ranks[0]", "must be an integer"),
    (lambda: KWayChoice("p", ["a", "b", "c"], 3), "chosen", "from 0 to 2"),
    (lambda: KWayChoice("p", ["a", "b"], True), "chosen", "must be an integer"),
    (lambda: KWayChoice("p", ["a", ""], 0), "options[1]", "is empty"),
    (lambda: Thumbs("p", "c", 1), "label", "true (up) or false (down)"),
    (lambda: Rating("p", "c", 9), "score", "outside the scale 1..7"),
    (lambda: Rating("p", "c", 3, scale_min=5, scale_max=5), "scale_min", "must be below"),
    (lambda: Stop("p", "abc", 4), "stop_char", "from 0 to 3"),
    (lambda: Stop("p", "abc", -1), "stop_char", "from 0 to 3"),
    (lambda: SpanJudgement("p", "abcd", 2, 9, "bad"), "end", "from 1 to 4"),
    (lambda: SpanJudgement("p", "abcd", 2, 2, "bad"), "end", "must be after 'start'"),
    (lambda: SpanJudgement("p", "abcd", 0, 2, "meh"), "label", "'good' or 'bad'"),
    (lambda: Thumbs("p", "c", True, time="yesterday"), "time", "not ISO 8601"),
    (lambda: Thumbs("p", "c", True, annotator=5), "annotator", "must be a string"),
    (lambda: Thumbs("p", "c", True, meta=[1]), "meta", "must be an object"),
])
def test_bad_values_are_refused_naming_the_field(make, field, phrase):
    with pytest.raises(DataError) as err:
        make()
    assert err.value.field == field
    assert phrase in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("d, kind, field, phrase", [
    ({"prompt": "p", "foo": 1}, None, "kind", "cannot tell the kind"),
    ({"kind": "nope", "prompt": "p"}, None, "kind", "expected one of pair"),
    ({"kind": "ranking", "prompt": "p", "responses": ["a", "b"], "ranks": [1, 2]}, "pair", "kind",
     "'pair' records were asked for"),
    ({"kind": "edit", "prompt": "p", "before": "a"}, None, "after", "'after' is missing"),
    ({"prompt": "p", "completion": "c", "label": "yes"}, None, "label", "true (up)"),
    ({"chosen": "same", "rejected": "other"}, None, "prompt", "give a 'prompt' field"),
])
def test_dicts_that_cannot_be_records_are_refused_naming_the_field(d, kind, field, phrase):
    with pytest.raises(DataError) as err:
        record_from_dict(d, kind)
    assert err.value.field == field and phrase in str(err.value)


def test_the_kind_argument_reads_lines_without_a_kind():
    r = record_from_dict({"prompt": "p", "completion": "c", "text": "meh"}, kind="critique")
    assert r.kind == "critique"
    with pytest.raises(ValueError):
        record_from_dict({"prompt": "p"}, kind="nonsense")


@pytest.mark.parametrize("chosen, rejected, expected", [
    ("Say a color: blue", "Say a color: black", ("Say a color:", " blue", " black")),  # backs up mid-word
    ("Q: 2+2? 4", "Q: 2+2? 5", ("Q: 2+2?", " 4", " 5")),
    ("Q?Yes", "Q?No", ("Q?", "Yes", "No")),  # no whitespace: the plain shared prefix
    ("Hello world", "Hello world!", ("Hello", " world", " world!")),  # one is a prefix of the other
])
def test_an_implicit_prompt_is_the_shared_prefix_cut_at_a_word_boundary(chosen, rejected, expected):
    assert split_shared_prefix(chosen, rejected) == expected
