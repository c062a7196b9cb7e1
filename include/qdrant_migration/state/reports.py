"""Report records: the report of a migration's last run, as its approver saw it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from include.qdrant_migration import codec
from include.qdrant_migration.plan import Estimate, Lineage
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state.repository import Repository
from include.qdrant_migration.state.store import RecordKind, StateStore

T = TypeVar("T")


@dataclass(frozen=True)
class ReportRecord:
    """The markdown the approval showed, the run's outcome, and every measurement.

    The measurements and what the run spent are kept as the report module encoded them
    (``report.Evidence``, ``report.Actuals``): their types belong to the rendering, which
    imports the modules that write reports. :meth:`measured` decodes one of them.
    """

    migration_id: str
    strategy: Strategy
    markdown: str
    alias: str = ""
    source_collection: str = ""
    target_collection: str = ""
    reasons: list[str] = field(default_factory=list)
    lineage: Lineage = field(default_factory=lambda: Lineage())
    estimate: Estimate | None = None
    actual: dict[str, Any] | None = None
    #: What earlier runs of the migration did (None: this run did it all).
    earlier_runs: dict[str, Any] | None = None
    #: The gates that failed, each with what to do.
    failures: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    #: A linear map refused before anything was created: its summary is the whole report.
    linear_map: dict[str, Any] | None = None
    #: The DAG run that made the report, and how that run ended (None: not over yet).
    run_id: str | None = None
    outcome: str | None = None

    @property
    def key(self) -> str:
        return self.migration_id

    def measured(self, name: str, kind: type[T]) -> T | None:
        """The evidence's ``name`` as a ``kind`` (None when the report has none)."""
        data = self.evidence.get(name)
        if data is None:
            return None
        return codec.decode(kind, data, where=f"report {self.migration_id} evidence.{name}")


class Reports(Repository[ReportRecord]):
    """The report records of a store (one per migration: its last run's)."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store, RecordKind.REPORT, ReportRecord)
