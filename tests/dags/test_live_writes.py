"""Zero downtime with an application that never stops writing, or reading.

A writer writes through the alias at a steady rate (inserts, text edits, payload-only
edits, deletes) from before the migration starts until after a swap, a nightly catch-up,
a rollback, another nightly catch-up and a second swap. At the end the collection behind
the alias must equal what the writer wrote: every acknowledged write present, every
deleted point absent, every vector made, from the current text, by the model the
serving collection's lineage names.

Both models are OpenAI models served by the wire-level stand-in (deterministic vectors
a test can recompute); the runs are real ``dag.test()`` runs of the three DAGs. Once on
the embedded store (the writer in this process, through the store's lock), once over
the Qdrant REST façade (the writer in its own process); with and without
``updated_at_field``.

On the server, readers search the alias the whole time too (``live_reader``): through the
serving helper, and with the naive pattern (the lineage, then the alias). Every answer is
checked (the probe found first, with its own model's vectors); each query's latency is
assigned to the phase it was made in (before, backfill, index build, approval wait, swap,
after). The helper must never fail nor mismatch; the naive pattern's mismatches are
counted. Once more with a Qdrant budget, side by side.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration import codec
from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.sync.catchup import CatchUpResult
from tests.dags.conftest import note, return_value, task_states
from tests.dags.live_writer import DIMENSIONS, LiveWriter, vector_of
from tests.qdrant_migration.helpers import all_points, bm25_vector, seed_standin_source
from tests.qdrant_server import QdrantServer

pytestmark = pytest.mark.integration

OLD, NEW = "text-embedding-3-small", "text-embedding-3-large"
ALIAS, SOURCE = "docs", "docs_v1"
ROOT = Path(__file__).resolve().parents[2]


#: The in-place variant: the collection's dense vector is named, the new one is added to it.
NAMED = "dense"
#: The points the readers search for (the writer never edits or deletes them).
PROBES = 20
#: The Qdrant budget of the budgeted run: a fixed ceiling and the adaptive mode.
BUDGET = {"points_per_second": 80, "max_search_p99_ms": 60}
#: How long the reviewer reads the report before approving: the approval-wait phase.
REVIEW_S = 3.0


def _conf(
    stamped: bool, in_place: bool = False, budget: dict[str, Any] | None = None
) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "alias": ALIAS,
        "provider": "openai",
        "model": NEW,
        "dimensions": DIMENSIONS,
        "provider_conn_id": "embeddings",
        "points_per_partition": 100,
        "batch_size": 32,
        "recall_sample_size": 20,
        "max_catch_up_lag": 25,
    }
    if stamped:
        conf["updated_at_field"] = "updated_at"
    if in_place:
        conf["strategy"] = "in_place"
    if budget:
        conf["qdrant_budget"] = budget
    return conf


def _target() -> str:
    slug = MigrationSpec(alias=ALIAS, model=NEW, dimensions=DIMENSIONS).model_slug()
    return f"{SOURCE}__{slug}__v1"


class Store:
    """Where the collections live, and how the application reaches them."""

    def __init__(self, settings: QdrantSettings, connection: dict[str, Any]) -> None:
        self.settings = settings
        self.connection = connection

    def open(self) -> AbstractContextManager[QdrantClient]:
        return open_client(self.settings)


@pytest.fixture
def embedded(tmp_path: Path) -> Store:
    path = str(tmp_path / "qdrant")
    return Store(QdrantSettings(path=path), {"conn_type": "qdrant", "extra": {"path": path}})


@pytest.fixture
def server(qdrant_server: QdrantServer) -> Store:
    qdrant_server.reset()
    return Store(qdrant_server.settings(), qdrant_server.connection())


class InProcessWriter:
    def __init__(self, store: Store, stamped: bool, sparse: str | None, name: str | None) -> None:
        self.writer = LiveWriter(
            store.open,
            ALIAS,
            {SOURCE: OLD, _target(): NEW},
            stamped=stamped,
            sparse=sparse,
            vector_name=name,
        )
        self.writer.load()
        self.thread = self.writer.start()

    def warm_up(self) -> None:
        while sum(self.writer.counts.values()) < 20:
            time.sleep(0.1)

    def finish(self) -> tuple[dict[Any, Any], dict[str, int], list[str]]:
        self.writer.stop.set()
        self.thread.join(120)
        return self.writer.truth, dict(self.writer.counts), self.writer.errors


class ProcessWriter:
    """The application in its own process, over the server's REST API."""

    def __init__(
        self,
        store: Store,
        stamped: bool,
        sparse: str | None,
        name: str | None,
        tmp_path: Path,
        protect: list[int],
    ) -> None:
        self.stop, self.out = tmp_path / "stop", tmp_path / "writer.json"
        args = [
            sys.executable, "-m", "tests.dags.live_writer", "--url", str(store.settings.url),
            "--alias", ALIAS, "--models", json.dumps({SOURCE: OLD, _target(): NEW}),
            "--stop", str(self.stop), "--out", str(self.out), "--protect", json.dumps(protect),
        ]  # fmt: skip
        if not stamped:
            args.append("--unstamped")
        if sparse:
            args += ["--sparse", sparse]
        if name:
            args += ["--vector-name", name]
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "writing"
        self.started = time.monotonic()

    def warm_up(self) -> None:
        time.sleep(max(0.0, 2.0 - (time.monotonic() - self.started)))  # ~30 writes

    def finish(self) -> tuple[dict[Any, Any], dict[str, int], list[str]]:
        self.stop.touch()
        self.process.wait(120)
        result = json.loads(self.out.read_text())
        truth = {k: v for k, v in result["truth"]}
        return truth, result["counts"], result["errors"]


