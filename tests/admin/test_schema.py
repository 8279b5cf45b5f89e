"""A schemathesis run against the admin API's own OpenAPI document.

Every operation gets a bounded number of generated requests, with a valid
token, through the real server; none may answer 5xx or anything the
document does not describe (status, content type, body schema).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err

from tests.admin.conftest import OPS_TOKEN, AdminServer

EXAMPLES_PER_OPERATION = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def exercise(operation: Any, base_url: str, seen: Counter[str]) -> None:
    """Send generated requests for one operation and check each answer."""
    headers = {"Authorization": f"Bearer {OPS_TOKEN}"}

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(
            base_url=base_url, headers=headers, checks=CHECKS
        )
        seen[f"{operation.label} {response.status_code}"] += 1

    run()


def test_the_api_conforms_to_its_openapi_schema(admin: AdminServer) -> None:
    schema = schemathesis.openapi.from_url(f"{admin.url}/openapi.json")
    seen: Counter[str] = Counter()
    failures = []

    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the schema is invalid: {result.err()}")
            continue
        operation = result.ok()
        try:
            exercise(operation, admin.url, seen)
        except Exception as exc:  # collect every operation's failure
            failures.append(f"{operation.label}: {exc}")

    print("\n".join(f"{n:4d} {k}" for k, n in sorted(seen.items())))
    assert not failures, "\n\n".join(failures)
    assert not any(key.endswith(" 401") for key in seen)
