"""A backfill worker process for the SIGKILL test: runs one partition, logs every embedding.

Usage: ``python -m tests.qdrant_migration.kill_worker STORE PLAN_JSON PARTITION_JSON LOG``.
Each completed ``embed_documents`` call appends its texts to LOG (flushed and fsynced), so
the test knows exactly what was paid for before the process was killed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from include.qdrant_migration.backfill import BackfillSettings, PartitionBackfill
from include.qdrant_migration.compatibility import Plan
from include.qdrant_migration.partitions import Partition
from include.qdrant_migration.providers import get_provider
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import QdrantStateStore
from tests.qdrant_migration.helpers import CountingProvider


class LoggingProvider(CountingProvider):
    def __init__(self, log_path: str) -> None:
        super().__init__(get_provider("local", "multilingual-e5-small"))
        self.log_path = log_path

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = super().embed_documents(texts)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(list(texts)) + "\n")
            log.flush()
            os.fsync(log.fileno())
        return vectors


def main(store: str, plan_json: str, partition_json: str, log_path: str) -> None:
    plan = Plan.from_dict(json.loads(plan_json))
    partition = Partition.from_dict(json.loads(partition_json))
    provider = LoggingProvider(log_path)
    settings = BackfillSettings(batch_size=16, embed_concurrency=1, progress_interval_s=1)
    with open_client(QdrantSettings(path=store)) as client:
        PartitionBackfill(
            client, plan, partition, provider, QdrantStateStore(client), settings
        ).run()


if __name__ == "__main__":
    main(*sys.argv[1:5])
