"""The demo: a real migration on this machine, no API keys, no network.

1. seeds an embedded Qdrant store with ~2,900 real texts (Python's docstrings, shipped in
   demo/corpus.jsonl) embedded with all-MiniLM-L6-v2, behind the alias ``articles``;
2. runs the ``qdrant_model_migration`` DAG through Airflow (``dag.test()`` on a real
   metadata DB) to multilingual-e5-small;
3. answers the approval through Airflow's REST API, as a reviewer would, after printing
   the report the approval shows;
4. prints where the alias points and checks the new collection with new-model queries.

Run it with ``make demo``. State lives under ``.demo/`` (delete it to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Where the demo keeps its store and Airflow home (tests point it elsewhere).
DEMO = Path(os.environ.get("DEMO_DIR") or ROOT / ".demo")
STORE = DEMO / "qdrant"
ALIAS = "articles"


def _environment() -> None:
    os.environ.update(
        {
            # A key long enough for HS512 (Airflow's generated one is 16 bytes, and PyJWT
            # warns that it is too short at every token). Fresh per demo run.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Only for the in-process API app below, which listens on no port.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW_CONN_QDRANT_DEFAULT": json.dumps(
                {"conn_type": "qdrant", "extra": {"path": str(STORE)}}
            ),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("DEMO_LOG_LEVEL", "WARNING"),
            # The alias the demo migrates: Airflow registers its Asset when it parses the
            # DAG, so the swap's Asset event finds it (docs/settings.md).
            "QMM_ALIASES": ALIAS,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(ROOT),
        }
    )
    sys.path.insert(0, str(ROOT))


def seed(limit: int | None, corpus: Path | None = None) -> int:
    """Seed the demo store (the demo corpus, or ``corpus``); returns the number of points."""
    from include.qdrant_migration.providers import get_provider
    from include.qdrant_migration.qdrant import QdrantSettings, open_client
    from scripts.seeding import read_corpus, seed_collection

    shutil.rmtree(STORE, ignore_errors=True)
    with open_client(QdrantSettings(path=str(STORE))) as client:
        seeded: int = seed_collection(
            client,
            collection=f"{ALIAS}_v1",
            alias=ALIAS,
            records=read_corpus(corpus, limit=limit) if corpus else read_corpus(limit=limit),
            provider=get_provider("local", "all-MiniLM-L6-v2"),
        )
    return seeded


def approve_when_asked(decision: str, outcome: dict[str, Any]) -> None:
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    from scripts.approvals_client import ApprovalClient

    # dag.test() runs the task in this process: no scheduler, no race to settle.
    api = ApprovalClient(TestClient(create_app(apps="core")), settle_s=0)
    detail = api.wait_for(timeout_s=3600)
    print("\n" + "=" * 78 + "\nThe approval asks:\n" + detail.get("body", "") + "\n" + "=" * 78)
    print(f"Answering {decision!r} through the REST API\n")
    outcome["answer"] = api.answer(detail, decision)


def verify(sample: int = 200, report: Path | None = None) -> dict[str, Any]:
    """Query through the alias with the new model: does each document find itself first?
    (``report``: where to write the report the approval showed, as stored.)"""
    from include.qdrant_migration import codec
    from include.qdrant_migration.checks.recall import RecallResult
    from include.qdrant_migration.providers import get_provider
    from include.qdrant_migration.qdrant import QdrantSettings, open_client
    from include.qdrant_migration.state import QdrantStateStore, Reports
    from include.qdrant_migration.sync.backfill import BackfillSummary

    model = get_provider("local", "multilingual-e5-small")
    with open_client(QdrantSettings(path=str(STORE))) as client:
        target = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}[ALIAS]
        reports = list(Reports(QdrantStateStore(client)).scan())
        if report is not None and reports:
            stored = codec.encode_dict(reports[-1])
            report.write_text(json.dumps(stored, indent=1), encoding="utf-8")
        recall = reports[-1].measured("recall", RecallResult) if reports else None
        backfill = reports[-1].measured("backfill", BackfillSummary) if reports else None
        points, _ = client.scroll(ALIAS, limit=sample, with_payload=True)
        queries = model.embed_queries([p.payload["text"] for p in points if p.payload])
        hits = sum(
            client.query_points(ALIAS, query=q, limit=1).points[0].id == p.id
            for p, q in zip(points, queries, strict=True)
        )
        return {
            "alias": ALIAS,
            "points_to": target,
            "points": client.count(ALIAS, exact=True).count,
            "source_points": client.count(f"{ALIAS}_v1", exact=True).count,
            "recall_at_10_ann_vs_exact": recall.recall_at_k if recall else None,
            "embedded": backfill.embedded if backfill else None,
            "skipped": backfill.skipped if backfill else None,
            "new_model_query_finds_own_document_first": round(hits / len(points), 3),
            "sampled_documents": len(points),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="seed only the first N texts")
    parser.add_argument("--decision", choices=["Approve", "Reject"], default="Approve")
    parser.add_argument("--corpus", type=Path, help="JSONL records to migrate instead")
    parser.add_argument("--eval-set", type=Path, default=ROOT / "demo" / "eval_queries.jsonl")
    parser.add_argument("--no-sparse", action="store_true", help="do not add a BM25 vector")
    parser.add_argument("--report", type=Path, help="write the stored report here (JSON)")
    args = parser.parse_args()
    _environment()
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True
    )
    print(f"Seeding the source: real texts embedded with all-MiniLM-L6-v2 behind {ALIAS!r}...")
    print(f"Seeded {seed(args.limit, args.corpus)} points.")
    print("Running the qdrant_model_migration DAG to multilingual-e5-small (dag.test)...")

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags")).get_dag("qdrant_model_migration")
    outcome: dict[str, Any] = {}
    reviewer = threading.Thread(
        target=approve_when_asked, args=(args.decision, outcome), daemon=True
    )
    reviewer.start()
    conf = {
        "alias": ALIAS,
        "model": "multilingual-e5-small",
        "batch_size": 64,
        # The old model, to compare old and new search quality on a labeled query set.
        "source_provider": "local",
        "source_model": "all-MiniLM-L6-v2",
        "eval_set": str(args.eval_set),
        # A BM25 vector for hybrid search from the swap on; the report measures it.
        "add_sparse": None if args.no_sparse else "bm25",
    }
    run = dag.test(run_conf=conf)
    reviewer.join(timeout=60)
    result = verify(report=args.report)
    print("\nDAG run:", run.state)
    print("Outcome:", json.dumps(result, indent=2))
    ok = run.state == "success" and (
        result["points_to"] != f"{ALIAS}_v1" if args.decision == "Approve" else True
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