class ProcessReader:
    """Readers in their own process (``live_reader``): ``helper`` or ``naive`` searches."""

    def __init__(self, store: Store, mode: str, probes: list[tuple[int, str]], tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "probes.json").write_text(json.dumps(probes))
        self.stop, self.out = tmp / "stop", tmp / "reader.json"
        args = [
            sys.executable, "-m", "tests.dags.live_reader", "--url", str(store.settings.url),
            "--alias", ALIAS, "--probes", str(tmp / "probes.json"), "--mode", mode,
            "--stop", str(self.stop), "--out", str(self.out),
        ]  # fmt: skip
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "reading"

    def finish(self) -> dict[str, Any]:
        self.stop.touch()
        self.process.wait(120)
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result


#: The task whose span makes a phase (a run's index build is restore_indexing to recall_check).
PHASE_OF = {
    "backfill_batch": "backfill",
    "approve_swap": "approval wait",
    "swap_alias": "swap",
    "rollback": "swap",
}
PHASES = ("before", "backfill", "index build", "approval wait", "swap", "after", "other tasks")


def _spans(runs: list[Any]) -> list[tuple[str, float, float]]:
    """(phase, start, end) of every task instance that makes a phase, over ``runs``."""
    spans: list[tuple[str, float, float]] = []
    for run in runs:
        tis = {ti.task_id: ti for ti in run.get_task_instances() if ti.start_date}
        for ti in run.get_task_instances():
            if ti.task_id in PHASE_OF and ti.start_date and ti.end_date:
                spans.append(
                    (PHASE_OF[ti.task_id], ti.start_date.timestamp(), ti.end_date.timestamp())
                )
        if "restore_indexing" in tis and tis.get("recall_check") and tis["recall_check"].end_date:
            start = tis["restore_indexing"].start_date.timestamp()
            spans.append(("index build", start, tis["recall_check"].end_date.timestamp()))
    return spans


def _phase(at: float, spans: list[tuple[str, float, float]], started: float, swapped: float) -> str:
    inside = {phase for phase, start, end in spans if start <= at <= end}
    for phase in ("swap", "approval wait", "index build", "backfill"):
        if phase in inside:
            return phase
    if at < started:
        return "before"
    return "after" if at > swapped else "other tasks"


def _reads(samples: list[list[Any]], phase_of: Callable[[float], str]) -> dict[str, dict[str, Any]]:
    """Per phase: queries, failed, mismatched, and the search latency's p50/p95/p99 (ms)."""
    by_phase: dict[str, dict[str, Any]] = {}
    for at, ms, outcome, _model, _collection in samples:
        row = by_phase.setdefault(
            phase_of(at), {"queries": 0, "failed": 0, "mismatch": 0, "ms": []}
        )
        row["queries"] += 1
        if outcome != "ok":
            row[outcome] += 1
        if ms is not None:
            row["ms"].append(ms)
    for row in by_phase.values():
        ms = row.pop("ms")
        row.update(
            {f"p{q}": round(float(np.percentile(ms, q)), 1) if ms else None for q in (50, 95, 99)}
        )
    return by_phase


