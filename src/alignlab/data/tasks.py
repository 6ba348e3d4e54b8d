"""Tasks: named sets of prompts with fixed train/validation/test splits, and a prompt template.

The built-in task "writing-prompts" is generated here from hand-written word lists (characters,
settings, situations, genres, constraints and sentence frames), so it needs no download and its
prompts are this project's own. Every prompt keeps its structured parts, so a judge can check
that a story is about the character and the setting it was asked for and that it obeys the
constraint. A user task is a prompts file: one prompt a line (.txt), or JSON lines with a
"prompt" field (.jsonl). docs/tasks.md describes both.

Splits are assigned prompt by prompt from a hash of (seed, prompt text): a prompt's split never
depends on which other prompts exist, the splits are disjoint by construction, and the same seed
gives the same splits on every machine and Python version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from alignlab.data.records import DataError

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""Expected shares of train, validation and test (each prompt is assigned independently)."""

STORY_EXAMPLE = (
    "Prompt: Write a short fable about a fox who finds a golden key in a winter forest. Keep it under 80 words.\n"
    "Story: Snow had covered the forest for weeks when the fox found the key. It was small and golden, and it "
    "hummed when she held it in her teeth. She tried it in every hollow tree until one creaked open. Inside was "
    "a warm den full of berries. \"Whoever left this,\" she said, \"wanted it to be found.\" She slept there "
    "until spring.\n\n")
"""The one worked example the story template opens with (not one of the task's prompts)."""

STORY_TEMPLATE = STORY_EXAMPLE + "Prompt: {prompt}\nStory:"
"""How a writing prompt is shown to a base (non-chat) model: one worked example, then the prompt;
the model continues after "Story:". Without the example, Gemma 3 270M base mostly writes
forum posts, lists and web boilerplate; with it, mostly short stories that end by starting the
next "Prompt:" block (docs/tasks.md). The example costs about 100 prompt tokens."""

STORY_STOP = ("\nPrompt:", "\n\n\n")
"""Stop strings for sampling stories: a base model that finishes a story tends to start the next
"Prompt:" block or trail off into blank lines. The sampler keeps the stop string; strip it."""

WRITING_PROMPTS_COUNT = 2000
"""How many distinct prompts the built-in task generates."""


