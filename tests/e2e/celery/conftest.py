"""One CeleryExecutor stack for the whole tier (it takes about 25 s to start), the
sources its migrations read, and the tier's numbers in the terminal summary.

The tier needs Debian's ``postgresql`` and ``redis-server``. Without them its tests are
skipped on a developer's machine; in CI (``CI`` set) they fail, because ``.ci/run``
installs both.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from include.qdrant_migration.qdrant import open_client
from scripts.seeding import read_corpus
from tests.e2e.celery.stack import CeleryStack, missing_services, running_stack
from tests.e2e.conftest import DAG_ID
from tests.qdrant_migration.helpers import seed_standin_source
from tests.qdrant_server import running_server
from tests.standin import StandIn

MISSING = missing_services()
#: Skip (developer machine) or fail (CI) when the Debian packages are missing.
requires_services = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"),
    reason=f"{', '.join(MISSING)} missing: apt-get install -y --no-install-recommends "
    "postgresql redis-server (CI installs them and never skips)",
)

#: The model the sources' vectors come from (through the stand-in's OpenAI route), and the
#: one every migration of the tier moves to (its Cohere route, which tells stored texts,
#: ``search_document``, from queries).
OLD_MODEL = "text-embedding-3-small"
NEW_MODEL = "embed-v4.0"
DIMENSIONS = 256
#: Points of each source; each has its own texts, so the stand-in's log tells them apart.
SOURCES = {"docs": 400, "notes": 200, "pages": 200, "paced": 800, "slow": 100}

#: The tier's numbers, printed at the end of the session (pytest shows no output of a
#: passing test otherwise).
REPORT: list[str] = []


def note(line: str) -> None:
    """A line for the tier's summary (and for the test's own output)."""
    REPORT.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("CeleryExecutor tier: Postgres, Redis, two Celery workers")
        for line in REPORT:
            terminalreporter.write_line(line)


def migration_conf(alias: str, **overrides: Any) -> dict[str, Any]:
    """A migration of ``alias`` to Cohere's embed-v4.0 through the stand-in."""
    return {
        "alias": alias,
        "provider": "cohere",
        "model": NEW_MODEL,
        "dimensions": DIMENSIONS,
        "provider_conn_id": "cohere_default",
        # The old model (from the source's lineage) is OpenAI's: the report compares them.
        "source_provider_conn_id": "openai_default",
        "recall_sample_size": 20,
        # With a budget the plan's duration is the budget's bound, so assess_compatibility
        # embeds no timing samples (seconds each at the stand-in's latencies here).
        "provider_options": {"requests_per_minute": 6000},
        **overrides,
    }


@pytest.fixture(scope="package")
def source_texts() -> dict[str, list[dict[str, Any]]]:
    """Disjoint slices of the demo corpus, one per source, each text once."""
    seen: set[str] = set()
    unique = []
    for record in read_corpus():
        if record["text"] not in seen:
            seen.add(record["text"])
            unique.append(record)
    slices: dict[str, list[dict[str, Any]]] = {}
    start = 0
    for alias, points in SOURCES.items():
        slices[alias] = unique[start : start + points]
        start += points
    return slices


@pytest.fixture(scope="package")
def celery_stack(
    tmp_path_factory: pytest.TempPathFactory, source_texts: dict[str, list[dict[str, Any]]]
) -> Iterator[CeleryStack]:
    if MISSING:
        pytest.fail(f"CI must run the CeleryExecutor tier, but {', '.join(MISSING)} is missing")
    started = time.monotonic()
    base = tmp_path_factory.mktemp("celery")
    (base / "qdrant").mkdir()
    with (
        StandIn() as standin,
        running_server(path=str(base / "qdrant")) as qdrant,
    ):
        with open_client(qdrant.settings()) as client:
            for alias, records in source_texts.items():
                seed_standin_source(
                    client,
                    records,
                    collection=f"{alias}_v1",
                    alias=alias,
                    model=OLD_MODEL,
                    dimensions=DIMENSIONS,
                )
        with running_stack(Path(base), qdrant.url, standin) as stack:
            stack.set_paused(DAG_ID, False)  # DAGs start paused (as in the compose file)
            note(
                f"stack up in {time.monotonic() - started:.0f} s (Postgres, Redis, Qdrant, "
                "api-server, scheduler, dag-processor, triggerer, 2 Celery workers)"
            )
            yield stack
    note(f"tier wall time: {time.monotonic() - started:.0f} s, start to stop")
