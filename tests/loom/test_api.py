"""Every route of the loom's API, on the tiny model and a real SQLite file (PostgreSQL where marked)."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from alignlab.loom.server import LoomSettings, check_binding, create_app  # noqa: E402


@pytest.fixture
def client(tmp_path):
    app = create_app(LoomSettings(data_dir=tmp_path, models=["tiny"], annotator="tester"))
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        yield c


def make_tree(client, prompt="The old lighthouse keeper"):
    r = client.post("/api/trees", json={"prompt": prompt})
    assert r.status_code == 201, r.text
    return r.json()


def generate(client, node_id, **body):
    events = []
    with client.stream("POST", f"/api/nodes/{node_id}/generate", json={"max_tokens": 6, "seed": 1, **body}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line:
                events.append(json.loads(line))
    return events


def test_trees_nodes_and_generation_stream(client):
    tree = make_tree(client)
    assert client.get("/api/trees").json()[0]["id"] == tree["id"]
    events = generate(client, tree["root_id"], n=3)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "queued" and "start" in kinds and kinds[-1] == "done"
    loading = [e for e in events if e["type"] == "status"]  # the first use loads the model: the page says so
    assert len(loading) == 1 and "loading tiny" in loading[0]["message"]
    tokens = [e for e in events if e["type"] == "token"]
    assert {e["row"] for e in tokens} == {0, 1, 2}
    made = events[-1]["nodes"]
    assert len(made) == 3 and all(n["source"] == "model" and n["model"] == "tiny" for n in made)
    streamed = "".join(e["token"]["text"] for e in tokens if e["row"] == 0)
    full = client.get(f"/api/nodes/{made[0]['id']}").json()
    assert full["text"] == streamed and len(full["tokens"]) >= 1
    assert full["tokens"][0]["alternatives"] and full["settings"]["max_tokens"] == 6
    assert full["pressure"]["selection_bits"] == pytest.approx(math.log2(3))
    got = client.get(f"/api/trees/{tree['id']}").json()
    assert len(got["nodes"]) == 4 and "tokens" not in got["nodes"][1]
    path = client.get(f"/api/nodes/{made[0]['id']}/path").json()
    assert [n["id"] for n in path["nodes"]] == [tree["root_id"], made[0]["id"]]
    assert len(client.get(f"/api/nodes/{tree['root_id']}/children").json()) == 3
    again = generate(client, tree["root_id"], n=3)[-1]["nodes"]  # same seed, same texts
    assert [n["text"] for n in again] == [n["text"] for n in made]


def test_settings_are_inherited_down_a_branch(client):
    tree = make_tree(client)
    client.patch(f"/api/trees/{tree['id']}", json={"settings": {"temperature": 0.5}})
    child = generate(client, tree["root_id"], n=1)[-1]["nodes"][0]
    r = client.put(f"/api/nodes/{child['id']}/settings", json={"max_tokens": 3, "n": 2})
    assert r.json()["temperature"] == 0.5 and r.json()["max_tokens"] == 3
    grand = generate(client, child["id"], max_tokens=None)[-1]["nodes"]
    assert len(grand) == 2 and all(len(client.get(f"/api/nodes/{g['id']}").json()["tokens"]) <= 3 for g in grand)
    assert client.get(f"/api/nodes/{tree['root_id']}/settings").json()["max_tokens"] == 48


def test_counterfactual_token_branches_with_its_intervention_bits(client):
    tree = make_tree(client)
    node = generate(client, tree["root_id"], n=1, max_tokens=4)[-1]["nodes"][0]
    full = client.get(f"/api/nodes/{node['id']}").json()
    alt_id, alt_text, alt_lp = full["tokens"][1]["alternatives"][-1]
    r = client.post(f"/api/nodes/{node['id']}/counterfactual", json={"token_index": 1, "token_id": alt_id})
    assert r.status_code == 201, r.text
    branch = r.json()
    assert branch["parent_id"] == tree["root_id"] and branch["source"] == "mixed"
    assert branch["text"] == full["tokens"][0]["text"] + alt_text
    assert branch["intervention_bits"] == pytest.approx(-alt_lp / math.log(2))
    bad = client.post(f"/api/nodes/{node['id']}/counterfactual", json={"token_index": 1, "token_id": 999999})
    assert bad.status_code == 422 and bad.json()["field"] == "token_id"


def settled_bits(client, node_id, timeout=60.0):
    """A node's intervention bits once the model worker has computed them (after the write)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bits = client.get(f"/api/nodes/{node_id}").json()["intervention_bits"]
        if bits is not None:
            return bits
        time.sleep(0.05)
    raise AssertionError(f"node {node_id}'s intervention bits never arrived")


