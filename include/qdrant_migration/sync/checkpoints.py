"""Checkpoints: where each partition's backfill stands, saved after every write.

A retried or resumed task reads its partition's checkpoint and goes on from its offset
(online), or from the step its batches reached (batch mode, :class:`BatchWork`); the UI
plugin reads every checkpoint of a migration for its progress, rate and ETA.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from include.qdrant_migration.qdrant import PointId
from include.qdrant_migration.state import RecordKind, Repository, StateStore, now_iso
from include.qdrant_migration.sync.pacing import PacingSummary
from include.qdrant_migration.sync.partitions import Partition

#: A request file's life: planned (uploaded or not: an upload the API still validates stays
#: planned), submitted (its job runs), done (collected, deleted).
FileState = Literal["planned", "submitted", "done"]


@dataclass
class RequestFile:
    """One request file and its job (a batch of OpenAI's, an embed job of Cohere's)."""

    name: str
    requests: list[str]
    state: FileState = "planned"
    #: The uploaded input: a file (OpenAI), a dataset (Cohere).
    input_file_id: str | None = None
    batch_id: str | None = None


@dataclass
class BatchWork:
    """A partition's batch-mode progress, kept in its checkpoint."""

    #: custom_id -> [[point id, hash of the text sent (empty before submission)], ...]
    requests: dict[str, list[list[Any]]] = field(default_factory=dict)
    files: list[RequestFile] = field(default_factory=list)
    #: Batches created, and requests embedded online after failing inside a batch.
    batches: int = 0
    retried_online: int = 0
    started_at: str = field(default_factory=now_iso)

    @property
    def running(self) -> list[str]:
        return [str(f.batch_id) for f in self.files if f.state == "submitted"]

    def files_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for request_file in self.files:
            counts[request_file.state] = counts.get(request_file.state, 0) + 1
        return counts


@dataclass
class Checkpoint:
    """Where one partition stands; saved after every write, so a retry resumes from it."""

    migration_id: str
    fingerprint: str
    partition: int
    next_offset: PointId | None = None
    done: bool = False
    done_points: int = 0
    embedded: int = 0
    transformed: int = 0
    tokens: int = 0
    truncated: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    #: Embedding requests made for this partition, over every run.
    requests: int = 0
    #: The run that last worked on it, and the part of the totals earlier runs did.
    run_id: str = ""
    earlier: dict[str, int] = field(default_factory=dict)
    updated_at: str = field(default_factory=now_iso)
    #: Batch mode: the partition's request files and batches.
    batch: BatchWork | None = None
    #: ``[time, done_points]`` samples over every run, oldest first (:func:`add_sample`):
    #: the rate, the ETA and the throughput chart of the UI plugin.
    history: list[list[Any]] = field(default_factory=list)
    #: The Qdrant budget's pacing and the source's probe latencies, over every try.
    pacing: PacingSummary = field(default_factory=PacingSummary)

    def work(self) -> dict[str, int]:
        """The totals that are paid for: texts embedded, vectors derived, tokens, requests."""
        return {
            "embedded": self.embedded,
            "transformed": self.transformed,
            "tokens": self.tokens,
            "requests": self.requests,
        }

    def earlier_than(self, run_id: str) -> dict[str, int]:
        """What runs before ``run_id`` did: all of it when another run wrote this checkpoint."""
        return dict(self.earlier) if self.run_id == run_id else self.work()

    @staticmethod
    def key_of(partition: Partition) -> str:
        return f"{partition.migration_id}/{partition.fingerprint}/{partition.index}"

    @property
    def key(self) -> str:
        return f"{self.migration_id}/{self.fingerprint}/{self.partition}"


#: At most this many progress samples per checkpoint, at least HISTORY_STEP_S apart: a
#: checkpoint stays a few KB however long its partition runs.
HISTORY_SAMPLES = 48
HISTORY_STEP_S = 5.0


def add_sample(history: list[list[Any]], done: int, *, final: bool = False) -> list[list[Any]]:
    """``history`` with ``[now, done]`` appended (in place) when the last sample is at least
    :data:`HISTORY_STEP_S` old, or when the partition ends; when full, every other older
    sample is dropped, so the whole span stays covered at a coarser step."""
    at = now_iso()
    if history:
        last = datetime.fromisoformat(str(history[-1][0]))
        if history[-1][1] == done or (
            not final and (datetime.fromisoformat(at) - last).total_seconds() < HISTORY_STEP_S
        ):
            return history
    history.append([at, done])
    if len(history) > HISTORY_SAMPLES:
        history[:-1] = history[:-1:2]
    return history


class Checkpoints(Repository[Checkpoint]):
    """The checkpoints of a store: one per partition of a migration's partition plan."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store, RecordKind.CHECKPOINT, Checkpoint)

    def of(self, migration_id: str) -> Iterator[Checkpoint]:
        """Every checkpoint of ``migration_id`` (of whatever partition plan)."""
        return self.scan(migration_id=migration_id)