def _table(name: str, phases: dict[str, dict[str, Any]]) -> str:
    cells = [
        f"{p}: {r['queries']} q, {r['failed']} failed, {r['mismatch']} mismatched, "
        f"p50/p95/p99 {r['p50']}/{r['p95']}/{r['p99']} ms"
        for p in PHASES
        if (r := phases.get(p))
    ]
    return f"  {name}: " + "; ".join(cells)


def _run(dag: Any, reviewer: Callable[..., dict[str, Any]] | None, **kwargs: Any) -> Any:
    seen = reviewer("Approve", lambda: time.sleep(REVIEW_S)) if reviewer is not None else {}
    run = dag.test(**kwargs)
    assert "error" not in seen, seen.get("error")
    assert run.state == "success", task_states(run)
    return run


def _same(stored: Any, written: Any) -> bool:
    """Equal payloads; a float may come back one ulp off through the engine-backed server
    (Qdrant's engine parses JSON numbers with a fast, not always correctly rounded,
    parser), which is the store's rounding, not a lost write."""
    if isinstance(stored, dict) and isinstance(written, dict):
        return stored.keys() == written.keys() and all(_same(stored[k], written[k]) for k in stored)
    if isinstance(stored, float) and isinstance(written, float):
        return math.isclose(stored, written, rel_tol=1e-15, abs_tol=0.0)
    return bool(stored == written)


@pytest.mark.parametrize(
    ("where", "stamped", "sparse", "in_place", "budget"),
    [
        ("embedded", True, None, False, None),
        ("embedded", False, None, False, None),
        ("server", True, None, False, None),
        # the same with a Qdrant budget: the readers' latencies side by side with the above
        ("server", True, None, False, BUDGET),
        ("server", False, None, False, None),
        # hybrid: the application writes a BM25 vector with every text; it is carried
        ("server", False, "bm25", False, None),
        # in place: the application reads the active vector from the collection's metadata
        ("embedded", False, None, True, None),
    ],
)
def test_no_acknowledged_write_is_lost_or_resurrected(
    where: str,
    stamped: bool,
    sparse: str | None,
    in_place: bool,
    budget: dict[str, Any] | None,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    corpus: list[dict[str, Any]],
    openai_connection: None,
    dagbag: Any,
    reviewer: Callable[[str], dict[str, Any]],
) -> None:
    store: Store = request.getfixturevalue(where)
    monkeypatch.setenv("AIRFLOW_CONN_QDRANT_DEFAULT", json.dumps(store.connection))
    with store.open() as client:
        seed_standin_source(
            client,
            [{**r, "updated_at": 0.0} if stamped else r for r in corpus],
            collection=SOURCE,
            alias=ALIAS,
            model=OLD,
            dimensions=DIMENSIONS,
            sparse=sparse,
            vector_name=NAMED if in_place else None,
        )
    migration = dagbag.get_dag("qdrant_model_migration")
    nightly = dagbag.get_dag("qdrant_migration_catch_up")
    lifecycle = dagbag.get_dag("qdrant_migration_lifecycle")
    name = NAMED if in_place else None
    probes = [(int(r["id"]), str(r["text"])) for r in corpus[:PROBES]]
    writer: InProcessWriter | ProcessWriter = (
        InProcessWriter(store, stamped, sparse, name)
        if where == "embedded"
        else ProcessWriter(store, stamped, sparse, name, tmp_path, [i for i, _ in probes])
    )
    readers = (
        {mode: ProcessReader(store, mode, probes, tmp_path / mode) for mode in ("helper", "naive")}
        if where == "server"
        else {}
    )
    writer.warm_up()  # the application was writing (and reading) before the migration started

    first = _run(migration, reviewer, run_conf=_conf(stamped, in_place, budget))
    nightly_run = _run(nightly, None)
    rolled = _run(lifecycle, None, run_conf={"action": "rollback", "alias": ALIAS})
    again = _run(nightly, None)
    second = _run(migration, reviewer, run_conf=_conf(stamped, in_place, budget))
    truth, counts, errors = writer.finish()
    read = {mode: reader.finish() for mode, reader in readers.items()}

    report = return_value(first, "build_report")
    swaps = [return_value(first, "swap_alias"), return_value(second, "swap_alias")]
    back = return_value(rolled, "rollback")
    lag = report["evidence"]["recall"]["completeness"]["lag"]
    conflicts = [s["reconcile"]["conflicts"] for s in [*swaps, back]]
    window = [codec.decode(CatchUpResult, s["reconcile"]).changes for s in [*swaps, back]]
    print(
        f"\n[{where}, updated_at_field={'set' if stamped else 'unset'}, sparse={sparse}, "
        f"in_place={in_place}] "
        f"writes {counts}; "
        f"lag at approval {lag}; window writes copied at swap/swap/rollback {window}; "
        f"conflicts {conflicts}; writer errors {len(errors)}"
    )
    assert not errors, errors[:5]
    assert sum(counts.values()) >= 60 and all(
        counts.get(k) for k in ("insert", "text", "payload", "delete")
    )
    if read:
        _check_reads(read, [first, nightly_run, rolled, again, second], budget, report)

    with store.open() as client:
        serving = current_target(client, ALIAS)
        assert serving == (SOURCE if in_place else _target())
        lineage = client.get_collection(serving).config.metadata["qdrant_migration"]
        model, active = lineage["model"], lineage.get("active_vector", "")
        assert model == NEW and (active != NAMED if in_place else not active)
        points = {p.id: p for p in all_points(client, serving)}
    expected = {k: v for k, v in truth.items() if v is not None}
    assert set(points) == set(expected), (
        f"missing {sorted(set(expected) - set(points))[:10]}, "
        f"resurrected or stray {sorted(set(points) - set(expected))[:10]}"
    )
    wrong = [k for k, v in expected.items() if not _same(points[k].payload, v)]
    assert not wrong, [(k, points[k].payload, expected[k]) for k in wrong[:3]]
    stale = [
        k
        for k, p in points.items()
        if not np.allclose(_dense(p.vector, active), vector_of(model, p.payload["text"]), atol=1e-5)
    ]
    assert not stale, (
        f"{len(stale)} vectors not made by {model} from the current text: {stale[:10]}"
    )
    if sparse:  # the carried BM25 vector of every point is its current text's
        unsynced = [
            k
            for k, p in points.items()
            if not isinstance(p.vector, dict)
            or not _same_sparse(p.vector.get(sparse), bm25_vector(p.payload["text"]))
        ]
        assert not unsynced, f"{len(unsynced)} points without their text's BM25: {unsynced[:10]}"


