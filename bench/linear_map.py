"""``python -m bench.linear_map``: how much search quality the learned linear map keeps.

The migration the demo makes, all-MiniLM-L6-v2 -> multilingual-e5-small, on the demo's
offline corpus (``demo/corpus.jsonl``: 2,817 standard-library docstrings) and its labeled
queries (``demo/eval_queries.jsonl``: 200 queries, each with the id it should find).

Two collections are searched in an embedded Qdrant with the same e5 query vectors:

* **re-embedded**: every document embedded with e5 (the full re-embed);
* **mapped**: every stored MiniLM vector mapped with the ridge map that ``fit_linear_map``
  would fit from a random sample of ``n`` documents (same code: ``linear_map.split`` and
  ``linear_map.fit``: lambda chosen on a validation split, retention measured on a
  held-out part).

Per sample size it prints recall@10 of each collection against the labels, their ratio
(the retention relative to a full re-embed), how much the two top-10 lists overlap, the
held-out retention the DAG gates on (``min_map_retention``), and the embedding calls
saved. The sample's new vectors are taken from the re-embedded collection (the models are
deterministic, so that is what embedding the sample would return).

Models run on CPU: about 3-5 minutes on 2 cores, most of it embedding the corpus twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from qdrant_client import QdrantClient  # noqa: E402
from qdrant_client import models as qm  # noqa: E402

from include.qdrant_migration import linear_map  # noqa: E402
from include.qdrant_migration.checks.quality import query_like  # noqa: E402
from include.qdrant_migration.providers import get_provider  # noqa: E402
from scripts.seeding import read_corpus  # noqa: E402

OLD_MODEL = "all-MiniLM-L6-v2"
NEW_MODEL = "multilingual-e5-small"
QUERIES = ROOT / "demo" / "eval_queries.jsonl"
K = 10
PEERS = "87-91% (BEIR, nDCG@10 ratio, ~2k-sample ridge maps)"


def _embed(texts: Sequence[str], embed: Any, label: str, batch: int = 256) -> np.ndarray:
    started = time.monotonic()
    rows: list[list[float]] = []
    for start in range(0, len(texts), batch):
        rows += embed(list(texts[start : start + batch]))
    print(f"  {label}: {len(texts)} texts in {time.monotonic() - started:.0f} s", flush=True)
    return np.asarray(rows, dtype=np.float64)


def _collection(client: QdrantClient, name: str, ids: list[int], vectors: np.ndarray) -> None:
    client.create_collection(
        name, vectors_config=qm.VectorParams(size=vectors.shape[1], distance=qm.Distance.COSINE)
    )
    for start in range(0, len(ids), 512):
        client.upsert(
            name,
            [
                qm.PointStruct(id=i, vector=v.tolist())
                for i, v in zip(ids[start : start + 512], vectors[start : start + 512], strict=True)
            ],
            wait=True,
        )


def _search(client: QdrantClient, name: str, queries: np.ndarray) -> list[list[int]]:
    return [
        [int(p.id) for p in client.query_points(name, query=q.tolist(), limit=K).points]
        for q in queries
    ]


def _recall(hits: list[list[int]], relevant: list[list[int]]) -> float:
    return float(
        np.mean([len(set(h) & set(r)) / len(r) for h, r in zip(hits, relevant, strict=True)])
    )


def _overlap(ours: list[list[int]], theirs: list[list[int]]) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ours, theirs, strict=True)]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="500,1000,2000", help="sample sizes to fit on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    samples = [int(n) for n in args.samples.split(",")]

    records = list(read_corpus())
    labeled = [json.loads(line) for line in QUERIES.read_text().splitlines() if line.strip()]
    texts = [r["text"] for r in records]
    ids = [int(r["id"]) for r in records]
    relevant = [[int(i) for i in q["relevant_ids"]] for q in labeled]
    print(f"Corpus {len(texts)} documents, {len(labeled)} labeled queries; embedding on CPU:")
    old_model, new_model = get_provider("local", OLD_MODEL), get_provider("local", NEW_MODEL)
    old = _embed(texts, old_model.embed_documents, f"{OLD_MODEL} documents (the source)")
    new = _embed(texts, new_model.embed_documents, f"{NEW_MODEL} documents (full re-embed)")
    queries = _embed([q["query"] for q in labeled], new_model.embed_queries, "e5 queries")
    old_queries = _embed([q["query"] for q in labeled], old_model.embed_queries, "MiniLM queries")

    client = QdrantClient(":memory:")
    _collection(client, "source", ids, old)
    _collection(client, "reembedded", ids, new)
    baseline = _search(client, "reembedded", queries)
    recall_new = _recall(baseline, relevant)
    recall_old = _recall(_search(client, "source", old_queries), relevant)

    rows = []
    rng = np.random.default_rng(args.seed)
    for n in samples:
        n = min(n, len(texts))
        sample = rng.permutation(len(texts))[:n]
        train, validation, held_out = linear_map.split(n, seed=args.seed)
        held_queries = np.asarray(
            new_model.embed_queries([query_like(texts[sample[i]]) for i in held_out])
        )
        fit = linear_map.fit(old[sample], new[sample], held_queries, held_out, train, validation)
        name = f"mapped_{n}"
        _collection(client, name, ids, fit.map.apply_array(old))
        hits = _search(client, name, queries)
        recall_mapped = _recall(hits, relevant)
        rows.append(
            {
                "sample": n,
                "lambda": fit.lam,
                "gate": fit.retention,
                "recall_mapped": recall_mapped,
                "ratio": recall_mapped / recall_new,
                "overlap": _overlap(hits, baseline),
                "embedded": n,
                "queries": len(held_out),
                "saved": len(texts) - n,
            }
        )

    print()
    print(f"Linear map {OLD_MODEL} -> {NEW_MODEL}, recall@{K} on {len(labeled)} labeled queries")
    print(f"(re-embedded collection: {recall_new:.3f}; the old model on its own: {recall_old:.3f})")
    print()
    header = (
        "| sample | lambda | held-out retention (gate) | recall@10 mapped | retention vs "
        "re-embed | top-10 overlap with re-embed | documents embedded | embedding calls saved |"
    )
    print(header)
    print("| " + " | ".join(["---"] * 8) + " |")
    for r in rows:
        print(
            f"| {r['sample']} | {r['lambda']} | {r['gate']:.3f} | {r['recall_mapped']:.3f} | "
            f"{r['ratio']:.1%} | {r['overlap']:.3f} | {r['embedded']} of {len(texts)} "
            f"(+{r['queries']} short queries) | {r['saved']} ({r['saved'] / len(texts):.0%}) |"
        )
    print()
    print(f"Published peers report {PEERS}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
