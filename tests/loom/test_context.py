"""A tree's memory and prompt template, presets of generation settings, and reroll in place, on
the tiny model and a real SQLite file (the store's PostgreSQL tests cover the presets table)."""

from __future__ import annotations

import json

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from alignlab.loom.generation import ModelSlot, split_template  # noqa: E402
from alignlab.loom.server import LoomSettings, create_app  # noqa: E402

PROMPT = "The old lighthouse keeper"
MEMORY = "A story in the style of a ship's log, written by a sailor who fears the sea.\n\n"


@pytest.fixture
def client(tmp_path):
    app = create_app(LoomSettings(data_dir=tmp_path, models=["tiny"], annotator="tester"))
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        yield c


def stream(client, url, **body):
    events = []
    with client.stream("POST", url, json=body) as r:
        assert r.status_code == 200, r.read()
        events = [json.loads(line) for line in r.iter_lines() if line]
    assert events[-1]["type"] == "done", events[-1]
    return events[-1]["nodes"]


def greedy(client, ids, max_tokens=6):
    """What the tiny model writes greedily after exactly these token ids."""
    from alignlab.models import SampleConfig, sample

    slot = client.app.state.models.slot("tiny")
    done = sample(slot.model, slot.tokenizer, [ids], SampleConfig(max_new_tokens=max_tokens, temperature=0))
    return "".join(t.text for t in done[0].tokens)


def test_split_template_fills_memory_and_refuses_what_it_cannot_place():
    assert split_template("{memory}{text}", "M") == ("M", "")
    assert split_template("Notes: {memory}\n---\n{text}\nEnd.", "M") == ("Notes: M\n---\n", "\nEnd.")
    assert split_template("{{literal}} {text}", "M") == ("{literal} ", "")
    for bad, says in [("no path here", "exactly once"), ("{text}{text}", "exactly once"),
                      ("{prompt}{text}", "only name"), ("{memory!r}{text}", "only name"), ("{text", "literal braces")]:
        with pytest.raises(ValueError, match=says):
            split_template(bad, "")


def test_the_model_reads_the_tree_memory_and_template_before_the_path(client):
    tree = client.post("/api/trees", json={"prompt": PROMPT}).json()
    root = tree["root_id"]
    plain = stream(client, f"/api/nodes/{root}/generate", n=1, max_tokens=6, temperature=0)[0]
    r = client.patch(f"/api/trees/{tree['id']}", json={"settings": {"memory": MEMORY,
                                                                  "template": "{memory}Log entry:\n{text}"}})
    assert r.status_code == 200, r.text
    assert client.get(f"/api/nodes/{root}/settings").json()["memory"] == MEMORY
    made = stream(client, f"/api/nodes/{root}/generate", n=1, max_tokens=6, temperature=0)[0]
    tokenizer = client.app.state.models.slot("tiny").tokenizer
    rendered = tokenizer(MEMORY + "Log entry:\n" + PROMPT, add_special_tokens=True)["input_ids"]
    assert made["text"] == greedy(client, rendered)  # exactly what the model writes after memory + template + path
    assert plain["text"] == greedy(client, tokenizer(PROMPT, add_special_tokens=True)["input_ids"])
    assert made["text"] != plain["text"]  # the memory changed what it wrote
    node = client.get(f"/api/nodes/{made['id']}").json()
    assert node["settings"]["memory"] == MEMORY and node["settings"]["template"] == "{memory}Log entry:\n{text}"
    assert "memory" not in client.get(f"/api/nodes/{plain['id']}").json()["settings"]  # defaults are not recorded
    # the next-token view reads the same context as a generation
    view = client.get(f"/api/nodes/{root}/next-tokens", params={"breadth": 1, "depth": 1}).json()
    assert made["text"].startswith(view[0]["text"])


def test_a_long_path_is_cut_but_the_memory_is_kept_whole(client, tiny):
    _, tokenizer = tiny
    slot = ModelSlot("tiny", tiny[0], tokenizer, "#000", context_tokens=64)
    path = " and the sea" * 40
    ids, dropped = slot.fit(path, 8, before=MEMORY, after="\nNext:")
    head = tokenizer(MEMORY, add_special_tokens=True)["input_ids"]
    end = tokenizer("\nNext:", add_special_tokens=False)["input_ids"]
    assert len(ids) == 64 - 8 and dropped > 0
    assert ids[:len(head)] == head and ids[-len(end):] == end  # only the path lost its beginning
    body = tokenizer(path, add_special_tokens=False)["input_ids"]
    assert ids[len(head):-len(end)] == body[dropped:]
    from alignlab.loom.events import Invalid

    with pytest.raises(Invalid, match="memory and prompt template") as err:
        slot.fit(path, 8, before=MEMORY * 5)
    assert err.value.field == "memory"


