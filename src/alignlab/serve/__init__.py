"""`alignlab serve`: a model behind an OpenAI-compatible completions endpoint."""
