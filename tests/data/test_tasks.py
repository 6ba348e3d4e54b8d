"""Tasks: the built-in writing prompts, their splits, and user prompt files."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from alignlab.data.records import DataError
from alignlab.data.tasks import (
    CONSTRAINTS, STORY_TEMPLATE, TASKS, Task, TaskPrompt, load_task, read_prompts_file, split_of, split_prompts,
    writing_prompts,
)


@pytest.fixture(scope="module")
def task() -> Task:
    return load_task("writing-prompts", seed=0)


def test_writing_prompts_are_at_least_1000_distinct_prompts(task):
    texts = [p.text for p in task.prompts]
    assert len(texts) >= 1000
    assert len(set(texts)) == len(texts)
    assert "writing-prompts" in TASKS


def test_the_prompt_list_is_pinned(task):
    # The prompts are data: an experiment's numbers depend on them. Changing a word list changes
    # every prompt's wording; if that is intended, update this line and say so in the change.
    assert task.prompts[0].text == ("Imagine an elderly detective who has to return a borrowed book before sunrise "
                                    "in a subway station at dawn. Write the horror story that follows. Keep it "
                                    "under 100 words.")
    assert [p.text for p in writing_prompts(50)] == [p.text for p in task.prompts[:50]]


def test_every_prompt_keeps_its_parts_and_reads_as_english(task):
    constraint_ids = {cid for cid, _ in CONSTRAINTS}
    for p in task.prompts:
        for key in ("character", "setting", "situation", "constraint"):
            assert p.parts[key].lower() in p.text.lower(), (key, p.text)  # "On a ..." opens some
        assert p.parts["constraint_id"] in constraint_ids
        assert p.parts["genre"] and p.parts["character_noun"] and p.parts["setting_noun"]
        assert "{" not in p.text and "  " not in p.text
        assert not re.search(r"\ba [aeiou]", p.text), p.text  # "a adventure story"
        assert p.text[0].isupper() and p.text.endswith(".")


def test_prompts_vary_in_every_part(task):
    for key in ("character", "setting", "situation", "genre", "constraint_id"):
        assert len({p.parts[key] for p in task.prompts}) >= 10, key


def test_splits_are_disjoint_cover_every_prompt_and_have_the_documented_shares(task):
    train, validation, test = ({p.text for p in s} for s in (task.train, task.validation, task.test))
    assert not train & validation and not train & test and not validation & test
    assert train | validation | test == {p.text for p in task.prompts}
    n = len(task.prompts)
    assert 0.75 * n < len(train) < 0.85 * n
    assert 0.07 * n < len(validation) < 0.13 * n and 0.07 * n < len(test) < 0.13 * n


def test_splits_are_stable_for_a_seed_and_change_with_it(task):
    again = load_task("writing-prompts", seed=0)
    assert [p.text for p in again.test] == [p.text for p in task.test]
    other = load_task("writing-prompts", seed=1)
    assert {p.text for p in other.test} != {p.text for p in task.test}


def test_a_prompts_split_does_not_depend_on_the_other_prompts(task):
    subset = task.prompts[::7]
    train, validation, test = split_prompts(subset, seed=0)
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        assert all(split_of(p.text, 0) == name for p in part)
        assert {p.text for p in part} <= {p.text for p in task.split(name)}


def test_format_shows_one_example_then_the_prompt_for_a_base_model(task):
    prompt = task.prompts[0]
    text = task.format(prompt)
    assert text == STORY_TEMPLATE.replace("{prompt}", prompt.text)
    assert text.endswith(f"Prompt: {prompt.text}\nStory:")
    assert text.count("Prompt:") == 2  # the worked example, then this prompt
    assert task.format(prompt.text) == text


def test_trim_removes_a_trailing_stop_string(task):
    assert task.trim(" Once there was a keeper.\n\nPrompt:") == "Once there was a keeper."
    assert task.trim(" Once there was a keeper. ") == "Once there was a keeper."


def test_find_looks_up_a_prompt_by_text_or_formatted_text(task):
    prompt = task.test[3]
    assert task.find(prompt.text) is prompt
    assert task.find(task.format(prompt)) is prompt
    assert task.find("a prompt that is not in the task") is None


def test_task_prompt_id_is_stable_and_hashable():
    a, b = TaskPrompt("Write a poem.", {"genre": "poem"}), TaskPrompt("Write a poem.", {"genre": "poem"})
    assert a.id == b.id == hashlib.sha256(b"Write a poem.").hexdigest()[:12]
    assert len({a, b}) == 1 and str(a) == "Write a poem."


def test_split_rejects_an_unknown_name(task):
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        task.split("dev")


# --- user prompt files ----------------------------------------------------------------------------

def test_a_text_file_gives_one_prompt_a_line(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("Write about a cat.\n\n  Write about a dog.  \nWrite about a cat.\n", encoding="utf-8")
    task = load_task(path, seed=3)
    assert task.name == "mine"
    assert [p.text for p in task.prompts] == ["Write about a cat.", "Write about a dog."]  # blank and repeat skipped
    assert task.template == "{prompt}" and task.format(task.prompts[0]) == "Write about a cat."
    assert sorted(p.text for p in task.train + task.validation + task.test) == sorted(p.text for p in task.prompts)


def test_a_jsonl_file_reads_the_prompt_field_and_keeps_parts(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"prompt": "Write about a baker.", "parts": {"character": "a baker"}, "source": "me"},
            {"prompt": "Write about a ship."}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    prompts = read_prompts_file(path)
    assert prompts == [TaskPrompt("Write about a baker.", {"character": "a baker"}), TaskPrompt("Write about a ship.")]
    task = load_task(path, template="Prompt: {prompt}\nStory:")
    assert task.format(prompts[1]) == "Prompt: Write about a ship.\nStory:"


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "ok"', r"bad\.jsonl line 2: not valid JSON"),
    ('["a list"]', r"bad\.jsonl line 2: expected a JSON object"),
    ('{"text": "no prompt field"}', r"bad\.jsonl line 2: 'prompt' is missing"),
    ('{"prompt": "   "}', r"bad\.jsonl line 2: 'prompt' is empty"),
    ('{"prompt": 12}', r"bad\.jsonl line 2: 'prompt' must be a string, got int"),
    ('{"prompt": "ok", "parts": {"character": 3}}', r"bad\.jsonl line 2: 'parts' must be an object of strings"),
])
def test_a_bad_jsonl_line_is_named_by_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a fine first line"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_task(path)


def test_an_empty_file_a_missing_file_and_an_unknown_name_are_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.txt has no prompts"):
        load_task(empty)
    with pytest.raises(DataError, match=r"missing\.txt does not exist"):
        load_task(tmp_path / "missing.txt")
    with pytest.raises(DataError, match=r"unknown task 'writing-promts'.*writing-prompts"):
        load_task("writing-promts")


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("Write about a caf\xe9.\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt is not UTF-8"):
        load_task(path)


def test_a_template_without_the_prompt_field_is_refused():
    with pytest.raises(ValueError, match="has no {prompt} field"):
        Task("t", [TaskPrompt("x")], template="Story:")