@dataclass(frozen=True)
class TaskPrompt:
    """One prompt of a task: its text and, for generated prompts, the parts it was built from."""

    text: str
    parts: dict[str, str] = field(default_factory=dict, hash=False)
    """Structured parts (writing-prompts: character, character_noun, setting, setting_noun,
    situation, genre, constraint, constraint_id); empty for a plain prompt from a file."""

    @property
    def id(self) -> str:
        """A short stable id: the first 12 hex digits of the text's sha256."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]

    def __str__(self) -> str:
        return self.text


@dataclass
class Task:
    """A named prompt set with disjoint splits and the template a base model continues."""

    name: str
    prompts: list[TaskPrompt]
    """Every prompt, in a fixed order (generation order, or file order without duplicates)."""
    seed: int = 0
    """The seed the splits were drawn with."""
    template: str = "{prompt}"
    """A format string with one field, {prompt}; ``format`` fills it."""
    stop: tuple[str, ...] = ()
    """Stop strings to sample with (the sampler keeps them in the text; strip them before judging)."""
    train: list[TaskPrompt] = field(default_factory=list)
    validation: list[TaskPrompt] = field(default_factory=list)
    test: list[TaskPrompt] = field(default_factory=list)
    _index: dict[str, TaskPrompt] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if "{prompt}" not in self.template:
            raise ValueError(f"task {self.name!r}: template {self.template!r} has no {{prompt}} field")
        if not (self.train or self.validation or self.test):
            self.train, self.validation, self.test = split_prompts(self.prompts, self.seed)

    def format(self, prompt: str | TaskPrompt) -> str:
        """The text a base model continues for ``prompt`` (the template filled in)."""
        return self.template.replace("{prompt}", str(prompt))

    def trim(self, response: str) -> str:
        """``response`` without a trailing stop string and surrounding whitespace (sampled text keeps the stop)."""
        text = response
        for stop in self.stop:
            if text.endswith(stop):
                text = text[: -len(stop)]
        return text.strip()

    def split(self, name: str) -> list[TaskPrompt]:
        """One split by name: "train", "validation" or "test"."""
        if name not in ("train", "validation", "test"):
            raise ValueError(f"unknown split {name!r}; use train, validation or test")
        return getattr(self, name)

    def find(self, text: str) -> TaskPrompt | None:
        """The prompt whose text, or whose formatted text, is ``text``; None if there is none."""
        if self._index is None:
            self._index = {p.text: p for p in self.prompts}
            self._index.update({self.format(p): p for p in self.prompts})
        return self._index.get(text)


def split_of(text: str, seed: int = 0) -> str:
    """The split ("train", "validation" or "test") a prompt text falls in for ``seed``."""
    digest = hashlib.sha256(f"alignlab-split:{seed}:{text}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    train, validation, _ = SPLIT_FRACTIONS
    return "train" if u < train else "validation" if u < train + validation else "test"


def split_prompts(prompts: list[TaskPrompt], seed: int = 0) -> tuple[list[TaskPrompt], list[TaskPrompt], list[TaskPrompt]]:
    """Train, validation and test lists of ``prompts``, each prompt placed by ``split_of``."""
    out: dict[str, list[TaskPrompt]] = {"train": [], "validation": [], "test": []}
    for p in prompts:
        out[split_of(p.text, seed)].append(p)
    return out["train"], out["validation"], out["test"]


# --- the built-in writing prompts -----------------------------------------------------------------
# Hand-written lists. A character is (noun phrase, head noun a story would name it by, pronoun);
# a setting is (phrase with its preposition, head noun); situations are verb phrases that follow
# "who" and use {subj}/{poss}/{obj}/{refl} only where no verb has to agree with the pronoun.

CHARACTERS = [
    ("a retired lighthouse keeper", "lighthouse keeper", "she"),
    ("an old clockmaker", "clockmaker", "he"),
    ("a nervous apprentice chef", "chef", "they"),
    ("a young beekeeper", "beekeeper", "she"),
    ("a night-shift nurse", "nurse", "he"),
    ("a disgraced court magician", "magician", "he"),
    ("a twelve-year-old chess champion", "chess champion", "she"),
    ("a grumpy ferry captain", "captain", "he"),
    ("a shy librarian", "librarian", "she"),
    ("a traveling piano tuner", "piano tuner", "he"),
    ("a rookie firefighter", "firefighter", "she"),
    ("a widowed baker", "baker", "he"),
    ("a homebound cartographer", "cartographer", "she"),
    ("a street musician", "musician", "they"),
    ("an elderly detective", "detective", "she"),
    ("a runaway prince", "prince", "he"),
    ("a tired mail carrier", "mail carrier", "he"),
    ("a stubborn goat farmer", "farmer", "she"),
    ("a robot janitor", "robot", "it"),
    ("a lonely astronaut", "astronaut", "he"),
    ("a beginner witch", "witch", "she"),
    ("a small-town mayor", "mayor", "he"),
    ("a marine biologist", "biologist", "she"),
    ("a retired boxer", "boxer", "he"),
    ("a wedding photographer", "photographer", "she"),
    ("a teenage inventor", "inventor", "they"),
    ("a forgetful wizard", "wizard", "he"),
    ("a talking crow", "crow", "it"),
    ("a bus driver on her last shift", "bus driver", "she"),
    ("a museum night guard", "guard", "he"),
    ("a seamstress", "seamstress", "she"),
    ("a village blacksmith", "blacksmith", "he"),
    ("a school janitor", "janitor", "she"),
    ("a storm chaser", "storm chaser", "they"),
    ("a kindly dragon", "dragon", "it"),
    ("a translator", "translator", "she"),
    ("an out-of-work actor", "actor", "he"),
    ("a park ranger", "ranger", "she"),
    ("a homesick soldier", "soldier", "he"),
    ("a fortune teller", "fortune teller", "she"),
    ("a retired spy", "spy", "he"),
    ("a lighthouse cat", "cat", "it"),
]

SETTINGS = [
    ("in a fishing village in winter", "fishing village"),
    ("on a night train crossing the desert", "train"),
    ("in a city where it never stops raining", "city"),
    ("on a space station orbiting Jupiter", "space station"),
    ("in a bakery that opens at midnight", "bakery"),
    ("in an abandoned amusement park", "amusement park"),
    ("on a small island with one telephone", "island"),
    ("in a hospital during a blackout", "hospital"),
    ("in a mountain monastery", "monastery"),
    ("at a roadside diner", "diner"),
    ("in a library that never closes", "library"),
    ("on a pirate ship", "ship"),
    ("in a haunted hotel", "hotel"),
    ("in a garden on the roof of a skyscraper", "garden"),
    ("in a tiny apartment above a laundromat", "apartment"),
    ("at a county fair", "fair"),
    ("in a snowed-in mountain cabin", "cabin"),
    ("on an underwater research base", "research base"),
    ("in a forest where the trees whisper", "forest"),
    ("in a market that sells memories", "market"),
    ("at a lighthouse on a rocky coast", "lighthouse"),
    ("in a castle on the edge of a cliff", "castle"),
    ("on a farm at harvest time", "farm"),
    ("in a busy airport", "airport"),
    ("in a school on the last day of term", "school"),
    ("in a desert town with one hotel", "desert town"),
    ("in a museum after closing time", "museum"),
    ("on a frozen lake", "lake"),
    ("in a subway station at dawn", "subway station"),
    ("in a small bookshop", "bookshop"),
    ("at a wedding that goes wrong", "wedding"),
    ("in a village at the foot of a volcano", "volcano"),
    ("on a colony ship far from Earth", "colony ship"),
    ("in an old theater", "theater"),
    ("at a campsite by a river", "campsite"),
    ("in a kingdom where music is forbidden", "kingdom"),
]

SITUATIONS = [
    "finds a letter addressed to {poss} future self",
    "discovers that every clock in town has stopped at the same minute",
    "has to return a borrowed book before sunrise",
    "wakes up with no memory of the day before",
    "receives a package with no sender",
    "hears a song that nobody else can hear",
    "is asked to keep a secret that could change everything",
    "finds a door that was not there yesterday",
    "must deliver an important message through a storm",
    "meets a stranger who knows {poss} name",
    "loses the key to the only way out",
    "finds a map hidden inside an old coat",
    "is the last person to see a famous painting before it vanishes",
    "gets one chance to apologize to an old friend",
    "discovers a tiny door in the wall",
    "has to cook a meal for a visiting queen",
    "wins a prize {subj} never entered",
    "finds a photograph of {refl} from a hundred years ago",
    "is followed home by a stray dog",
    "has one day to solve a riddle",
    "finds out that the town is moving, house by house, to a new place",
    "hides a lost child from a search party that is not what it seems",
    "must choose between two doors",
    "is given a gift that grants a single wish",
    "finds a message in a bottle",
    "has to win back a stolen violin",
    "teaches a stubborn animal a new trick",
    "discovers that the moon has gone missing",
    "wakes up to find the whole town asleep",
    "receives a phone call from {poss} younger self",
    "must fix a machine that keeps the lights on",
    "gets lost on the way to an important meeting",
    "finds a garden growing where there was only stone",
    "is mistaken for someone famous",
    "must guard a mysterious egg overnight",
    "finds a diary that describes tomorrow",
    "tries to make a grumpy neighbor smile",
    "has to decide whether to open a sealed box",
    "sees a light moving across the water every night",
    "receives a key with a note that says 'Do not use it yet'",
]

GENRES = [
    ("mystery", "mystery story"),
    ("science fiction", "science fiction story"),
    ("fairy tale", "fairy tale"),
    ("ghost story", "ghost story"),
    ("comedy", "funny story"),
    ("romance", "love story"),
    ("horror", "horror story"),
    ("adventure", "adventure story"),
    ("fable", "fable"),
    ("western", "western"),
    ("thriller", "thriller"),
    ("bedtime story", "bedtime story"),
    ("tragedy", "sad story"),
    ("heist", "heist story"),
]

CONSTRAINTS = [
    ("max-words-60", "Keep it under 60 words."),
    ("max-words-80", "Keep it under 80 words."),
    ("max-words-100", "Keep it under 100 words."),
    ("first-person", "Tell it in the first person."),
    ("dialogue", "Include at least one line of dialogue."),
    ("open-with-dialogue", "Begin with a line of dialogue."),
    ("end-with-question", "End with a question."),
    ("mention-color", "Mention at least one color."),
    ("max-sentences-5", "Use no more than five sentences."),
    ("no-suddenly", "Do not use the word 'suddenly'."),
    ("mention-weather", "Describe the weather."),
    ("happy-ending", "Give it a happy ending."),
]
"""(id, text). The gold judge (feedback/gold.py) checks each id; docs/tasks.md lists the checks."""

FRAMES = [
    "Write a short {story} about {character} who {situation} {setting}. {constraint}",
    "{Setting}, {character} {situation}. Write this as a short {story}. {constraint}",
    "Tell {a_story} set {setting}: {character} {situation}. {constraint}",
    "Write {a_story} in which {character} {situation} {setting}. {constraint}",
    "Here is a premise: {character} {situation} {setting}. Turn it into a short {story}. {constraint}",
    "Imagine {character} who {situation} {setting}. Write the {story} that follows. {constraint}",
]
"""Sentence frames; {Setting} is the setting with a capital letter, {a_story} has its article."""

_PRONOUNS = {"she": ("her", "her", "herself"), "he": ("his", "him", "himself"),
             "they": ("their", "them", "themselves"), "it": ("its", "it", "itself")}
"""pronoun -> (possessive, object, reflexive); the subject pronoun is the key itself."""


def _article(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _pick(i: int) -> list[int]:
    # Indices for prompt i from a sha256 digest: reproducible on every platform and Python version,
    # unlike a language-level random generator whose algorithm is not a published contract.
    digest = hashlib.sha256(f"alignlab-writing-prompts:{i}".encode("utf-8")).digest()
    return [int.from_bytes(digest[4 * k:4 * k + 4], "big") for k in range(6)]


def writing_prompt(character: int, setting: int, situation: int, genre: int, constraint: int, frame: int) -> TaskPrompt:
    """The writing prompt built from one index into each list."""
    phrase, noun, pronoun = CHARACTERS[character]
    where, where_noun = SETTINGS[setting]
    poss, obj, refl = _PRONOUNS[pronoun]
    what = SITUATIONS[situation].format(subj=pronoun, poss=poss, obj=obj, refl=refl)
    genre_name, story = GENRES[genre]
    constraint_id, rule = CONSTRAINTS[constraint]
    text = FRAMES[frame].format(story=story, a_story=_article(story), character=phrase, situation=what,
                                setting=where, Setting=where[0].upper() + where[1:], constraint=rule)
    parts = {"character": phrase, "character_noun": noun, "setting": where, "setting_noun": where_noun,
             "situation": what, "genre": genre_name, "constraint": rule, "constraint_id": constraint_id}
    return TaskPrompt(text, parts)


def writing_prompts(count: int = WRITING_PROMPTS_COUNT) -> list[TaskPrompt]:
    """``count`` distinct writing prompts, the same list on every machine."""
    sizes = (len(CHARACTERS), len(SETTINGS), len(SITUATIONS), len(GENRES), len(CONSTRAINTS), len(FRAMES))
    prompts: list[TaskPrompt] = []
    seen: set[str] = set()
    i = 0
    while len(prompts) < count:
        prompt = writing_prompt(*(r % n for r, n in zip(_pick(i), sizes)))
        i += 1
        if prompt.text not in seen:
            seen.add(prompt.text)
            prompts.append(prompt)
    return prompts


def _writing_prompts_task(seed: int) -> Task:
    return Task("writing-prompts", writing_prompts(), seed=seed, template=STORY_TEMPLATE, stop=STORY_STOP)


TASKS: dict[str, Callable[[int], Task]] = {"writing-prompts": _writing_prompts_task}
"""Built-in tasks by name: each builder takes the split seed."""


# --- user tasks from a file -----------------------------------------------------------------------

def read_prompts_file(path: str | Path) -> list[TaskPrompt]:
    """The prompts of a file: .jsonl (one object a line with a string "prompt"; an optional
    "parts" object of strings is kept) or any other suffix (one prompt a line). Blank lines are
    skipped; a repeated prompt keeps its first occurrence. A bad line raises DataError naming
    the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prompts file {path} does not exist; give a .txt (one prompt a line) or "
                        ".jsonl (a \"prompt\" field a line) file, or a built-in task: " + ", ".join(TASKS))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"prompts file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    prompts: list[TaskPrompt] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        prompt = _jsonl_prompt(line, f"{path} line {number}") if jsonl else TaskPrompt(line.strip())
        if prompt.text not in seen:
            seen.add(prompt.text)
            prompts.append(prompt)
    if not prompts:
        raise DataError(f"prompts file {path} has no prompts; write one prompt a line"
                        + (" as {\"prompt\": \"...\"}" if jsonl else ""))
    return prompts


