"""Feedback files: JSON lines or Parquet (by suffix), in alignlab's own layout or TRL's.

Reading detects the layout line by line (a "kind" field, else the fields present, else TRL's
implicit-prompt and conversational forms), so one reader serves files written here, files
written for TRL's trainers, and datasets exported from the hub. Writing is atomic (temporary
file + rename): a reader never sees half a file. docs/feedback-formats.md has every rule.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from alignlab.data.records import RECORD_TYPES, DataError, FeedbackRecord, record_from_dict
from alignlab.fileio import atomic_write_text

STYLES = ("alignlab", "trl", "trl-implicit", "trl-conversational")
"""Layouts ``write_feedback`` can write; reading needs no style, it detects each line's."""

JSON_COLUMNS_KEY = b"alignlab.json_columns"
"""Parquet schema metadata: the columns stored as JSON text (meta, and any column whose values
differ in type between kinds, e.g. "chosen": a text in a pair, an index in a kway choice)."""

_WARN_FIRST = 5


@dataclass
class LoadResult:
    """What ``read_feedback`` found: the records, the bad lines it skipped, and the file."""

    records: list[FeedbackRecord]
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """(line number, reason) of each bad line skipped with skip_bad=True (Parquet: row number)."""
    path: Path = Path()

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[FeedbackRecord]:
        return iter(self.records)


def read_feedback(path: str | Path, kind: str | None = None, skip_bad: bool = False) -> LoadResult:
    """Read every feedback record of a .jsonl or .parquet file, validating each.

    ``kind`` reads lines without a "kind" field as that kind and refuses lines of another kind.
    A bad line raises DataError naming the file, the line and the field; with ``skip_bad`` it is
    skipped instead, listed in ``.skipped``, and a warning line goes to stderr.
    """
    path = Path(path)
    if kind is not None and kind not in RECORD_TYPES:
        raise ValueError(f"unknown feedback kind {kind!r}; expected one of {', '.join(RECORD_TYPES)}")
    unit = "row" if _is_parquet(path) else "line"
    rows = _parquet_rows(path) if unit == "row" else _jsonl_rows(path)
    result = LoadResult(records=[], skipped=[], path=path)
    for number, row in rows:
        try:
            if isinstance(row, DataError):
                raise row
            result.records.append(record_from_dict(row, kind))
        except DataError as err:
            if not skip_bad:
                raise DataError(err.reason, field=err.field, where=f"{path} {unit} {number}") from None
            result.skipped.append((number, err.reason))
    if result.skipped:
        numbers = ", ".join(str(n) for n, _ in result.skipped[:_WARN_FIRST])
        more = ", ..." if len(result.skipped) > _WARN_FIRST else ""
        print(f"warning: {path}: skipped {len(result.skipped)} bad {unit}(s) ({unit}s {numbers}{more}); "
              f"first: {result.skipped[0][1]}", file=sys.stderr)
    return result


def write_feedback(path: str | Path, records: Iterable[FeedbackRecord], style: str = "alignlab") -> None:
    """Write records to a .jsonl or .parquet file (by suffix), atomically.

    ``style``: "alignlab" (every kind, with "kind" and the common fields), or one of TRL's
    layouts: "trl" (pairs as prompt/chosen/rejected, thumbs as prompt/completion/label,
    demonstrations as prompt/completion), "trl-implicit" (pairs as chosen/rejected with the
    prompt prepended to both), "trl-conversational" (the same as "trl" with message lists).
    A TRL file holds one kind and drops annotator, time and meta, which TRL's trainers do not read.
    """
    path = Path(path)
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
    rows = record_rows(records, style)
    if _is_parquet(path):
        _write_parquet(path, rows)
    else:
        atomic_write_text(path, "".join(_json_text(row, i) + "\n" for i, row in enumerate(rows)))


