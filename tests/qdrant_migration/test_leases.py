"""Leases: at most one writer per migration; a dead holder's lease expires, a live one renews.

Every test runs on the in-memory store of unit tests and on the embedded store on disk
(once as a server before 1.17 would do it, without insert-only writes), each opened for
every use as :func:`acquire` opens it. Time is a :class:`FakeClock` that moves only when
a lease sleeps or a test moves it, so waiting and expiry are tested without waiting.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration.leases import (
    Clock,
    Lease,
    LeaseBusyError,
    LeaseLostError,
    LeasePolicy,
    acquire,
    describe,
    held,
)
from include.qdrant_migration.qdrant import QdrantSettings, embedded_lock, open_client
from include.qdrant_migration.state import (
    LeaseRecord,
    Leases,
    MemoryStateStore,
    QdrantStateStore,
    RecordKind,
    StateStore,
)
from include.qdrant_migration.state import leases as lease_records
from include.qdrant_migration.state import store as state_store

KEY = "writer/mig-1"
TTL = 3600.0
START = 1_700_000_000.0
POLICY = LeasePolicy(ttl_s=TTL, poll_s=5, log_every_s=30)


class FakeClock:
    """Time that moves only when a lease sleeps (or a test moves it); ``on_sleep`` runs
    after each sleep with the number of sleeps so far."""

    def __init__(self, start: float = START) -> None:
        self.t = start
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[int], None] = lambda sleeps: None

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        self.on_sleep(len(self.sleeps))

    @property
    def clock(self) -> Clock:
        return Clock(now=self.now, sleep=self.sleep)


class Stores:
    """Opens the lease store for each use, as tasks do (one opener at a time on disk)."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.memory = MemoryStateStore()

    @contextmanager
    def open(self) -> Iterator[StateStore]:
        if self.kind == "memory":
            yield self.memory
            return
        with open_client(QdrantSettings(path=str(self.path))) as client:
            yield QdrantStateStore(client)

    def holder(self) -> str | None:
        with self.open() as store:
            return Leases(store).holder(KEY)

    def doc(self) -> LeaseRecord:
        with self.open() as store:
            lease = Leases(store).get(KEY)
        assert lease is not None
        return lease

    def take(self, owner: str, now: float, ttl_s: float = TTL) -> bool:
        with self.open() as store:
            return Leases(store).try_acquire(KEY, owner, ttl_s, now)

    def release(self, owner: str) -> None:
        with self.open() as store:
            Leases(store).release(KEY, owner)


