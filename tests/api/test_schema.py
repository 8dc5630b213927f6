"""schemathesis against the live API's /openapi.json: no server errors, answers fit the schema."""

from __future__ import annotations

from typing import Any

import hypothesis
import schemathesis
from hypothesis import strategies as st
from schemathesis import checks

from api.conftest import live_api, make_client
from quantivista.config import Settings

# every generated request goes to the server over a real socket: modest numbers per operation
EXAMPLES = hypothesis.settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
SKIPPED = {("POST", "/api/v1/jobs"), ("POST", "/api/v1/exports")}  # they start background work
# what the API promises: no 5xx, and status codes, media types, headers and bodies as
# documented (a schema-valid request may still be refused for what it means: a page
# token this API never issued, a range that ends before it starts)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def test_the_api_never_answers_500_and_fits_its_schema(store: Settings) -> None:
    creds = make_client(store, "fuzz", "read:bars,read:reference")
    headers = {"X-API-Key": creds.api_key}
    with live_api(store) as running:
        schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
        tested = []
        for result in schema.get_all_operations():
            operation = result.ok()
            if (operation.method.upper(), operation.path) in SKIPPED:
                continue

            @EXAMPLES
            @hypothesis.given(case=operation.as_strategy(), auth=st.booleans())
            def check(case: Any, auth: bool) -> None:
                extra = headers if auth else {}
                case.call_and_validate(headers={**(case.headers or {}), **extra}, checks=CHECKS)

            check()
            tested.append(f"{operation.method.upper()} {operation.path}")
    assert len(tested) >= 15, tested
