"""The loom's API under generated requests (schemathesis strategies from its own OpenAPI schema):
whatever arrives, the answer is never a server error, and every error names what was wrong.
Models are left out here (their routes are tested with the tiny model in test_api.py), so every
generated request is answered in milliseconds."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from alignlab.loom.server import LoomSettings, create_app  # noqa: E402


LOOPBACK = {"Host": "127.0.0.1:8765"}
"""The loom answers only requests addressed to a loopback name (a guard against DNS rebinding)."""


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    app = create_app(LoomSettings(data_dir=tmp_path_factory.mktemp("fuzz"), models=[], annotator="fuzz"))
    store = app.state.store
    tree = store.create_tree("Fuzz me", "fuzz")
    store.add_nodes(tree["root_id"], [{"text": " a"}, {"text": " b"}], "fuzz")
    return schemathesis.openapi.from_asgi("/api/openapi.json", app, headers=LOOPBACK)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_request_gets_a_server_error(api_schema, mode):
    """Positive: requests that follow the schema; negative: requests that break it."""
    # /live streams server-sent events until the client leaves: test_api.py covers it
    operations = [op for op in (result.ok() for result in api_schema.get_all_operations())
                  if not op.path.endswith("/live")]
    assert len(operations) >= 30  # every route is in the schema
    fuzzed = 0
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers=LOOPBACK)
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where} -> {response.status_code}: {response.text[:300]}"
            if response.status_code >= 400:
                assert "detail" in response.json(), f"{where}: {response.text[:300]}"

        try:
            check()
            fuzzed += 1
        except Unsatisfiable:  # a route without parameters or body has no invalid request to make
            assert mode == "negative", operation.label
    assert fuzzed >= (len(operations) if mode == "positive" else 20), fuzzed
