"""Fixtures of the package's unit tests: the new model, a store already migrated to it, and
both state stores.

Migrating the seeded store (240 points re-embedded with multilingual-e5-small) costs a few
seconds, so it happens once per session; each test gets a private copy of the result.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from include.qdrant_migration import codec
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingProvider, get_provider
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import MemoryStateStore, QdrantStateStore, StateStore
from include.qdrant_migration.sync.backfill import PartitionResult
from tests.qdrant_migration.helpers import TARGET_MODEL, Migrated, migrate, small_spec


@pytest.fixture(params=["qdrant", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """Each state store in turn: the embedded one on disk, and the in-memory one."""
    if request.param == "memory":
        yield MemoryStateStore()
        return
    with open_client(QdrantSettings(path=str(tmp_path / "state"))) as client:
        yield QdrantStateStore(client)


@pytest.fixture(scope="session")
def e5() -> EmbeddingProvider:
    provider = get_provider("local", TARGET_MODEL)
    provider.check_access()  # load once, up front
    return provider


@pytest.fixture(scope="session")
def _migrated_template(
    tmp_path_factory: pytest.TempPathFactory, _seeded_template: Path, e5: EmbeddingProvider
) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    path = tmp_path_factory.mktemp("migrated") / "qdrant"
    shutil.copytree(_seeded_template, path)
    with open_client(QdrantSettings(path=str(path))) as client:
        run = migrate(client, small_spec(), e5, QdrantStateStore(client))
    return path, codec.encode_dict(run.plan), [codec.encode_dict(r) for r in run.results]


@pytest.fixture
def migrated(
    tmp_path: Path, _migrated_template: tuple[Path, dict[str, Any], list[dict[str, Any]]]
) -> Iterator[Migrated]:
    template, plan, results = _migrated_template
    path = tmp_path / "migrated"
    shutil.copytree(template, path)
    with open_client(QdrantSettings(path=str(path))) as client:
        yield Migrated(
            path,
            client,
            QdrantStateStore(client),
            codec.decode(Plan, plan),
            [codec.decode(PartitionResult, r) for r in results],
        )


from tests.standin import standin, standin_server  # noqa: E402, F401
