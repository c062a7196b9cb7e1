"""assess_compatibility: read the source behind the alias and decide how to migrate.

It writes nothing. It fails with a message that says what exists and what to change when
the alias is unknown, the text field is missing from the data, or the model does not
produce the dimensions the user declared.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import STATE_COLLECTION, StateStore
from include.qdrant_migration.texts import extract_text

log = logging.getLogger(__name__)

SAMPLE_SIZE = 64
_VERSION_SUFFIX = re.compile(r"__.+__v\d+$")


class CompatibilityError(ValueError):
    """The migration cannot run as requested; the message says why and how to fix it."""


class AlreadyMigratedError(RuntimeError):
    """The alias already serves vectors of the requested model: there is nothing to do."""


@dataclass(frozen=True)
class SourceInfo:
    collection: str
    vector_name: str | None
    size: int
    distance: str
    points: int
    sample_ids: list[Any]
    text_coverage: float
    lineage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """Everything later tasks need; serialized as the assess_compatibility XCom."""

    migration_id: str
    alias: str
    strategy: str
    reasons: list[str]
    source: SourceInfo
    target_collection: str
    target_dimension: int
    target_lineage: dict[str, Any]
    spec: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        fields = dict(data)
        fields["source"] = SourceInfo(**fields["source"])
        return cls(**fields)


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


def _single_dense_vector(info: qm.CollectionInfo, collection: str) -> tuple[str | None, int, str]:
    vectors = info.config.params.vectors
    if info.config.params.sparse_vectors:
        raise CompatibilityError(
            f"Collection {collection!r} has sparse vectors "
            f"({', '.join(info.config.params.sparse_vectors)}); this tool migrates one dense "
            "vector per point and would drop them. Migrate a collection without sparse vectors."
        )
    if isinstance(vectors, qm.VectorParams):
        return None, vectors.size, str(vectors.distance.value)
    if isinstance(vectors, dict) and len(vectors) == 1:
        name, params = next(iter(vectors.items()))
        return name, params.size, str(params.distance.value)
    names = ", ".join(sorted(vectors or {}))
    raise CompatibilityError(
        f"Collection {collection!r} has {len(vectors or {})} named vectors ({names}); "
        "this tool migrates collections with exactly one dense vector per point."
    )


def read_source(client: QdrantClient, collection: str, text_field: str) -> SourceInfo:
    info = client.get_collection(collection)
    vector_name, size, distance = _single_dense_vector(info, collection)
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
        vector_name=vector_name,
        size=size,
        distance=distance,
        points=points,
        sample_ids=[p.id for p in with_text[:16]],
        text_coverage=round(coverage, 4),
        lineage=dict(lineage) if isinstance(lineage, dict) else {},
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


def assess(
    client: QdrantClient,
    spec: MigrationSpec,
    provider: EmbeddingProvider,
    state: StateStore,
) -> Plan:
    """Read the source, check the request against it, and plan the migration."""
    source_collection = resolve_alias(client, spec.alias)
    source = read_source(client, source_collection, spec.text_field)
    made_by = source.lineage
    if (
        made_by.get("provider") == spec.provider
        and made_by.get("model") == spec.model
        and spec.dimensions in (None, source.size)
    ):
        raise AlreadyMigratedError(
            f"Alias {spec.alias!r} already points at {source_collection!r}, whose vectors come "
            f"from {spec.provider}/{spec.model} (migration {made_by.get('migration_id')}). "
            "Nothing to do; the nightly run keeps catching it up until it is retired."
        )
    migration_id = spec.migration_id(source_collection)
    dimension = probe_dimension(provider, spec)

    previous = state.get("migration", migration_id)
    if previous and previous.get("target_collection"):
        target = str(previous["target_collection"])
        reasons = [f"Continuing migration {migration_id} into {target} (started earlier)."]
    else:
        target = target_name(client, source_collection, spec.model_slug())
        reasons = []
    reasons.append(
        f"Full re-embed: {source.points} points of {source_collection!r} "
        f"({source.size}-d, {source.distance}) are embedded again with {spec.provider}/"
        f"{spec.model} ({dimension}-d); vectors of different models cannot share a space."
    )
    if source.text_coverage < 1.0:
        reasons.append(
            f"{(1 - source.text_coverage):.0%} of sampled points lack text in "
            f"{spec.text_field!r}; they are handled by bad_text_policy={spec.bad_text_policy!r}."
        )
    lineage = provider.lineage() | {"dimensions": dimension}
    return Plan(
        migration_id=migration_id,
        alias=spec.alias,
        strategy="full_reembed",
        reasons=reasons,
        source=source,
        target_collection=target,
        target_dimension=dimension,
        target_lineage=lineage,
        spec=spec.to_dict(),
    )
