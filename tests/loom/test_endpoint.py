"""The loom generating with a model over an OpenAI-compatible endpoint: `alignlab serve` on the
tiny model, a real uvicorn server on 127.0.0.1, and the loom's API on the same tiny model for
comparison (the same seed must give the same text and log-probs either way)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from alignlab.loom.server import LoomSettings, create_app  # noqa: E402

PROMPT = "The old lighthouse keeper"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(tiny):
    """`alignlab serve`'s app on the tiny model, with an API key, served on a free port: its base URL."""
    import uvicorn

    from alignlab.serve.app import Served, create_app as serve_app

    model, tokenizer = tiny
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(serve_app(Served("tiny-remote", model, tokenizer, 512), api_key="k3y"),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def client(tmp_path, endpoint, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_TEST_ENDPOINT_KEY", "k3y")
    app = create_app(LoomSettings(data_dir=tmp_path, models=["tiny"], annotator="tester",
                                  endpoints=[f"far={endpoint},model=tiny-remote,key_env=ALIGNLAB_TEST_ENDPOINT_KEY",
                                             f"nokey={endpoint}", f"unset={endpoint},key_env=ALIGNLAB_TEST_UNSET"]))
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        yield c


def generate(client, node_id, **body):
    with client.stream("POST", f"/api/nodes/{node_id}/generate", json=body) as r:
        if r.status_code != 200:
            return r.status_code, r.read().decode()
        return 200, [json.loads(line) for line in r.iter_lines() if line]


def test_an_endpoint_model_writes_what_the_local_one_writes_with_the_same_seeds(client):
    listed = {m["name"]: m["kind"] for m in client.get("/api/models").json()}
    assert listed == {"tiny": "base", "far": "endpoint", "nokey": "endpoint", "unset": "endpoint"}
    tree = client.post("/api/trees", json={"prompt": PROMPT, "settings": {"memory": "A log.\n"}}).json()
    root = tree["root_id"]
    status, remote = generate(client, root, model="far", n=2, max_tokens=6, seed=7, temperature=0.8)
    assert status == 200, remote
    status, here = generate(client, root, model="tiny", n=2, max_tokens=6, seed=7, temperature=0.8)
    far, near = remote[-1]["nodes"], here[-1]["nodes"]
    assert [n["text"] for n in far] == [n["text"] for n in near]  # same model, seeds, memory: same text
    assert all(n["model"] == "far" for n in far)
    streamed = "".join(e["token"]["text"] for e in remote if e["type"] == "token" and e["row"] == 1)
    assert streamed == far[1]["text"]
    a = client.get(f"/api/nodes/{far[0]['id']}").json()
    b = client.get(f"/api/nodes/{near[0]['id']}").json()
    assert [t["logprob"] for t in a["tokens"]] == pytest.approx([t["logprob"] for t in b["tokens"]], abs=1e-4)
    assert a["tokens"][0]["id"] is None and a["tokens"][0]["alternatives"]  # texts and log-probs, no ids
    top = a["tokens"][0]["alternatives"][0]
    assert top[1] == b["tokens"][0]["alternatives"][0][1] and top[2] == pytest.approx(b["tokens"][0]["alternatives"][0][2], abs=1e-4)
    assert a["settings"]["memory"] == "A log.\n"
    # what an endpoint cannot give is refused, saying why
    r = client.post(f"/api/nodes/{far[0]['id']}/counterfactual", json={"token_index": 0, "token_id": 5})
    assert r.status_code == 422 and "endpoint" in r.text
    r = client.get(f"/api/nodes/{root}/next-tokens", params={"model": "far"})
    assert r.status_code == 422 and "local model" in r.text
    status, text = generate(client, root, model="far", steering={"positive": "Love", "negative": "Hate", "layer": 1,
                                                                 "coefficient": 2})
    assert status == 422 and "steering" in text


def test_a_missing_or_wrong_key_and_a_refusal_are_reported(client):
    root = client.post("/api/trees", json={"prompt": PROMPT}).json()["root_id"]
    status, text = generate(client, root, model="unset", n=1, max_tokens=3)
    assert status == 422 and "ALIGNLAB_TEST_UNSET" in text
    status, events = generate(client, root, model="nokey", n=1, max_tokens=3)  # the server wants a key
    assert status == 200 and events[-1]["type"] == "error" and "401" in events[-1]["message"]
    status, events = generate(client, root, model="far", n=1, max_tokens=1000)  # past the remote window
    assert events[-1]["type"] == "error" and "reads at most 512" in events[-1]["message"]
    assert client.get(f"/api/nodes/{root}/children").json() == []  # nothing half-made was saved


def test_endpoint_specs_are_checked_at_start(tmp_path):
    from alignlab.loom.events import Invalid

    for spec, says in [("noequals", "NAME=URL"), ("x=ftp://host", "http"), ("x=http://h/v1,temp=1", "model=M"),
                       ("tiny=http://h/v1", "taken")]:
        with pytest.raises(Invalid, match=says):
            create_app(LoomSettings(data_dir=tmp_path, models=["tiny"], endpoints=[spec]))


def test_a_stopped_endpoint_row_is_saved_as_it_was_streamed(client):
    root = client.post("/api/trees", json={"prompt": PROMPT}).json()["root_id"]
    streamed: dict[int, list[str]] = {0: [], 1: []}
    with client.stream("POST", f"/api/nodes/{root}/generate", json={"model": "far", "n": 2, "max_tokens": 400,
                                                                    "seed": 3, "stop": []}) as r:
        lines = (json.loads(line) for line in r.iter_lines() if line)
        first = next(lines)
        for event in lines:
            if event["type"] == "token":
                streamed[event["row"]].append(event["token"]["text"])
                if event["row"] == 0 and len(streamed[0]) == 4:
                    stop = client.post(f"/api/generations/{first['job']}/stop", json={"row": 0, "tokens": 4})
                    assert stop.status_code == 200, stop.text
            if event["type"] == "done":
                done = event
    nodes = dict(zip(done["rows"], done["nodes"]))
    assert nodes[0]["finish_reason"] == "stop" and nodes[0]["text"] == "".join(streamed[0][:4])
    assert len(streamed[0]) < 100  # the row stopped streaming (400 were asked for)
    assert nodes[1]["text"] == "".join(streamed[1]) and len(streamed[1]) > 4  # the next row went on
