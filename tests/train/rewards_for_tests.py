"""Reward functions the policy tests optimise (importable as tests.train.rewards_for_tests:NAME)."""


def vowel_share(prompt: str, response: str) -> float:
    """Share of vowels among the response's letters: a proxy any sampler can move."""
    letters = [c for c in response.lower() if c.isalpha()]
    return sum(c in "aeiou" for c in letters) / max(1, len(letters))


def length_judge(prompt: str, response: str) -> float:
    """A 'gold' judge that disagrees with the proxy: it wants about 40 characters."""
    return -abs(len(response) - 40) / 40


def not_a_number(prompt: str, response: str):
    return "high"


def letter_share(prompt: str, response: str) -> float:
    """Share of the letter 'e' among the response's characters: rare for a random tiny model,
    learnable by moving mass to tokens that contain it."""
    return response.count("e") / max(1, len(response))



def cjk_share(prompt: str, response: str) -> float:
    """Share of CJK ideographs among the response's characters: about 4% for the tiny random
    model, and learnable by moving probability to the many tokens that hold them."""
    return sum("\u4e00" <= ch <= "\u9fff" for ch in response) / max(1, len(response))


WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]


def cat_share(prompt: str, response: str) -> float:
    """Share of the word 'cat' among the response's words (the PPO toy's reward)."""
    words = response.split()
    return words.count("cat") / max(1, len(words))


def cat_in_moderation(prompt: str, response: str) -> float:
    """A 'gold' judge for the PPO toy that likes some 'cat' but not a response made of it:
    it agrees with cat_share up to a share of 0.3 and falls beyond."""
    share = cat_share(prompt, response)
    return share if share <= 0.3 else 0.6 - share
