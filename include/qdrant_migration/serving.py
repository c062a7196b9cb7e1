"""Serving a migrated alias: a query's model and the vectors it searches always belong together.

An application that reads the lineage of whatever its alias points at (which model made
the vectors) and then queries the alias races the migration: between the two calls the
alias can move (a swap, a rollback), and a query embedded with the old model then
searches the new collection. Qdrant answers it with unrelated points and no error when
both models have the same size, and refuses it (400) otherwise. In place, the same race
sits between reading the metadata's ``active_vector`` and searching.

:class:`ServingClient` resolves the alias once (its concrete collection, the vector to
search and that vector's lineage), keeps the answer for ``ttl_s`` seconds, and searches
the *concrete collection* with a query embedded by *that* lineage's model: the alias may
move meanwhile, the pair stays consistent. A collection that was deleted (retired) or a
vector that was deleted makes it resolve again at once and retry. Writes go through the
alias, which the migration protects, and are written again when the alias moved while
they were embedded. No Airflow here: applications import this module alone.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from include.qdrant_migration.layout import METADATA_KEY, dense_vectors, point_vector
from include.qdrant_migration.plan import SWITCH_KEYS, Lineage
from include.qdrant_migration.providers import (
    PROVIDERS,
    Credentials,
    EmbeddingProvider,
    get_provider,
)
from include.qdrant_migration.state import Migrations, QdrantStateStore

#: What decides the vectors a text gets: two lineages equal on these embed alike (ids,
#: dates and the source they record do not matter).
EMBEDDING_KEYS = ("provider", "model", "dimensions", "document_input", "query_input")
#: How often one upsert is written at most while the alias keeps moving under it.
MAX_WRITES = 3
#: What Qdrant says when a request went to a collection or vector that is gone, or to one
#: of another model: the REST API (404 "Not found: Collection `x` doesn't exist!", 400
#: "Not existing vector name error", 400 "Vector dimension error") and the embedded store
#: (ValueError "Collection x not found", "Dense vector x is not found in the collection").
_GONE = re.compile(
    r"not found|doesn't exist|not existing vector name|vector dimension error|"
    r"unnamed vectors are not allowed",
    re.IGNORECASE,
)


class ServingError(RuntimeError):
    """The alias cannot be served: it names nothing, or which model made its vectors is unknown."""


def embedding_of(lineage: Mapping[str, object]) -> tuple[object, ...]:
    """The part of a lineage that decides the vectors (see :data:`EMBEDDING_KEYS`)."""
    return tuple(lineage.get(key) for key in EMBEDDING_KEYS)


def _usable(lineage: Mapping[str, object] | None) -> bool:
    return bool(lineage and lineage.get("provider") and lineage.get("model"))


@dataclass(frozen=True)
class Resolved:
    """What the alias served when it was resolved: search (and write) these together."""

    alias: str
    #: The concrete collection the alias pointed at; searches go here, never to the alias.
    collection: str
    #: The named vector to search and write (None: the collection's unnamed vector).
    vector: str | None
    #: Which model made that vector: provider, model, dimensions, query_input, ...
    lineage: Lineage
    #: Where the lineage was found: ``metadata``, ``state store`` or ``fallback``.
    lineage_from: str
    #: When it was resolved, on the client's clock.
    resolved_at: float

    def serves_like(self, other: Resolved) -> bool:
        """The same vectors of the same collection (the lineage follows from them)."""
        return (self.collection, self.vector) == (other.collection, other.vector)

    def embeds_like(self, other: Resolved) -> bool:
        return embedding_of(self.lineage) == embedding_of(other.lineage)


class Embedder(Protocol):
    """Embeds texts as the model a lineage names does, queries and documents apart."""

    def embed_queries(self, lineage: Lineage, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_documents(self, lineage: Lineage, texts: Sequence[str]) -> list[list[float]]: ...


class ProviderEmbedder:
    """This project's providers, built from the lineage: one per model, reused by every thread.

    ``credentials``: per provider name (``openai``, ``cohere``, ``openai_compatible``) the
    API key and endpoint the application uses; the local models need none. ``options``:
    per provider name, provider options (timeouts, ``embedding_types`` of a Cohere int8
    collection, ...).
    """

    def __init__(
        self,
        credentials: Mapping[str, Credentials] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.credentials = dict(credentials or {})
        self.options = dict(options or {})
        self._providers: dict[tuple[object, ...], EmbeddingProvider] = {}
        self._lock = threading.Lock()

    def provider(self, lineage: Lineage) -> EmbeddingProvider:
        key = (lineage.get("provider"), lineage.get("model"), lineage.get("dimensions"))
        with self._lock:
            found = self._providers.get(key)
            if found is None:
                name = lineage["provider"]
                self._check_credentials(name)
                found = self._providers[key] = get_provider(
                    name,
                    lineage["model"],
                    dimensions=lineage.get("dimensions"),
                    options=self.options.get(name),
                    credentials=self.credentials.get(name),
                )
        return found

    def _check_credentials(self, name: str) -> None:
        known = PROVIDERS.get(name)
        if known is not None and known.needs_connection and name not in self.credentials:
            raise ServingError(
                f"Vectors made by provider {name!r} need the application's credentials for "
                f"it: ProviderEmbedder(credentials={{{name!r}: Credentials(conn_id='app', "
                "api_key=..., base_url=...)}})."
            )

    def embed_queries(self, lineage: Lineage, texts: Sequence[str]) -> list[list[float]]:
        return self.provider(lineage).embed_queries(texts)

    def embed_documents(self, lineage: Lineage, texts: Sequence[str]) -> list[list[float]]:
        return self.provider(lineage).embed_documents(texts)

    def close(self) -> None:
        with self._lock:
            providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            provider.close()


@dataclass(frozen=True)
class Hits:
    """A search's points, and the resolution (collection, vector, model) that found them."""

    points: list[qm.ScoredPoint]
    resolved: Resolved


