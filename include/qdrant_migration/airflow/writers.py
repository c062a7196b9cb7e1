"""Who may write a migration's collections, in Airflow terms.

Two leases (leases.py), both in the state store:

* the **run claim** ``run/<migration>``: the DAG run driving the migration holds it from
  its first write until its last task (``finish_migration``). A second run of the same
  migration stops at once, naming the run that holds it, as long as that run is alive
  in Airflow (queued or running, e.g. waiting for its approval); a claim left by a run
  that is over is taken over, with a log line.
* the **writer lease** ``writer/<migration>``: whoever writes the collections now (a task
  of the run, the nightly catch-up, a rollback). Short-lived and renewed by the work
  loops, so a killed holder blocks others for minutes; a task waiting for it says every
  30 s who holds it, and never holds the embedded store's lock while it waits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from airflow.sdk import get_current_context
from qdrant_client import QdrantClient

from include.qdrant_migration import leases
from include.qdrant_migration.airflow.hooks import MigrationQdrantHook
from include.qdrant_migration.settings import settings
from include.qdrant_migration.state import Leases, QdrantStateStore

log = logging.getLogger(__name__)

#: A run claim outlives any approval wait; whether its run is alive is asked of Airflow.
RUN_CLAIM_TTL_S = 90 * 24 * 3600.0
#: DAG run states in which a run may still write.
ALIVE = ("queued", "running")


class RunConflictError(RuntimeError):
    """Another live run drives the same migration; this run stops without writing."""


def run_owner() -> str:
    """``dag_id/run_id`` of the running task's DAG run."""
    ti = get_current_context()["ti"]
    return f"{ti.dag_id}/{ti.run_id}"


def opener(conn_id: str) -> Callable[[], AbstractContextManager[QdrantStateStore]]:
    """Opens the state store for one short step (the embedded store's lock only that long)."""

    @contextmanager
    def open_store() -> Iterator[QdrantStateStore]:
        with MigrationQdrantHook(conn_id).client() as client:
            yield QdrantStateStore(client)

    return open_store


def _alive(owner: str) -> bool:
    dag_id, _, run_id = owner.partition("/")
    try:
        state = get_current_context()["ti"].get_dagrun_state(dag_id=dag_id, run_id=run_id)
    except Exception as error:  # the run is gone from Airflow's DB
        log.info("Could not read the state of run %s (%s): taking it as over", owner, error)
        return False
    return str(getattr(state, "value", state)) in ALIVE


def claim_run(conn_id: str, migration_id: str) -> None:
    """Make this DAG run the one driving ``migration_id``, or stop at once."""
    owner, key = run_owner(), f"run/{migration_id}"
    with opener(conn_id)() as store:
        leases = Leases(store)
        if leases.try_acquire(key, owner, RUN_CLAIM_TTL_S, time.time()):
            return
        holder = leases.get(key)
    other = holder.owner if holder is not None else "nobody"
    since = holder.since if holder is not None else None
    if _alive(other):
        raise RunConflictError(
            f"Migration {migration_id} is being run by {other} (since {since}). "
            "This run stops without writing anything; follow that run, or mark it failed in "
            "Airflow to let a new one take over."
        )
    log.warning(
        "Run %s claimed migration %s but is over: this run takes it over", other, migration_id
    )
    with opener(conn_id)() as store:
        leases = Leases(store)
        leases.release(key, other)
        if not leases.try_acquire(key, owner, RUN_CLAIM_TTL_S, time.time()):
            raise RunConflictError(f"Another run took migration {migration_id} just now.")


def release_run(conn_id: str, migration_id: str) -> None:
    with opener(conn_id)() as store:
        Leases(store).release(f"run/{migration_id}", run_owner())


def holds_run(store: QdrantStateStore, migration_id: str) -> bool:
    """Whether this DAG run is the one driving ``migration_id``."""
    return Leases(store).holder(f"run/{migration_id}") == run_owner()


def run_holding(store: QdrantStateStore, migration_id: str) -> str | None:
    """The live run that drives ``migration_id``, if any."""
    owner = Leases(store).holder(f"run/{migration_id}")
    return owner if owner and _alive(owner) else None


@contextmanager
def writing(
    conn_id: str, migration_id: str, *, wait_s: float | None = None
) -> Iterator[tuple[QdrantClient, QdrantStateStore, Callable[[], None]]]:
    """The writer lease of ``migration_id``, then Qdrant; yields a heartbeat that renews it.

    Waits up to ``wait_s`` for another holder (None: the deployment's ``QMM_LEASE_WAIT_S``).
    Tasks of one run share the lease (its owner is the run); it is released when the
    block ends, and a dead holder's lease expires after ``QMM_LEASE_TTL_S``.
    """
    if wait_s is None:
        wait_s = settings().lease_wait_s
    open_store = opener(conn_id)
    lease = leases.acquire(open_store, f"writer/{migration_id}", run_owner(), wait_s=wait_s)
    try:
        with MigrationQdrantHook(conn_id).client() as client:
            state = QdrantStateStore(client)
            yield client, state, lambda: lease.renew(state)
    finally:
        with open_store() as store:
            lease.release(store)
