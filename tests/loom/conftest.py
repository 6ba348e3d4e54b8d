"""Fixtures for the loom: stores on a real SQLite file and a real PostgreSQL server.

PostgreSQL is Debian's, started as a throwaway cluster on 127.0.0.1 for the test session
(initdb refuses root, so the cluster belongs to the postgres user). Where it cannot start, the
PostgreSQL variants are skipped with the reason shown.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*/bin/initdb")), key=lambda p: int(p.parent.parent.name)) \
        if root.exists() else []
    return versions[-1].parent if versions else None


def _as_postgres(*args: str) -> list[str]:
    return list(args) if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]


@pytest.fixture(scope="session")
def postgres_url():
    """A URL to a fresh PostgreSQL database, or a skip naming why there is none."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (make test installs it: apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'psycopg[binary]')")
    base = Path(tempfile.mkdtemp(prefix="alignlab-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = _free_port()
    data, log = base / "data", base / "pg.log"
    try:
        subprocess.run(_as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                    "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
                       check=True, capture_output=True, timeout=120)
        subprocess.run(_as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o",
                                    f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -c fsync=off", "-w", "start"),
                       check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as err:
        detail = getattr(err, "stderr", b"") or b""
        pytest.skip(f"PostgreSQL did not start: {err} {detail.decode(errors='replace')[-300:]}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    subprocess.run(_as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"),
                   capture_output=True, timeout=120)
    shutil.rmtree(base, ignore_errors=True)


def _fresh_pg_database(url: str) -> str:
    import sqlalchemy as sa

    from alignlab.loom.ids import new_id

    name = "loom_" + new_id().lower()
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A URL to an empty database on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'loom.sqlite'}"
    return _fresh_pg_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(db_url, tmp_path):
    from alignlab.loom.store import Store

    s = Store.open(db_url, tmp_path)
    yield s
    s.close()


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium (Playwright's own browser download does not work here)."""
    return {**browser_type_launch_args, "executable_path": shutil.which("chromium") or "/usr/bin/chromium",
            "headless": True, "args": CHROMIUM_ARGS}


@pytest.fixture
def live_loom(tmp_path):
    """The loom served by uvicorn on 127.0.0.1 and a free port, on the tiny model: (url, store)."""
    import threading
    import time

    import uvicorn

    from alignlab.loom.server import LoomSettings, create_app

    app = create_app(LoomSettings(data_dir=tmp_path, models=["tiny"], annotator="tester"))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=1))  # pages' live streams never end alone
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/", app.state.store
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    """The tests wait on page state with expressions Playwright evaluates by string, which the
    loom's Content-Security-Policy forbids; bypassing it also makes the injection test stricter
    (only the page's own escaping stands between node text and the DOM)."""
    return {**browser_context_args, "bypass_csp": True}
