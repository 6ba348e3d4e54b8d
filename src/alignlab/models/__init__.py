"""Models: load, sample with log-probs, score text."""

from alignlab.models.loading import EMBEDDED, TINY, Loaded, ModelLoadError, load_model, load_tokenizer
from alignlab.models.sampling import Completion, SampleConfig, Token, TokenEvent, sample, stream
from alignlab.models.scoring import Scored, score, token_logprobs

__all__ = [
    "EMBEDDED", "TINY", "Loaded", "ModelLoadError", "load_model", "load_tokenizer",
    "Completion", "SampleConfig", "Token", "TokenEvent", "sample", "stream",
    "Scored", "score", "token_logprobs",
]
