"""Several workers started at once on a fresh SQLite database: each creates the tables if missing, and the
losers of that race must not crash ("table api_keys already exists")."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytest.importorskip("sqlalchemy")

START_TOGETHER = (
    "import sys, time; time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
    "from headshot.service.db import Store; Store('sqlite:///' + sys.argv[1])"
)


def test_workers_creating_the_tables_at_the_same_moment_all_start(tmp_path):
    for round_ in range(3):
        start = time.time() + 3.0  # every process imports first, then all create the tables together
        database = tmp_path / f"service-{round_}.db"
        processes = [
            subprocess.Popen([sys.executable, "-c", START_TOGETHER, str(database), str(start)], stderr=subprocess.PIPE)
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=120)[1].decode() for p in processes]
        assert all(p.returncode == 0 for p in processes), errors
