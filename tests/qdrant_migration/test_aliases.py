"""Moving the application's alias: switch (swap a READY migration, roll a SWAPPED one back,
with a final catch-up pass before the move and a reconciling one after it), retire."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.aliases import (
    AliasMove,
    AliasMovedError,
    LifecycleError,
    Switched,
    current_target,
    ensure_alias_at,
    move_alias,
    retire,
    swapped_migration,
    switch,
)
from include.qdrant_migration.state import (
    MemoryStateStore,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    QdrantStateStore,
    StateStore,
    StatusError,
)
from include.qdrant_migration.sync import fingerprints
from include.qdrant_migration.sync.catchup import CatchUp, CatchUpJob, CatchUpResult
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import HASH_DIMENSION, HASH_TARGET, hash_spec, mark_ready
from tests.qdrant_migration.helpers import make_source, migrate, prepare, snapshot

S = MigrationStatus


def _aliases(client: QdrantClient) -> list[tuple[str, str]]:
    return sorted((a.alias_name, a.collection_name) for a in client.get_aliases().aliases)


#: What each pass saw when it ran: (pass, where the alias pointed, the recorded status).
Seen = list[tuple[str, str | None, MigrationStatus]]


class RecordingPass(CatchUp):
    """Stands for a catch-up pass: records when it ran, where the alias pointed then and the
    migration's status, and returns a result of its own (``inserted`` tells them apart)."""

    def __init__(
        self,
        name: str,
        seen: Seen,
        client: QdrantClient,
        state: StateStore,
        record: MigrationRecord,
    ) -> None:
        self.name, self.seen, self.client, self.state = name, seen, client, state
        self.migration_id, self.alias = record.migration_id, record.alias

    def run(self) -> CatchUpResult:
        status = Migrations(self.state).require(self.migration_id).status
        self.seen.append((self.name, current_target(self.client, self.alias), status))
        return CatchUpResult(mode=self.name, inserted=len(self.seen))


def _passes(
    client: QdrantClient, state: StateStore, record: MigrationRecord
) -> tuple[Seen, dict[str, RecordingPass]]:
    seen: Seen = []
    return seen, {
        name: RecordingPass(name, seen, client, state, record) for name in ("final", "reconcile")
    }


class AliasSpy:
    """The real client; counts the alias moves made through it."""

    def __init__(self, inner: QdrantClient) -> None:
        self._inner = inner
        self.moves = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def update_collection_aliases(self, **kwargs: Any) -> bool:
        self.moves += 1
        return bool(self._inner.update_collection_aliases(**kwargs))


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
    switch(client, state, record)
    return state, Migrations(state).require(record.migration_id)


# -- swap ----------------------------------------------------------------------------------


NOTES = [(i, {"text": f"note {i}: how to sort a list of {i} items"}) for i in range(1, 21)]


def _notes(
    client: QdrantClient, model: HashingProvider
) -> tuple[QdrantStateStore, MigrationRecord]:
    """A small source behind alias 'notes', migrated to ``model`` (a full target), READY."""
    make_source(client, "notes_v1", NOTES, alias="notes", size=HASH_DIMENSION)
    state = QdrantStateStore(client)
    run = migrate(client, hash_spec(alias="notes"), model, state)
    return state, mark_ready(state, run.plan.migration_id)


