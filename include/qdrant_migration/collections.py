"""create_collection: the versioned target, configured like the source but for the new model.

The target copies what matters from the source (distance, HNSW, quantization unless the
``quantization`` param asks for another, on-disk settings, sharding and replication,
payload indexes) and takes the new model's vector size. While it is loaded it serves no
queries, so HNSW indexing is deferred (``indexing_threshold=0``) and restored by
:func:`finish_bulk_load` before the recall check. Until the swap its index is built with
at most ``qdrant_budget.max_indexing_threads`` threads and one optimization job, so the
build leaves the cluster's other cores to the searches it serves meanwhile;
:func:`lift_index_cap` gives it the source's settings at the swap.
Lineage (which model made the vectors) goes into collection metadata where the server
supports it, and always into the state store.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import quantization
from include.qdrant_migration.layout import METADATA_KEY
from include.qdrant_migration.plan import Lineage, Plan
from include.qdrant_migration.qdrant import is_local, supports
from include.qdrant_migration.state import (
    MigrationRecord,
    Migrations,
    MigrationStatus,
    StateStore,
    now_iso,
)
from include.qdrant_migration.sync.backfill import forget_progress

log = logging.getLogger(__name__)

DEFAULT_INDEXING_THRESHOLD = 10000


class CollectionConflictError(RuntimeError):
    """A collection with the target's name exists and was not made by this migration."""


def lineage_record(plan: Plan) -> Lineage:
    lineage = plan.target_lineage.copy()
    lineage["migration_id"] = plan.migration_id
    lineage["source_collection"] = plan.source.collection
    lineage["source_lineage"] = plan.source.lineage
    lineage["alias"] = plan.alias
    lineage["text_field"] = plan.spec.text_field
    return lineage


def _source_vector(source: qm.CollectionInfo, name: str | None) -> qm.VectorParams:
    vectors = source.config.params.vectors
    if isinstance(vectors, qm.VectorParams):
        return vectors
    return (vectors or {})[name or ""]


def _vector_params(
    plan: Plan, source: qm.CollectionInfo
) -> qm.VectorParams | dict[str, qm.VectorParams]:
    src_params = _source_vector(source, plan.vector_name)
    params = qm.VectorParams(
        size=plan.target_dimension,
        distance=qm.Distance(plan.source.distance),
        hnsw_config=src_params.hnsw_config,
        quantization_config=quantization.vector_quantization(src_params, plan.spec.quantization),
        on_disk=src_params.on_disk,
        # float16 carries over; an integer datatype was chosen for the old model's values.
        datatype=src_params.datatype if src_params.datatype == qm.Datatype.FLOAT16 else None,
    )
    carried = [name for name in plan.source.carried if name not in plan.source.carried_sparse]
    if plan.vector_name is None and not carried:
        return params
    # Carried dense vectors and multivectors keep their whole configuration.
    return {plan.vector_name or "": params} | {
        name: _source_vector(source, name).model_copy() for name in carried
    }


def _sparse_params(plan: Plan, source: qm.CollectionInfo) -> dict[str, qm.SparseVectorParams]:
    """The source's sparse vectors as they are (index, modifier), and the added BM25 one."""
    sparse = {
        name: params.model_copy()
        for name, params in (source.config.params.sparse_vectors or {}).items()
    }
    if plan.add_sparse:
        sparse[plan.add_sparse] = qm.SparseVectorParams(modifier=qm.Modifier.IDF)
    return sparse


def _hnsw_diff(config: qm.HnswConfig) -> qm.HnswConfigDiff:
    return qm.HnswConfigDiff(**config.model_dump(exclude_none=True))


def create_target(client: QdrantClient, plan: Plan, state: StateStore) -> dict[str, str | bool]:
    """Create the target (or reuse the one this migration made); returns what was done."""
    name = plan.target_collection
    source = client.get_collection(plan.source.collection)
    source_threshold = source.config.optimizer_config.indexing_threshold
    # 0 on the source means "indexing deliberately off": keep it so.
    original_threshold = (
        DEFAULT_INDEXING_THRESHOLD if source_threshold is None else source_threshold
    )
    if client.collection_exists(name):
        _check_reusable(client, plan, state)
        cap_index_threads(client, plan)
        log.info("Reusing %s, created earlier by migration %s", name, plan.migration_id)
        record_migration(state, plan, original_threshold=original_threshold, fresh=False)
        return {"collection": name, "created": False}

    lineage = lineage_record(plan)
    lineage["created_at"] = now_iso()
    kwargs: dict[str, Any] = {
        "vectors_config": _vector_params(plan, source),
        "shard_number": source.config.params.shard_number,
        "replication_factor": source.config.params.replication_factor,
        "write_consistency_factor": source.config.params.write_consistency_factor,
        "on_disk_payload": source.config.params.on_disk_payload,
        "hnsw_config": _hnsw_diff(source.config.hnsw_config).model_copy(
            update={
                "max_indexing_threads": _cap(plan) or source.config.hnsw_config.max_indexing_threads
            }
        ),
        "quantization_config": quantization.for_target(source, plan.spec.quantization),
        # Defer HNSW building while bulk-loading a collection that serves no queries.
        "optimizers_config": qm.OptimizersConfigDiff(
            indexing_threshold=0, max_optimization_threads=1 if _cap(plan) else None
        ),
    }
    if sparse := _sparse_params(plan, source):
        kwargs["sparse_vectors_config"] = sparse
    if supports(client, (1, 16, 0)):
        kwargs["metadata"] = {METADATA_KEY: lineage}
    client.create_collection(name, **kwargs)
    forget_progress(client, state, plan.migration_id)
    for field_name, schema in (source.payload_schema or {}).items():
        # The index's params (is_tenant, a text index's tokenizer, ...) when it has any.
        field_schema = schema.params if schema.params is not None else schema.data_type
        if field_schema is not None:
            client.create_payload_index(name, field_name, field_schema=field_schema, wait=True)
    log.info("Created %s (%d-d, %s)", name, plan.target_dimension, plan.source.distance)
    record_migration(state, plan, original_threshold=original_threshold, fresh=True)
    return {"collection": name, "created": True}


