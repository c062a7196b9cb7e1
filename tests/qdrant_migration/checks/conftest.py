"""A store migrated to the hashing ``new_model``: the fast tier's :class:`Migrated`.

The migration (240 points) runs once per session; each test gets a private copy.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from include.qdrant_migration import codec
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.sync.backfill import PartitionResult
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import hash_spec
from tests.qdrant_migration.helpers import Migrated, migrate

Template = tuple[Path, dict[str, Any], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def _fast_migrated_template(
    tmp_path_factory: pytest.TempPathFactory, _hashed_template: Path, new_model: HashingProvider
) -> Template:
    path = tmp_path_factory.mktemp("fast-migrated") / "qdrant"
    shutil.copytree(_hashed_template, path)
    with open_client(QdrantSettings(path=str(path))) as client:
        run = migrate(client, hash_spec(), new_model, QdrantStateStore(client))
    return path, codec.encode_dict(run.plan), [codec.encode_dict(r) for r in run.results]


@pytest.fixture
def fast_migrated(tmp_path: Path, _fast_migrated_template: Template) -> Iterator[Migrated]:
    """A private copy of the fast store, fully migrated to ``new_model`` and indexed."""
    template, plan, results = _fast_migrated_template
    path = tmp_path / "fast-migrated"
    shutil.copytree(template, path)
    with open_client(QdrantSettings(path=str(path))) as client:
        yield Migrated(
            path,
            client,
            QdrantStateStore(client),
            codec.decode(Plan, plan),
            [codec.decode(PartitionResult, r) for r in results],
        )
