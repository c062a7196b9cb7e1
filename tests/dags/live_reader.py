"""The application's readers: search the alias without pause, and check every answer.

A reader searches for the text of a *probe* point (one the live writer never edits or
deletes), embedded by the model it believes serves the alias, and checks the answer: the
probe must come first with a score of about 1. A query embedded by one model searching
another model's vectors (the stand-in's vectors of two models are unrelated) finds it
with a score near 0: a **mismatch**, detected from the results alone, whatever the
reader believed. A query that raises is a **failure**.

Two ways of reading, side by side:

* ``helper``: the serving helper (:class:`~include.qdrant_migration.serving.ServingClient`):
  resolve the alias once, embed with that lineage's model, search that concrete collection;
* ``naive``: the pattern the README used to show: read the lineage of whatever the alias
  points at, embed with its model, then query the alias (which may have moved meanwhile).

Embedding takes ``embed_ms`` (a provider's round trip, simulated; the vector is the
stand-in's, computed here), so the naive reader spends most of its time between reading
the lineage and searching, as a real application does. Each query's search latency
(embedding excluded) is recorded with its wall-clock time, for the phases of the test::

    python -m tests.dags.live_reader --url http://127.0.0.1:PORT --alias docs \
        --models '{"docs_v1": "text-embedding-3-small"}' --probes FILE --mode helper \
        --stop FILE --out FILE
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from include.qdrant_migration.layout import METADATA_KEY
from include.qdrant_migration.plan import Lineage
from include.qdrant_migration.qdrant import QdrantSettings, connect
from include.qdrant_migration.serving import ServingClient
from tests.dags.live_writer import vector_of

#: A probe found with at least this score was searched with its own model's vector.
MATCHED = 0.99


class SlowEmbedder:
    """The stand-in's vectors of a lineage's model, after a provider's round trip."""

    def __init__(self, embed_s: float) -> None:
        self.embed_s = embed_s

    def _embed(self, lineage: Lineage, texts: Sequence[str]) -> list[list[float]]:
        time.sleep(self.embed_s)
        return [vector_of(str(lineage["model"]), text) for text in texts]

    embed_queries = _embed
    embed_documents = _embed


@dataclass
class Reader:
    """Searches ``alias`` for its probes until stopped; every query becomes a sample."""

    client: QdrantClient
    alias: str
    probes: list[tuple[int, str]]
    mode: str
    embed_s: float = 0.05
    seed: int = 11
    #: [wall time, search ms, outcome, model used, collection searched]; outcome is
    #: ``ok``, ``mismatch`` or ``failed``.
    samples: list[list[Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.embedder = SlowEmbedder(self.embed_s)
        self.serving = ServingClient(self.client, self.alias, self.embedder, ttl_s=2.0)
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            probe, text = rng.choice(self.probes)
            at = time.time()
            try:
                top, score, model, collection, search_s = self._query(text)
                matched = top == probe and score >= MATCHED
                sample = [at, round(search_s * 1000, 3), "ok" if matched else "mismatch"]
                sample += [model, collection]
            except Exception as error:  # every failure is counted, none is fatal
                sample = [at, None, "failed", None, None]
                with self._lock:
                    self.errors.append(f"{type(error).__name__}: {error}"[:300])
            with self._lock:
                self.samples.append(sample)
            self.stop.wait(0.02)

    def _query(self, text: str) -> tuple[Any, float, str, str, float]:
        if self.mode == "helper":
            started = time.perf_counter()
            hits = self.serving.search(text, limit=3, with_payload=False)
            search_s = time.perf_counter() - started - self.embed_s
            model, collection = str(hits.resolved.lineage["model"]), hits.resolved.collection
            points = hits.points
        else:  # the race: the lineage of what the alias serves now, then the alias later
            collection = next(
                a.collection_name
                for a in self.client.get_aliases().aliases
                if a.alias_name == self.alias
            )
            meta = self.client.get_collection(collection).config.metadata or {}
            model = str(meta[METADATA_KEY]["model"])
            vector = self.embedder.embed_queries({"model": model}, [text])[0]
            started = time.perf_counter()
            points = self.client.query_points(
                self.alias, query=vector, limit=3, with_payload=False
            ).points
            search_s = time.perf_counter() - started
        top = points[0] if points else None
        return (top.id if top else None), (top.score if top else 0.0), model, collection, search_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--probes", required=True, help="JSON file: [[id, text], ...]")
    parser.add_argument("--mode", choices=["helper", "naive"], required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embed-ms", type=float, default=50.0)
    parser.add_argument("--stop", required=True, help="stop when this file exists")
    parser.add_argument("--out", required=True, help="write the samples here")
    args = parser.parse_args()
    client = connect(QdrantSettings(url=args.url, timeout=60))
    probes = [(int(i), str(t)) for i, t in json.loads(Path(args.probes).read_text())]
    reader = Reader(client, args.alias, probes, args.mode, embed_s=args.embed_ms / 1000)
    threads = [
        threading.Thread(target=reader.run, args=(seed,), daemon=True)
        for seed in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    print("reading", flush=True)
    while not Path(args.stop).exists():
        time.sleep(0.2)
    reader.stop.set()
    for thread in threads:
        thread.join(60)
    counts = {
        "resolutions": reader.serving.resolutions,
        "refreshes": reader.serving.refreshes,
    }
    Path(args.out).write_text(
        json.dumps({"samples": reader.samples, "errors": reader.errors[:20], "serving": counts})
    )


if __name__ == "__main__":
    main()
