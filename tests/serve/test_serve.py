"""`alignlab serve`: the OpenAI-compatible completions endpoint, on the tiny model, over real HTTP
where it matters (a uvicorn server on 127.0.0.1)."""

from __future__ import annotations

import json

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from alignlab.models import SampleConfig, sample  # noqa: E402
from alignlab.serve.app import Served, create_app  # noqa: E402

PROMPT = "The old lighthouse keeper"


@pytest.fixture(scope="module")
def served(tiny):
    model, tokenizer = tiny
    return Served("tiny", model, tokenizer, 512)


@pytest.fixture
def client(served):
    with TestClient(create_app(served), base_url="http://127.0.0.1:8000") as c:
        yield c


def local(served, prompt, seed, **config):
    return sample(served.model, served.tokenizer, [prompt], SampleConfig(seed=seed, alternatives=5, **config))[0]


def test_models_lists_the_one_model(client):
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["tiny"]
    assert listed["data"][0]["max_model_len"] == 512


def test_a_completion_is_what_the_sampler_draws_with_the_same_seed(client, served):
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": PROMPT, "max_tokens": 7, "temperature": 0.9,
                                             "seed": 11, "logprobs": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny" and body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    want = local(served, PROMPT, 11, max_new_tokens=7, temperature=0.9)
    assert choice["text"] == want.text and choice["index"] == 0
    assert choice["finish_reason"] == ("length" if want.finish_reason == "length" else "stop")
    lp = choice["logprobs"]
    assert lp["tokens"] == [t.text for t in want.tokens]
    assert lp["token_logprobs"] == pytest.approx([t.logprob for t in want.tokens], abs=1e-5)
    assert all(len(top) <= 3 for top in lp["top_logprobs"]) and lp["top_logprobs"][0]
    assert lp["text_offset"][0] == 0 and lp["text_offset"][1] == len(lp["tokens"][0])
    usage = body["usage"]
    assert usage["completion_tokens"] == len(want.tokens) and usage["prompt_tokens"] == len(want.prompt_ids)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_prompts_times_n_come_prompt_major_with_their_own_seeds(client, served):
    r = client.post("/v1/completions", json={"prompt": [PROMPT, "Once upon a time"], "n": 2, "max_tokens": 4,
                                             "seed": 3})
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert choices[1]["text"] == local(served, PROMPT, 4, max_new_tokens=4).text
    assert choices[2]["text"] == local(served, "Once upon a time", 5, max_new_tokens=4).text
    assert all(c["logprobs"] is None for c in choices)  # not asked for


def test_a_stream_is_server_sent_events_ending_with_done(client, served):
    chunks = []
    with client.stream("POST", "/v1/completions", json={"prompt": PROMPT, "max_tokens": 5, "seed": 2,
                                                        "stream": True, "logprobs": 2, "stop": ["\n\n"]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == local(served, PROMPT, 2, max_new_tokens=5, stop=["\n\n"]).text
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert all(len(c["choices"][0]["logprobs"]["tokens"]) == 1 for c in chunks)


def test_what_it_cannot_do_is_a_400_naming_the_field(client):
    cases = [({"prompt": PROMPT, "echo": True}, "echo"), ({"prompt": PROMPT, "model": "gpt-4"}, "model"),
             ({"prompt": PROMPT, "temperature": -1}, "temperature"), ({"prompt": PROMPT, "logprobs": 50}, "logprobs"),
             ({"prompt": PROMPT, "best_of": 3}, "best_of"), ({"prompt": PROMPT, "presence_penalty": 0.5},
                                                              "presence_penalty"),
             ({"prompt": PROMPT, "max_tokens": 600}, "max_tokens"), ({"max_tokens": 3}, "prompt"),
             ({"prompt": PROMPT, "stop": [""]}, None)]
    for body, param in cases:
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        if param:
            assert error["param"] == param, (body, error)
    r = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]


def test_a_key_is_required_when_one_is_set(served):
    with TestClient(create_app(served, api_key="s3cret"), base_url="http://127.0.0.1:8000") as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_the_cli_refuses_an_unset_key_variable(monkeypatch, capsys):
    from alignlab.cli import main

    monkeypatch.delenv("ALIGNLAB_TEST_UNSET_KEY", raising=False)
    code = main(["serve", "--model", "tiny", "--api-key-env", "ALIGNLAB_TEST_UNSET_KEY"])
    assert code != 0 and "ALIGNLAB_TEST_UNSET_KEY" in capsys.readouterr().err
