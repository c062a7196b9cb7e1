"""assess_compatibility: read the source behind the alias and decide how to migrate.

It writes nothing. It fails with a message that says what exists and what to change when
the alias is unknown, the text field is missing from the data, the model does not produce
the dimensions the user declared, or the strategy asked for cannot work (strategy.py). The
plan it returns carries the chosen strategy, the reasons, and the estimate of tokens, cost,
time, disk and RAM (estimate.py) that a dry run prints.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import cast

from qdrant_client import QdrantClient

from include.qdrant_migration import estimate, quantization
from include.qdrant_migration.checks import traffic
from include.qdrant_migration.layout import read_layout
from include.qdrant_migration.plan import Lineage, Plan, SourceInfo, old_model_of
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import point_id
from include.qdrant_migration.rerankers import Reranker
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import STATE_COLLECTION, StateStore
from include.qdrant_migration.strategies import STRATEGIES, PlanInputs, strategy_of
from include.qdrant_migration.strategy import (
    CompatibilityError,
    Facts,
    choose_strategy,
)
from include.qdrant_migration.texts import extract_text

log = logging.getLogger(__name__)

SAMPLE_SIZE = 64


def resolve_alias(client: QdrantClient, alias: str) -> str:
    """The collection an alias points at, or a CompatibilityError listing what exists."""
    aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
    if alias in aliases:
        return str(aliases[alias])
    collections = sorted(
        c.name for c in client.get_collections().collections if c.name != STATE_COLLECTION
    )
    if alias in collections:
        raise CompatibilityError(
            f"{alias!r} is a collection, not an alias. Applications must read through an alias "
            f"for a zero-downtime swap: create one (e.g. update_collection_aliases with "
            f"CreateAliasOperation(alias_name='{alias}_live', collection_name='{alias}')), point "
            "your application at it, and pass that alias."
        )
    listed = ", ".join(f"{a} -> {c}" for a, c in sorted(aliases.items())) or "none"
    raise CompatibilityError(
        f"Alias {alias!r} does not exist. Existing aliases: {listed}. "
        f"Existing collections: {', '.join(collections) or 'none'}."
    )


def read_source(
    client: QdrantClient,
    collection: str,
    text_field: str,
    vector_name: str | None = None,
    add_sparse: str | None = None,
) -> SourceInfo:
    info = client.get_collection(collection)
    layout = read_layout(info, collection, vector_name, add_sparse)
    points = client.count(collection, exact=True).count
    sample, _ = client.scroll(collection, limit=SAMPLE_SIZE, with_payload=True, with_vectors=False)
    with_text = [p for p in sample if extract_text(p.payload, text_field)[0] is not None]
    coverage = len(with_text) / len(sample) if sample else 1.0
    if sample and not with_text:
        seen = sorted({k for p in sample for k in (p.payload or {})})
        raise CompatibilityError(
            f"None of {len(sample)} sampled points of {collection!r} has text in payload field "
            f"{text_field!r}. Fields present: {', '.join(seen) or 'none'}. Set text_field to the "
            "field that holds the text to embed."
        )
    lineage = (info.config.metadata or {}).get("qdrant_migration", {})
    return SourceInfo(
        collection=collection,
        vector_name=layout.migrated,
        size=layout.size,
        distance=layout.distance,
        points=points,
        sample_ids=[point_id(p.id) for p in with_text[:16]],
        text_coverage=round(coverage, 4),
        lineage=cast(Lineage, dict(lineage)) if isinstance(lineage, dict) else Lineage(),
        quantization=quantization.current(info, layout.migrated),
        carried=list(layout.carried),
        carried_sparse=list(layout.sparse),
        carried_bm25=layout.bm25,
    )


def facts_of(spec: MigrationSpec, provider: EmbeddingProvider, source: SourceInfo) -> Facts:
    """What the strategy choice depends on, from the request, the provider and the source."""
    return Facts(
        source_collection=source.collection,
        source_size=source.size,
        source_distance=source.distance,
        source_points=source.points,
        old=old_model_of(spec, source),
        new_provider=spec.provider,
        new_model=provider.model,
        new_info=provider.model_info(),
        dimensions=spec.dimensions,
        current_quantization=source.quantization,
        quantization=spec.quantization,
        forced=spec.forced_strategy,
        allow_linear_map=spec.allow_linear_map,
        map_sample_size=spec.map_sample_size,
        min_map_retention=spec.min_map_retention,
    )


def assess(
    client: QdrantClient,
    spec: MigrationSpec,
    provider: EmbeddingProvider,
    state: StateStore,
    *,
    old_model: Callable[[SourceInfo], EmbeddingProvider | None] | None = None,
    shared_process: bool = False,
    inline_queries: Sequence[object] | None = None,
    judge: Reranker | None = None,
) -> Plan:
    """Read the source, choose the strategy, check the request against it, and plan.

    Writes nothing. Embeds one fixed query to check the model's real output size (not for
    a quantization change, which makes no embedding call at all), a few sample texts to
    measure throughput when no rate budget is configured, and a few queries with the new
    model and ``old_model(source)`` to time the quality comparison (see estimate.py and
    phases.py; ``shared_process``: every task of the run runs in this process). A query
    log is read and checked (``inline_queries``: the run's conf's list, for an inline one),
    and the ``judge`` called once, to fail now rather than at the report, and to price them.
    """
    started = estimate.now()
    source_collection = resolve_alias(client, spec.alias)
    source = read_source(
        client, source_collection, spec.text_field, spec.vector_name, spec.add_sparse
    )
    decision = choose_strategy(facts_of(spec, provider, source))
    migration_id = spec.migration_id(source_collection, decision.strategy)
    if not decision.strategy.creates_target and spec.add_sparse:
        raise CompatibilityError(
            f"add_sparse {spec.add_sparse!r} needs a new collection, but strategy "
            f"{decision.strategy.value!r} changes the source in place. Leave add_sparse empty, "
            "or use strategy 'full_reembed'."
        )
    given = PlanInputs(client, spec, provider, state, source, migration_id, decision)
    plan = STRATEGIES[decision.strategy].make_plan(given)
    rebuilds = strategy_of(plan).rebuilds
    old = old_model(source) if old_model is not None and rebuilds else None
    replay = None
    if rebuilds and spec.query_log is not None:
        # The log is read first: a bad one is the first thing to fix, whatever else is.
        replay = traffic.prepare(client, spec, inline_queries, judge if old else None)
        if old is None:
            raise CompatibilityError(
                "query_log replays each query on the old model too, and the model that made the "
                f"vectors of {source.collection!r} is unknown (no lineage in its metadata): "
                "set source_provider and source_model, or leave query_log empty."
            )
    built = estimate.build(
        client,
        plan,
        provider,
        old_model=old,
        shared_process=shared_process,
        started=started,
        replay=replay,
    )
    return dataclasses.replace(plan, estimate=built)
