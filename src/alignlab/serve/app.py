"""An OpenAI-compatible text completions server for one alignlab model.

``POST /v1/completions`` takes the legacy completions request (``prompt`` a string or a list of
them, ``max_tokens``, ``temperature``, ``top_p``, ``n``, ``stop``, ``seed``, ``logprobs`` up to
20, ``stream``; ``top_k`` as vLLM and llama.cpp's server take it) and answers in its format, with
the log-probs of the chosen tokens and of the likeliest alternatives, streamed as server-sent
events when ``stream`` is true. ``GET /v1/models`` lists the one model. Any tool that speaks to
OpenAI's completions endpoint (the loom's endpoint models, evaluation harnesses) can sample a
trained policy this way. One request runs at a time (a CPU runs one model computation well).

What is not the model's to do is refused with a 400 in OpenAI's error shape naming the field:
``echo``, ``best_of`` above ``n``, ``suffix``, ``logit_bias``, penalties other than 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_LOGPROBS = 20


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send fields we do not use (user, ...); unknown ones are ignored

    model: str | None = None
    prompt: str | list[str]
    max_tokens: Annotated[int, Field(ge=1, le=4096)] = 16
    temperature: Annotated[float, Field(ge=0, le=10)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=-1, le=1_000_000)] = 0
    n: Annotated[int, Field(ge=1, le=16)] = 1
    stop: str | list[str] | None = None
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    stream: bool = False
    echo: bool = False
    best_of: Annotated[int, Field(ge=1)] | None = None
    suffix: str | None = None
    logit_bias: dict[str, float] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


class RequestError(ValueError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _error(message: str, param: str | None = None, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": None}}, status_code=status)


@dataclass
class Served:
    name: str
    model: Any
    tokenizer: Any
    window: int


def _check(body: CompletionRequest, served: Served) -> list[str]:
    if body.model not in (None, served.name):
        raise RequestError(f"this server serves {served.name!r}, not {body.model!r}", "model")
    if body.echo:
        raise RequestError("echo is not supported: the response holds the completion only", "echo")
    if body.best_of not in (None, body.n):
        raise RequestError("best_of is not supported (sample n and choose yourself)", "best_of")
    if body.suffix:
        raise RequestError("suffix (insertion) is not supported by a causal model", "suffix")
    if body.logit_bias:
        raise RequestError("logit_bias is not supported", "logit_bias")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise RequestError(f"{name} is not supported; leave it 0", name)
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts or len(prompts) * body.n > 64:
        raise RequestError("give 1 to 64 completions per request (prompts times n)", "prompt")
    return prompts


def _token_logprobs(token, count: int | None, offset: int) -> dict:
    top = {}
    for alt in token.alternatives[:count or 0]:
        top.setdefault(alt.text, alt.logprob)
    return {"tokens": [token.text], "token_logprobs": [token.logprob], "top_logprobs": [top] if count else None,
            "text_offset": [offset]}


def _merge(parts: list[dict]) -> dict:
    out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for part in parts:
        for key in out:
            out[key] += part[key] or []
    if not any(out["top_logprobs"]):
        out["top_logprobs"] = None
    return out


async def _streamed(events, head: dict, logprobs: int | None, rows: int, finish) -> AsyncIterator[str]:
    """Server-sent events of a completion. The model runs in a thread of its own and hands each
    token over; when the client leaves, this generator is cancelled and tells the thread to stop
    (the model's lock is released then, not whenever the garbage collector gets to it)."""
    loop = asyncio.get_running_loop()
    handed: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()

    def hand(item) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            loop.call_soon_threadsafe(handed.put_nowait, item)

    def produce() -> None:
        try:
            for event in events(cancelled):
                hand(event)
        except Exception as err:  # reported in the stream: the status line has been sent already
            hand(err)
        finally:
            hand(None)

    threading.Thread(target=produce, name="alignlab-serve-stream", daemon=True).start()
    offsets = [0] * rows
    try:
        while (event := await handed.get()) is not None:
            if isinstance(event, Exception):
                yield f"data: {json.dumps({'error': {'message': str(event), 'type': 'server_error'}})}\n\n"
                break
            choice = {"index": event.row, "text": event.token.text, "finish_reason": finish(event.finish_reason),
                      "logprobs": (_token_logprobs(event.token, logprobs, offsets[event.row])
                                   if logprobs is not None else None)}
            offsets[event.row] += len(event.token.text)
            yield f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        cancelled.set()


def create_app(served: Served, api_key: str | None = None) -> FastAPI:
    """The app serving ``served`` (a loaded model and tokenizer); with ``api_key``, a request
    without ``Authorization: Bearer <api_key>`` is answered 401."""
    from alignlab.models import SampleConfig, stream
    from alignlab.models.tokens import encode_prompt

    app = FastAPI(title="alignlab serve", docs_url=None, redoc_url=None)
    lock = threading.Lock()

    @app.middleware("http")
    async def key_check(request: Request, call_next):
        if api_key is not None:
            sent = request.headers.get("authorization", "")
            if not secrets.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
                return _error("a valid API key is required (Authorization: Bearer KEY)", None, status=401)
        return await call_next(request)

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": 0,
                                            "owned_by": "alignlab", "max_model_len": served.window}]}

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        try:
            body = CompletionRequest.model_validate(await request.json())
            prompts = _check(body, served)
        except json.JSONDecodeError as err:
            return _error(f"the body is not JSON: {err}")
        except ValidationError as err:
            first = err.errors()[0]
            return _error(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}", str(first["loc"][0]))
        except RequestError as err:
            return _error(str(err), err.param)
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        config = SampleConfig(max_new_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                              top_k=max(body.top_k, 0), stop=stop, seed=seed,
                              alternatives=max(body.logprobs or 0, 1) if body.logprobs is not None else 0)
        try:
            config.check()
        except ValueError as err:
            return _error(str(err))
        expanded = [p for p in prompts for _ in range(body.n)]
        ids = [encode_prompt(served.tokenizer, p or served.tokenizer.bos_token) for p in expanded]
        longest = max(len(i) for i in ids)
        if longest + body.max_tokens > served.window:
            return _error(f"the prompt is {longest} tokens and max_tokens {body.max_tokens}; {served.name} reads at "
                          f"most {served.window} tokens at once", "max_tokens")
        created, cid = int(time.time()), f"cmpl-{secrets.token_hex(12)}"
        seeds = [seed + i for i in range(len(expanded))]

        def events(cancelled: threading.Event | None = None) -> Iterator:
            with lock:
                for event in stream(served.model, served.tokenizer, ids, config, seeds=seeds):
                    if cancelled is not None and cancelled.is_set():
                        return  # the client left: the model stops at once and the next request goes on
                    yield event

        def finish(reason: str | None) -> str | None:
            return None if reason is None else "length" if reason == "length" else "stop"

        head = {"id": cid, "object": "text_completion", "created": created, "model": served.name}
        if body.stream:
            return StreamingResponse(_streamed(events, head, body.logprobs, len(expanded), finish),
                                     media_type="text/event-stream")

        def collect() -> dict:
            texts, parts = [""] * len(expanded), [[] for _ in expanded]
            reasons, counts = ["length"] * len(expanded), [0] * len(expanded)
            for event in events():
                r = event.row
                if body.logprobs is not None:
                    parts[r].append(_token_logprobs(event.token, body.logprobs, len(texts[r])))
                texts[r] += event.token.text
                counts[r] += 1
                if event.finish_reason:
                    reasons[r] = finish(event.finish_reason)
            choices = [{"index": i, "text": texts[i], "finish_reason": reasons[i],
                        "logprobs": _merge(parts[i]) if body.logprobs is not None else None}
                       for i in range(len(expanded))]
            prompt_tokens = sum(len(i) for i in ids[::body.n])
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": sum(counts),
                     "total_tokens": prompt_tokens + sum(counts)}
            return {**head, "choices": choices, "usage": usage}

        return await run_in_threadpool(collect)  # the event loop stays free while the model works

    return app
