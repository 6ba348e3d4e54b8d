"""Data: record types for every kind of human feedback, and their files (JSONL, Parquet, TRL layouts)."""

from alignlab.data.formats import STYLES, LoadResult, read_feedback, write_feedback
from alignlab.data.records import (
    RECORD_TYPES, Critique, DataError, Demonstration, Edit, FeedbackRecord, KWayChoice, PreferencePair, Ranking,
    Rating, SpanJudgement, StepLabels, Stop, Thumbs, infer_kind, record_from_dict, split_shared_prefix,
)

__all__ = [
    "STYLES", "LoadResult", "read_feedback", "write_feedback",
    "RECORD_TYPES", "DataError", "FeedbackRecord", "infer_kind", "record_from_dict", "split_shared_prefix",
    "PreferencePair", "Ranking", "KWayChoice", "Thumbs", "Rating", "Demonstration", "Edit", "Stop",
    "SpanJudgement", "Critique", "StepLabels",
]
