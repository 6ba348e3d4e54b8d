"""The loom's API under generated requests (schemathesis, from its own OpenAPI schema): whatever
arrives, the answer is never a server error. Models are left out here (their routes are tested
with the tiny model in test_api.py), so every generated request is answered in milliseconds."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from alignlab.loom.server import LoomSettings, create_app  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    app = create_app(LoomSettings(data_dir=tmp_path_factory.mktemp("fuzz"), models=[], annotator="fuzz"))
    store = app.state.store
    tree = store.create_tree("Fuzz me", "fuzz")
    store.add_nodes(tree["root_id"], [{"text": " a"}, {"text": " b"}], "fuzz")
    return schemathesis.openapi.from_asgi("/api/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        assert "detail" in response.json(), response.text[:300]
