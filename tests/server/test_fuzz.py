"""Schemathesis fuzzes every operation of the OpenAPI schema (a bounded number of cases each, as the
admin): no request may cause a server error (5xx)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from samkit.server.app import create_app
from samkit.server.routers.decoder import decoder_folder
from tests.server.conftest import Served, make_project, settings_for

pytestmark = pytest.mark.slow  # real server processes / jobs / PostgreSQL: seconds to a minute each

MAX_EXAMPLES = 15
# job creation (a fuzzed job would keep the worker busy), and what would sign the fuzzing admin out
KEPT_OUT = ["/api/projects/{project_id}/jobs", "/api/auth/logout", "/api/users/{user_id}/deactivate"]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    app = create_app(settings_for(make_project(tmp_path_factory.mktemp("fuzz")), max_upload_bytes=200_000))
    with TestClient(app) as client:
        # the in-browser decoder's one-time ONNX export answers 503 + Retry-After while it runs (a transient
        # state, tested in test_browser_decoder.py): done first, so the fuzzing sees the steady state
        decoder_folder(app.state.samkit, wait_s=600)
        yield Served(client, app)


def test_no_server_errors(fuzzed: Served) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed.app).exclude(path=KEPT_OUT)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    failures, statuses = [], []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def call(case) -> None:  # noqa: ANN001 (a schemathesis case)
            response = case.call(headers=fuzzed.headers["admin"], timeout=300)  # a loaded CI machine is slow
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code, response.text[:300]))

        call()
    assert failures == []
    assert len(statuses) >= 2 * len(operations)  # it ran, and past authentication:
    assert {200, 404, 422} <= set(statuses) and statuses.count(401) < len(statuses) / 4
