"""Terminal views: continuations shaded by per-token probability."""

from __future__ import annotations

import math
import os
import sys

from alignlab.models.sampling import Completion

RESET = "\x1b[0m"
DIM = "\x1b[2m"


def use_color(mode: str, stream=None) -> bool:
    """'always' | 'never' | 'auto' (a terminal, and NO_COLOR unset)."""
    stream = stream or sys.stdout
    if mode == "always":
        return True
    if mode == "never":
        return False
    return stream.isatty() and not os.environ.get("NO_COLOR")


def _background(prob: float) -> str:
    """Likely tokens stay on the terminal's background; unlikely ones grow redder (log scale)."""
    surprise = min(1.0, -math.log(max(prob, 1e-12)) / math.log(1e4))  # p=1 -> 0, p<=1e-4 -> 1
    red = int(40 + 180 * surprise)
    other = int(40 + 40 * (1 - surprise))
    return f"\x1b[48;2;{red};{other};{other}m\x1b[38;2;255;255;255m"


def shade(completion: Completion, color: bool) -> str:
    """The continuation with each token's background set by its raw-model probability.

    Without color, tokens are separated by '|' with the probability of unlikely ones (< 10%)
    in brackets, so the information survives a pipe or a log file.
    """
    parts = []
    for token in completion.tokens:
        prob = math.exp(token.logprob)
        text = token.text
        if color:
            parts.append(_background(prob) + text.replace("\n", "\u21b5\n") + RESET)
        else:
            parts.append(text + (f"[{prob:.2g}]" if prob < 0.1 and text else ""))
    return "".join(parts) if color else "|".join(p for p in parts if p)


def legend(color: bool) -> str:
    """One line saying how to read the shading."""
    if not color:
        return "tokens separated by '|'; [p] = model probability of a token below 0.10"
    swatches = " ".join(_background(p) + f" p={p:g} " + RESET for p in (0.9, 0.3, 0.05, 0.005, 0.0005))
    return f"shading by model probability: {swatches}"


def print_completion(index: int, completion: Completion, color: bool, out=None) -> None:
    """A header, the prompt dimmed, then the shaded continuation."""
    out = out or sys.stdout
    mean_p = math.exp(completion.logprob / max(1, len(completion.tokens)))
    print(f"--- sample {index} (seed {completion.seed}, {len(completion.tokens)} tokens, "
          f"finish: {completion.finish_reason}, mean per-token p {mean_p:.3f}) ---", file=out)
    prompt = completion.prompt
    print((DIM + prompt + RESET) if color else prompt, end="" if color else "\n", file=out)
    print(shade(completion, color), file=out)
    print(file=out)
