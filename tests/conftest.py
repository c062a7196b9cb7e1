"""Shared fixtures: an isolated Airflow home, real local models, seeded embedded stores.

Airflow reads its configuration at import time, so the environment is set here, before
any test module imports Airflow.

Tiers: a test that uses a fixture of :data:`INTEGRATION_FIXTURES` (a real model, Airflow's
metadata DB, a service) is marked ``integration`` here; ``e2e`` tests mark themselves. What
is left is the fast tier (``make check``): pure logic, the embedded store, the wire-level
stand-ins, and :class:`tests.fakes.HashingProvider` where the model is not what is tested.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="qmm-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # recall_check polls every 5 s, not 30: tests waiting for an index wait less.
        "QMM_RECALL_POKE_S": "5",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from qdrant_client import QdrantClient  # noqa: E402

from include.qdrant_migration.providers import get_provider  # noqa: E402
from include.qdrant_migration.qdrant import QdrantSettings, open_client  # noqa: E402
from include.qdrant_migration.settings import settings  # noqa: E402
from scripts.seeding import read_corpus, seed_collection  # noqa: E402
from tests.fakes import HashingProvider  # noqa: E402

SOURCE_MODEL = "all-MiniLM-L6-v2"
TARGET_MODEL = "multilingual-e5-small"
SEED_POINTS = 240

#: Fixtures that load a real model, run Airflow or start a service.
INTEGRATION_FIXTURES = frozenset(
    {"airflow_db", "_seeded_template", "store_path", "client", "qdrant_conn", "e5", "migrated"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if uses & INTEGRATION_FIXTURES and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Every test reads the QMM_* settings of its own environment: a test sets them with
    ``monkeypatch.setenv`` before the code under test first calls ``settings()`` (or calls
    ``settings.cache_clear()`` after), and none leaks into the next test."""
    settings.cache_clear()
    yield
    settings.cache_clear()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A fresh SQLite metadata DB for the whole session."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return _HOME


@pytest.fixture(scope="session")
def corpus() -> list[dict[str, Any]]:
    return list(read_corpus(limit=SEED_POINTS))


@pytest.fixture(scope="session")
def _seeded_template(
    tmp_path_factory: pytest.TempPathFactory, corpus: list[dict[str, Any]]
) -> Path:
    """One store seeded with the old model; each test gets a copy (seeding costs seconds)."""
    path = tmp_path_factory.mktemp("template") / "qdrant"
    with open_client(QdrantSettings(path=str(path))) as client:
        seed_collection(
            client,
            collection="articles_v1",
            alias="articles",
            records=corpus,
            provider=get_provider("local", SOURCE_MODEL),
        )
    return path


@pytest.fixture
def store_path(tmp_path: Path, _seeded_template: Path) -> Path:
    """A private copy of the seeded store: alias 'articles' -> 'articles_v1' (MiniLM)."""
    path = tmp_path / "qdrant"
    shutil.copytree(_seeded_template, path)
    return path


@pytest.fixture
def client(store_path: Path) -> Iterator[QdrantClient]:
    with open_client(QdrantSettings(path=str(store_path))) as qdrant:
        yield qdrant


@pytest.fixture
def qdrant_conn(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Airflow connection qdrant_default pointing at the private embedded store."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_QDRANT_DEFAULT",
        json.dumps({"conn_type": "qdrant", "extra": {"path": str(store_path)}}),
    )
    return store_path


# -- the fast tier: the same corpus, embedded by deterministic hashing "models" ------------


@pytest.fixture(scope="session")
def old_model() -> HashingProvider:
    """Stands for the model that made the source's vectors."""
    return HashingProvider("hash-old")


@pytest.fixture(scope="session")
def new_model() -> HashingProvider:
    """Stands for the model being migrated to: another vector space."""
    return HashingProvider("hash-new")


@pytest.fixture(scope="session")
def _hashed_template(
    tmp_path_factory: pytest.TempPathFactory,
    corpus: list[dict[str, Any]],
    old_model: HashingProvider,
) -> Path:
    path = tmp_path_factory.mktemp("hashed") / "qdrant"
    with open_client(QdrantSettings(path=str(path))) as client:
        seed_collection(
            client, collection="articles_v1", alias="articles", records=corpus, provider=old_model
        )
    return path


@pytest.fixture
def fast_store_path(tmp_path: Path, _hashed_template: Path) -> Path:
    """A private store: alias 'articles' -> 'articles_v1', vectors of ``old_model``."""
    path = tmp_path / "hashed"
    shutil.copytree(_hashed_template, path)
    return path


@pytest.fixture
def fast_client(fast_store_path: Path) -> Iterator[QdrantClient]:
    with open_client(QdrantSettings(path=str(fast_store_path))) as qdrant:
        yield qdrant
