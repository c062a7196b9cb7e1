"""A writer killed while it held a migration's lease delays the next run by minutes, says
so in the log, and never keeps the embedded store locked while others wait."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from include.qdrant_migration import leases
from include.qdrant_migration.qdrant import QdrantSettings, embedded_lock, open_client
from include.qdrant_migration.spec import MigrationSpec
from tests.dags.conftest import task_states
from tests.qdrant_migration.helpers import seed_standin_source
from tests.standin import StandIn

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TTL_S = 20
DEAD_OWNER = "qdrant_migration_catch_up/scheduled__killed-mid-pass"

HOLDER = f"""
import sys, time
from include.qdrant_migration import leases
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import QdrantStateStore
from contextlib import contextmanager

@contextmanager
def open_store():
    with open_client(QdrantSettings(path=sys.argv[1])) as client:
        yield QdrantStateStore(client)

leases.acquire(open_store, sys.argv[2], {DEAD_OWNER!r}, policy=leases.LeasePolicy(ttl_s={TTL_S}))
print("held", flush=True)
time.sleep(3600)
"""


def test_a_killed_lease_holder_delays_the_next_run_by_its_ttl_only(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    corpus: list[dict[str, Any]],
    openai_connection: StandIn,
    dag: Any,
    reviewer: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="include.qdrant_migration")
    store = str(tmp_path / "qdrant")
    with open_client(QdrantSettings(path=store)) as client:
        seed_standin_source(client, corpus, model="text-embedding-3-small", dimensions=256)
    monkeypatch.setenv(
        "AIRFLOW_CONN_QDRANT_DEFAULT", json.dumps({"conn_type": "qdrant", "extra": {"path": store}})
    )
    conf = {
        "alias": "docs",
        "provider": "openai",
        "model": "text-embedding-3-large",
        "dimensions": 256,
        "provider_conn_id": "embeddings",
        "points_per_partition": 100,
        "batch_size": 32,
        "recall_sample_size": 20,
    }
    spec = MigrationSpec.from_params(conf)
    key = f"writer/{spec.migration_id('docs_v1')}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store, key],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)  # a worker lost mid-pass: its lease stays behind
    holder.wait(30)

    # Each time the run sleeps while waiting for the dead holder's lease, somebody else
    # opens the store: it must be free (the waiting task does not hold it).
    opened: list[float] = []
    real_clock = leases.Clock

    def open_then_sleep(seconds: float) -> None:
        with embedded_lock(store, timeout_s=10):
            opened.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(leases, "Clock", lambda: real_clock(sleep=open_then_sleep))
    seen = reviewer("Approve")
    run = dag.test(run_conf=conf)

    assert "error" not in seen, seen.get("error")
    assert run.state == "success", task_states(run)
    assert opened, "the run never waited for the lease"
    out = caplog.text
    assert f"Waiting for {key}, held by {DEAD_OWNER}" in out
    took = re.search(rf"Took {re.escape(key)} after waiting (\d+)s", out)
    assert took, out[-3000:]
    assert int(took.group(1)) <= TTL_S + 10  # the TTL and a poll, not hours
