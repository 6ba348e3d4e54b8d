"""Generation models over an OpenAI-compatible completions endpoint (llama.cpp's server, vLLM,
`alignlab serve`, a provider), beside the local ones.

A loom started with ``--endpoint NAME=URL[,model=M][,key_env=VAR]`` lists NAME among its models;
generating with it sends ``POST URL/completions`` (streamed, one request per continuation, each
with its own seed), the memory and template rendered around the path as for a local model. The
key, if any, is read from the environment variable VAR at each request and sent as
``Authorization: Bearer``; it is never stored.

What an endpoint gives, the loom keeps: each token's text, its log-prob and the likeliest
alternatives' log-probs when the endpoint returns them (``logprobs``; up to 5, OpenAI's limit),
so the read view shades tokens and the popup lists alternatives as for a local model. What it
cannot give is stated, not guessed: token ids (so branching from an alternative token is
refused: write it instead), the next-token view and steering (both need the model's
activations), and the intervention bits of text a person writes (they need the model to score
it: with an endpoint as the default model they stay unknown). A path longer than the remote
model's window is the endpoint's to refuse: the loom cannot count its tokens.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from alignlab.loom.events import Invalid, LoomError

MAX_LOGPROBS = 5


class Upstream(LoomError):
    """The endpoint failed or refused the request (its own message is passed on)."""

    status = 502


@dataclass
class EndpointSlot:
    """A generation model the loom reaches over HTTP."""

    name: str
    url: str
    """The API's base, e.g. http://127.0.0.1:8080/v1 (``/completions`` is added)."""
    model: str | None
    """The model name sent in each request (default: none, for servers that serve one)."""
    key_env: str | None
    colour: str
    kind: str = "endpoint"
    timeout: float = 300.0

    @classmethod
    def parse(cls, spec: str, colour: str) -> EndpointSlot:
        """``NAME=URL[,model=M][,key_env=VAR]``, refused with what is wrong and the form it takes."""
        form = "NAME=URL[,model=M][,key_env=VAR], e.g. llama=http://127.0.0.1:8080/v1"
        name, eq, rest = spec.partition("=")
        if not eq or not name.strip() or not rest:
            raise Invalid(f"--endpoint {spec!r}: write it as {form}", field="endpoint")
        url, *options = rest.split(",")
        if not url.startswith(("http://", "https://")):
            raise Invalid(f"--endpoint {spec!r}: {url!r} is not an http(s) URL; write it as {form}", field="endpoint")
        fields: dict[str, str] = {}
        for option in options:
            key, eq, value = option.partition("=")
            if key not in ("model", "key_env") or not eq or not value:
                raise Invalid(f"--endpoint {spec!r}: {option!r} is not model=M or key_env=VAR; write it as {form}",
                              field="endpoint")
            fields[key] = value
        return cls(name.strip(), url.rstrip("/"), fields.get("model"), fields.get("key_env"), colour)

    def headers(self) -> dict[str, str]:
        """The request headers; a named key variable that is unset is refused before anything is sent."""
        if not self.key_env:
            return {}
        key = os.environ.get(self.key_env)
        if not key:
            raise Invalid(f"{self.name}'s key is read from the environment variable {self.key_env}, which is not set "
                          "in the loom's environment: export it and restart the loom", field="key_env")
        return {"Authorization": f"Bearer {key}"}

    def describe(self) -> dict:
        return {"name": self.name, "colour": self.colour, "kind": self.kind, "window": None, "layers": 0,
                "url": self.url}


def _tokens(choice: dict) -> list[dict]:
    """The tokens of one streamed chunk, in the loom's token form (ids unknown: None)."""
    text = choice.get("text") or ""
    lp = choice.get("logprobs") or {}
    pieces = lp.get("tokens") or ([text] if text else [])
    logprobs = lp.get("token_logprobs") or [None] * len(pieces)
    tops = lp.get("top_logprobs") or [None] * len(pieces)
    out = []
    for piece, logprob, top in zip(pieces, logprobs, tops):
        alternatives = sorted(((None, t, float(v)) for t, v in (top or {}).items()), key=lambda a: -a[2])
        out.append({"id": None, "text": piece, "logprob": None if logprob is None else float(logprob),
                    "sample_logprob": None, "alternatives": [list(a) for a in alternatives]})
    return out