def _dense(vector: Any, name: str) -> Any:
    return vector.get(name) if isinstance(vector, dict) else vector


def _same_sparse(stored: Any, written: Any) -> bool:
    return (
        stored is not None
        and list(stored.indices) == list(written.indices)
        and np.allclose(stored.values, written.values, rtol=1e-6)
    )


def _check_reads(
    read: dict[str, dict[str, Any]],
    runs: list[Any],
    budget: dict[str, Any] | None,
    report: dict[str, Any],
) -> None:
    """The helper's readers never failed nor mismatched; the naive ones' races, counted."""
    spans = _spans(runs)
    first_start = runs[0].start_date.timestamp()
    (swapped,) = [end for phase, start, end in spans if phase == "swap" and start >= first_start][
        :1
    ]
    phases = {
        mode: _reads(result["samples"], lambda at: _phase(at, spans, first_start, swapped))
        for mode, result in read.items()
    }
    total = {
        mode: {k: sum(r[k] for r in rows.values()) for k in ("queries", "failed", "mismatch")}
        for mode, rows in phases.items()
    }
    probes = report["evidence"]["backfill"]["pacing"]
    note(
        f"reads, budget {budget or 'none'}: helper {total['helper']}, naive {total['naive']}; "
        f"the backfill's probes of the source: {probes.get('probes')} (slowed down "
        f"{probes.get('backoffs')} times, writes waited {probes.get('waited_s')} s)\n"
        + "\n".join(_table(mode, rows) for mode, rows in phases.items())
    )
    assert not read["helper"]["errors"], read["helper"]["errors"][:5]
    assert total["helper"]["failed"] == 0 and total["helper"]["mismatch"] == 0, phases["helper"]
    assert total["helper"]["queries"] >= 100
    for phase in ("before", "backfill", "approval wait", "after"):
        assert phases["helper"].get(phase, {}).get("queries"), (phase, phases["helper"])
    # The naive pattern races every alias move (two swaps and a rollback): counted, shown.
    assert total["naive"]["failed"] == 0, read["naive"]["errors"][:5]
