"""The Airflow layer's fast tests share one store: hand-made, reached through a connection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from include.qdrant_migration.qdrant import QdrantSettings, open_client
from tests.qdrant_migration.airflow.helpers import ALIAS, SOURCE
from tests.qdrant_migration.helpers import make_source


@pytest.fixture(scope="session")
def _store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("airflow-layer") / "qdrant"
    with open_client(QdrantSettings(path=str(path))) as client:
        make_source(client, SOURCE, [(i, {"text": f"doc {i}"}) for i in range(3)], alias=ALIAS)
    return path


@pytest.fixture
def store(tmp_path: Path, _store_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private embedded store, ``docs`` -> ``docs_v1`` (3 points of dummy vectors), which
    the Airflow connection ``qdrant_default`` points at, as the tasks and the UI reach it.
    (A copy of one made per session: creating a store costs more than copying it.)"""
    path = tmp_path / "qdrant"
    shutil.copytree(_store_template, path)
    monkeypatch.setenv(
        "AIRFLOW_CONN_QDRANT_DEFAULT",
        json.dumps({"conn_type": "qdrant", "extra": {"path": str(path)}}),
    )
    return path
