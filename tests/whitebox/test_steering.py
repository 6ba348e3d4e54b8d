"""Activation addition on the embedded model, in the published example's own setting."""

import pytest
import torch

from alignlab.whitebox.steering import Steering, steered, steering_vector

LOVING = [" love", " adore", " care", " cherish", " like"]
HATEFUL = [" hate", " despise", " loathe", " kill", " hurt"]


def love_minus_hate(model, tokenizer, prompt: str, recipe: Steering | None = None) -> float:
    """log P(a loving next word) - log P(a hateful one), at the end of ``prompt``."""
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    first = lambda words: [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]  # noqa: E731
    with torch.no_grad():
        if recipe is None:
            logits = model(input_ids=ids).logits[0, -1]
        else:
            with steered(model, steering_vector(model, tokenizer, recipe), recipe.layer, recipe.coefficient):
                logits = model(input_ids=ids).logits[0, -1]
    lp = torch.log_softmax(logits.float(), -1)
    return float(torch.logsumexp(lp[first(LOVING)], 0) - torch.logsumexp(lp[first(HATEFUL)], 0))


@pytest.mark.slow
def test_love_minus_hate_steers_i_hate_you_because_toward_love(embedded):
    # Turner et al. (2023) show "I hate you because" turning affectionate under "Love" - "Hate"
    # at layer 6, coefficient 5 (GPT-2-XL). On Gemma 3 270M the same recipe moves the next word
    # from hateful to loving: measured -0.79 -> +1.93 nats (odds x15).
    model, tokenizer = embedded
    prompt = "I hate you because you"
    plain = love_minus_hate(model, tokenizer, prompt)
    steered_margin = love_minus_hate(model, tokenizer, prompt, Steering("Love", "Hate", 6, 5.0))
    reversed_margin = love_minus_hate(model, tokenizer, prompt, Steering("Hate", "Love", 6, 5.0))
    assert plain < 0 < steered_margin and steered_margin - plain > 1.5
    assert reversed_margin < plain  # the opposite vector pushes the other way
