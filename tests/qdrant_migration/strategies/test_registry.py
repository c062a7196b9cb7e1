"""The strategy registry: one class per strategy, and the lifecycle actions the migrations
page offers are exactly those the lifecycle DAG accepts, for every strategy and status."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from include.qdrant_migration.aliases import LifecycleError
from include.qdrant_migration.plan import Plan, SourceInfo
from include.qdrant_migration.spec import MigrationSpec, Strategy
from include.qdrant_migration.state import MigrationRecord, MigrationStatus
from include.qdrant_migration.strategies import STRATEGIES, LifecycleAction, strategy_of
from include.qdrant_migration.ui import views

SOURCE = SourceInfo(
    collection="docs_v1",
    vector_name="dense",
    size=8,
    distance="Cosine",
    points=10,
    sample_ids=[],
    text_coverage=1.0,
)


def _plan(kind: Strategy) -> Plan:
    return Plan(
        migration_id="mig-1",
        alias="docs",
        strategy=kind,
        reasons=[],
        source=SOURCE,
        target_collection="docs_v1" if not kind.creates_target else "docs_v1__m__v1",
        target_dimension=8,
        target_lineage={},
        spec=MigrationSpec(alias="docs"),
        target_vector="m" if kind is Strategy.IN_PLACE else None,
    )


def _record(kind: Strategy, status: MigrationStatus) -> MigrationRecord:
    plan = _plan(kind)
    return MigrationRecord(
        migration_id=plan.migration_id,
        alias=plan.alias,
        source_collection=plan.source.collection,
        status=status,
        strategy=kind.value,
        target_collection=plan.target_collection,
        plan=plan,
        previous_collection=plan.source.collection,
    )


def _row(record: MigrationRecord, run_state: str | None) -> views.MigrationRow:
    return views.MigrationRow(
        migration_id=record.migration_id,
        alias=record.alias,
        source_collection=record.source_collection,
        target_collection=record.target_collection,
        source_model=None,
        model=None,
        strategy=record.strategy,
        status=record.status.value,
        points_done=0,
        points_total=0,
        rate=None,
        eta_s=None,
        money=views.Money(0, 0, None, None),
        embedding_mode="online",
        run_id="run-1" if run_state else None,
        run_state=run_state,
        created_at="",
        updated_at=None,
    )


def test_every_strategy_has_one_class_with_its_path() -> None:
    assert set(STRATEGIES) == set(Strategy)
    for kind, cls in STRATEGIES.items():
        assert cls.kind is kind
        assert cls.path, kind  # the DAG branches to these (tests/dags checks they exist)
        assert type(strategy_of(_plan(kind))) is cls


@pytest.mark.parametrize(
    ("kind", "status", "run_state"),
    list(itertools.product(Strategy, MigrationStatus, [None, "success", "failed", "running"])),
)
def test_the_page_offers_exactly_what_the_lifecycle_dag_accepts(
    kind: Strategy, status: MigrationStatus, run_state: str | None
) -> None:
    record = _record(kind, status)
    row = _row(record, run_state)
    offered = {
        a.name
        for a in views.actions(record, row, None, "docs_v1")
        if a.name in ("rollback", "retire")
    }
    strategy = strategy_of(record.plan)  # type: ignore[arg-type]
    # The lifecycle DAG's tasks ask the same strategy, with the run that holds the migration
    # (a running DAG run holds its migration's run claim).
    holder = "run-1" if run_state in views.RUN_ACTIVE else None
    accepted = set()
    for action in LifecycleAction:
        try:
            strategy.require_action(record, action, running=holder)
        except LifecycleError as refused:
            assert record.migration_id in str(refused)  # says what, about which migration
        else:
            accepted.add(action.value)
    assert offered == accepted, (kind, status, run_state)


def test_the_drift_is_gone_an_in_place_migration_can_be_retired() -> None:
    for status in (MigrationStatus.SWAPPED, MigrationStatus.ROLLED_BACK, MigrationStatus.REJECTED):
        strategy = strategy_of(_plan(Strategy.IN_PLACE))
        assert LifecycleAction.RETIRE in strategy.lifecycle_actions(status, run_active=False)
    quantized = strategy_of(_plan(Strategy.QUANTIZATION_ONLY))
    assert quantized.lifecycle_actions(MigrationStatus.QUANTIZED, run_active=False) == ()
    with pytest.raises(LifecycleError, match="nothing to retire"):
        quantized.require_action(
            _record(Strategy.QUANTIZATION_ONLY, MigrationStatus.QUANTIZED),
            LifecycleAction.RETIRE,
            running=None,
        )


def test_the_words_of_each_strategy_name_where_its_vectors_are() -> None:
    in_place = strategy_of(_plan(Strategy.IN_PLACE))
    assert in_place.new_side() == "`docs_v1` vector `m` (in place)"
    assert "active vector" in in_place.approve_note()
    full = strategy_of(_plan(Strategy.FULL_REEMBED))
    assert full.new_side() == "`docs_v1__m__v1`"
    assert "move the alias atomically" in full.approve_note()
    truncated = strategy_of(dataclasses.replace(_plan(Strategy.MATRYOSHKA_TRUNCATION)))
    assert truncated.derived_label == "vectors cut from the stored ones (no embedding)"
