"""One hand-made record of every kind (some with the common fields set), shared by the data tests."""

from alignlab.data import (
    Critique, Demonstration, Edit, KWayChoice, PreferencePair, Ranking, Rating, SpanJudgement, StepLabels, Stop,
    Thumbs,
)

PROMPT = "Write a line about the sea."

EXAMPLES = [
    PreferencePair(PROMPT, "The sea hums at night.", "Sea is water.", annotator="ann", time="2026-01-31T12:00:00Z"),
    PreferencePair(PROMPT, "Waves fold like linen.", "The sea.", 0.5, meta={"source": "loom", "ids": [1, 2]}),
    Ranking(PROMPT, ["a wave", "the tide", "salt"], [2, 1, 2], annotator="ann"),
    KWayChoice(PROMPT, ["gulls", "foam", "rocks", "kelp"], 2),
    Thumbs(PROMPT, "The sea remembers.", True),
    Thumbs(PROMPT, "Sea.", False, annotator="bob"),
    Rating(PROMPT, "Blue and endless.", 5.0),
    Rating(PROMPT, "Grey, then green.", 2.5, scale_min=0.0, scale_max=10.0),
    Demonstration(PROMPT, "The sea keeps every secret the rivers tell it."),
    Edit(PROMPT, "The sea is big.", "The sea is wide and patient."),
    Stop(PROMPT, "The sea is big and also big and also", 15),
    SpanJudgement(PROMPT, "The sea glows. It is wet.", 15, 25, "bad"),
    Critique(PROMPT, "The sea is wet.", "True but flat; give it an image."),
    StepLabels(PROMPT, ["The sea is cold.\n", "It is made of milk.\n", "Gulls cry."], [True, False, None]),
]