def test_written_and_edited_text_costs_intervention_bits(client):
    tree = make_tree(client)
    typed = client.post(f"/api/nodes/{tree['root_id']}/children", json={"text": " was asleep."}).json()
    assert typed["source"] == "human" and typed["intervention_bits_pending"]
    assert settled_bits(client, typed["id"]) > 1
    model = generate(client, tree["root_id"], n=1, max_tokens=5)[-1]["nodes"][0]
    edited = client.patch(f"/api/nodes/{model['id']}", json={"text": model["text"] + " zebra"}).json()
    assert edited["source"] == "mixed" and 0 < settled_bits(client, model["id"])
    trimmed = client.patch(f"/api/nodes/{model['id']}", json={"text": model["text"]}).json()
    assert trimmed["intervention_bits"] == 0.0 and not trimmed["intervention_bits_pending"]  # deleting costs nothing
    assert len(client.get(f"/api/nodes/{model['id']}/revisions").json()) == 2
    sibling = client.post(f"/api/nodes/{typed['id']}/sibling", json={"text": " was awake."}).json()
    assert sibling["parent_id"] == tree["root_id"] and sibling["meta"]["edited_from"] == typed["id"]


def test_organising_routes(client):
    tree = make_tree(client)
    node = client.post(f"/api/nodes/{tree['root_id']}/children", json={"text": " one two"}).json()
    assert client.post(f"/api/nodes/{node['id']}/bookmark", json={"value": True}).json()["bookmarked"]
    assert client.post(f"/api/nodes/{node['id']}/tags", json={"tag": "keep"}).json()["tags"] == ["keep"]
    assert client.delete(f"/api/nodes/{node['id']}/tags/keep").json()["tags"] == []
    assert client.put(f"/api/nodes/{node['id']}/note", json={"note": "n"}).json()["note"] == "n"
    tail = client.post(f"/api/nodes/{node['id']}/split", json={"at": 4}).json()
    assert tail["text"] == " two"
    assert client.post(f"/api/nodes/{node['id']}/merge").json()["text"] == " one two"
    assert client.get(f"/api/trees/{tree['id']}/search", params={"q": "ONE"}).json()[0]["id"] == node["id"]
    assert client.post(f"/api/nodes/{node['id']}/archive", json={"value": True}).json()["archived"]
    assert client.post(f"/api/nodes/{node['id']}/continue").json()["kind"] == "continue"
    assert client.patch(f"/api/trees/{tree['id']}", json={"title": "Lighthouse"}).json()["title"] == "Lighthouse"


def test_feedback_events_agreement_and_exports(client):
    tree = make_tree(client)
    a, b = generate(client, tree["root_id"], n=2)[-1]["nodes"]
    for who, choice in (("ann", "a"), ("ben", "a"), ("cat", "b")):
        r = client.post(f"/api/trees/{tree['id']}/feedback", headers={"X-Annotator": who},
                        json={"kind": "compare", "payload": {"a": a["id"], "b": b["id"], "choice": choice}})
        assert r.status_code == 201 and r.json()["author"] == who
    client.post(f"/api/trees/{tree['id']}/feedback", json={"kind": "thumb", "node_id": a["id"], "payload": {"value": "up"}})
    agreement = client.get(f"/api/trees/{tree['id']}/agreement").json()
    assert agreement["shared_items"] == 3 and agreement["agreement"] == pytest.approx(1 / 3)
    assert agreement["annotators"] == {"ann": 1, "ben": 1, "cat": 1}
    events = client.get(f"/api/trees/{tree['id']}/events", params={"kind": "compare", "annotator": "ben"}).json()
    assert len(events) == 1
    pairs = client.get("/api/export/pairs").text.splitlines()
    assert len(pairs) == 3 and json.loads(pairs[0])["kind"] == "pair"
    trl = [json.loads(x) for x in client.get("/api/export/pairs", params={"style": "trl"}).text.splitlines()]
    assert set(trl[0]) == {"prompt", "chosen", "rejected"}
    assert len(client.get("/api/export/thumbs", params={"tree": tree["id"]}).text.splitlines()) == 1
    assert len(client.get("/api/export/events").text.splitlines()) >= 6
    assert client.get("/api/export/nonsense").status_code == 422
    doc = client.get(f"/api/trees/{tree['id']}/loom.json").json()
    assert doc["root"]["text"] == "The old lighthouse keeper" and len(doc["root"]["children"]) == 2
    copy = client.post("/api/import/loom", json=doc)
    assert copy.status_code == 201
    assert len(client.get(f"/api/trees/{copy.json()['id']}").json()["nodes"]) == 3