@dataclass(frozen=True)
class Document:
    """A point to write: its text is embedded, and stored in the payload's text field."""

    id: qm.ExtendedPointId
    text: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    #: The point's other vectors (a sparse BM25 one), written as given.
    vectors: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Written:
    """What an upsert did: the resolution its vectors match, and whether it wrote twice."""

    resolved: Resolved
    rewritten: bool


class ServingClient:
    """Search and write one alias so that queries, vectors and models always match.

    ``vector_name``: the dense vector to search where the collection has several (an
    in-place collection's ``active_vector`` wins). ``fallback``: the lineage of
    collections that record none (not made by this tool, or on a server before 1.16),
    either one lineage for all or a mapping collection name -> lineage. ``text_field``:
    the payload field the text is stored in when the lineage records none.
    """

    def __init__(
        self,
        client: QdrantClient,
        alias: str,
        embedder: Embedder,
        *,
        ttl_s: float = 5.0,
        fallback: Mapping[str, Any] | None = None,
        vector_name: str | None = None,
        text_field: str = "text",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.alias = alias
        self.embedder = embedder
        self.ttl_s = ttl_s
        self.fallback = fallback or {}
        self.vector_name = vector_name
        self.text_field = text_field
        self.clock = clock
        #: Resolutions made (each reads Qdrant), searches or writes retried on a new one
        #: after their collection or vector was gone, and upserts written again.
        self.resolutions = self.refreshes = self.rewrites = 0
        self._resolved: Resolved | None = None
        self._lock = threading.Lock()

    # -- resolving ---------------------------------------------------------------------------

    def resolve(self, refresh: bool = False) -> Resolved:
        """The alias's collection, vector and lineage; read from Qdrant at most every
        ``ttl_s`` seconds (by one thread at a time), or now with ``refresh``."""
        cached = self._cached()
        if cached is not None and not refresh:
            return cached
        with self._lock:
            cached = self._cached()
            if cached is not None and not refresh:  # another thread resolved it meanwhile
                return cached
            self._resolved = self._resolve()
            self.resolutions += 1
            return self._resolved

    def _cached(self) -> Resolved | None:
        found = self._resolved
        if found is not None and self.clock() - found.resolved_at < self.ttl_s:
            return found
        return None

    def _resolve(self) -> Resolved:
        started = self.clock()
        collection = self._target()
        info = self.client.get_collection(collection)
        found = (info.config.metadata or {}).get(METADATA_KEY)
        meta: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        vector = self._vector(info, collection, meta)
        lineage, lineage_from = self._lineage(collection, vector, meta)
        return Resolved(self.alias, collection, vector, lineage, lineage_from, started)

    def _target(self) -> str:
        aliases = self.client.get_aliases().aliases
        for alias in aliases:
            if alias.alias_name == self.alias:
                return alias.collection_name
        if self.client.collection_exists(self.alias):  # a plain collection name
            return self.alias
        listed = ", ".join(sorted(f"{a.alias_name} -> {a.collection_name}" for a in aliases))
        raise ServingError(
            f"Qdrant has no alias {self.alias!r} and no collection of that name. "
            f"Aliases: {listed or 'none'}."
        )

    def _vector(
        self, info: qm.CollectionInfo, collection: str, meta: Mapping[str, Any]
    ) -> str | None:
        if meta.get("active_vector"):  # in place: the switch names the served vector here
            return str(meta["active_vector"])
        if self.vector_name is not None:
            return self.vector_name
        plain = sorted(n for n, p in dense_vectors(info).items() if p.multivector_config is None)
        if len(plain) == 1:
            return plain[0] or None  # "": the unnamed vector
        raise ServingError(
            f"Collection {collection!r} has {len(plain)} dense vectors ({', '.join(plain)}): "
            "pass ServingClient(..., vector_name=...) naming the one your queries search."
        )

    def _lineage(
        self, collection: str, vector: str | None, meta: Mapping[str, Any]
    ) -> tuple[Lineage, str]:
        """The metadata's lineage, else the state store's, else the application's fallback."""
        found = _metadata_lineage(meta, vector)
        if _usable(found):
            return found, "metadata"
        recorded = self._recorded_lineage(collection, vector)
        if recorded is not None:
            return recorded, "state store"
        given = self.fallback if _usable(self.fallback) else self.fallback.get(collection)
        if isinstance(given, Mapping) and _usable(given):
            return cast(Lineage, dict(given)), "fallback"
        raise ServingError(
            f"No lineage for collection {collection!r} (alias {self.alias!r}): its metadata "
            "names no model (a collection this tool did not make, or a Qdrant server before "
            "1.16) and no migration in the state store describes it. Pass the model that made "
            f"its vectors: ServingClient(..., fallback={{{collection!r}: {{'provider': "
            "'openai', 'model': 'text-embedding-3-small', 'dimensions': 1536}})."
        )

    def _recorded_lineage(self, collection: str, vector: str | None) -> Lineage | None:
        """The newest migration of the alias that made ``collection``'s vector, or read it."""
        records = Migrations(QdrantStateStore(self.client)).all(alias=self.alias)
        for record in sorted(records, key=lambda r: r.created_at, reverse=True):
            plan = record.plan
            if plan is None:
                continue
            if (collection, vector) == (plan.target_collection, plan.new_vector):
                found = record.lineage
            elif (collection, vector) == (plan.source.collection, plan.vector_name):
                found = plan.old_lineage()
            else:
                continue
            if _usable(found):
                return found
        return None

    # -- searching and writing ---------------------------------------------------------------

    def search(
        self,
        text: str,
        *,
        limit: int = 10,
        query_filter: qm.Filter | None = None,
        search_params: qm.SearchParams | None = None,
        with_payload: bool = True,
        **query_kwargs: Any,
    ) -> Hits:
        """Embed ``text`` as a query with the resolved model, search the resolved vector of
        the resolved collection; once more on a new resolution if that collection or vector
        is gone (``query_kwargs`` go to ``query_points``)."""

        def query(resolved: Resolved, vector: list[float]) -> Hits:
            found = self.client.query_points(
                resolved.collection,
                query=vector,
                using=resolved.vector,
                limit=limit,
                query_filter=query_filter,
                search_params=search_params,
                with_payload=with_payload,
                **query_kwargs,
            )
            return Hits(found.points, resolved)

        used = self.resolve()
        vector = self.embedder.embed_queries(used.lineage, [text])[0]
        try:
            return query(used, vector)
        except (UnexpectedResponse, ValueError) as error:
            fresh = self._instead_of(used, error)
            if fresh is None:
                raise
        if not fresh.embeds_like(used):
            vector = self.embedder.embed_queries(fresh.lineage, [text])[0]
        return query(fresh, vector)

    def upsert(self, documents: Sequence[Document]) -> Written:
        """Write ``documents`` through the alias, embedded with the resolved model.

        Through the alias, because the migration protects what is written there (a write
        sent to a collection the alias has left would be taken for drift). After the
        acknowledged write the alias is resolved again: if it moved (or the active vector
        changed) while the texts were embedded, they are embedded with the model now served
        and written again, so every point ends with the vectors of the model that serves it.
        """
        texts = [d.text for d in documents]
        used = self.resolve()
        vectors = self.embedder.embed_documents(used.lineage, texts)
        for attempt in range(MAX_WRITES):
            now = self._write_and_look(used, documents, vectors)
            if attempt:
                with self._lock:
                    self.rewrites += 1
            if now.serves_like(used):
                return Written(now, rewritten=attempt > 0)
            if not now.embeds_like(used):
                vectors = self.embedder.embed_documents(now.lineage, texts)
            used = now
        raise ServingError(
            f"Alias {self.alias!r} moved {MAX_WRITES} times while {len(documents)} points were "
            "written; the migration's reconciling pass re-makes what was written in between."
        )

    def _write_and_look(
        self, used: Resolved, documents: Sequence[Document], vectors: list[list[float]]
    ) -> Resolved:
        """Write with ``used``, then the alias's resolution as of after the write."""
        text_field = str(used.lineage.get("text_field") or self.text_field)
        points = [
            qm.PointStruct(
                id=d.id,
                vector=point_vector(used.vector, v, d.vectors, {}),
                payload={**d.payload, text_field: d.text},
            )
            for d, v in zip(documents, vectors, strict=True)
        ]
        try:
            self.client.upsert(used.alias, points, wait=True)
        except (UnexpectedResponse, ValueError) as error:
            fresh = self._instead_of(used, error)
            if fresh is None:
                raise
            return fresh
        return self.resolve(refresh=True)

    def _instead_of(self, used: Resolved, error: Exception) -> Resolved | None:
        """After Qdrant refused a request made with ``used``: a new resolution when the
        refusal says the collection or vector is gone (or of another model) and the alias
        now serves something else; None when the error is the caller's to see."""
        said = error.content if isinstance(error, UnexpectedResponse) else str(error).encode()
        if not _GONE.search(said.decode(errors="replace")):
            return None
        fresh = self.resolve(refresh=True)
        if fresh.serves_like(used):
            return None
        with self._lock:
            self.refreshes += 1
        return fresh


def _metadata_lineage(meta: Mapping[str, Any], vector: str | None) -> Lineage:
    """The lineage of ``vector``: its entry in an in-place collection's ``vectors``, else the
    top level (which describes the served vector's model in both strategies)."""
    entry = (meta.get("vectors") or {}).get(vector) if vector else None
    base: Mapping[str, Any] = entry if isinstance(entry, Mapping) else meta
    switch_keys = (*SWITCH_KEYS, "role")
    return cast(Lineage, {k: v for k, v in base.items() if k not in switch_keys})