def record_rows(records: Iterable[FeedbackRecord], style: str = "alignlab") -> list[dict[str, Any]]:
    """The JSON rows ``write_feedback`` writes for ``records`` in ``style``."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
    records = list(records)
    for i, record in enumerate(records):
        if not isinstance(record, FeedbackRecord):
            raise TypeError(f"record {i} is a {type(record).__name__}, not a feedback record (alignlab.data)")
    return [_native_row(r) for r in records] if style == "alignlab" else _trl_rows(records, style)


# --- rows in and out ----------------------------------------------------------------------------

def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    # Bytes, decoded per line: one bad byte spoils one line, not the whole file.
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, DataError("the line is not valid UTF-8; fix or delete it")
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                # Unlike fileio.read_jsonl, a torn last line is not dropped silently: feedback
                # is what a person gave, and losing one should be seen (skip_bad says so).
                yield number, DataError(f"the line is not valid JSON ({err.msg}); fix or delete it")


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    json_columns = set(json.loads(metadata.get(JSON_COLUMNS_KEY, b"[]")))
    for number, row in enumerate(table.to_pylist(), start=1):
        try:
            for name in json_columns:
                if isinstance(row.get(name), str):
                    row[name] = json.loads(row[name])
        except json.JSONDecodeError as err:
            yield number, DataError(f"'{name}' is not valid JSON ({err.msg})", field=name)
            continue
        yield number, row


def _json_text(value: Any, index: int) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise DataError(f"record {index} cannot be written as JSON ({err}); keep 'meta' to plain JSON values",
                        field="meta") from None


def _native_row(record: FeedbackRecord) -> dict[str, Any]:
    # Unset optional fields are left out: a reader treats missing and null alike.
    return {key: value for key, value in record.to_dict().items()
            if value is not None and not (key == "meta" and not value)}


def _trl_rows(records: list[FeedbackRecord], style: str) -> list[dict[str, Any]]:
    kinds = sorted({r.kind for r in records})
    allowed = ("pair",) if style == "trl-implicit" else ("pair", "thumbs", "demonstration", "steps")
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise ValueError(f"style={style!r} writes {', '.join(allowed)} records; {bad[0]!r} has no such TRL "
                         "layout (write it with style='alignlab')")
    if len(kinds) > 1:
        raise ValueError(f"style={style!r} writes one kind per file (TRL's trainers read one layout); "
                         f"got {', '.join(kinds)}: write each kind to its own file")
    conversational = style == "trl-conversational"
    user = (lambda text: [{"role": "user", "content": text}]) if conversational else (lambda text: text)
    bot = (lambda text: [{"role": "assistant", "content": text}]) if conversational else (lambda text: text)
    # TRL's RewardTrainer reads an optional "margin" column; a column with gaps would break it,
    # so when any pair has a margin the others get 0.0 (no margin).
    with_margin = any(getattr(r, "margin", None) is not None for r in records)
    rows = []
    for r in records:
        if style == "trl-implicit":
            row = {"chosen": r.prompt + r.chosen, "rejected": r.prompt + r.rejected}
        elif r.kind == "pair":
            row = {"prompt": user(r.prompt), "chosen": bot(r.chosen), "rejected": bot(r.rejected)}
        elif r.kind == "thumbs":
            row = {"prompt": user(r.prompt), "completion": bot(r.completion), "label": r.label}
        elif r.kind == "steps":  # TRL's stepwise supervision: its trainers read a label for every step
            if conversational:
                raise ValueError("style='trl-conversational': TRL's stepwise supervision has no conversational "
                                 "layout; write steps records with style='trl'")
            if any(label is None for label in r.labels):
                raise ValueError(f"style={style!r}: a steps record has unjudged steps (null labels), which TRL's "
                                 "stepwise format cannot hold; drop them (steps.judged_prefix) or write "
                                 "style='alignlab'")
            last = len(r.completions) - 1  # TRL joins steps with "\n": each step's own trailing one goes
            row = {"prompt": user(r.prompt), "labels": list(r.labels),
                   "completions": [c[:-1] if i < last and c.endswith("\n") and c[:-1] and not c[-2].isspace() else c
                                   for i, c in enumerate(r.completions)]}
        else:
            row = {"prompt": user(r.prompt), "completion": bot(r.completion)}
        if with_margin:
            row["margin"] = r.margin if r.margin is not None else 0.0
        rows.append(row)
    return rows


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names: list[str] = []
    for row in rows:
        names.extend(key for key in row if key not in names)
    columns: dict[str, Any] = {}
    json_columns: list[str] = []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            if name == "meta":
                raise pa.ArrowInvalid("meta is free-form: always JSON")
            columns[name] = pa.array(values)
        except (pa.ArrowException, TypeError):
            json_columns.append(name)
            columns[name] = pa.array([None if v is None else _json_text(v, i) for i, v in enumerate(values)],
                                     type=pa.string())
    if not columns:
        columns["kind"] = pa.array([], type=pa.string())
    table = pa.table(columns).replace_schema_metadata({JSON_COLUMNS_KEY: json.dumps(json_columns).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_prompt_file(file: str | Path) -> list[str]:
    """Prompts from a file: one per line (.txt and others) or JSON lines with a 'prompt' field (.jsonl)."""
    file = Path(file)
    if not file.exists():
        raise FileNotFoundError(f"prompt file {file} does not exist")
    lines = file.read_text(encoding="utf-8").splitlines()
    if file.suffix != ".jsonl":
        prompts = [line for line in lines if line.strip()]
    else:
        prompts = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{file} line {number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ValueError(f"{file} line {number}: field 'prompt' is missing or not a string; "
                                 'each line needs {"prompt": "..."}')
            prompts.append(row["prompt"])
    if not prompts:
        raise ValueError(f"prompt file {file} holds no prompts")
    return prompts
