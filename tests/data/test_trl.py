"""TRL's dataset layouts: read in all four forms (detected per line), and written so TRL can load them."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignlab.data import Demonstration, PreferencePair, Ranking, Thumbs, read_feedback, write_feedback


def user(text):
    return [{"role": "user", "content": text}]


def bot(text):
    return [{"role": "assistant", "content": text}]


def write_lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_explicit_prompt(tmp_path):
    path = write_lines(tmp_path / "dpo.jsonl", [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}])
    assert read_feedback(path).records == [PreferencePair("The sky is", " blue.", " green.")]


def test_b_implicit_prompt_is_the_shared_prefix(tmp_path):
    path = write_lines(tmp_path / "rm.jsonl", [
        {"chosen": "The sky is blue.", "rejected": "The sky is green."},
        {"chosen": "The sky is blue.", "rejected": "The sky is black."},  # diverges mid-word ("bl")
    ])
    first, second = read_feedback(path).records
    assert first == PreferencePair("The sky is", " blue.", " green.")
    assert second == PreferencePair("The sky is", " blue.", " black.")


def test_c_unpaired_prompt_completion_label(tmp_path):
    path = write_lines(tmp_path / "kto.jsonl", [
        {"prompt": "The sky is", "completion": " blue.", "label": True},
        {"prompt": "The sky is", "completion": " green.", "label": False},
    ])
    assert read_feedback(path).records == [Thumbs("The sky is", " blue.", True), Thumbs("The sky is", " green.", False)]


def test_d_conversational_explicit_implicit_and_unpaired(tmp_path):
    system = {"role": "system", "content": "Be brief."}
    path = write_lines(tmp_path / "chat.jsonl", [
        {"prompt": [system, *user("What color is the sky?")], "chosen": bot("Blue."), "rejected": bot("Green.")},
        {"chosen": [*user("What color is the sky?"), *bot("Blue.")],
         "rejected": [*user("What color is the sky?"), *bot("Green.")]},
        {"prompt": user("What color is the sky?"), "completion": bot("Blue."), "label": True},
        # ultrafeedback_binarized: a text prompt, and responses that repeat the user turn.
        {"prompt": "What color is the sky?", "chosen": [*user("What color is the sky?"), *bot("Blue.")],
         "rejected": [*user("What color is the sky?"), *bot("Green.")], "score_chosen": 8.0},
        # multimodal-style content parts
        {"prompt": [{"role": "user", "content": [{"type": "text", "text": "Sky?"}]}], "completion": bot("Blue.")},
    ])
    records = read_feedback(path).records
    assert records[0] == PreferencePair("Be brief.\n\nWhat color is the sky?", "Blue.", "Green.")
    assert records[1] == PreferencePair("What color is the sky?", "Blue.", "Green.")
    assert records[2] == Thumbs("What color is the sky?", "Blue.", True)
    assert records[3] == PreferencePair("What color is the sky?", "Blue.", "Green.", meta={"score_chosen": 8.0})
    assert records[4] == Demonstration("Sky?", "Blue.")


def test_d_conversational_parquet_as_the_hub_stores_it(tmp_path):
    path = tmp_path / "chat.parquet"
    pq.write_table(pa.table({"prompt": [user("Hi")], "chosen": [bot("Hello!")], "rejected": [bot("Go away.")]}), path)
    assert read_feedback(path, kind="pair").records == [PreferencePair("Hi", "Hello!", "Go away.")]


def test_a_conversational_response_without_an_assistant_turn_is_refused(tmp_path):
    path = write_lines(tmp_path / "chat.jsonl", [{"prompt": user("Hi"), "chosen": user("x"), "rejected": bot("y")}])
    with pytest.raises(ValueError, match=r"line 1: 'chosen' holds no assistant message"):
        read_feedback(path)


PAIRS = [PreferencePair("The sky is", " blue.", " green."), PreferencePair("Two plus two is", " four.", " five.")]
THUMBS = [Thumbs("The sky is", " blue.", True), Thumbs("The sky is", " green.", False)]


def plain_json_lines(path):
    """What datasets.load_dataset("json", data_files=path) sees: one JSON object per line."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_style_trl_writes_pairs_with_the_dpo_and_reward_trainer_columns(tmp_path):
    path = tmp_path / "dpo.jsonl"
    write_feedback(path, [PreferencePair(p.prompt, p.chosen, p.rejected, annotator="ann") for p in PAIRS], style="trl")
    assert plain_json_lines(path) == [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
                                      {"prompt": "Two plus two is", "chosen": " four.", "rejected": " five."}]
    assert read_feedback(path).records == PAIRS


def test_style_trl_writes_thumbs_with_the_kto_trainer_columns(tmp_path):
    path = tmp_path / "kto.jsonl"
    write_feedback(path, THUMBS, style="trl")
    rows = plain_json_lines(path)
    assert rows == [{"prompt": "The sky is", "completion": " blue.", "label": True},
                    {"prompt": "The sky is", "completion": " green.", "label": False}]
    assert all(isinstance(r["label"], bool) for r in rows)
    assert read_feedback(path).records == THUMBS


def test_style_trl_writes_a_margin_column_without_gaps(tmp_path):
    path = tmp_path / "rm.jsonl"
    write_feedback(path, [PreferencePair("p", "a", "b", 1.5), PreferencePair("p", "c", "d")], style="trl")
    assert [r["margin"] for r in plain_json_lines(path)] == [1.5, 0.0]


def test_style_trl_parquet_has_plain_text_columns(tmp_path):
    path = tmp_path / "dpo.parquet"
    write_feedback(path, PAIRS, style="trl")
    table = pq.read_table(path)
    assert table.column_names == ["prompt", "chosen", "rejected"]
    assert table.to_pylist()[0] == {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}


def test_style_trl_conversational_and_implicit_round_trip(tmp_path):
    conv = tmp_path / "conv.jsonl"
    write_feedback(conv, PAIRS, style="trl-conversational")
    assert plain_json_lines(conv)[0] == {"prompt": user("The sky is"), "chosen": bot(" blue."),
                                         "rejected": bot(" green.")}
    assert read_feedback(conv).records == PAIRS
    write_feedback(conv, THUMBS, style="trl-conversational")
    assert read_feedback(conv).records == THUMBS
    implicit = tmp_path / "implicit.jsonl"
    write_feedback(implicit, PAIRS, style="trl-implicit")
    assert plain_json_lines(implicit)[0] == {"chosen": "The sky is blue.", "rejected": "The sky is green."}
    assert read_feedback(implicit).records == PAIRS


def test_style_trl_writes_demonstrations_as_prompt_completion(tmp_path):
    path = tmp_path / "sft.jsonl"
    write_feedback(path, [Demonstration("Q", "A")], style="trl")
    assert plain_json_lines(path) == [{"prompt": "Q", "completion": "A"}]
    assert read_feedback(path).records == [Demonstration("Q", "A")]


def test_style_trl_refuses_kinds_without_a_trl_layout_and_mixed_files(tmp_path):
    with pytest.raises(ValueError, match="'ranking' has no such TRL layout"):
        write_feedback(tmp_path / "r.jsonl", [Ranking("p", ["a", "b"], [1, 2])], style="trl")
    with pytest.raises(ValueError, match="one kind per file"):
        write_feedback(tmp_path / "m.jsonl", PAIRS + THUMBS, style="trl")
    with pytest.raises(ValueError, match="'thumbs' has no such TRL layout"):
        write_feedback(tmp_path / "m.jsonl", THUMBS, style="trl-implicit")
    assert not list(tmp_path.iterdir())