def _jsonl_prompt(line: str, where: str) -> TaskPrompt:
    try:
        row: Any = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err.msg} at column {err.colno}); each line must be an object "
                        "like {\"prompt\": \"...\"}", where=where) from err
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object with a \"prompt\" field, got {type(row).__name__}", where=where)
    text = row.get("prompt")
    if not isinstance(text, str) or not text.strip():
        problem = "is missing" if text is None else "is empty" if isinstance(text, str) else \
            f"must be a string, got {type(text).__name__}"
        raise DataError(f"'prompt' {problem}; every line needs the prompt's text", field="prompt", where=where)
    parts = row.get("parts", {})
    if not isinstance(parts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parts.items()):
        raise DataError("'parts' must be an object of strings (e.g. {\"character\": \"a baker\"})",
                        field="parts", where=where)
    return TaskPrompt(text.strip(), dict(parts))


def load_task(name_or_path: str | Path, seed: int = 0, template: str | None = None) -> Task:
    """A built-in task by name (see TASKS) or a user task from a prompts file, split with ``seed``.

    A file task's template defaults to "{prompt}" (the model continues the line as written);
    ``template`` overrides either kind's.
    """
    if str(name_or_path) in TASKS:
        task = TASKS[str(name_or_path)](seed)
        if template is not None:
            task = Task(task.name, task.prompts, seed=seed, template=template, stop=task.stop)
        return task
    path = Path(name_or_path)
    if not path.exists() and path.suffix == "":
        raise DataError(f"unknown task {str(name_or_path)!r}: not a built-in task ({', '.join(TASKS)}) "
                        "and no such file")
    return Task(path.stem, read_prompts_file(path), seed=seed, template=template or "{prompt}")