def test_steps_are_judged_cleared_and_exported_and_a_process_reward_model_trained_on_them_scores_them(client):
    """Judge a node's steps over the API, export them, train a process reward model on them from the
    loom (a background `alignlab prm train`, tiny model), and use the result: it gives P(right) of
    each step of a node."""

    tree = make_tree(client, "Add 2 and 3, then double it.\n")
    texts = ["2 + 3 = 5.\nDouble 5 is 10.\nThe answer is 10.", "2 + 3 = 6.\nDouble 6 is 12.\nThe answer is 12.",
             "2 + 3 = 5.\nDouble 5 is 12.\nThe answer is 12.", "3 + 2 = 5.\nTwice 5 is 10.\nSo 10."]
    nodes = [client.post(f"/api/nodes/{tree['root_id']}/children", json={"text": t}).json() for t in texts]
    first = nodes[0]["id"]
    view = client.get(f"/api/nodes/{first}/steps").json()
    assert [s["text"] for s in view["steps"]] == ["2 + 3 = 5.\n", "Double 5 is 10.\n", "The answer is 10."]
    assert (view["judged"], view["min"], [s["label"] for s in view["steps"]]) == (0, None, [None, None, None])

    def judge(node, index, label, who="tester"):
        r = client.post(f"/api/trees/{tree['id']}/feedback", headers={"X-Annotator": who},
                        json={"kind": "step", "node_id": node, "payload": {"by": "lines", "index": index, "label": label}})
        assert r.status_code == 201, r.text
        return r.json()

    assert judge(first, 1, "wrong")["payload"]["step"] == "Double 5 is 10.\n"
    judge(first, 0, "right")
    view = client.get(f"/api/nodes/{first}/steps").json()
    assert ([s["label"] for s in view["steps"]], view["judged"], view["min"]) == ([True, False, None], 2, False)
    judge(first, 1, "clear")
    view = client.get(f"/api/nodes/{first}/steps").json()
    assert ([s["label"] for s in view["steps"]], view["judged"], view["min"]) == ([True, None, None], 1, True)
    other = client.get(f"/api/nodes/{first}/steps", headers={"X-Annotator": "someone else"}).json()
    assert other["judged"] == 0 and other["annotator"] == "someone else"  # each annotator sees their own
    bad = client.get(f"/api/nodes/{first}/steps", params={"by": "words"})
    assert bad.status_code == 422 and bad.json()["field"] == "by"
    r = client.post(f"/api/trees/{tree['id']}/feedback",
                    json={"kind": "step", "node_id": first, "payload": {"index": 3, "label": "right"}})
    assert r.status_code == 422 and r.json()["field"] == "index" and "has 3 steps" in r.json()["detail"]

    # Right and wrong steps for the model to tell apart: the second node goes wrong at its first step.
    judge(first, 1, "right"), judge(first, 2, "right")
    for index, label in enumerate(["wrong", "wrong", "wrong"]):
        judge(nodes[1]["id"], index, label)
    judge(nodes[2]["id"], 0, "right"), judge(nodes[2]["id"], 1, "wrong")
    exported = client.get("/api/export/steps", params={"tree": tree["id"]})
    rows = [json.loads(line) for line in exported.text.splitlines()]
    assert [r["labels"] for r in rows] == [[True, True, True], [False, False, False], [True, False, None]]
    assert all(r["kind"] == "steps" and r["prompt"] == "Add 2 and 3, then double it.\n" for r in rows)
    assert rows[2]["completions"] == ["2 + 3 = 5.\n", "Double 5 is 12.\n", "The answer is 12."]
    trl = client.get("/api/export/steps", params={"tree": tree["id"], "style": "trl"})
    assert trl.status_code == 422 and "unjudged steps" in trl.json()["detail"]
    refused = client.post("/api/train", json={"kind": "reward", "data": ["steps"]})
    assert refused.status_code == 422 and "kind 'prm'" in refused.json()["detail"]
    refused = client.post("/api/train", json={"kind": "prm", "data": ["pairs"]})
    assert refused.status_code == 422 and refused.json()["field"] == "data"
    refused = client.post("/api/train", json={"kind": "prm", "extra": ["--out", "/tmp/x"]})
    assert refused.status_code == 422 and refused.json()["field"] == "extra"

    # Train it from the loom (the page's "Train process model"): a background `alignlab prm train`
    # on the exported steps, added to the loom's models as a process model when it ends.
    for node in nodes:  # the loom's worker is done with the model (two threads must not import transformers at once)
        settled_bits(client, node["id"])
    job = client.post("/api/train", json={"kind": "prm", "model": "tiny", "extra": ["--eval-fraction", "0"]})
    assert job.status_code == 202, job.text
    assert job.json()["config"]["data"] == ["steps"]
    command = job.json()["config"]["command"]
    assert command[:2] == ["prm", "train"] and command[command.index("--split-by") + 1] == "lines"
    deadline = time.time() + 300
    while (state := client.get(f"/api/jobs/{job.json()['id']}").json())["state"] == "running" and time.time() < deadline:
        time.sleep(1)
    assert state["state"] == "done", state["message"]
    name = state["result"]["model"]["name"]
    assert {m["name"]: m["kind"] for m in client.get("/api/models").json()}[name] == "process"
    assert json.loads((Path(state["result"]["path"]) / "prm_config.json").read_text())["split_by"] == "lines"
    scores = client.get(f"/api/nodes/{nodes[3]['id']}/step-scores", params={"model": name}).json()
    assert scores["by"] == "lines" and len(scores["p_right"]) == 3 and all(0 < p < 1 for p in scores["p_right"])
    assert client.get(f"/api/nodes/{first}/step-scores", params={"model": "tiny"}).status_code == 404
    assert client.post(f"/api/nodes/{first}/generate", json={"model": name}).status_code == 404  # it does not write
    app = create_app(LoomSettings(data_dir=client.app.state.settings.data_dir, models=["tiny"]))
    with TestClient(app, base_url="http://127.0.0.1:8765") as again:  # kept across a restart
        assert {m["name"]: m["kind"] for m in again.get("/api/models").json()}[name] == "process"


