"""Feedback: every kind of feedback as a reward-rational choice, and simulated labelers."""

from alignlab.feedback.choices import (
    DEFAULT_BETAS, MAPPERS, UNUSED_REASONS, Choice, ChoiceSet, RatingTarget, choice_log_likelihood, to_choices,
)
from alignlab.feedback.labelers import BANDS, SimulatedLabeler, agreement_rate, expected_agreement

__all__ = [
    "DEFAULT_BETAS", "MAPPERS", "UNUSED_REASONS", "Choice", "ChoiceSet", "RatingTarget", "choice_log_likelihood",
    "to_choices", "BANDS", "SimulatedLabeler", "agreement_rate", "expected_agreement",
]