def test_bad_templates_and_memory_are_refused_naming_the_field(client):
    tree = client.post("/api/trees", json={"prompt": PROMPT}).json()
    for body in [{"template": "no placeholder at all"}, {"template": "{memory}{text}{text}"},
                 {"template": "{system}{text}"}, {"memory": 7}]:
        r = client.patch(f"/api/trees/{tree['id']}", json={"settings": body})
        assert r.status_code == 422, (body, r.text)
        assert list(body)[0] in r.text
    r = client.post(f"/api/nodes/{tree['root_id']}/generate", json={"template": "{text", "max_tokens": 2})
    assert r.status_code == 422 and "template" in r.text


def test_presets_built_in_and_saved_survive_a_restart(tmp_path):
    settings = LoomSettings(data_dir=tmp_path, models=["tiny"], annotator="tester")
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765") as client:
        listed = client.get("/api/presets").json()
        assert [p["name"] for p in listed if p["builtin"]] == ["default", "focused", "greedy", "wild", "long"]
        greedy_preset = next(p for p in listed if p["name"] == "greedy")
        assert greedy_preset["settings"] == {"n": 1, "temperature": 0.0}
        r = client.put("/api/presets/my poems", json={"temperature": 0.8, "max_tokens": 120, "stop": ["\n\n"],
                                                      "memory": "not kept in a preset", "model": "tiny"})
        assert r.status_code == 200, r.text
        assert r.json()["settings"] == {"temperature": 0.8, "max_tokens": 120, "stop": ["\n\n"]}
        assert r.json()["author"] == "tester"
        assert client.put("/api/presets/my poems", json={"temperature": 0.6}).json()["settings"] == {"temperature": 0.6}
        assert client.put("/api/presets/greedy", json={"temperature": 0.6}).status_code == 409
        assert client.put("/api/presets/bad", json={"temperature": "hot"}).status_code == 422
        assert client.put("/api/presets/empty", json={}).status_code == 422
        assert client.delete("/api/presets/focused").status_code == 409
        assert client.put("/api/presets/gone", json={"n": 2}).status_code == 200
        assert client.delete("/api/presets/gone").status_code == 204
        assert client.delete("/api/presets/gone").status_code == 404
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765") as client:  # a restart keeps them
        saved = [p for p in client.get("/api/presets").json() if not p["builtin"]]
        assert [(p["name"], p["settings"]) for p in saved] == [("my poems", {"temperature": 0.6})]


def test_reroll_replaces_a_continuation_in_place_and_can_be_undone(client):
    tree = client.post("/api/trees", json={"prompt": PROMPT}).json()
    root = tree["root_id"]
    first, second = stream(client, f"/api/nodes/{root}/generate", n=2, max_tokens=5, temperature=0.9, seed=3)
    (new,) = stream(client, f"/api/nodes/{first['id']}/reroll")
    assert new["parent_id"] == root and new["id"] != first["id"] and new["source"] == "model"
    got = client.get(f"/api/nodes/{new['id']}").json()
    assert got["settings"]["max_tokens"] == 5 and got["settings"]["temperature"] == 0.9  # the settings it was made with
    assert got["seed"] != first["seed"]  # a fresh draw
    assert client.get(f"/api/nodes/{first['id']}").json()["archived"] is True
    assert [c["id"] for c in client.get(f"/api/nodes/{root}/children").json()] == [second["id"], new["id"]]
    events = client.get(f"/api/trees/{tree['id']}/events").json()
    reroll = [e for e in events if e["kind"] == "reroll"]
    assert len(reroll) == 1 and reroll[0]["node_id"] == first["id"] and reroll[0]["payload"]["replaced_by"] == new["id"]
    generated = [e for e in events if e["kind"] == "generate"]
    assert generated[-1]["payload"]["children"] == [new["id"]] and generated[-1]["payload"]["n"] == 1
    # a request's settings win over the node's own
    (longer,) = stream(client, f"/api/nodes/{second['id']}/reroll", max_tokens=2, seed=9)
    assert client.get(f"/api/nodes/{longer['id']}").json()["settings"]["max_tokens"] == 2
    # undo is unarchive: the old continuation comes back beside its successor
    assert client.post(f"/api/nodes/{first['id']}/archive", json={"value": False}).status_code == 200
    assert first["id"] in [c["id"] for c in client.get(f"/api/nodes/{root}/children").json()]
    # the root and a person's own text are not rerolled
    assert client.post(f"/api/nodes/{root}/reroll", json={}).status_code == 422
    mine = client.post(f"/api/nodes/{root}/children", json={"text": " who never slept"}).json()
    r = client.post(f"/api/nodes/{mine['id']}/reroll", json={})
    assert r.status_code == 422 and "edit it" in r.text