def test_next_tokens_view(client):
    tree = make_tree(client)
    view = client.get(f"/api/nodes/{tree['root_id']}/next-tokens", params={"breadth": 3, "depth": 2}).json()
    assert len(view) == 3 and all(len(v["children"]) == 3 for v in view)
    assert sum(v["probability"] for v in view) <= 1 + 1e-6
    assert view[0]["probability"] >= view[1]["probability"] >= view[2]["probability"]
    for v in view:
        assert sum(c["probability"] for c in v["children"]) <= v["probability"] + 1e-6
    # control tokens (<start_of_image>, <unused12>, <eos>, ...) are never offered as text to continue with
    tokenizer = client.app.state.models.slot("tiny").tokenizer
    from alignlab.loom.generation import special_ids

    control = {tokenizer.decode([i]) for i in special_ids(tokenizer)}
    wide = client.get(f"/api/nodes/{tree['root_id']}/next-tokens", params={"breadth": 10, "depth": 3}).json()
    texts, stack = [], list(wide)
    while stack:
        item = stack.pop()
        texts.append(item["text"])
        stack += item["children"]
    assert len(texts) == 10 + 100 + 1000 and not control & set(texts)


def test_steering_is_applied_and_recorded(client):
    tree = make_tree(client)
    plain = generate(client, tree["root_id"], n=1, max_tokens=8)[-1]["nodes"][0]
    recipe = {"positive": "Love", "negative": "Hate", "layer": 1, "coefficient": 50.0}
    steered = generate(client, tree["root_id"], n=1, max_tokens=8, steering=recipe)[-1]["nodes"][0]
    assert steered["steering"] == recipe and plain["steering"] is None
    assert steered["text"] != plain["text"]
    bad = generate(client, tree["root_id"], n=1, steering={**recipe, "layer": 99})
    assert bad[-1]["type"] == "error" and "layer 99" in bad[-1]["message"]