def _refusal(response) -> str:
    """The endpoint's own words for a refusal (OpenAI's error shape, FastAPI's, or the text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error or body.get("detail")
        return str(message or body)[:500]
    return str(body)[:500]


def generate_remote(slot: EndpointSlot, prompt: str, request, job) -> list[dict]:
    """``request.n`` continuations of ``prompt`` from the endpoint, one streamed request each,
    emitting each token as the local generation does; returns rows in the same form."""
    import httpx

    if request.steering:
        raise Invalid(f"{slot.name} is served over an endpoint: steering adds to a model's activations, which only a "
                      "local model exposes", field="steering")
    before, after = request.around()
    headers = slot.headers()
    seed = request.seed if request.seed is not None else int.from_bytes(os.urandom(4), "little") % 2**31
    rows: list[dict] = []
    with httpx.Client(timeout=httpx.Timeout(slot.timeout, connect=10.0)) as client:
        for r in range(request.n):
            row = {"row": r, "text": "", "tokens": [], "seed": seed + r, "finish_reason": "length",
                   "context_dropped": 0}
            rows.append(row)
            limit = _stream_row(client, slot, headers, before + prompt + after, request, row, job)
            if limit == "cancelled":
                for later in range(r + 1, request.n):
                    rows.append({"row": later, "text": "", "tokens": [], "seed": seed + later,
                                 "finish_reason": "cancelled", "context_dropped": 0})
                break
    return [r for r in rows if r["tokens"] or r["finish_reason"] not in ("stop", "cancelled")]


def _stream_row(client, slot: EndpointSlot, headers: dict, text: str, request, row: dict, job) -> str | None:
    """Stream one continuation into ``row``; returns 'cancelled' when the job was cancelled."""
    import httpx

    body = {"prompt": text, "max_tokens": request.max_tokens, "temperature": request.temperature,
            "top_p": request.top_p, "seed": row["seed"], "stream": True,
            "logprobs": min(max(request.alternatives, 1), MAX_LOGPROBS)}
    if slot.model:
        body["model"] = slot.model
    if request.top_k:
        body["top_k"] = request.top_k
    if request.stop:
        body["stop"] = list(request.stop)
    r = row["row"]
    try:
        with client.stream("POST", f"{slot.url}/completions", json=body, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                raise Upstream(f"{slot.name} ({slot.url}) answered {response.status_code}: {_refusal(response)}")
            for line in response.iter_lines():
                ended = _stopped(job, r, row)
                if ended:
                    return ended
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    break
                choice = (json.loads(data).get("choices") or [{}])[0]
                for token in _tokens(choice):
                    job.emit({"type": "token", "row": r, "index": len(row["tokens"]), "token": token,
                              "finish_reason": None})
                    row["tokens"].append(token)
                    row["text"] += token["text"]
                if choice.get("finish_reason"):
                    row["finish_reason"] = choice["finish_reason"]
    except httpx.HTTPError as err:
        raise Upstream(f"{slot.name} ({slot.url}) could not be reached or stopped answering: {err}") from None
    return _stopped(job, r, row)


def _stopped(job, r: int, row: dict) -> str | None:
    """Apply a person's stop (this row or every row) or a cancellation to ``row``; what ended it."""
    if job.cancelled.is_set():
        row["finish_reason"] = "cancelled"
        return "cancelled"
    for key in (r, None):
        if key in job.stops:
            tokens = job.stops.pop(key) if key == r else job.stops[key]
            if tokens is not None and tokens < len(row["tokens"]):
                row["tokens"] = row["tokens"][:tokens]
                row["text"] = "".join(t["text"] for t in row["tokens"])
            row["finish_reason"] = "stop"
            return "cancelled" if key is None else "stop"
    return None
