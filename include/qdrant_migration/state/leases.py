"""Lease records, and taking one atomically (what ``leases.py`` builds its holders on).

Taking a lease is a read, then an insert-only write and a read back: of two rivals that
both saw it free (or expired), only the one whose insert landed reads its own name back.
"""

from __future__ import annotations

from dataclasses import dataclass

from include.qdrant_migration.state.repository import Repository
from include.qdrant_migration.state.store import RecordKind, StateStore, now_iso


@dataclass(frozen=True)
class LeaseRecord:
    """Who holds the lease ``name`` (``run/<migration>``, ``writer/<migration>``), since when,
    when it was last renewed and when it expires without a renewal (Unix seconds)."""

    name: str
    owner: str
    since: str
    renewed: float
    expires: float

    @property
    def key(self) -> str:
        return self.name

    def valid_at(self, now: float) -> bool:
        return self.expires > now


class Leases(Repository[LeaseRecord]):
    """The lease records of a store."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store, RecordKind.LEASE, LeaseRecord)

    def try_acquire(self, name: str, owner: str, ttl_s: float, now: float) -> bool:
        """Take or renew the lease ``name`` for ``owner`` at ``now`` (a Unix time); False
        while another holds it."""
        current = self.get(name)
        mine = current is not None and current.owner == owner
        taken = LeaseRecord(
            name,
            owner,
            since=current.since if current is not None and mine else now_iso(),
            renewed=now,
            expires=now + ttl_s,
        )
        if current is not None and current.valid_at(now):
            if mine:  # a renewal while it is ours
                self.put(taken)
            return mine
        if current is not None:  # expired (ours or not): a take-over, which a rival may race
            self.store.delete_if(self.kind, name, owner=current.owner, expires=current.expires)
        self.store.insert(self.kind, name, self.encode(taken))
        found = self.get(name)
        return found is not None and found.owner == owner

    def release(self, name: str, owner: str) -> None:
        """Give the lease up, if ``owner`` holds it."""
        current = self.get(name)
        if current is not None and current.owner == owner:
            self.delete(name)

    def holder(self, name: str) -> str | None:
        """Who holds (or last held) the lease ``name``."""
        current = self.get(name)
        return current.owner if current is not None else None