def test_bad_requests_get_4xx_with_the_field(client):
    tree = make_tree(client)
    r = client.post("/api/trees", json={"prompt": 5})
    assert r.status_code == 422 and r.json()["field"] == "prompt"
    r = client.post(f"/api/trees/{tree['id']}/feedback", json={"kind": "compare", "payload": {"a": "x"}})
    assert r.status_code == 422 and "'a'" in r.json()["detail"]
    assert client.get("/api/nodes/nope").status_code == 404
    assert client.post(f"/api/nodes/{tree['root_id']}/generate", json={"n": 99}).status_code == 422
    assert client.post(f"/api/nodes/{tree['root_id']}/generate", json={"model": "other"}).status_code == 404
    assert client.post(f"/api/nodes/{tree['root_id']}/archive", json={"value": True}).status_code == 409
    assert client.post("/api/trees", json={"prompt": "x", "surprise": 1}).status_code == 422
    assert client.post("/api/import/loom", json={"nothing": 1}).status_code == 422
    generate(client, tree["root_id"], n=1)
    assert "status" not in [e["type"] for e in generate(client, tree["root_id"], n=1)]  # loaded by now


def test_models_queue_and_page(client):
    assert client.get("/api/models").json()[0]["name"] == "tiny"
    assert client.get("/api/queue").json() == {"waiting": 0}
    assert client.get("/api/feedback-kinds").json() == ["compare", "critique", "highlight", "rank", "rating", "step",
                                                        "stop", "thumb"]
    assert client.post("/api/models", json={"name": "/no/such/folder"}).status_code == 422
    page = client.get("/")
    assert page.status_code == 200 and "alignlab loom" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/loom.js").status_code == 200


