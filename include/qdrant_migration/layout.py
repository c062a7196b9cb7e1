"""Which of a collection's vectors the migration replaces, and which it carries over.

Production collections often hold several vectors per point: a dense vector plus a sparse
BM25 or SPLADE one for hybrid search, several named dense vectors (title and body), or a
multivector for late interaction. A migration replaces one plain dense vector, the
*migrated* one, with the new model's, and copies every other one (*carried*) unchanged,
with its configuration. It may also add a BM25 sparse vector made from the text
(:mod:`.sparse`).

A point's recorded state (:mod:`.sync.fingerprints`) covers its payload, its carried
sparse vectors (exact values) and which carried dense vectors and multivectors it has.
Their values are not hashed: the embedded store renormalizes cosine vectors on every
write, which moves a value by one float32 step, so a hash of them would see a change where
there is none. They are copied whenever their point is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qdrant_client import models as qm

from include.qdrant_migration.strategy import CompatibilityError
from include.qdrant_migration.sync.fingerprints import state_of


@dataclass(frozen=True)
class VectorLayout:
    """The source's vectors as the migration sees them."""

    #: The vector the new model replaces (None: the collection's unnamed one).
    migrated: str | None
    size: int
    distance: str
    #: Every other vector, copied unchanged (sparse, named dense, multivectors).
    carried: tuple[str, ...] = ()
    #: The carried vectors that are sparse.
    sparse: tuple[str, ...] = ()
    #: A carried sparse vector with the IDF modifier: BM25, searched with BM25 queries in
    #: the hybrid quality comparison.
    bm25: str | None = None


def dense_vectors(info: qm.CollectionInfo) -> dict[str, qm.VectorParams]:
    vectors = info.config.params.vectors
    if isinstance(vectors, qm.VectorParams):
        return {"": vectors}
    return dict(vectors or {})


#: The collection metadata key of the lineage; an in-place migration adds ``vectors``
#: (the lineage of each model's named vector) and ``active_vector`` to it.
METADATA_KEY = "qdrant_migration"


def in_place_vectors(metadata: Mapping[str, Any] | None) -> tuple[str | None, frozenset[str]]:
    """The active vector an in-place migration recorded, and the others it keeps (a new
    model's vector being filled, or an old one kept for rollback): never migrated or carried."""
    lineage = (metadata or {}).get(METADATA_KEY)
    if not isinstance(lineage, Mapping):
        return None, frozenset()
    active = lineage.get("active_vector")
    vectors = lineage.get("vectors") or {}
    return (str(active) if active else None), frozenset(n for n in vectors if n != active)


def _kinds(dense: Mapping[str, qm.VectorParams], sparse: list[str]) -> str:
    parts = [
        f"{name or '(unnamed)'} ({'multivector' if p.multivector_config else f'{p.size}-d dense'})"
        for name, p in sorted(dense.items())
    ]
    parts += [f"{name} (sparse)" for name in sparse]
    return ", ".join(parts) or "none"


def read_layout(
    info: qm.CollectionInfo, collection: str, requested: str | None, add_sparse: str | None = None
) -> VectorLayout:
    """The migrated vector (``requested``, or the only plain dense one) and the carried ones.

    Refuses, naming every vector, when the choice is ambiguous or impossible.
    """
    active, kept = in_place_vectors(info.config.metadata)
    dense = {name: p for name, p in dense_vectors(info).items() if name not in kept}
    sparse = sorted(info.config.params.sparse_vectors or {})
    plain = sorted(name for name, p in dense.items() if p.multivector_config is None)
    listed = _kinds(dense, sparse)
    if requested is not None:
        name = requested
        if name in sparse:
            raise CompatibilityError(
                f"vector_name {name!r} of {collection!r} is a sparse vector; only a dense "
                f"vector can be migrated to a new model (sparse ones are carried over "
                f"unchanged). Vectors: {listed}."
            )
        if name in dense and dense[name].multivector_config is not None:
            raise CompatibilityError(
                f"vector_name {name!r} of {collection!r} is a multivector; migrating "
                "late-interaction vectors is not supported (they are carried over unchanged). "
                f"Choose a dense vector. Vectors: {listed}."
            )
        if name not in dense:
            raise CompatibilityError(
                f"Collection {collection!r} has no vector named {name!r}. Vectors: {listed}."
            )
    elif len(plain) == 1:
        name = plain[0]
    elif active in plain:
        name = str(active)
    elif not plain:
        raise CompatibilityError(
            f"Collection {collection!r} has no plain dense vector to migrate. Vectors: {listed}."
        )
    else:
        raise CompatibilityError(
            f"Collection {collection!r} has {len(plain)} dense vectors ({', '.join(plain)}): "
            "set vector_name to the one the new model replaces; the others are carried over "
            f"unchanged. Vectors: {listed}."
        )
    if add_sparse and (add_sparse in dense or add_sparse in sparse):
        raise CompatibilityError(
            f"add_sparse {add_sparse!r}: {collection!r} already has a vector of that name. "
            f"Choose another name. Vectors: {listed}."
        )
    params = dense[name]
    others = sorted([n for n in dense if n != name] + sparse)
    idf = [
        n
        for n, p in (info.config.params.sparse_vectors or {}).items()
        if p.modifier == qm.Modifier.IDF
    ]
    return VectorLayout(
        migrated=name or None,
        size=params.size,
        distance=str(params.distance.value),
        carried=tuple(others),
        sparse=tuple(sparse),
        bm25=min(idf) if idf else None,
    )


@dataclass(frozen=True)
class Carried:
    """The vectors a migration copies unchanged, and how they enter a point's state."""

    names: tuple[str, ...] = ()
    sparse: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.names)

    def of(self, record: qm.Record | qm.ScoredPoint) -> dict[str, Any]:
        """The record's carried vectors that it has (read with :meth:`read`)."""
        stored = record.vector
        if not self.names or not isinstance(stored, dict):
            return {}
        return {name: stored[name] for name in self.names if stored.get(name) is not None}

    def read(self, migrated: str | None = None, *, with_migrated: bool = False) -> bool | list[str]:
        """``with_vectors`` for reading the carried vectors (and the migrated one if asked)."""
        if with_migrated:
            if migrated is None:
                return True  # the unnamed vector has no name to ask for
            return [migrated, *self.names]
        return list(self.names) or False

    def state(self, record: qm.Record) -> str:
        """The record's state: its payload and what of its carried vectors is compared."""
        return state_of(record.payload, self._state_extra(record))

    def _state_extra(self, record: qm.Record) -> dict[str, Any] | None:
        if not self.names:
            return None
        vectors = self.of(record)
        extra: dict[str, Any] = {"present": sorted(vectors)}
        for name in self.sparse:
            vector = vectors.get(name)
            if isinstance(vector, qm.SparseVector):
                pairs = sorted(zip(vector.indices, vector.values, strict=True))
                extra[name] = [[i for i, _ in pairs], [v for _, v in pairs]]
        return extra


def point_vector(
    migrated: str | None, values: Any, carried: Mapping[str, Any], added: Mapping[str, Any]
) -> qm.VectorStruct:
    """A point's vectors as written: the migrated one, the carried and the added ones."""
    if not carried and not added:
        return values if migrated is None else {migrated: values}
    return {migrated or "": values, **carried, **added}