def record_migration(
    state: StateStore, plan: Plan, *, original_threshold: int | None, fresh: bool
) -> None:
    """Record the migration; a freshly created target starts (again) at LOADING."""
    migrations = Migrations(state)
    previous = migrations.get(plan.migration_id)
    record = MigrationRecord(
        migration_id=plan.migration_id,
        alias=plan.alias,
        source_collection=plan.source.collection,
        target_collection=plan.target_collection,
        strategy=plan.strategy,
        status=MigrationStatus.LOADING,
        plan=plan,
        lineage=lineage_record(plan),
        indexing_threshold=original_threshold,
    )
    if previous is not None and not fresh:
        # The source's threshold as recorded when the target was made (the source's own
        # setting may have been changed since; the record wins).
        threshold = previous.indexing_threshold
        record = dataclasses.replace(
            previous,
            plan=plan,
            lineage=record.lineage,
            indexing_threshold=original_threshold if threshold is None else threshold,
        )
    migrations.put(record)


def _check_reusable(client: QdrantClient, plan: Plan, state: StateStore) -> None:
    info = client.get_collection(plan.target_collection)
    vectors = info.config.params.vectors
    params = (
        vectors
        if isinstance(vectors, qm.VectorParams)
        else (vectors or {}).get(plan.vector_name or "")
    )
    meta = (info.config.metadata or {}).get(METADATA_KEY, {})
    problems = []
    if params is None:
        problems.append("it has a different vector layout")
    elif params.size != plan.target_dimension or params.distance.value != plan.source.distance:
        problems.append(f"its vectors are {params.size}-d {params.distance.value}")
    previous = Migrations(state).get(plan.migration_id)
    recorded = previous.target_collection if previous is not None else None
    if meta and meta.get("migration_id") != plan.migration_id:
        problems.append(f"it belongs to migration {meta.get('migration_id')}")
    elif not meta and recorded != plan.target_collection:
        problems.append("nothing records that this migration created it")
    if problems:
        raise CollectionConflictError(
            f"Collection {plan.target_collection!r} already exists but {'; '.join(problems)}, "
            f"while this migration needs {plan.target_dimension}-d {plan.source.distance} "
            "vectors. Delete or rename that collection, or choose another model/dimensions."
        )


def _cap(plan: Plan) -> int:
    """Threads of the target's index build until the swap (0: not capped). One optimization
    job runs at a time meanwhile, since each job builds with that many threads."""
    return plan.spec.budget.max_indexing_threads


def cap_index_threads(client: QdrantClient, plan: Plan) -> None:
    """Put the build's thread cap on the target (a target made before it had none)."""
    if not _cap(plan) or is_local(client):
        return
    client.update_collection(
        plan.target_collection,
        hnsw_config=qm.HnswConfigDiff(max_indexing_threads=_cap(plan)),
        optimizers_config=qm.OptimizersConfigDiff(max_optimization_threads=1),
    )


def lift_index_cap(client: QdrantClient, plan: Plan) -> dict[str, Any]:
    """At the swap: the now served target builds its index as the source did.

    Its HNSW ``max_indexing_threads`` and the optimizer's ``max_optimization_threads`` become
    the source's again (``auto``, Qdrant's own choice, when the source left it unset).
    Returns what the target has now; nothing changes where nothing was capped.
    """
    if not _cap(plan) or is_local(client):
        return {}
    source = client.get_collection(plan.source.collection).config
    threads = source.hnsw_config.max_indexing_threads or 0
    jobs = source.optimizer_config.max_optimization_threads
    client.update_collection(
        plan.target_collection,
        hnsw_config=qm.HnswConfigDiff(max_indexing_threads=threads),
        optimizers_config=qm.OptimizersConfigDiff(
            max_optimization_threads=qm.MaxOptimizationThreadsSetting.AUTO if jobs is None else jobs
        ),
    )
    log.info(
        "%s is served: its index threads are no longer capped (max_indexing_threads %d, "
        "max_optimization_threads %s, as %s)",
        plan.target_collection,
        threads,
        "auto" if jobs is None else jobs,
        plan.source.collection,
    )
    return {"max_indexing_threads": threads, "max_optimization_threads": jobs}


def finish_bulk_load(client: QdrantClient, plan: Plan, state: StateStore) -> None:
    """Restore the source's indexing threshold so Qdrant builds the HNSW index."""
    record = Migrations(state).get(plan.migration_id)
    recorded = record.indexing_threshold if record is not None else None
    threshold = DEFAULT_INDEXING_THRESHOLD if recorded is None else recorded
    current = client.get_collection(plan.target_collection).config.optimizer_config
    if current.indexing_threshold != threshold:
        client.update_collection(
            plan.target_collection,
            optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=threshold),
        )
        log.info("Indexing enabled on %s (threshold %d)", plan.target_collection, threshold)
