"""alignlab: a laboratory for learning from human feedback on language models."""

__version__ = "0.1.0"