@pytest.fixture(params=["memory", "embedded", "embedded_older_server"])
def stores(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Stores:
    if request.param == "embedded_older_server":  # no insert_only writes: read-back only
        monkeypatch.setattr(state_store, "supports", lambda client, minimum: False)
    # wall-clock stamps (a lease's "since") that differ at every call, however fast
    stamps = (f"2024-05-01T12:{n // 60:02d}:{n % 60:02d}+00:00" for n in itertools.count())
    monkeypatch.setattr(lease_records, "now_iso", lambda: next(stamps))
    return Stores(request.param, tmp_path / "store")


def _acquire(
    stores: Stores, owner: str, time: FakeClock, *, wait_s: float = 0.0, **policy: float
) -> Lease:
    chosen = LeasePolicy(**{"ttl_s": TTL, "poll_s": 5, "log_every_s": 30, **policy})
    opener: Callable[[], AbstractContextManager[StateStore]] = stores.open
    return acquire(opener, KEY, owner, wait_s=wait_s, policy=chosen, clock=time.clock)


# -- the store's primitive ---------------------------------------------------------------


def test_the_holder_renews_and_others_are_refused_while_it_is_valid(stores: Stores) -> None:
    assert stores.take("nightly", START)
    taken = stores.doc()
    assert (taken.owner, taken.renewed, taken.expires) == ("nightly", START, START + TTL)

    assert not stores.take("manual", START + 10)
    assert stores.doc() == taken  # a refusal changes nothing

    assert stores.take("nightly", START + 20)  # a renewal by the same owner
    renewed = stores.doc()
    assert (renewed.renewed, renewed.expires) == (START + 20, START + 20 + TTL)
    assert renewed.since == taken.since  # still the same tenure
    assert not stores.take("manual", START + TTL + 10)  # valid until the renewed expiry


def test_an_expired_lease_is_taken_over_by_another_owner(stores: Stores) -> None:
    assert stores.take("killed-worker", START)
    first = stores.doc()
    assert not stores.take("manual", START + TTL - 1)
    assert stores.take("manual", START + TTL)  # expires exactly now: no longer valid
    doc = stores.doc()
    assert (doc.owner, doc.renewed, doc.expires) == (
        "manual",
        START + TTL,
        START + 2 * TTL,
    )
    assert doc.since != first.since  # a new tenure
    assert not stores.take("killed-worker", START + TTL + 1)  # it came back too late


def test_acquire_takes_an_expired_lease_over_at_once(stores: Stores) -> None:
    time = FakeClock()
    assert stores.take("killed-worker", START)
    time.t += TTL
    lease = _acquire(stores, "manual", time, wait_s=0)
    assert (lease.owner, time.sleeps) == ("manual", [])
    assert stores.holder() == "manual"


def test_only_the_holder_releases(stores: Stores) -> None:
    assert stores.take("nightly", START)
    stores.release("manual")
    assert stores.holder() == "nightly"
    stores.release("nightly")
    assert stores.holder() is None
    stores.release("nightly")  # twice: nothing left
    assert stores.take("manual", START + 1)  # free at once, long before the expiry


# -- renewing ------------------------------------------------------------------------------


def test_renew_extends_the_lease_when_due_and_only_then(stores: Stores) -> None:
    time = FakeClock()
    lease = _acquire(stores, "nightly", time, ttl_s=600)  # renewed every 100 s
    assert lease.policy.renew_interval_s == 100 and lease.renewed_at == START

    time.t += 99
    with stores.open() as store:
        lease.renew(store)
    assert stores.doc().expires == START + 600  # not due yet: not written
    assert lease.renewed_at == START

    time.t += 1
    with stores.open() as store:
        lease.renew(store)
    assert stores.doc().expires == START + 100 + 600
    assert lease.renewed_at == START + 100

    time.t += 1
    with stores.open() as store:
        lease.renew(store, force=True)
    assert stores.doc().expires == START + 101 + 600


def test_renew_raises_once_another_owner_took_the_lease(stores: Stores) -> None:
    time = FakeClock()
    lease = _acquire(stores, "nightly", time, ttl_s=600)
    time.t += 601  # the holder was not heard from for longer than the TTL
    assert stores.take("manual", time.t)

    with (
        pytest.raises(LeaseLostError, match=r"Lost the lease writer/mig-1 to manual \(") as lost,
        stores.open() as store,
    ):
        lease.renew(store)
    assert "over 600s" in str(lost.value)
    assert stores.holder() == "manual"  # the new holder's lease is untouched


def test_a_late_renewal_nobody_raced_keeps_the_lease(stores: Stores) -> None:
    time = FakeClock()
    lease = _acquire(stores, "nightly", time, ttl_s=600)
    time.t += 700  # expired, but nobody else wanted it
    with stores.open() as store:
        lease.renew(store)
    assert stores.doc().expires == time.t + 600


def test_a_renewal_never_overwrites_a_rival_that_took_the_expired_lease() -> None:
    client = QdrantClient(":memory:")
    rival = QdrantStateStore(client)

    class Racing(QdrantStateStore):
        """The rival takes the expired lease right after this store read it."""

        raced = False

        def get(self, kind: RecordKind, key: str) -> dict[str, object] | None:
            doc = super().get(kind, key)
            if not self.raced:
                self.raced = True
                assert Leases(rival).try_acquire(KEY, "manual", TTL, START + 700)
            return doc

    assert Leases(rival).try_acquire(KEY, "nightly", 600, START)
    lease = Lease(KEY, "nightly", LeasePolicy(ttl_s=600), FakeClock(START + 700).clock, START)

    with pytest.raises(LeaseLostError):
        lease.renew(Racing(client))
    assert Leases(rival).holder(KEY) == "manual"


# -- acquiring: waiting, logging, giving up --------------------------------------------------


def test_a_busy_lease_fails_at_once_without_waiting_naming_its_holder(stores: Stores) -> None:
    time = FakeClock()
    assert stores.take("nightly", START)
    time.t += 10

    with pytest.raises(LeaseBusyError) as busy:
        _acquire(stores, "manual", time, wait_s=0)

    assert str(busy.value) == (
        f"{KEY} is held by nightly (since {stores.doc().since}, renewed 10s ago, expires in 3590s)."
    )
    assert time.sleeps == []
    assert stores.holder() == "nightly"  # the holder's lease is untouched


def test_a_waiter_gives_up_when_its_wait_is_over(stores: Stores) -> None:
    time = FakeClock()
    assert stores.take("nightly", START)

    with pytest.raises(LeaseBusyError, match=r"held by nightly \(.*\) after waiting 12s\.$"):
        _acquire(stores, "manual", time, wait_s=12, poll_s=5)

    assert time.sleeps == [5, 5, 2]  # tried at 0, 5, 10 and, last, at 12
    assert stores.holder() == "nightly"


def test_a_waiter_polls_until_the_holder_releases(stores: Stores) -> None:
    time = FakeClock()
    assert stores.take("nightly", START)

    def nightly_finishes(sleeps: int) -> None:
        assert stores.holder() == "nightly"  # the waiter never got in while it held
        if sleeps == 3:
            stores.release("nightly")

    time.on_sleep = nightly_finishes
    lease = _acquire(stores, "manual", time, wait_s=600, poll_s=5)

    assert (lease.owner, lease.renewed_at) == ("manual", START + 15)
    assert time.sleeps == [5, 5, 5]  # got it at the first poll after the release
    assert stores.doc().expires == START + 15 + TTL
    stores.release("nightly")  # a late release by the old holder changes nothing
    assert stores.holder() == "manual"


def test_a_waiter_logs_the_holder_every_log_every_s_and_takes_over_after_expiry(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    time = FakeClock()
    assert stores.take("killed-worker", START, ttl_s=100)  # it never renews: expires at +100
    caplog.set_level(logging.INFO, logger="include.qdrant_migration.leases")

    lease = _acquire(stores, "manual", time, wait_s=3600, poll_s=10, log_every_s=30, ttl_s=60)

    assert time.sleeps == [10] * 10  # tried at 0, 10, ... 90 while it was valid; 100 is not
    assert (lease.owner, lease.renewed_at) == ("manual", START + 100)
    doc = stores.doc()
    assert (doc.owner, doc.expires) == ("manual", START + 160)
    messages = [r.getMessage() for r in caplog.records]
    waiting = [m for m in messages if m.startswith(f"Waiting for {KEY}, held by killed-worker (")]
    assert len(waiting) == 4  # at 0, 30, 60 and 90 seconds
    left = [re.search(r"expires in (\d+)s", m) for m in waiting]
    assert [int(m.group(1)) for m in left if m] == [100, 70, 40, 10]
    assert messages[-1] == f"Took {KEY} after waiting 100s"


def test_the_same_owner_takes_its_own_lease_back_at_once(stores: Stores) -> None:
    time = FakeClock()
    # the first try of a task was killed inside its lease; Airflow retries the same task
    assert stores.take("dag/run", START)
    time.t += 5

    lease = _acquire(stores, "dag/run", time, wait_s=0)

    assert time.sleeps == [] and lease.renewed_at == START + 5
    assert stores.doc().expires == START + 5 + TTL  # renewed, not the old one


def test_acquire_never_holds_the_embedded_store_while_it_waits(tmp_path: Path) -> None:
    """The holder must be able to open the store (to finish and release) while a waiter
    sleeps: local mode allows one opener, and its lock is held until the client closes."""
    stores = Stores("embedded", tmp_path / "store")
    time = FakeClock()
    assert stores.take("nightly", START)
    opened_meanwhile: list[str] = []
    failures: list[BaseException] = []

    def holder_finishes() -> None:  # another task: another thread, its own opener
        try:
            with embedded_lock(str(stores.path), timeout_s=0):  # fails at once if held
                client = QdrantClient(path=str(stores.path))
                try:
                    Leases(QdrantStateStore(client)).release(KEY, "nightly")
                    opened_meanwhile.append("released")
                finally:
                    client.close()
        except BaseException as error:  # reported below, on the test's thread
            failures.append(error)

    def on_sleep(sleeps: int) -> None:
        if sleeps == 2:
            other = threading.Thread(target=holder_finishes)
            other.start()
            other.join()

    time.on_sleep = on_sleep
    lease = _acquire(stores, "manual", time, wait_s=600, poll_s=5)

    assert failures == []
    assert opened_meanwhile == ["released"]
    assert (lease.owner, time.sleeps) == ("manual", [5, 5])
    assert stores.holder() == "manual"


# -- held: a lease for the duration of a block ---------------------------------------------


def test_held_releases_after_the_block(stores: Stores) -> None:
    time = FakeClock()
    with held(stores.open, KEY, "nightly", policy=POLICY, clock=time.clock) as lease:
        assert lease.owner == "nightly" and stores.holder() == "nightly"
        assert not stores.take("manual", time.t)
    assert stores.holder() is None
    assert time.sleeps == []


def test_held_releases_when_the_block_raises(stores: Stores) -> None:
    with (
        pytest.raises(ValueError, match="task failed"),
        held(stores.open, KEY, "nightly", policy=POLICY, clock=FakeClock().clock),
    ):
        raise ValueError("task failed")
    assert stores.holder() is None


def test_held_leaves_another_holders_lease_alone(stores: Stores) -> None:
    assert stores.take("nightly", START)
    with (
        pytest.raises(LeaseBusyError),
        held(stores.open, KEY, "manual", policy=POLICY, clock=FakeClock().clock),
    ):
        pytest.fail("entered a lease somebody else holds")
    assert stores.holder() == "nightly"


# -- describing ----------------------------------------------------------------------------


def test_describe_says_who_holds_it_since_when_and_for_how_long() -> None:
    doc = LeaseRecord(
        name=KEY, owner="run-7", since="2024-05-01T12:00:00+00:00", renewed=100.0, expires=400.0
    )
    assert describe(None, 150.0) == "nobody"
    assert describe(doc, 150.0) == (
        "run-7 (since 2024-05-01T12:00:00+00:00, renewed 50s ago, expires in 250s)"
    )
    assert describe(doc, 410.0).endswith("renewed 310s ago, expired 10s ago)")


def test_the_renewal_interval_defaults_to_a_sixth_of_the_ttl() -> None:
    assert LeasePolicy(ttl_s=600).renew_interval_s == 100
    assert LeasePolicy(ttl_s=600, renew_every_s=7).renew_interval_s == 7