def test_a_token_is_required_beyond_loopback(tmp_path):
    with pytest.raises(ValueError, match="--token"):
        check_binding("0.0.0.0", None)
    check_binding("127.0.0.1", None)
    check_binding("::1", None)
    app = create_app(LoomSettings(data_dir=tmp_path, models=[], host="0.0.0.0", token="s3cret"))
    with TestClient(app) as c:
        assert c.get("/api/trees").status_code == 401
        assert c.get("/api/trees", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        first = c.get("/", params={"token": "s3cret"}, follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/"  # the token leaves the address bar
        assert c.get("/api/trees").status_code == 200  # the cookie the page got
        assert c.get("/").status_code == 200


def test_a_loopback_loom_answers_only_requests_addressed_to_loopback(tmp_path):
    from alignlab.loom.server import host_name

    assert [host_name(h) for h in ("localhost:8765", "[::1]:8765", "127.0.0.1", "::1")] == [
        "localhost", "::1", "127.0.0.1", "::1"]
    app = create_app(LoomSettings(data_dir=tmp_path, models=[]))
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST", "app.localhost:8765"):
            assert c.get("/api/trees", headers={"host": host}).status_code == 200, host
        # a page on attacker.example whose name was rebound to 127.0.0.1 sends its own name
        for host in ("attacker.example:8765", "127.0.0.1.attacker.example", "", "localhost.attacker.example"):
            refused = c.get("/api/trees", headers={"host": host})
            assert refused.status_code == 421 and "DNS rebinding" in refused.json()["detail"], host
            assert c.post("/api/trees", json={"prompt": "x"}, headers={"host": host}).status_code == 421
        assert c.get("/api/trees").json() == []  # nothing was written


def test_requests_beyond_capacity_queue_then_are_refused(tmp_path):
    from alignlab.loom.generation import Busy, Worker

    worker = Worker(max_queued=2)
    gate = threading.Event()
    first = worker.submit(lambda job: gate.wait(10))
    second = worker.submit(lambda job: "second")
    with pytest.raises(Busy, match="already waiting"):
        worker.submit(lambda job: "third")
    positions = []
    gate.set()
    assert second.done.wait(10) and second.result == "second" and first.result is True
    while not second.events.empty():
        event = second.events.get()
        if event and event["type"] == "queued":
            positions.append(event["position"])
    assert positions == [2, 1]
    worker.stop()


def test_train_from_the_loom_then_use_the_result(client):
    """Close the loop: record comparisons, train a reward model and DPO in the background, and
    find both among the loom's models (the reward model scores nodes, the policy generates)."""
    import time

    tree = make_tree(client, "Describe the sea.")
    nodes = generate(client, tree["root_id"], n=4)[-1]["nodes"]
    for good, bad in ((0, 1), (2, 3), (0, 3), (2, 1)):
        client.post(f"/api/trees/{tree['id']}/feedback",
                    json={"kind": "compare", "payload": {"a": nodes[good]["id"], "b": nodes[bad]["id"], "choice": "a"}})
    assert client.post("/api/train", json={"kind": "dpo", "data": ["thumbs"]}).status_code == 422
    jobs = [client.post("/api/train", json={"kind": kind, "max_steps": 2, "data": ["pairs"]}).json()
            for kind in ("reward", "dpo")]
    assert all(j["state"] == "running" for j in jobs)
    deadline = time.time() + 300
    while time.time() < deadline:
        states = [client.get(f"/api/jobs/{j['id']}").json() for j in jobs]
        if all(s["state"] in ("done", "failed") for s in states):
            break
        time.sleep(1)
    assert [s["state"] for s in states] == ["done", "done"], [s["message"] for s in states]
    assert all(s["progress"] == 1.0 for s in states)
    kinds = {m["name"]: m["kind"] for m in client.get("/api/models").json()}
    reward_model, policy = states[0]["result"]["path"], states[1]["result"]["path"]
    assert kinds[reward_model] == "reward" and kinds[policy] in ("policy", "adapter")
    score = client.get(f"/api/nodes/{nodes[0]['id']}/reward", params={"model": reward_model}).json()
    assert math.isfinite(score["reward"])
    made = generate(client, tree["root_id"], n=1, model=policy)[-1]
    assert made["type"] == "done" and made["nodes"][0]["model"] == policy
    assert len(client.get("/api/jobs").json()) == 2
    # A restart lists both again: they are kept in the store.
    app = create_app(LoomSettings(data_dir=client.app.state.settings.data_dir, models=["tiny"]))
    with TestClient(app, base_url="http://127.0.0.1:8765") as again:
        kept = {m["name"]: m["kind"] for m in again.get("/api/models").json()}
    assert kept[reward_model] == "reward" and kept[policy] == kinds[policy]


def test_added_models_are_kept_across_a_restart_and_only_model_folders_are_taken(tmp_path):
    import shutil

    from alignlab.models.loading import load_model

    model, tokenizer = load_model("tiny")
    folder = tmp_path / "my policy"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    def loom():
        return TestClient(create_app(LoomSettings(data_dir=tmp_path / "loom", models=["tiny"], annotator="ann")),
                          base_url="http://127.0.0.1:8765")

    with loom() as c:
        added = c.post("/api/models", json={"name": str(folder)})
        assert added.status_code == 201, added.text
        assert added.json()["kind"] == "policy" and added.json()["name"] == str(folder.resolve())
        refused = c.post("/api/models", json={"name": "/etc"})  # a folder, but no model in it
        assert refused.status_code == 422 and "holds no model" in refused.json()["detail"]
        assert refused.json()["field"] == "name"
        assert c.post("/api/models", json={"name": str(folder), "kind": "reward"}).status_code == 422
        assert c.post("/api/models", json={"name": "../relative/nothing"}).status_code == 422
    with loom() as c:
        assert [(m["name"], m["kind"]) for m in c.get("/api/models").json()] == [
            ("tiny", "base"), (str(folder.resolve()), "policy")]
        tree = make_tree(c)
        made = generate(c, tree["root_id"], n=1, model=str(folder.resolve()))[-1]
        assert made["type"] == "done" and made["nodes"][0]["model"] == str(folder.resolve())
        assert c.app.state.store.models()[0]["author"] == "ann"
    shutil.rmtree(folder)
    with loom() as c:  # a kept model whose folder is gone is not offered
        assert [m["name"] for m in c.get("/api/models").json()] == ["tiny"]
        assert c.app.state.models.missing == [str(folder.resolve())]


def test_a_person_s_write_never_waits_for_a_running_generation(client):
    # Writes once waited behind generations (41 s seen): their bits were computed on the model
    # worker before the write committed. Now the write commits first and returns while the
    # generation is still running; its bits follow when the worker is free.
    tree = make_tree(client)
    started, finished = threading.Event(), threading.Event()

    def long_generation():
        with client.stream("POST", f"/api/nodes/{tree['root_id']}/generate",
                           json={"n": 8, "max_tokens": 256, "seed": 1, "stop": []}) as r:
            for line in r.iter_lines():
                if line and json.loads(line)["type"] == "token":
                    started.set()
        finished.set()

    runner = threading.Thread(target=long_generation)
    runner.start()
    assert started.wait(60), "the generation never streamed a token"
    t0 = time.perf_counter()
    typed = client.post(f"/api/nodes/{tree['root_id']}/children", json={"text": " wrote this meanwhile."})
    edited = client.patch(f"/api/nodes/{typed.json()['id']}", json={"text": " wrote this, meanwhile."})
    waited = time.perf_counter() - t0
    still_running = not finished.is_set()
    runner.join(300)
    assert typed.status_code == 201 and edited.status_code == 200
    assert still_running, f"the write returned only after the generation ended ({waited:.1f} s)"
    assert edited.json()["intervention_bits_pending"]
    assert settled_bits(client, typed.json()["id"]) > 0  # computed once the worker was free


def test_a_path_longer_than_the_window_keeps_its_end_and_too_long_a_request_is_refused(tmp_path):
    # A long path once gave 500s and a raw 49 GB allocation error. The model now reads the end
    # of the path that fits its window, the node says how many tokens were dropped, and what
    # cannot fit is refused with a 422 naming the field.
    app = create_app(LoomSettings(data_dir=tmp_path, models=["tiny"], annotator="tester", context_tokens=64))
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        tree = make_tree(c, "word " * 300)
        made = generate(c, tree["root_id"], n=1, max_tokens=8)[-1]
        assert made["type"] == "done", made
        node = c.get(f"/api/nodes/{made['nodes'][0]['id']}").json()
        assert node["meta"]["context_dropped"] > 200 and len(node["tokens"]) >= 1
        refused = c.post(f"/api/nodes/{tree['root_id']}/generate", json={"n": 1, "max_tokens": 64})
        assert refused.status_code == 422 and refused.json()["field"] == "max_tokens"
        assert "at most 64 tokens" in refused.json()["detail"]
        assert c.get(f"/api/nodes/{tree['root_id']}/next-tokens", params={"depth": 2}).status_code == 200
        written = c.post(f"/api/nodes/{tree['root_id']}/children", json={"text": " and the sea"})
        assert written.status_code == 201
        bits = settled_bits(c, written.json()["id"])
        assert bits is not None and bits > 0


def test_wrong_types_are_refused_where_they_enter_not_where_they_break(client, tmp_path):
    # tree settings: a wrong type once broke every later generation of the tree
    bad = client.post("/api/trees", json={"prompt": "x", "settings": {"max_tokens": "lots"}})
    assert bad.status_code == 422 and "max_tokens" in json.dumps(bad.json())
    assert client.post("/api/trees", json={"prompt": "x", "settings": {"temperature": -1}}).status_code == 422
    assert client.post("/api/trees", json={"prompt": "x", "settings": {"colour": "red"}}).status_code == 422
    tree = client.post("/api/trees", json={"prompt": "x", "settings": {"max_tokens": 5}}).json()
    assert client.patch(f"/api/trees/{tree['id']}", json={"settings": {"n": 0}}).status_code == 422
    assert generate(client, tree["root_id"], n=1)[-1]["type"] == "done"
    # the Loom importer: meta must be an object, its source a string
    for node, field in (({"text": "a", "meta": "AI"}, "root.meta"),
                        ({"text": "a", "meta": {"source": 3}}, "root.meta.source")):
        r = client.post("/api/import/loom", json={"root": node})
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    # training: only the command's hyperparameters may be passed on, and a refused request
    # leaves no job folder behind
    jobs = tmp_path / "jobs"
    before = set(jobs.iterdir()) if jobs.exists() else set()
    for extra in (["--out", "/tmp/elsewhere"], ["--resume", "x"], ["rm", "-rf"]):
        r = client.post("/api/train", json={"kind": "reward", "data": ["pairs"], "extra": extra})
        assert r.status_code == 422 and r.json()["field"] == "extra", r.text
    r = client.post("/api/train", json={"kind": "dpo", "data": ["pairs"], "extra": ["--beta", "0.2"]})
    assert r.status_code == 422 and r.json()["field"] == "data"  # allowed flags; no pairs recorded yet
    assert (set(jobs.iterdir()) if jobs.exists() else set()) == before
    # the API is described by its schema; no page that needs a CDN
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/docs").status_code == 404
    assert client.get("/static/favicon.svg").status_code == 200


def test_training_progress_reads_optimizer_steps_not_other_bars():
    from alignlab.loom.training import PROGRESS

    log = ("Loading weights: 100%|##########| 236/236 [00:00<00:00, 13515.79it/s]\r"
           "features: 100%|##########| 12/12 [00:03<00:00,  3.1batch/s]\r"
           "dpo:  45%|####5     | 9/20 [00:05<00:06,  1.80step/s]\r"
           "Writing model shards: 100%|##########| 1/1 [00:00<00:00,  1.66it/s]")
    assert PROGRESS.findall(log) == [("9", "20")]
    assert PROGRESS.findall("reward:   0%|          | 0/20 [00:00<?, ?step/s]") == [("0", "20")]
    assert PROGRESS.findall("dpo:  5%|5         | 1/20 [00:09<02:51,  9.02s/step]") == [("1", "20")]


def test_a_live_tree_pushes_others_changes_and_who_is_on_it(live_loom):
    # Server-sent events over a real HTTP server: a listener sees another annotator's new branch
    # and judgement as they are written, and the presence list names both listeners.
    import httpx

    url, store = live_loom
    tree = store.create_tree("Shared", "ann")
    seen, presence = [], []
    with httpx.Client(base_url=url, timeout=30) as ann, httpx.Client(base_url=url, timeout=30) as bob:
        with ann.stream("GET", f"api/trees/{tree['id']}/live", params={"annotator": "ann"}) as stream_a, \
                bob.stream("GET", f"api/trees/{tree['id']}/live", params={"annotator": "bob"}) as stream_b:
            lines = stream_a.iter_lines()
            made = bob.post(f"api/nodes/{tree['root_id']}/children", json={"text": " and then"},
                            headers={"X-Annotator": "bob"}).json()
            bob.post(f"api/trees/{tree['id']}/feedback", headers={"X-Annotator": "bob"},
                     json={"kind": "thumb", "node_id": made["id"], "payload": {"value": "up"}})
            deadline = time.time() + 20
            for line in lines:
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    (presence if data["type"] == "presence" else seen).append(data)
                if {e["kind"] for e in seen} >= {"write", "thumb"} and presence and \
                        presence[-1]["annotators"] == ["ann", "bob"] or time.time() > deadline:
                    break
            assert stream_b.status_code == 200
    # a write is logged on the node written under; a thumb on the node judged
    assert [(e["kind"], e["author"], e["node_id"]) for e in seen] == [("write", "bob", tree["root_id"]),
                                                                      ("thumb", "bob", made["id"])]
    assert presence[0]["annotators"] in (["ann"], ["ann", "bob"]) and presence[-1]["annotators"] == ["ann", "bob"]
    assert httpx.get(url + "api/trees/nope/live").status_code == 404
