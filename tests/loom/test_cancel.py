"""Stopping generations for real, over a real HTTP server (uvicorn on 127.0.0.1, the tiny model):
a stopped row is saved exactly as the person was shown it, stopping every row ends the work at
once, and a client that leaves cancels its generation instead of holding the model."""

from __future__ import annotations

import json
import time

import pytest

httpx = pytest.importorskip("httpx")

LONG = {"max_tokens": 512, "seed": 3, "stop": []}


def _tree(url):
    r = httpx.post(url + "api/trees", json={"prompt": "The old lighthouse keeper"})
    assert r.status_code == 201, r.text
    return r.json()


def _lines(response):
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def test_a_stopped_row_is_saved_exactly_as_it_was_streamed_and_the_rest_go_on(live_loom):
    url, store = live_loom
    tree = _tree(url)
    streamed = {0: [], 1: []}
    with httpx.Client(base_url=url, timeout=120) as client:
        with client.stream("POST", f"api/nodes/{tree['root_id']}/generate", json={"n": 2, **LONG}) as r:
            events = _lines(r)
            first = next(events)
            assert first["type"] == "queued" and first["job"]
            for event in events:
                if event["type"] == "token":
                    streamed[event["row"]].append(event["token"]["text"])
                    if event["row"] == 0 and len(streamed[0]) == 5:
                        shown = len(streamed[0])  # what the page showed when the person hit stop
                        stop = client.post(f"api/generations/{first['job']}/stop", json={"row": 0, "tokens": shown})
                        assert stop.status_code == 200, stop.text
                if event["type"] == "done":
                    done = event
    nodes = {row: node for row, node in zip(done["rows"], done["nodes"])}
    assert nodes[0]["finish_reason"] == "stop"
    assert nodes[0]["text"] == "".join(streamed[0][:5])  # tokens already in flight after the stop are not kept
    assert len(streamed[0]) < 100  # the row stopped streaming (512 were asked for); tokens in flight may follow
    assert nodes[1]["finish_reason"] != "stop" and nodes[1]["text"] == "".join(streamed[1])  # the other went on
    saved = store.node(nodes[0]["id"])
    assert saved["text"] == "".join(streamed[0][:5]) and len(saved["tokens"]) == 5
    # the e-stop feedback points at exactly the end of that text
    event = httpx.post(url + f"api/trees/{tree['id']}/feedback", json={
        "kind": "stop", "node_id": saved["id"], "payload": {"token_index": 5, "char": len(saved["text"])}})
    assert event.status_code == 201, event.text
    # an ended generation cannot be stopped
    gone = httpx.post(url + f"api/generations/{first['job']}/stop", json={})
    assert gone.status_code == 404 and gone.json()["field"] == "job_id"


def test_stopping_every_row_ends_the_work_at_once(live_loom):
    url, store = live_loom
    tree = _tree(url)
    streamed: dict[int, list[str]] = {}
    with httpx.Client(base_url=url, timeout=120) as client:
        with client.stream("POST", f"api/nodes/{tree['root_id']}/generate", json={"n": 4, **LONG}) as r:
            events = _lines(r)
            job = next(events)["job"]
            for event in events:
                if event["type"] == "token":
                    streamed.setdefault(event["row"], []).append(event["token"]["text"])
                    if sum(map(len, streamed.values())) == 12:
                        assert client.post(f"api/generations/{job}/stop", json={}).status_code == 200
                if event["type"] == "done":
                    done = event
    assert sum(map(len, streamed.values())) < 512  # 4 x 512 tokens were asked for
    for row, node in zip(done["rows"], done["nodes"]):
        assert node["text"] == "".join(streamed[row])
        assert node["finish_reason"] == "stop"


def test_a_client_that_leaves_cancels_its_generation_and_frees_the_model(live_loom):
    url, store = live_loom
    tree = _tree(url)
    with httpx.Client(base_url=url, timeout=120) as client:
        with client.stream("POST", f"api/nodes/{tree['root_id']}/generate",
                           json={"n": 8, **LONG, "max_tokens": 1024}) as r:
            for event in _lines(r):
                if event["type"] == "token":
                    break  # the tab is closed: the connection goes away mid-stream
    left = time.time()
    # the model is free again at once: another generation starts and ends quickly
    with httpx.Client(base_url=url, timeout=120) as client:
        with client.stream("POST", f"api/nodes/{tree['root_id']}/generate",
                           json={"n": 1, "max_tokens": 4, "seed": 1}) as r:
            kinds = [e["type"] for e in _lines(r)]
    assert kinds[-1] == "done"
    assert time.time() - left < 20  # 8 x 1,024 tokens on the tiny model take minutes
    # what the cancelled generation had made is saved, marked as cancelled
    children = httpx.get(url + f"api/nodes/{tree['root_id']}/children").json()
    cancelled = [c for c in children if c["finish_reason"] == "cancelled"]
    assert cancelled and all(c["text"] for c in cancelled)
    assert all(len(store.node(c["id"])["tokens"]) < 1024 for c in cancelled)
