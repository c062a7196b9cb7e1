"""The application: writes through the alias at a steady rate, and remembers what it wrote.

Inserts, text edits, payload-only edits and deletes, mixed, through the alias only, the
whole time a migration, a swap, a nightly catch-up, a rollback and another swap go on.
Each write's vector is made by the model of the collection the alias serves at that
moment (the stand-in's deterministic vectors, so a test can recompute them), as an
application following the lineage would. What the writer remembers is the truth the
collection behind the alias must equal at the end.

Runs as a thread next to an embedded store (each write takes the store's lock, like any
other opener), or as its own process against a Qdrant server::

    python -m tests.dags.live_writer --url http://127.0.0.1:PORT --alias docs \
        --models '{"docs_v1": "text-embedding-3-small"}' --stop FILE --out FILE
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.qdrant import QdrantSettings, open_client
from tests.qdrant_migration.helpers import bm25_vector

DIMENSIONS = 256
FIRST_NEW_ID = 100_000
WORDS = (
    "alias",
    "swap",
    "vector",
    "payload",
    "index",
    "shard",
    "replica",
    "filter",
    "scroll",
    "query",
    "model",
    "embed",
    "migrate",
    "collection",
    "backfill",
    "partition",
    "checkpoint",
    "recall",
    "approval",
    "rollback",
    "lineage",
)


def vector_of(model: str, text: str) -> list[float]:
    from tests.standin import expected_vector

    return expected_vector(model, text, "", DIMENSIONS)


@dataclass
class LiveWriter:
    """Writes through ``alias`` at ``rate`` per second until stopped."""

    open_store: Callable[[], AbstractContextManager[QdrantClient]]
    alias: str
    #: Collection name -> the model that made its vectors.
    models: dict[str, str]
    rate: float = 15.0
    #: How often the application's writes go out (in bursts of rate * tick_s).
    tick_s: float = 0.25
    stamped: bool = True
    #: A hybrid collection: every written text also gets this BM25 sparse vector.
    sparse: str | None = None
    #: The named dense vector written (None: unnamed). When the collection's metadata names
    #: an ``active_vector`` (an in-place migration), that one, with the model it names.
    vector_name: str | None = None
    seed: int = 7
    #: Points never edited or deleted: the readers' probes (their texts must stay).
    protected: frozenset[int | str] = frozenset()
    #: id -> payload as last written; None: deleted.
    truth: dict[int | str, dict[str, Any] | None] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.next_id = FIRST_NEW_ID
        self.stop = threading.Event()

    def load(self) -> None:
        """Start from what the collection holds."""
        with self.open_store() as client:
            offset: Any = None
            while True:
                page, offset = client.scroll(
                    self.alias, limit=256, offset=offset, with_payload=True
                )
                for point in page:
                    self.truth[point.id] = dict(point.payload or {})
                if offset is None:
                    return

    def run(self) -> None:
        """Every ``tick_s``, the writes due since the last tick, in one opening of the store
        (an embedded store is reloaded at each opening, and shared with the tasks)."""
        started, done = time.monotonic(), 0
        while not self.stop.wait(self.tick_s):
            due = int((time.monotonic() - started) * self.rate) - done
            if due <= 0:
                continue
            try:
                with self.open_store() as client:
                    for _ in range(due):
                        self.write_one(client)
                        done += 1
            except Exception as error:  # a failed write was never acknowledged: not in truth
                self.errors.append(f"{type(error).__name__}: {error}")
                self.counts["failed"] += 1
                done += 1

    def _live_ids(self) -> list[int | str]:
        return [
            i
            for i, payload in self.truth.items()
            if payload is not None and i not in self.protected
        ]

    def _text(self) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(8)) + f" {self.rng.random():.6f}"

    def _stamp(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.stamped:
            payload["updated_at"] = time.time()
        return payload

    def write_one(self, client: QdrantClient) -> None:
        """One write through the alias, its vector made by the model the alias serves now."""
        kind = self.rng.choices(["insert", "text", "payload", "delete"], [3, 3, 3, 1])[0]
        live = self._live_ids()
        if kind != "insert" and not live:
            kind = "insert"
        model, name = self._serving(client)
        payload: dict[str, Any] | None
        if kind in ("insert", "text"):
            point = FIRST_NEW_ID + len(self.truth) if kind == "insert" else self.rng.choice(live)
            payload = self._stamp(dict(self.truth.get(point) or {}) | {"text": self._text()})
            vector: Any = vector_of(model, payload["text"])
            if self.sparse or name is not None:
                vector = {name or "": vector}
                if self.sparse:
                    vector[self.sparse] = bm25_vector(payload["text"])
            client.upsert(
                self.alias, [qm.PointStruct(id=point, vector=vector, payload=payload)], wait=True
            )
        elif kind == "payload":
            point = self.rng.choice(live)
            change = self._stamp({"tag": self.rng.choice(WORDS)})
            client.set_payload(self.alias, change, points=[point], wait=True)
            payload = dict(self.truth[point] or {}) | change
        else:
            point = self.rng.choice(live)
            client.delete(self.alias, qm.PointIdsList(points=[point]), wait=True)
            payload = None
        self.truth[point] = payload  # acknowledged (wait=True): it must survive
        self.counts[kind] += 1

    def _serving(self, client: QdrantClient) -> tuple[str, str | None]:
        """The model and vector the application writes now, as the alias and the
        collection's lineage say (read before every write, as a careful application does)."""
        aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        collection = aliases[self.alias]
        model, name = self.models[collection], self.vector_name
        if name is not None:
            metadata = client.get_collection(collection).config.metadata or {}
            lineage = metadata.get("qdrant_migration") or {}
            if active := lineage.get("active_vector"):
                name, model = active, lineage["vectors"][active]["model"]
        return model, name

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="live-writer", daemon=True)
        thread.start()
        return thread


def _embedded_or_server(url: str | None, path: str | None) -> Callable[[], Iterator[QdrantClient]]:
    settings = QdrantSettings(url=url, timeout=120) if url else QdrantSettings(path=path)
    return lambda: open_client(settings)  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--alias", required=True)
    parser.add_argument("--models", required=True, help="JSON: collection -> model")
    parser.add_argument("--rate", type=float, default=15.0)
    parser.add_argument("--unstamped", action="store_true")
    parser.add_argument("--sparse", default=None, help="hybrid: the BM25 vector's name")
    parser.add_argument("--vector-name", default=None, help="the named dense vector written")
    parser.add_argument("--protect", default="[]", help="JSON: ids never edited or deleted")
    parser.add_argument("--stop", required=True, help="stop when this file exists")
    parser.add_argument("--out", required=True, help="write the truth and counts here")
    args = parser.parse_args()
    writer = LiveWriter(
        _embedded_or_server(args.url, None),  # type: ignore[arg-type]
        args.alias,
        json.loads(args.models),
        rate=args.rate,
        stamped=not args.unstamped,
        sparse=args.sparse,
        vector_name=args.vector_name,
        protected=frozenset(json.loads(args.protect)),
    )
    writer.load()
    thread = writer.start()
    print("writing", flush=True)
    while not Path(args.stop).exists():
        time.sleep(0.2)
    writer.stop.set()
    thread.join(60)
    Path(args.out).write_text(
        json.dumps(
            {
                "truth": [[k, v] for k, v in writer.truth.items()],
                "counts": dict(writer.counts),
                "errors": writer.errors[:20],
            }
        )
    )


if __name__ == "__main__":
    main()
