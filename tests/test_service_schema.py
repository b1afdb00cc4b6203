"""schemathesis against the service's own /openapi.json: requests generated from the schema, valid and invalid,
to every operation, with a valid API key. No answer is a 500, and every answer matches the schema: its status
code is documented, its content type, headers and body are the documented ones. (Not asked: that every
schema-valid request is accepted. The API rightly refuses photos that are not pictures, unknown styles or sizes
that are not multiples of 8, which a JSON schema cannot say.)

Driven through hypothesis directly (`operation.as_strategy`), not schemathesis' pytest plugin, which reads a
private attribute of pytest's test items that pytest 9 no longer has."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from headshot.service.app import create_app
from headshot.service.auth import add_user
from headshot.service.config import ServiceConfig
from headshot.service.db import Store
from headshot.service.tasks import JobQueue

EXAMPLES = 15  # per operation and mode: the whole run stays under a minute


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    data = tmp_path_factory.mktemp("service")
    config = ServiceConfig(data_dir=data, base_model=str(data), face_backend="dlib")
    store = Store(config.database)
    key, _ = add_user(store, "alice")
    return create_app(config, store, JobQueue(config, store)), {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda mode: mode.value)
def test_generated_requests_get_no_500_and_answers_match_the_schema(service, mode):
    app, auth = service
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode is schemathesis.GenerationMode.NEGATIVE and not operation.get_request_payload_content_types():
            continue  # a path id may be any string: without a body there is nothing invalid to send

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(headers=auth, excluded_checks=[positive_data_acceptance])

        try:
            run()
        except BaseException as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup; every operation is tried
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert not failures, "\n\n".join(f"{label}\n{why}" for label, why in failures.items())
