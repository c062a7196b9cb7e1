from __future__ import annotations

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.aliases import (
    AliasMovedError,
    current_target,
    move_alias,
    swap_alias,
)
from include.qdrant_migration.state import MemoryStateStore
from tests.qdrant_migration.helpers import SEED_POINTS, Migrated, snapshot


def _aliases(client: QdrantClient) -> list[tuple[str, str]]:
    return sorted((a.alias_name, a.collection_name) for a in client.get_aliases().aliases)


def test_swap_moves_the_alias_and_keeps_the_source(migrated: Migrated) -> None:
    client, plan, state = migrated.client, migrated.plan, migrated.state
    source_before = snapshot(client, "articles_v1")
    result = swap_alias(
        client,
        state,
        migration_id=plan.migration_id,
        alias="articles",
        source="articles_v1",
        target=plan.target_collection,
    )
    assert result["alias"] == "articles"
    assert (result["from"], result["to"]) == ("articles_v1", plan.target_collection)
    assert _aliases(client) == [("articles", plan.target_collection)]  # one alias, moved
    assert client.count("articles", exact=True).count == SEED_POINTS  # reads go to the target
    source_after = snapshot(client, "articles_v1")
    assert source_after["points"] == source_before["points"]  # kept for rollback
    doc = state.get("migration", plan.migration_id)
    assert doc is not None
    assert doc["status"] == "swapped"
    assert doc["previous_collection"] == "articles_v1"
    assert doc["swapped_at"] == result["at"]
    assert doc["target_collection"] == plan.target_collection  # earlier fields kept


def test_rollback_is_the_same_move_backwards(migrated: Migrated) -> None:
    client, target = migrated.client, migrated.plan.target_collection
    move_alias(client, "articles", expected="articles_v1", new=target)
    move_alias(client, "articles", expected=target, new="articles_v1")
    assert current_target(client, "articles") == "articles_v1"


def test_swap_refuses_when_somebody_moved_the_alias(migrated: Migrated) -> None:
    client, plan, state = migrated.client, migrated.plan, migrated.state
    client.create_collection(
        "articles_hotfix", vectors_config=qm.VectorParams(size=384, distance="Cosine")
    )
    move_alias(client, "articles", expected="articles_v1", new="articles_hotfix")
    doc_before = state.get("migration", plan.migration_id)
    with pytest.raises(AliasMovedError) as error:
        swap_alias(
            client,
            state,
            migration_id=plan.migration_id,
            alias="articles",
            source="articles_v1",
            target=plan.target_collection,
        )
    message = str(error.value)
    assert "now points at 'articles_hotfix', not 'articles_v1'" in message
    assert "Nothing was changed" in message
    assert _aliases(client) == [("articles", "articles_hotfix")]
    assert state.get("migration", plan.migration_id) == doc_before


def test_swap_refuses_a_missing_alias_or_target(migrated: Migrated) -> None:
    client = migrated.client
    state = MemoryStateStore()
    with pytest.raises(AliasMovedError, match="'nonexistent' does not exist"):
        swap_alias(
            client,
            state,
            migration_id="m",
            alias="articles",
            source="articles_v1",
            target="nonexistent",
        )
    with pytest.raises(AliasMovedError, match="now points at None"):
        swap_alias(
            client,
            state,
            migration_id="m",
            alias="other",
            source="articles_v1",
            target=migrated.plan.target_collection,
        )
    assert _aliases(client) == [("articles", "articles_v1")]
    assert state.records == {}
