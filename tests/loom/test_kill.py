"""Killing the loom's server (SIGKILL) while clients write leaves a consistent database that
holds every write the server acknowledged, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import sqlalchemy as sa

from tests.loom.conftest import _free_port


def _serve(tmp_path, db_url):
    port = _free_port()
    command = [sys.executable, "-m", "alignlab.cli", "loom", "--data", str(tmp_path), "--port", str(port),
               "--model", "tiny", "--annotator", "killer"]
    if db_url.startswith("postgresql"):
        command += ["--db", db_url]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(base + "/trees", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the loom did not start: {proc.stderr.read().decode()[-500:]}")


def test_sigkill_mid_write_leaves_every_acknowledged_write_and_nothing_torn(tmp_path, db_url):
    proc, base = _serve(tmp_path, db_url)
    tree = httpx.post(base + "/trees", json={"prompt": "Kill me"}, timeout=60).json()
    root = tree["root_id"]
    acked_events, acked_nodes, stop = [], [], threading.Event()
    a, b = (httpx.post(f"{base}/nodes/{root}/children", json={"text": t}, timeout=120).json()["id"]
            for t in (" a", " b"))

    def writer(k: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 3:
                        r = client.post(f"{base}/trees/{tree['id']}/feedback", headers={"X-Annotator": f"w{k}"},
                                        json={"kind": "compare", "payload": {"a": a, "b": b, "choice": "a"}})
                        if r.status_code == 201:
                            acked_events.append(r.json()["id"])
                    else:
                        r = client.post(f"{base}/nodes/{root}/children", json={"text": f" w{k}-{i}" * 50})
                        if r.status_code == 201:
                            acked_nodes.append(r.json()["id"])
                except httpx.HTTPError:
                    return

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(6)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked_events) >= 5 and len(acked_nodes) >= 2  # the kill came mid-stream, not before it

    engine = sa.create_engine(db_url)
    with engine.connect() as c:
        if db_url.startswith("sqlite"):
            assert c.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert c.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        events = set(c.execute(sa.text("SELECT id FROM events")).scalars())
        nodes = set(c.execute(sa.text("SELECT id FROM nodes")).scalars())
        orphans = c.execute(sa.text("SELECT count(*) FROM nodes n WHERE n.parent_id IS NOT NULL AND NOT EXISTS "
                                    "(SELECT 1 FROM nodes p WHERE p.id = n.parent_id)")).scalar()
        # every node was written with its 'write' event in one transaction: neither without the other
        writes = c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'write'")).scalar()
    engine.dispose()
    assert set(acked_events) <= events
    assert set(acked_nodes) <= nodes
    assert orphans == 0
    assert writes == len(nodes) - 1  # the root came with 'create_tree'


def test_twenty_concurrent_http_clients_lose_no_feedback(tmp_path, db_url):
    proc, base = _serve(tmp_path, db_url)
    try:
        tree = httpx.post(base + "/trees", json={"prompt": "Busy"}, timeout=60).json()
        a, b = (httpx.post(f"{base}/nodes/{tree['root_id']}/children", json={"text": t}, timeout=120).json()["id"]
                for t in (" a", " b"))
        codes: list[int] = []

        def client(k: int) -> None:
            with httpx.Client(timeout=60) as c:
                for i in range(10):
                    r = c.post(f"{base}/trees/{tree['id']}/feedback", headers={"X-Annotator": f"c{k}"},
                               json={"kind": "compare", "payload": {"a": a, "b": b, "choice": "ab"[i % 2]}})
                    codes.append(r.status_code)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert codes == [201] * 200
        events = httpx.get(f"{base}/trees/{tree['id']}/events", params={"kind": "compare"}).json()
        assert len(events) == 200 and len({e["author"] for e in events}) == 20
    finally:
        proc.kill()
        proc.wait(10)
