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
import re
from typing import cast

from qdrant_client import QdrantClient

from include.qdrant_migration import estimate, inplace, quantization
from include.qdrant_migration.layout import read_layout
from include.qdrant_migration.plan import Lineage, Plan, SourceInfo
from include.qdrant_migration.providers import EmbeddingProvider, canonical_model
from include.qdrant_migration.qdrant import point_id
from include.qdrant_migration.spec import MigrationSpec, Strategy
from include.qdrant_migration.state import STATE_COLLECTION, Migrations, StateStore
from include.qdrant_migration.strategy import (
    CompatibilityError,
    Decision,
    Facts,
    OldModel,
    choose_strategy,
    old_model,
)
from include.qdrant_migration.texts import extract_text

log = logging.getLogger(__name__)

SAMPLE_SIZE = 64
_VERSION_SUFFIX = re.compile(r"__.+__v\d+$")


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


PROBE_TEXT = "Qdrant model migration: connection and dimension check."


def probe_dimension(provider: EmbeddingProvider, spec: MigrationSpec) -> int:
    """Embed one fixed query to check access and learn the model's true output size.

    A fixed text, embedded as a query, so that no stored document is embedded twice.
    """
    vector = provider.embed_queries([PROBE_TEXT])[0]
    actual = len(vector)
    if spec.dimensions is not None and actual != spec.dimensions:
        raise CompatibilityError(
            f"Model {spec.model!r} ({spec.provider}) returns {actual}-dimensional vectors, but "
            f"dimensions={spec.dimensions} was requested. Set dimensions to {actual} or leave "
            "it empty."
        )
    return actual


def target_name(client: QdrantClient, source: str, slug: str) -> str:
    """``<base>__<model>__v<n>``, with n one above any existing version of that base."""
    base = _VERSION_SUFFIX.sub("", source)
    pattern = re.compile(rf"^{re.escape(base)}__.+__v(\d+)$")
    versions = [
        int(m.group(1))
        for c in client.get_collections().collections
        if (m := pattern.match(c.name))
    ]
    return f"{base}__{slug}__v{max(versions, default=0) + 1}"


def old_model_of(spec: MigrationSpec, source: SourceInfo) -> OldModel | None:
    """The model that made the source's vectors (params first, then lineage), if known."""
    return old_model(
        source.lineage, spec.source_provider, spec.source_model, spec.provider, canonical_model
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
) -> Plan:
    """Read the source, choose the strategy, check the request against it, and plan.

    Writes nothing. Embeds one fixed query to check the model's real output size (not for
    a quantization change, which makes no embedding call at all), and a few sample texts
    to measure throughput when no rate budget is configured (see estimate.py).
    """
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
    if decision.strategy is Strategy.IN_PLACE:
        plan = _new_vector_plan(client, spec, provider, state, source, migration_id, decision)
    elif decision.strategy is Strategy.QUANTIZATION_ONLY:
        plan = _in_place_plan(spec, source, migration_id, decision)
    else:
        plan = _new_target_plan(client, spec, provider, state, source, migration_id, decision)
    return dataclasses.replace(plan, estimate=estimate.build(client, plan, provider))


def _in_place_plan(
    spec: MigrationSpec, source: SourceInfo, migration_id: str, decision: Decision
) -> Plan:
    """Quantization only: the "target" is the source itself, changed in place."""
    lineage = source.lineage.copy()
    old = old_model_of(spec, source)
    if old is not None:
        lineage["provider"], lineage["model"] = old.provider, old.model
    lineage["dimensions"], lineage["quantization"] = source.size, spec.quantization
    return Plan(
        migration_id=migration_id,
        alias=spec.alias,
        strategy=decision.strategy,
        reasons=decision.reasons,
        source=source,
        target_collection=source.collection,
        target_dimension=source.size,
        target_lineage=lineage,
        spec=spec,
    )


def _new_vector_plan(
    client: QdrantClient,
    spec: MigrationSpec,
    provider: EmbeddingProvider,
    state: StateStore,
    source: SourceInfo,
    migration_id: str,
    decision: Decision,
) -> Plan:
    """In place: the new model's vectors as a new named vector of the source."""
    inplace.require_support(client, source.collection, source.vector_name)
    dimension = probe_dimension(provider, spec)
    previous = Migrations(state).get(migration_id)
    recorded = previous.plan.target_vector if previous and previous.plan else None
    name = recorded or inplace.vector_name_for(
        client, source.collection, spec.model_slug(), migration_id
    )
    reasons = [*decision.reasons, f"The new vector is {name!r}, beside {source.vector_name!r}."]
    if source.text_coverage < 1.0:
        reasons.append(_coverage_reason(spec, source, decision.strategy))
    return Plan(
        migration_id=migration_id,
        alias=spec.alias,
        strategy=decision.strategy,
        reasons=reasons,
        source=source,
        target_collection=source.collection,
        target_dimension=dimension,
        target_lineage=_new_lineage(provider, dimension, decision.strategy),
        spec=spec,
        target_vector=name,
    )


def _new_lineage(provider: EmbeddingProvider, dimension: int, strategy: Strategy) -> Lineage:
    lineage = cast(Lineage, dict(provider.lineage()))
    lineage["dimensions"], lineage["strategy"] = dimension, strategy.value
    return lineage


def _coverage_reason(spec: MigrationSpec, source: SourceInfo, strategy: Strategy) -> str:
    share = f"{(1 - source.text_coverage):.0%} of sampled points lack text in {spec.text_field!r}"
    if strategy.derives_vectors:
        return (
            f"{share}; their stored vectors are carried over all the same (only points added "
            f"or edited later are embedded, under bad_text_policy={spec.bad_text_policy!r})."
        )
    return f"{share}; they are handled by bad_text_policy={spec.bad_text_policy!r}."


def _new_target_plan(
    client: QdrantClient,
    spec: MigrationSpec,
    provider: EmbeddingProvider,
    state: StateStore,
    source: SourceInfo,
    migration_id: str,
    decision: Decision,
) -> Plan:
    dimension = probe_dimension(provider, spec)
    previous = Migrations(state).get(migration_id)
    if previous is not None:
        target = previous.target_collection
        reasons = [f"Continuing migration {migration_id} into {target} (started earlier)."]
    else:
        target = target_name(client, source.collection, spec.model_slug())
        reasons = []
    reasons += decision.reasons
    if source.text_coverage < 1.0:
        reasons.append(_coverage_reason(spec, source, decision.strategy))
    if source.carried:
        reasons.append(
            f"Only vector {source.vector_name or '(unnamed)'!r} is migrated; "
            f"{', '.join(repr(n) for n in source.carried)} "
            "are copied unchanged, with their configuration."
        )
    if spec.add_sparse:
        reasons.append(
            f"The new collection gains sparse vector {spec.add_sparse!r}: BM25 of "
            f"{spec.text_field!r} (IDF modifier), for hybrid search from the swap on."
        )
    lineage = _new_lineage(provider, dimension, decision.strategy)
    if decision.strategy is Strategy.MATRYOSHKA_TRUNCATION:
        lineage["truncated_from"] = source.size
    return Plan(
        migration_id=migration_id,
        alias=spec.alias,
        strategy=decision.strategy,
        reasons=reasons,
        source=source,
        target_collection=target,
        target_dimension=dimension,
        target_lineage=lineage,
        spec=spec,
    )
