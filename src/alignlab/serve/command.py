"""`alignlab serve`: one model (the embedded one, a trained policy or adapter folder) behind an
OpenAI-compatible completions endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from alignlab.cli import Command


@dataclass
class ServeConfig:
    model: str = "gemma-3-270m"
    """The model to serve: gemma-3-270m, tiny, or a policy or adapter folder."""
    name: str = ""
    """The model's name in requests and in /v1/models (default: --model as given)."""
    host: str = "127.0.0.1"
    """Interface to listen on (the server has no access control: keep it on loopback or behind one that does)."""
    port: int = 8000
    """Port to listen on."""
    context_tokens: int = 4096
    """The most tokens a request may use (prompt and completion; the model's own window permitting)."""
    dtype: str = "float32"
    """Weights' dtype: float32, bfloat16 or float16."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N."""
    api_key_env: str = ""
    """An environment variable holding a key every request must send (Authorization: Bearer KEY); default: none needed."""


def run(config: ServeConfig) -> int:
    import os

    import uvicorn

    from alignlab.models.processes import resolve_device
    from alignlab.serve.app import Served, create_app
    from alignlab.train.policy import load_policy

    key = None
    if config.api_key_env:
        key = os.environ.get(config.api_key_env)
        if not key:
            raise ValueError(f"--api-key-env {config.api_key_env}: that environment variable is not set (or empty); "
                             "export the key in it, or leave the flag out to serve without one")
    if config.context_tokens < 2:
        raise ValueError(f"--context-tokens is {config.context_tokens}; give at least 2")
    model, tokenizer = load_policy(config.model, dtype=config.dtype)
    model.to(resolve_device(config.device)).eval()
    limit = getattr(model.config, "max_position_embeddings", None) or config.context_tokens
    served = Served(config.name or config.model, model, tokenizer, min(int(limit), config.context_tokens))
    print(f"serving {served.name} at http://{config.host}:{config.port}/v1 (completions; {served.window} tokens a "
          "request at most)", flush=True)
    uvicorn.run(create_app(served, key), host=config.host, port=config.port, log_level="warning")
    return 0


SERVE = Command("serve", "serve a model over an OpenAI-compatible completions endpoint (/v1/completions)",
                ServeConfig, run)
