"""Ask me (loom/ask.py, GET /api/trees/{id}/ask): the loom offers the sibling pair it most wants
judged, learns from each answer before the next question, and runs out of questions honestly."""

from __future__ import annotations

import math

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from alignlab.loom.ask import candidate_pairs, middle_layer, path_texts  # noqa: E402
from alignlab.loom.server import LoomSettings, create_app  # noqa: E402

ENDINGS = [" the sea was calm.", " a gull cried twice.", " nobody was there at all, nobody.",
           " the lamp went out.", " rain."]


@pytest.fixture
def client(tmp_path):
    app = create_app(LoomSettings(data_dir=tmp_path, models=["tiny"], annotator="tester"))
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        yield c


def _tree_with_siblings(client, endings=ENDINGS) -> tuple[dict, list[dict]]:
    tree = client.post("/api/trees", json={"prompt": "The keeper opened the door and"}).json()
    kids = [client.post(f"/api/nodes/{tree['root_id']}/children", json={"text": t}).json() for t in endings]
    return tree, kids


def test_candidates_are_sibling_pairs_with_their_whole_prompt():
    nodes = [{"id": "r", "parent_id": None, "text": "Once", "archived": False},
             {"id": "a", "parent_id": "r", "text": " upon", "archived": False},
             {"id": "b", "parent_id": "r", "text": " more", "archived": False},
             {"id": "c", "parent_id": "r", "text": " more", "archived": False},  # same text as b: not a question
             {"id": "d", "parent_id": "r", "text": " gone", "archived": True},  # archived: not offered
             {"id": "e", "parent_id": "a", "text": " a time", "archived": False}]  # an only child: nothing to compare
    texts, ids, groups, pairs = candidate_pairs(nodes, path_texts(nodes))
    assert ids == ["a", "b", "c"] and groups == [0, 0, 0]
    assert texts == [("Once", " upon"), ("Once", " more"), ("Once", " more")]
    assert pairs.tolist() == [[0, 1], [0, 2]]
    assert path_texts(nodes)("e") == "Once upon a time"
    assert middle_layer(18) == 11 and middle_layer(2) == 1


def test_ask_offers_open_pairs_learns_each_answer_and_runs_out(client):
    tree, kids = _tree_with_siblings(client)
    ids = {k["id"] for k in kids}
    first = client.get(f"/api/trees/{tree['id']}/ask").json()
    assert first["pairs"] == 10 and first["open"] == 10 and first["answered"] == 0 and first["model"] == "tiny"
    assert {first["pair"]["a"], first["pair"]["b"]} <= ids and first["pair"]["a"] != first["pair"]["b"]
    assert 0 <= first["information"] <= math.log(2) and first["information"] >= first["uncertainty"] - 1e-12
    assert "nats" in first["why"]
    seen, uncertainty = set(), [first["uncertainty"]]
    question = first
    for k in range(10):  # answer every question: "a" wins when its text is longer
        pair = question["pair"]
        key = frozenset((pair["a"], pair["b"]))
        assert key not in seen  # never the same question twice
        seen.add(key)
        text = {n["id"]: n["text"] for n in kids}
        choice = "a" if len(text[pair["a"]]) > len(text[pair["b"]]) else "b"
        r = client.post(f"/api/trees/{tree['id']}/feedback",
                        json={"kind": "compare", "payload": {"a": pair["a"], "b": pair["b"], "choice": choice}})
        assert r.status_code == 201, r.text
        question = client.get(f"/api/trees/{tree['id']}/ask").json()
        assert question["answered"] == k + 1 and question["open"] == 9 - k
        if question["pair"] is not None:
            uncertainty.append(question["uncertainty"])
    assert question["pair"] is None and "every sibling pair of this tree is judged" in question["why"]
    assert uncertainty[-1] < uncertainty[0]  # the answers taught the model: less left to learn


def test_a_tie_is_not_an_answer_and_a_free_comparison_counts(client):
    tree, kids = _tree_with_siblings(client, ENDINGS[:3])
    r = client.post(f"/api/trees/{tree['id']}/feedback",
                    json={"kind": "compare", "payload": {"a": kids[0]["id"], "b": kids[1]["id"], "choice": "tie"}})
    assert r.status_code == 201
    assert client.get(f"/api/trees/{tree['id']}/ask").json()["answered"] == 0
    client.post(f"/api/trees/{tree['id']}/feedback",
                json={"kind": "compare", "payload": {"a": kids[2]["id"], "b": kids[0]["id"], "choice": "b"}})
    q = client.get(f"/api/trees/{tree['id']}/ask").json()
    assert q["answered"] == 1 and q["open"] == 2
    assert frozenset((q["pair"]["a"], q["pair"]["b"])) != frozenset((kids[2]["id"], kids[0]["id"]))


def test_nothing_to_ask_says_why(client):
    tree = client.post("/api/trees", json={"prompt": "Alone"}).json()
    client.post(f"/api/nodes/{tree['root_id']}/children", json={"text": " only child"})
    q = client.get(f"/api/trees/{tree['id']}/ask").json()
    assert q["pair"] is None and "generate several continuations" in q["why"]
    assert client.get("/api/trees/nope/ask").status_code == 404
