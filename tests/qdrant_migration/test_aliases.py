"""Moving the application's alias: swap (only a READY migration), rollback, retire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.aliases import (
    AliasMove,
    AliasMovedError,
    LifecycleError,
    current_target,
    ensure_alias_at,
    move_alias,
    retire,
    rollback,
    swap_alias,
)
from include.qdrant_migration.state import (
    MemoryStateStore,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    QdrantStateStore,
    StatusError,
)
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import HASH_DIMENSION, HASH_TARGET, hash_spec, mark_ready
from tests.qdrant_migration.helpers import SEED_POINTS, migrate, prepare, snapshot


def _aliases(client: QdrantClient) -> list[tuple[str, str]]:
    return sorted((a.alias_name, a.collection_name) for a in client.get_aliases().aliases)


def _loading(client: QdrantClient, model: HashingProvider) -> tuple[QdrantStateStore, str]:
    """A migration whose (empty) target exists: LOADING, as create_collection leaves it."""
    state = QdrantStateStore(client)
    run = prepare(client, hash_spec(), model, state)
    return state, run.plan.migration_id


def _ready(
    client: QdrantClient, model: HashingProvider
) -> tuple[QdrantStateStore, MigrationRecord]:
    state, migration_id = _loading(client, model)
    return state, mark_ready(state, migration_id)


def _swapped(
    client: QdrantClient, model: HashingProvider
) -> tuple[QdrantStateStore, MigrationRecord]:
    state, record = _ready(client, model)
    swap_alias(client, state, record)
    return state, Migrations(state).require(record.migration_id)


def test_swap_moves_the_alias_and_keeps_the_source(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    client = fast_client
    state = QdrantStateStore(client)
    run = migrate(client, hash_spec(), new_model, state)
    record = mark_ready(state, run.plan.migration_id)
    source_before = snapshot(client, "articles_v1")

    move = swap_alias(client, state, record)

    assert move == AliasMove(
        alias="articles",
        from_collection="articles_v1",
        to_collection=HASH_TARGET,
        migration_id=run.plan.migration_id,
        action="swap",
        at=move.at,
    )
    assert datetime.fromisoformat(move.at) <= datetime.now(tz=UTC)
    assert _aliases(client) == [("articles", HASH_TARGET)]  # one alias, moved
    assert client.count("articles", exact=True).count == SEED_POINTS  # reads go to the target
    hit = client.query_points("articles", query=new_model.vector("abstract base class"), limit=1)
    assert hit.points and hit.points[0].score > 0.3  # new-model queries work through the alias
    source_after = snapshot(client, "articles_v1")
    assert source_after["points"] == source_before["points"]  # kept for rollback
    swapped = Migrations(state).require(run.plan.migration_id)
    assert swapped.status is MigrationStatus.SWAPPED
    assert swapped.previous_collection == "articles_v1"
    assert swapped.swapped_at == move.at
    assert swapped.target_collection == HASH_TARGET  # earlier fields kept
    assert swapped.plan == record.plan


@pytest.mark.parametrize(
    "status",
    [MigrationStatus.LOADING, MigrationStatus.SWAPPED, MigrationStatus.ROLLED_BACK],
)
def test_swap_refuses_a_migration_that_is_not_ready_and_leaves_the_alias(
    fast_client: QdrantClient, new_model: HashingProvider, status: MigrationStatus
) -> None:
    state, migration_id = _loading(fast_client, new_model)
    migrations = Migrations(state)
    record = migrations.require(migration_id)
    if status is not MigrationStatus.LOADING:
        record = migrations.transition(record, MigrationStatus.READY)
        record = migrations.transition(record, MigrationStatus.SWAPPED)
    if status is MigrationStatus.ROLLED_BACK:
        record = migrations.transition(record, MigrationStatus.ROLLED_BACK)
    stored = migrations.require(migration_id)

    with pytest.raises(StatusError) as error:
        swap_alias(fast_client, state, record)

    assert str(error.value) == (
        f"Migration {migration_id} is {status.value}, not ready: its target is not known to "
        "be complete and caught up, so the alias stays."
    )
    assert _aliases(fast_client) == [("articles", "articles_v1")]
    assert migrations.require(migration_id) == stored


def test_swap_refuses_when_somebody_moved_the_alias(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    client = fast_client
    state, record = _ready(client, new_model)
    client.create_collection(
        "articles_hotfix",
        vectors_config=qm.VectorParams(size=HASH_DIMENSION, distance="Cosine"),
    )
    move_alias(client, "articles", expected="articles_v1", new="articles_hotfix")
    with pytest.raises(AliasMovedError) as error:
        swap_alias(client, state, record)
    message = str(error.value)
    assert "now points at 'articles_hotfix', not 'articles_v1'" in message
    assert "Nothing was changed" in message
    assert _aliases(client) == [("articles", "articles_hotfix")]
    assert Migrations(state).require(record.migration_id) == record  # still READY


def _record(alias: str, source: str, target: str) -> MigrationRecord:
    return MigrationRecord(
        migration_id="m",
        alias=alias,
        source_collection=source,
        status=MigrationStatus.READY,
        strategy="full_reembed",
        target_collection=target,
    )


def test_swap_refuses_a_missing_alias_or_target(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state = MemoryStateStore()
    with pytest.raises(AliasMovedError, match="'nonexistent' does not exist"):
        swap_alias(fast_client, state, _record("articles", "articles_v1", "nonexistent"))
    _loading(fast_client, new_model)  # the target exists: only the alias is missing
    with pytest.raises(AliasMovedError, match="'other' now points at None"):
        swap_alias(fast_client, state, _record("other", "articles_v1", HASH_TARGET))
    assert _aliases(fast_client) == [("articles", "articles_v1")]
    assert state.records == {}


def test_move_alias_is_atomic_both_ways(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    _loading(fast_client, new_model)
    move_alias(fast_client, "articles", expected="articles_v1", new=HASH_TARGET)
    assert _aliases(fast_client) == [("articles", HASH_TARGET)]
    move_alias(fast_client, "articles", expected=HASH_TARGET, new="articles_v1")
    assert current_target(fast_client, "articles") == "articles_v1"
    assert current_target(fast_client, "nothing") is None
    ensure_alias_at(fast_client, "articles", "articles_v1")
    with pytest.raises(AliasMovedError, match="now points at 'articles_v1', not 'elsewhere'"):
        ensure_alias_at(fast_client, "articles", "elsewhere")


def test_rollback_points_the_alias_back_and_records_it(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state, swapped = _swapped(fast_client, new_model)
    assert current_target(fast_client, "articles") == HASH_TARGET

    move = rollback(fast_client, state, alias="articles")

    assert (move.alias, move.from_collection, move.to_collection) == (
        "articles",
        HASH_TARGET,
        "articles_v1",
    )
    assert (move.migration_id, move.action) == (swapped.migration_id, "rollback")
    assert _aliases(fast_client) == [("articles", "articles_v1")]
    record = Migrations(state).require(swapped.migration_id)
    assert record.status is MigrationStatus.ROLLED_BACK
    assert record.rolled_back_at == move.at
    assert fast_client.collection_exists(HASH_TARGET)  # nothing deleted
    # a rolled-back migration is ready again once caught up, and may be swapped again
    again = Migrations(state).transition(record, MigrationStatus.READY)
    assert swap_alias(fast_client, state, again).to_collection == HASH_TARGET


def test_rollback_without_a_swap_changes_nothing(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state, _ = _ready(fast_client, new_model)
    with pytest.raises(LifecycleError) as error:
        rollback(fast_client, state, alias="articles")
    assert str(error.value) == (
        "No swapped migration moved alias 'articles' to its current collection "
        "'articles_v1'; there is nothing to roll back."
    )
    assert _aliases(fast_client) == [("articles", "articles_v1")]


def test_retire_after_a_swap_waits_for_the_observation_period(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state, swapped = _swapped(fast_client, new_model)
    swapped_at = datetime.fromisoformat(str(swapped.swapped_at))
    with pytest.raises(LifecycleError, match="kept for rollback until"):
        retire(fast_client, state, migration_id=swapped.migration_id, observation_days=7)
    assert fast_client.collection_exists("articles_v1")
    later = swapped_at + timedelta(days=7, seconds=1)
    done = retire(
        fast_client, state, migration_id=swapped.migration_id, observation_days=7, now=later
    )
    assert done == {"migration_id": swapped.migration_id, "deleted": "articles_v1"}
    assert not fast_client.collection_exists("articles_v1")
    assert _aliases(fast_client) == [("articles", HASH_TARGET)]
    record = Migrations(state).require(swapped.migration_id)
    assert record.status is MigrationStatus.RETIRED
    assert record.deleted_collection == "articles_v1" and record.retired_at
    again = retire(fast_client, state, migration_id=swapped.migration_id, observation_days=7)
    assert again == {"migration_id": swapped.migration_id, "deleted": None, "already": True}


def test_retire_of_an_unswapped_migration_deletes_its_target(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state, record = _ready(fast_client, new_model)
    done = retire(fast_client, state, migration_id=record.migration_id, observation_days=7)
    assert done == {"migration_id": record.migration_id, "deleted": HASH_TARGET}
    assert not fast_client.collection_exists(HASH_TARGET)
    assert fast_client.collection_exists("articles_v1")
    assert _aliases(fast_client) == [("articles", "articles_v1")]


def test_retire_never_deletes_a_collection_an_alias_serves(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state, record = _ready(fast_client, new_model)
    fast_client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=HASH_TARGET, alias_name="preview")
            )
        ]
    )
    with pytest.raises(LifecycleError, match=rf"{HASH_TARGET!r} still serves alias\(es\) preview"):
        retire(fast_client, state, migration_id=record.migration_id, observation_days=0)
    assert fast_client.collection_exists(HASH_TARGET)
    assert Migrations(state).require(record.migration_id).status is MigrationStatus.READY


def test_retire_refuses_unknown_and_in_place_migrations(fast_client: QdrantClient) -> None:
    state = MemoryStateStore()
    with pytest.raises(LifecycleError, match=r"No migration 'mig-nope' is recorded\."):
        retire(fast_client, state, migration_id="mig-nope", observation_days=0)
    quantized = MigrationRecord(
        migration_id="mig-q",
        alias="articles",
        source_collection="articles_v1",
        status=MigrationStatus.QUANTIZED,
        strategy="quantization_only",
        target_collection="articles_v1",
    )
    Migrations(state).put(quantized)
    with pytest.raises(LifecycleError, match="changed the quantization of 'articles_v1' in place"):
        retire(fast_client, state, migration_id="mig-q", observation_days=0)
    assert fast_client.collection_exists("articles_v1")
