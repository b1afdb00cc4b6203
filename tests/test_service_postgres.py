"""The API tests of test_service_api.py once more, with the job records in a real PostgreSQL instead of SQLite:
the database that `headshot serve` and the workers of several machines share (`--database postgresql://…`).

A throwaway cluster (initdb, pg_ctl: Debian's postgresql package, as `.ci/run` installs it) on a free 127.0.0.1
port, one new database per test; skipped, with the reason, where PostgreSQL or psycopg is not installed."""

from __future__ import annotations

import pytest
import test_service_api as api_tests
from fastapi.testclient import TestClient
from service_processes import PostgresCluster, postgres_skip_reason

from headshot.service.app import create_app
from headshot.service.auth import add_user
from headshot.service.config import Limits, ServiceConfig
from headshot.service.db import Store
from headshot.service.tasks import JobQueue

SKIP = postgres_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


@pytest.fixture(scope="session")
def postgres():
    cluster = PostgresCluster()
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def records_in_postgresql(postgres, monkeypatch):
    """test_service_api builds every service through its `_service`: here that service keeps its records in a
    new PostgreSQL database (the URL as a person gives it: postgresql://…, no driver named)."""
    stores = []

    def service_on_postgresql(tmp_path, **limits):
        database = postgres.new_database()
        assert database.startswith("postgresql://")
        config = ServiceConfig(
            data_dir=tmp_path, base_model=str(tmp_path), face_backend="dlib", limits=Limits(**limits),
            database_url=database, private_webhooks=True,  # the webhook receiver is on 127.0.0.1
        )  # fmt: skip
        store = Store(config.database)
        assert store.engine.dialect.name == "postgresql"
        stores.append(store)
        queue = JobQueue(config, store)
        keys = {name: add_user(store, name) for name in ("alice", "bob")}
        client = TestClient(create_app(config, store, queue), raise_server_exceptions=False)
        return config, store, queue, client, keys

    monkeypatch.setattr(api_tests, "_service", service_on_postgresql)
    yield
    for store in stores:
        store.engine.dispose()


# every test of test_service_api.py, and the fixtures they use, collected again in this module
selfies, service = api_tests.selfies, api_tests.service
globals().update({name: test for name, test in vars(api_tests).items() if name.startswith("test_")})
