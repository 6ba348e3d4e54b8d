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