def test_swap_runs_the_final_pass_then_moves_then_reconciles(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    client = fast_client
    state, record = _notes(client, new_model)
    target = record.target_collection
    source_before = snapshot(client, "notes_v1")
    seen, passes = _passes(client, state, record)

    switched = switch(client, state, record, **passes)

    # the final pass while the source is still served, the reconciling one after the move
    assert seen == [("final", "notes_v1", S.READY), ("reconcile", target, S.SWAPPED)]
    assert switched.final == CatchUpResult(mode="final", inserted=1)
    assert switched.reconcile == CatchUpResult(mode="reconcile", inserted=2)
    move = switched.move
    assert move == AliasMove(
        alias="notes",
        from_collection="notes_v1",
        to_collection=target,
        migration_id=record.migration_id,
        action="swap",
        at=move.at,
    )
    assert datetime.fromisoformat(move.at) <= datetime.now(tz=UTC)
    assert _aliases(client) == [("articles", "articles_v1"), ("notes", target)]  # one moved
    assert client.count("notes", exact=True).count == len(NOTES)  # reads go to the target
    text = NOTES[6][1]["text"]
    hit = client.query_points("notes", query=new_model.vector(text), limit=1).points
    assert hit[0].id == 7 and hit[0].score > 0.99  # new-model queries work through the alias
    source_after = snapshot(client, "notes_v1")
    assert source_after["points"] == source_before["points"]  # kept for rollback
    swapped = Migrations(state).require(record.migration_id)
    assert swapped.status is S.SWAPPED
    assert swapped.previous_collection == "notes_v1"
    assert swapped.swapped_at == move.at
    assert swapped.target_collection == target  # earlier fields kept
    assert swapped.plan == record.plan
    xcom = switched.to_dict()
    assert json.loads(json.dumps(xcom)) == xcom
    assert xcom == dataclasses.asdict(move) | {
        "final_catch_up": codec.encode_dict(switched.final),
        "reconcile": codec.encode_dict(switched.reconcile),
    }


def test_swap_without_passes_just_moves(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state, record = _ready(fast_client, new_model)
    switched = switch(fast_client, state, record)
    assert (switched.final, switched.reconcile) == (None, None)
    assert _aliases(fast_client) == [("articles", HASH_TARGET)]
    assert switched.to_dict()["final_catch_up"] is None


class WindowPass(CatchUp):
    """The real final pass; once it is done, the application writes before the move."""

    def __init__(self, *args: Any, then: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.then = then

    def run(self) -> CatchUpResult:
        result = super().run()
        self.then()
        return result


def _text(client: QdrantClient, collection: str, point: int) -> Any:
    found = client.retrieve(collection, [point], with_payload=True, with_vectors=True)[0]
    return (found.payload or {}).get("text"), found.vector


def test_a_swap_loses_no_write_of_the_served_collection(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    """Before the final pass, and between it and the move (the window): both end up in
    the newly served collection, with the new model's vectors."""
    client = fast_client
    state, record = _notes(client, new_model)
    before, window = "written before the final pass", "written in the switch's window"
    client.set_payload("notes_v1", {"text": before}, points=[3], wait=True)

    def application_writes() -> None:
        client.set_payload("notes_v1", {"text": window}, points=[4], wait=True)

    assert record.plan is not None
    job = CatchUpJob.forward(record.plan, new_model)
    switched = switch(
        client,
        state,
        record,
        final=WindowPass(client, job, state, then=application_writes),
        reconcile=CatchUp(client, job.reconciling(), state),
    )

    assert switched.final is not None and switched.reconcile is not None
    assert (switched.final.reembedded, switched.final.reconcile) == (1, False)
    assert (switched.reconcile.reembedded, switched.reconcile.reconcile) == (1, True)
    assert switched.reconcile.conflicts == 0
    assert current_target(client, "notes") == record.target_collection
    for point, text in ((3, before), (4, window), (5, NOTES[4][1]["text"])):
        served, vector = _text(client, "notes", point)
        assert served == text
        assert vector == pytest.approx(new_model.vector(text))


@pytest.mark.parametrize("status", [S.LOADING, S.SWAPPED, S.ROLLED_BACK, S.REJECTED])
def test_swap_refuses_a_migration_that_is_not_ready_and_leaves_the_alias(
    fast_client: QdrantClient, new_model: HashingProvider, status: MigrationStatus
) -> None:
    state, migration_id = _loading(fast_client, new_model)
    migrations = Migrations(state)
    record = migrations.require(migration_id)
    if status is not S.LOADING:
        record = migrations.transition(record, S.READY)
    if status in (S.SWAPPED, S.ROLLED_BACK):
        record = migrations.transition(record, S.SWAPPED)
    if status in (S.ROLLED_BACK, S.REJECTED):
        record = migrations.transition(record, status)
    stored = migrations.require(migration_id)
    seen, passes = _passes(fast_client, state, record)

    with pytest.raises(StatusError) as error:
        switch(fast_client, state, record, **passes)

    assert str(error.value) == (
        f"Migration {migration_id} is {status.value} and 'articles' points at 'articles_v1': "
        "nothing to swap. The alias stays."
    )
    assert _aliases(fast_client) == [("articles", "articles_v1")]
    assert migrations.require(migration_id) == stored
    assert seen == []  # no pass ran


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
    seen, passes = _passes(client, state, record)
    with pytest.raises(AliasMovedError) as error:
        switch(client, state, record, **passes)
    message = str(error.value)
    assert "now points at 'articles_hotfix', not 'articles_v1'" in message
    assert "Nothing was changed" in message
    assert _aliases(client) == [("articles", "articles_hotfix")]
    assert Migrations(state).require(record.migration_id) == record  # still READY
    assert seen == []  # not even the final pass: it would copy from the wrong collection


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
        switch(fast_client, state, _record("articles", "articles_v1", "nonexistent"))
    _loading(fast_client, new_model)  # the target exists: only the alias is missing
    with pytest.raises(AliasMovedError, match="'other' now points at None"):
        switch(fast_client, state, _record("other", "articles_v1", HASH_TARGET))
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


# -- rollback ------------------------------------------------------------------------------


def test_rollback_points_the_alias_back_and_records_it(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state, swapped = _swapped(fast_client, new_model)
    assert current_target(fast_client, "articles") == HASH_TARGET
    record = swapped_migration(fast_client, state, "articles")
    assert record == swapped
    seen, passes = _passes(fast_client, state, record)

    switched = switch(fast_client, state, record, rollback=True, **passes)

    # a final (mirror) pass while the target is served, the reconciling one after the move
    assert seen == [("final", HASH_TARGET, S.SWAPPED), ("reconcile", "articles_v1", S.ROLLED_BACK)]
    move = switched.move
    assert (move.alias, move.from_collection, move.to_collection) == (
        "articles",
        HASH_TARGET,
        "articles_v1",
    )
    assert (move.migration_id, move.action) == (swapped.migration_id, "rollback")
    assert _aliases(fast_client) == [("articles", "articles_v1")]
    record = Migrations(state).require(swapped.migration_id)
    assert record.status is S.ROLLED_BACK
    assert record.rolled_back_at == move.at
    assert record.swapped_at == swapped.swapped_at  # history kept
    assert fast_client.collection_exists(HASH_TARGET)  # nothing deleted
    # a rolled-back migration is ready again once caught up, and may be swapped again
    again = Migrations(state).transition(record, S.READY)
    assert switch(fast_client, state, again).move.to_collection == HASH_TARGET


def test_rollback_returns_to_the_previous_collection(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    """Where the alias pointed before the swap, as recorded then, not the source's name."""
    state, swapped = _swapped(fast_client, new_model)
    fast_client.create_collection(
        "articles_previous",
        vectors_config=qm.VectorParams(size=HASH_DIMENSION, distance="Cosine"),
    )
    record = dataclasses.replace(swapped, previous_collection="articles_previous")
    Migrations(state).put(record)
    switched = switch(fast_client, state, record, rollback=True)
    assert switched.move.to_collection == "articles_previous"
    assert _aliases(fast_client) == [("articles", "articles_previous")]


def test_rollback_without_a_swap_changes_nothing(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state, ready = _ready(fast_client, new_model)
    with pytest.raises(LifecycleError) as error:
        swapped_migration(fast_client, state, "articles")
    assert str(error.value) == (
        "No swapped migration moved alias 'articles' to its current collection "
        "'articles_v1'; there is nothing to roll back."
    )
    seen, passes = _passes(fast_client, state, ready)
    with pytest.raises(StatusError, match="is ready and 'articles' points at 'articles_v1': "):
        switch(fast_client, state, ready, rollback=True, **passes)
    assert _aliases(fast_client) == [("articles", "articles_v1")]
    assert Migrations(state).require(ready.migration_id) == ready
    assert seen == []


def test_rollback_refuses_when_somebody_moved_the_alias(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state, swapped = _swapped(fast_client, new_model)
    fast_client.create_collection(
        "articles_hotfix",
        vectors_config=qm.VectorParams(size=HASH_DIMENSION, distance="Cosine"),
    )
    move_alias(fast_client, "articles", expected=HASH_TARGET, new="articles_hotfix")
    seen, passes = _passes(fast_client, state, swapped)
    with pytest.raises(AliasMovedError, match="now points at 'articles_hotfix'"):
        switch(fast_client, state, swapped, rollback=True, **passes)
    assert _aliases(fast_client) == [("articles", "articles_hotfix")]
    assert Migrations(state).require(swapped.migration_id).status is S.SWAPPED
    assert seen == []


# -- a retry after a crash resumes ---------------------------------------------------------


@pytest.mark.parametrize("rollback", [False, True], ids=["swap", "rollback"])
def test_a_retry_after_the_move_records_the_status_and_reconciles(
    fast_client: QdrantClient, new_model: HashingProvider, rollback: bool
) -> None:
    """The worker died right after the alias moved: the status was never recorded."""
    state, record = (_swapped if rollback else _ready)(fast_client, new_model)
    old, new = (HASH_TARGET, "articles_v1") if rollback else ("articles_v1", HASH_TARGET)
    move_alias(fast_client, "articles", expected=old, new=new)  # what the first try did
    spy = AliasSpy(fast_client)
    seen, passes = _passes(fast_client, state, record)

    switched = switch(spy, state, record, rollback=rollback, **passes)  # type: ignore[arg-type]

    after = S.ROLLED_BACK if rollback else S.SWAPPED
    assert spy.moves == 0  # no second move
    assert seen == [("reconcile", new, after)]  # no final pass: the window is what is left
    assert switched.final is None and switched.reconcile is not None
    assert (switched.move.from_collection, switched.move.to_collection) == (old, new)
    stored = Migrations(state).require(record.migration_id)
    assert stored.status is after
    assert switched.move.at == (stored.rolled_back_at if rollback else stored.swapped_at)
    if not rollback:
        assert stored.previous_collection == "articles_v1"
    assert _aliases(fast_client) == [("articles", new)]


@pytest.mark.parametrize("rollback", [False, True], ids=["swap", "rollback"])
def test_a_retry_after_the_status_was_recorded_only_reconciles(
    fast_client: QdrantClient, new_model: HashingProvider, rollback: bool
) -> None:
    """The worker died during the reconciling pass: the alias moved, the status recorded."""
    state, record = _swapped(fast_client, new_model)
    if rollback:
        switch(fast_client, state, record, rollback=True)
        record = Migrations(state).require(record.migration_id)
    new = "articles_v1" if rollback else HASH_TARGET
    spy = AliasSpy(fast_client)
    seen, passes = _passes(fast_client, state, record)

    switched = switch(spy, state, record, rollback=rollback, **passes)  # type: ignore[arg-type]

    assert spy.moves == 0
    assert seen == [("reconcile", new, record.status)]
    assert switched.final is None and switched.reconcile is not None
    assert Migrations(state).require(record.migration_id) == record  # recorded once, as it was
    assert switched.move.at == (record.rolled_back_at if rollback else record.swapped_at)
    assert _aliases(fast_client) == [("articles", new)]


def test_switched_is_a_plain_result() -> None:
    move = AliasMove("a", "a_v1", "a_v2", "m", "swap", "2024-05-01T12:00:00+00:00")
    assert Switched(move).to_dict() == dataclasses.asdict(move) | {
        "final_catch_up": None,
        "reconcile": None,
    }


# -- retire --------------------------------------------------------------------------------


def test_retire_after_a_swap_waits_for_the_observation_period(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state, swapped = _swapped(fast_client, new_model)
    synced = fingerprints.Fingerprints(fast_client, swapped.migration_id)
    synced.record([(1, "state of point 1")])  # what the catch-ups keep while it is followed
    swapped_at = datetime.fromisoformat(str(swapped.swapped_at))
    with pytest.raises(LifecycleError, match="kept for rollback until"):
        retire(fast_client, state, migration_id=swapped.migration_id, observation_days=7)
    assert fast_client.collection_exists("articles_v1")
    assert fast_client.collection_exists(synced.collection)  # a refusal changes nothing
    later = swapped_at + timedelta(days=7, seconds=1)
    done = retire(
        fast_client, state, migration_id=swapped.migration_id, observation_days=7, now=later
    )
    assert done == {"migration_id": swapped.migration_id, "deleted": "articles_v1"}
    assert not fast_client.collection_exists("articles_v1")
    assert not fast_client.collection_exists(synced.collection)  # nothing is followed now
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


def test_retire_drops_the_recorded_states_of_the_migration(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state, record = _ready(fast_client, new_model)
    synced = fingerprints.Fingerprints(fast_client, record.migration_id)
    synced.record([(1, "what the backfill wrote"), (2, "and this")])
    assert synced.collection == fingerprints.collection_name(record.migration_id)
    retire(fast_client, state, migration_id=record.migration_id, observation_days=7)
    assert not fast_client.collection_exists(synced.collection)
    assert sorted(c.name for c in fast_client.get_collections().collections) == [
        "articles_v1",
        "qdrant_migration_state",
    ]


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
