"""Feedback files: every kind round-trips through JSONL and Parquet; bad lines are named or skipped loudly."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignlab.data import RECORD_TYPES, DataError, PreferencePair, read_feedback, write_feedback
from tests.data.examples import EXAMPLES, PROMPT

GOOD = {"kind": "pair", "prompt": "p", "chosen": "a", "rejected": "b"}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_every_kind_round_trips_mixed_in_one_file(tmp_path, suffix):
    path = tmp_path / f"feedback{suffix}"
    write_feedback(path, EXAMPLES)
    loaded = read_feedback(path)
    assert loaded.records == EXAMPLES
    assert loaded.skipped == [] and loaded.path == path and len(loaded) == len(EXAMPLES)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: r.kind)
def test_each_kind_round_trips_alone(tmp_path, suffix, record):
    path = tmp_path / f"one{suffix}"
    write_feedback(path, [record, record])
    assert read_feedback(path, kind=record.kind).records == [record, record]


def test_jsonl_lines_carry_the_kind_and_leave_unset_fields_out(tmp_path):
    path = tmp_path / "f.jsonl"
    write_feedback(path, EXAMPLES[:2])
    first, second = [json.loads(line) for line in path.read_text().splitlines()]
    assert first == {"kind": "pair", "prompt": PROMPT, "chosen": "The sea hums at night.",
                     "rejected": "Sea is water.", "annotator": "ann", "time": "2026-01-31T12:00:00Z"}
    assert second["margin"] == 0.5 and second["meta"] == {"source": "loom", "ids": [1, 2]}


def test_parquet_stores_columns_that_differ_in_type_between_kinds_as_json(tmp_path):
    path = tmp_path / "f.parquet"
    write_feedback(path, EXAMPLES)
    table = pq.read_table(path)
    json_columns = json.loads(table.schema.metadata[b"alignlab.json_columns"])
    # "chosen" is a text in a pair and an index in a kway; "label" a bool in thumbs, a text in a span.
    assert {"meta", "chosen", "label"} <= set(json_columns)
    assert "prompt" not in json_columns and pa.types.is_string(table.schema.field("prompt").type)
    # A file of pairs only keeps plain text columns that other tools read directly.
    write_feedback(path, EXAMPLES[:1])
    assert pa.types.is_string(pq.read_table(path).schema.field("chosen").type)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_an_empty_list_writes_a_file_that_reads_back_empty(tmp_path, suffix):
    write_feedback(tmp_path / f"e{suffix}", [])
    assert read_feedback(tmp_path / f"e{suffix}").records == []


def test_writing_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "f.jsonl"
    write_feedback(path, EXAMPLES)
    before = path.read_text()
    with pytest.raises(TypeError, match="record 1 is a dict"):
        write_feedback(path, [EXAMPLES[0], {"prompt": "p"}])
    for target in (path, tmp_path / "f.parquet"):
        with pytest.raises(DataError, match="record 0 cannot be written as JSON"):
            write_feedback(target, [PreferencePair("p", "a", "b", meta={"x": object()})])
    assert path.read_text() == before
    write_feedback(tmp_path / "f.parquet", EXAMPLES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.jsonl", "f.parquet"]


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


@pytest.mark.parametrize("bad, field, phrase", [
    ({**GOOD, "chosen": ""}, "chosen", "'chosen' is empty; every pair needs both texts"),
    ({**GOOD, "rejected": 4}, "rejected", "'rejected' must be a string"),
    ({"kind": "ranking", "prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 2]}, "ranks",
     "give one rank per response"),
    ({"kind": "kway", "prompt": "p", "options": ["a", "b"], "chosen": 5}, "chosen", "from 0 to 1"),
    ({"kind": "stop", "prompt": "p", "completion": "abc", "stop_char": 7}, "stop_char", "from 0 to 3"),
    ({"kind": "span", "prompt": "p", "completion": "abc", "start": 0, "end": 9, "label": "bad"}, "end", "from 1 to 3"),
    ({"kind": "span", "prompt": "p", "completion": "abc", "start": 0, "end": 2, "label": "ugly"}, "label",
     "'good' or 'bad'"),
    ({"kind": "rating", "prompt": "p", "completion": "c", "score": 0}, "score", "outside the scale"),
    ({"kind": "thumbs", "prompt": "p", "completion": "c", "label": "up"}, "label", "true (up) or false"),
    ({"prompt": "p", "something": "else"}, "kind", "cannot tell the kind"),
    ('{"prompt": "p", "chosen": ', None, "not valid JSON"),
    ("[1, 2]", None, "must be a JSON object"),
])
def test_a_bad_line_is_refused_naming_file_line_and_field(tmp_path, bad, field, phrase):
    path = tmp_path / "pairs.jsonl"
    write_lines(path, [GOOD, "", GOOD, bad, GOOD])  # the blank line still counts: the bad one is line 4
    with pytest.raises(DataError) as err:
        read_feedback(path)
    message = str(err.value)
    assert message.startswith(f"{path} line 4: ") and phrase in message
    assert err.value.field == field
    if field:
        assert f"'{field}'" in message


def test_a_bad_parquet_row_is_refused_naming_the_row(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"prompt": ["p", "p", "p"], "chosen": ["a", "", "c"], "rejected": ["b", "b", "d"]}), path)
    with pytest.raises(DataError, match=r"pairs\.parquet row 2: 'chosen' is empty"):
        read_feedback(path)


def test_a_line_of_the_wrong_kind_is_refused_when_a_kind_is_asked_for(tmp_path):
    path = tmp_path / "f.jsonl"
    write_feedback(path, EXAMPLES[:3])
    with pytest.raises(DataError, match=r"f\.jsonl line 3: 'kind' is 'ranking' but 'pair' records"):
        read_feedback(path, kind="pair")


def test_skip_bad_skips_counts_and_warns_on_stderr(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    bad = {**GOOD, "chosen": ""}
    write_lines(path, [GOOD, bad, "not json", GOOD] + [bad] * 5)
    loaded = read_feedback(path, skip_bad=True)
    assert len(loaded.records) == 2
    assert [n for n, _ in loaded.skipped] == [2, 3, 5, 6, 7, 8, 9]
    assert "'chosen' is empty" in loaded.skipped[0][1] and "not valid JSON" in loaded.skipped[1][1]
    err = capsys.readouterr().err
    assert "skipped 7 bad line(s)" in err and "lines 2, 3, 5, 6, 7, ..." in err and str(path) in err


def test_a_clean_file_read_with_skip_bad_prints_nothing(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    write_lines(path, [GOOD])
    assert read_feedback(path, skip_bad=True).skipped == []
    assert capsys.readouterr().err == ""


def test_a_line_that_is_not_utf8_is_one_bad_line(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n" + json.dumps(GOOD).encode() + b"\n")
    loaded = read_feedback(path, skip_bad=True)
    assert len(loaded.records) == 2 and loaded.skipped[0][0] == 2 and "UTF-8" in loaded.skipped[0][1]


def test_unknown_styles_and_kinds_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown style"):
        write_feedback(tmp_path / "f.jsonl", EXAMPLES, style="csv")
    with pytest.raises(ValueError, match="unknown feedback kind"):
        read_feedback(tmp_path / "f.jsonl", kind="pairs")


def test_the_example_lines_in_the_docs_read_as_one_record_of_every_kind(tmp_path):
    docs = Path(__file__).resolve().parents[2] / "docs" / "feedback-formats.md"
    lines = [line for line in docs.read_text().splitlines() if line.startswith('{"kind"')]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert {r.kind for r in read_feedback(path).records} == set(RECORD_TYPES)
