"""Leases: at most one writer per migration, across tasks, runs, DAGs and workers.

A lease is a state record (``state.LeaseRecord``) naming its holder and when it expires.
Taking it is atomic (an insert-only write, read back: ``state.Leases``); the holder renews
it while work goes on (:meth:`Lease.renew`, called from the work loops), so a holder that
dies (a killed worker, a lost node) loses it after ``ttl_s``, minutes, not hours, while a
holder that works for days keeps it.

Waiting never holds the embedded store's lock: :func:`acquire` opens the store for each
attempt and closes it before sleeping, so the holder it waits for can get in. While it
waits it says who holds the lease, every ``log_every_s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from include.qdrant_migration.settings import settings
from include.qdrant_migration.state import LeaseRecord, Leases, StateStore

log = logging.getLogger(__name__)


class LeaseBusyError(RuntimeError):
    """Another holder has the lease and did not let go in time; the message names it."""


class LeaseLostError(RuntimeError):
    """This holder's lease expired and somebody else took it: stop writing at once."""


@dataclass(frozen=True)
class Clock:
    """Time as leases see it (Unix seconds); tests inject one that moves when told to."""

    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class LeasePolicy:
    #: Seconds a lease lives without a renewal: how long a dead holder blocks the next
    #: writer (the deployment's ``QMM_LEASE_TTL_S`` by default).
    ttl_s: float = field(default_factory=lambda: settings().lease_ttl_s)
    #: How often the work loops renew it (a sixth of the TTL by default).
    renew_every_s: float | None = None
    log_every_s: float = 30.0
    poll_s: float = 5.0

    @property
    def renew_interval_s(self) -> float:
        return self.renew_every_s if self.renew_every_s is not None else self.ttl_s / 6


def describe(lease: LeaseRecord | None, now: float) -> str:
    """Who holds a lease, since when, and how long it stays valid without a renewal."""
    if lease is None:
        return "nobody"
    renewed = now - lease.renewed
    left = lease.expires - now
    state = f"expires in {left:.0f}s" if left > 0 else f"expired {-left:.0f}s ago"
    return f"{lease.owner} (since {lease.since}, renewed {renewed:.0f}s ago, {state})"


@dataclass
class Lease:
    """A lease this holder has; renew it while working, release it when done."""

    key: str
    owner: str
    policy: LeasePolicy = field(default_factory=LeasePolicy)
    clock: Clock = field(default_factory=Clock)
    renewed_at: float = 0.0

    def renew(self, store: StateStore, *, force: bool = False) -> None:
        """Extend the lease if a renewal is due; raise if somebody else has taken it."""
        now = self.clock.now()
        if not force and now - self.renewed_at < self.policy.renew_interval_s:
            return
        leases = Leases(store)
        if not leases.try_acquire(self.key, self.owner, self.policy.ttl_s, now):
            holder = describe(leases.get(self.key), now)
            raise LeaseLostError(
                f"Lost the lease {self.key} to {holder}: this task was not heard from for "
                f"over {self.policy.ttl_s:.0f}s. It stops writing; a retry takes the lease back "
                "once the other holder is done."
            )
        self.renewed_at = now

    def release(self, store: StateStore) -> None:
        Leases(store).release(self.key, self.owner)


def acquire(
    open_store: Callable[[], AbstractContextManager[StateStore]],
    key: str,
    owner: str,
    *,
    wait_s: float = 0.0,
    policy: LeasePolicy | None = None,
    clock: Clock | None = None,
) -> Lease:
    """Take ``key`` for ``owner``, waiting up to ``wait_s`` for the current holder.

    The same owner (a retried task, another task of the same run) takes it back at once.
    Raises :class:`LeaseBusyError`, naming the holder, when the wait is over.
    """
    policy = policy or LeasePolicy()
    clock = clock or Clock()
    started = clock.now()
    last_log = None
    while True:
        with open_store() as store:
            now = clock.now()
            leases = Leases(store)
            if leases.try_acquire(key, owner, policy.ttl_s, now):
                if last_log is not None:
                    log.info("Took %s after waiting %.0fs", key, now - started)
                return Lease(key, owner, policy, clock, renewed_at=now)
            holder = describe(leases.get(key), now)
        if now - started >= wait_s:
            waited = f" after waiting {now - started:.0f}s" if wait_s else ""
            raise LeaseBusyError(f"{key} is held by {holder}{waited}.")
        if last_log is None or now - last_log >= policy.log_every_s:
            log.info("Waiting for %s, held by %s", key, holder)
            last_log = now
        clock.sleep(min(policy.poll_s, wait_s - (now - started)))


@contextmanager
def held(
    open_store: Callable[[], AbstractContextManager[StateStore]],
    key: str,
    owner: str,
    *,
    wait_s: float = 0.0,
    policy: LeasePolicy | None = None,
    clock: Clock | None = None,
) -> Iterator[Lease]:
    """:func:`acquire` for the duration of a block, released after it (even on errors)."""
    lease = acquire(open_store, key, owner, wait_s=wait_s, policy=policy, clock=clock)
    try:
        yield lease
    finally:
        with open_store() as store:
            lease.release(store)
