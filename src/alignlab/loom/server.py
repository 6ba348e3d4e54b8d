"""The loom's web server: ``create_app(settings)`` builds the FastAPI app (no module-level state:
everything lives on ``app.state``); ``serve`` runs it with uvicorn.

Pages are static files shipped in loom/static (plain JavaScript modules, no build step). The
JSON API lives under /api (routes in loom/api_*.py). Bad requests get a 4xx with ``detail`` (what
was wrong) and ``field`` (where); only a bug in alignlab can produce a 500. Binding anywhere
but the loopback interface needs a token: requests then carry ``Authorization: Bearer TOKEN``
(the page gets it once as ``?token=``, keeps it in a cookie and is sent on to the address without
it). A loom bound to the loopback interface answers only requests addressed to a loopback name
(the Host header): a web page elsewhere cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections import Counter, defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from alignlab.loom.events import LoomError
from alignlab.loom.store import Store

STATIC = Path(__file__).parent / "static"
COOKIE = "alignlab_loom_token"


@dataclass
class LoomSettings:
    data_dir: Path
    db_url: str | None = None
    models: list[str] = field(default_factory=lambda: ["gemma-3-270m"])
    annotator: str = "anonymous"
    token: str | None = None
    host: str = "127.0.0.1"
    max_queued: int = 64
    load_models: bool = True  # False: serve the store only (no generation), e.g. for exports
    context_tokens: int = 4096
    """The most tokens a model is given at once: a longer path keeps its end (the node says how much was dropped)."""
    endpoints: list[str] = field(default_factory=list)
    """Models over an OpenAI-compatible endpoint: NAME=URL[,model=M][,key_env=VAR] (loom/endpoint.py)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(header: str) -> str:
    """The name in a Host header, without its port ("[::1]:8765" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def addressed_to_loopback(header: str) -> bool:
    name = host_name(header)
    return name in LOOPBACK_NAMES or name.endswith(".localhost") or is_loopback(name)


def check_binding(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ValueError(f"--host {host} makes the loom reachable from other machines; give --token "
                         "(or ALIGNLAB_LOOM_TOKEN) so that only people with the token can use it")


def create_app(settings: LoomSettings):
    """The loom's ASGI app."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
    from fastapi.staticfiles import StaticFiles

    from alignlab.loom import api_feedback, api_models, api_trees
    from alignlab.loom.generation import Worker
    from alignlab.loom.models import ModelRegistry

    check_binding(settings.host, settings.token)

    @asynccontextmanager
    async def lifespan(app):
        yield
        app.state.worker.stop()
        app.state.store.close()

    app = FastAPI(title="alignlab loom", version="1", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.store = Store.open(settings.db_url, settings.data_dir)
    app.state.worker = Worker(settings.max_queued)
    app.state.models = ModelRegistry(settings.models if settings.load_models else [],
                                     app.state.store if settings.load_models else None,
                                     context_tokens=settings.context_tokens,
                                     endpoints=settings.endpoints if settings.load_models else [])
    app.state.jobs = {}
    app.state.ask_features = {}  # model name -> (prompt, text) features for Ask me (loom/ask.py)
    app.state.presence = defaultdict(Counter)  # tree id -> annotator -> open live streams

    @app.exception_handler(LoomError)
    async def loom_error(request: Request, err: LoomError):
        return JSONResponse({"detail": str(err), "field": err.field}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        problems = err.errors()
        first = problems[0] if problems else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"detail": f"{where or 'request'}: {first.get('msg', 'invalid')}", "field": where or None,
                             "errors": [{"loc": list(p.get("loc", ())), "msg": p.get("msg")} for p in problems]},
                            status_code=422)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if is_loopback(settings.host) and not addressed_to_loopback(request.headers.get("host", "")):
            return JSONResponse({"detail": f"this loom listens on {settings.host} and answers only requests addressed "
                                           "to localhost or 127.0.0.1, not to "
                                           f"{request.headers.get('host', '')!r} (a guard against DNS rebinding); "
                                           "to serve it under another name, start it with --host and --token",
                                 "field": "host"}, status_code=421)
        token = settings.token
        if token:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
                or request.cookies.get(COOKIE, "") or request.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "this loom needs its token: open it with ?token=... or send "
                                               "'Authorization: Bearer TOKEN'", "field": None}, status_code=401)
        if token and request.query_params.get("token") and request.method == "GET" and request.url.path == "/":
            # The page's first visit: keep the token in a cookie and send the browser on to the
            # address without it (out of the address bar, history and bookmarks; the browser
            # keeps the #fragment).
            response = RedirectResponse("/", status_code=303)
        else:
            response = await call_next(request)
        if token and request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        # Node text is untrusted: no inline script may run, whatever reaches the page.
        response.headers["Content-Security-Policy"] = ("default-src 'self'; script-src 'self'; "
                                                       "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                                       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    app.include_router(api_trees.router, prefix="/api")
    app.include_router(api_feedback.router, prefix="/api")
    app.include_router(api_models.router, prefix="/api")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def serve(settings: LoomSettings, port: int = 8765) -> None:
    """Run the loom until interrupted."""
    import uvicorn

    if settings.token is None:
        settings.token = os.environ.get("ALIGNLAB_LOOM_TOKEN") or None
    check_binding(settings.host, settings.token)
    app = create_app(settings)
    where = f"http://{settings.host}:{port}/" + (f"?token={settings.token}" if settings.token else "")
    print(f"alignlab loom: serving {where} (data in {settings.db_url or settings.data_dir})", flush=True)
    # Open pages hold live streams that never end by themselves: on Ctrl+C, wait 2 s for
    # responses to finish, then cancel them (a running generation saves what it has written).
    uvicorn.run(app, host=settings.host, port=port, log_level="warning", timeout_graceful_shutdown=2)


def new_token() -> str:
    return secrets.token_urlsafe(24)
