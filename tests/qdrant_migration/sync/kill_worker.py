"""A backfill worker process for the SIGKILL test: runs one partition, logs every embedding.

Usage: ``python -m tests.qdrant_migration.sync.kill_worker STORE PLAN_JSON PARTITION_JSON LOG
[HOLD_AT]``.

Each completed ``embed_documents`` call appends its texts to LOG (flushed and fsynced), so
the test knows exactly what was paid for before the process was killed. With ``HOLD_AT``,
the call of that number logs its texts (they are paid for) and then never returns: the
worker hangs between paying for a sub-batch and writing it, the worst moment to be killed,
and the test kills it there, at a point that does not depend on timing.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence

from include.qdrant_migration import codec
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import get_provider
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.sync.backfill import BackfillSettings, PartitionBackfill
from include.qdrant_migration.sync.partitions import Partition
from tests.qdrant_migration.helpers import TARGET_MODEL, CountingProvider


class LoggingProvider(CountingProvider):
    def __init__(self, log_path: str, hold_at: int | None = None) -> None:
        super().__init__(get_provider("local", TARGET_MODEL))
        self.log_path = log_path
        self.hold_at = hold_at

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = super().embed_documents(texts)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(list(texts)) + "\n")
            log.flush()
            os.fsync(log.fileno())
        if self.calls == self.hold_at:
            threading.Event().wait()  # until SIGKILL
        return vectors


def main(store: str, plan_json: str, partition_json: str, log_path: str, *hold: str) -> None:
    plan = codec.decode(Plan, json.loads(plan_json))
    partition = codec.decode(Partition, json.loads(partition_json))
    provider = LoggingProvider(log_path, int(hold[0]) if hold else None)
    settings = BackfillSettings(batch_size=16, embed_concurrency=1, progress_interval_s=1)
    with open_client(QdrantSettings(path=store)) as client:
        PartitionBackfill(
            client, plan, partition, provider, QdrantStateStore(client), settings
        ).run()


if __name__ == "__main__":
    main(*sys.argv[1:])
