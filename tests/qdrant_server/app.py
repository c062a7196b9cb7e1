"""A REST façade that speaks Qdrant's HTTP API, over one of two backends.

No Qdrant server binary can be installed here, so this stands in for one: qdrant-client in
REST mode (``QdrantClient(url=...)``) talks to it exactly as it talks to a server, request
bodies are parsed into ``qdrant_client.http.models`` and answers use Qdrant's envelope
(``{"result": ..., "status": "ok", "time": ...}``; errors ``{"status": {"error": ...}}``
with 400/404/409). :func:`build_app` serves any :class:`BaseFacade`:

* :class:`Facade` (this module, backend ``local``): qdrant-client's local mode
  (``:memory:`` or a path), exact search only, the bookkeeping below on top;
* :class:`tests.qdrant_server.engine.EngineFacade` (backend ``engine``): Qdrant's Rust
  engine in-process (``qdrant-edge-py``), with real HNSW indexes built in the background,
  quantization and payload indexes; see that module for what it reproduces and what not.

What :class:`Facade` adds on top of local mode, to behave like a server for the
migration's code paths:

* ``GET /`` reports a configurable version, so version-dependent branches can be tested
  (``metadata`` and ``update_filter`` need 1.16, ``update_mode`` 1.17). Fields the
  reported version does not know are refused with 400 (``strict``): a real old server may
  ignore an unknown field silently, and then insert-only would quietly become overwrite
  (or a conditional write an unconditional one); refusing makes a test notice a request
  that ignored the version.
* Collection settings local mode does not keep: shard/replication numbers, on-disk
  payload, HNSW, optimizer (``indexing_threshold``, in KB as on the server) and
  quantization configs are stored at create time and merged on ``PATCH``, and payload
  indexes created with ``PUT .../index`` appear in ``payload_schema``.
* ``indexed_vectors_count`` follows the server's rule of thumb: 0 while indexing is
  disabled (threshold 0) or the vectors are smaller than the threshold, else every vector
  (an "instant" index build).
* ``/__facade__/stats`` counts requests per route and the writes that used
  ``update_mode`` / ``update_filter`` (upserts and vector updates), and lists the points
  each upsert or vector update wrote, with when and to which collection (``writes``: what
  a test measures a write budget against, as a server's own metrics would);
  ``/__facade__/reset`` empties the store.
"""

from __future__ import annotations

import os
import time
import uuid
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pydantic_core
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, TypeAdapter, ValidationError
from qdrant_client import QdrantClient
from qdrant_client.http import models as m

TITLE = "qdrant - vector search engine"
#: The server release that introduced each request field the façade gates by version.
FIELD_SINCE: dict[str, tuple[int, int, int]] = {
    "metadata": (1, 16, 0),
    #: Conditional updates (upsert, vector updates): "available as of v1.16.0".
    "update_filter": (1, 16, 0),
    "update_mode": (1, 17, 0),
}
#: ``PUT/DELETE /collections/{name}/vectors/{vector}`` (create_vector_name).
VECTOR_NAMES_SINCE = (1, 18, 0)
DEFAULT_INDEXING_THRESHOLD_KB = 10_000
_JSON = "application/json"

#: Write requests the stats keep (the oldest are dropped beyond it).
WRITES_KEPT = 100_000

_POINT_INSERT = TypeAdapter(m.PointInsertOperations)
_POINTS_SELECTOR = TypeAdapter(m.PointsSelector)
_VECTOR_NAME_CONFIG = TypeAdapter(m.VectorNameConfig)


class ApiError(Exception):
    """An error answered in Qdrant's envelope."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_version(version: str) -> tuple[int, int, int]:
    parts = [int(p) for p in version.split("-")[0].split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return (parts[0], parts[1], parts[2])


def merge_diff(base: BaseModel, diff: BaseModel | None) -> Any:
    """``base`` with the fields ``diff`` sets (server semantics of a *Diff object)."""
    if diff is None:
        return base.model_copy(deep=True)
    update = {
        k: v for k, v in diff.model_dump(exclude_none=True).items() if k in type(base).model_fields
    }
    merged = base.model_dump() | update
    threads = merged.get("max_optimization_threads")
    if threads is not None and not isinstance(threads, int):
        merged["max_optimization_threads"] = None  # "auto"
    return type(base).model_validate(merged)


@dataclass
class CollectionSettings:
    """What a backend's store does not keep about a collection, as a server reports it."""

    params: dict[str, Any]
    hnsw: m.HnswConfig
    optimizer: m.OptimizersConfig
    quantization: Any = None
    payload_schema: dict[str, m.PayloadIndexInfo] = field(default_factory=dict)

    @classmethod
    def create(cls, body: m.CreateCollection) -> CollectionSettings:
        """The server's defaults, overridden by what ``body`` sets."""
        hnsw = m.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10_000)
        optimizer = m.OptimizersConfig(
            deleted_threshold=0.2,
            vacuum_min_vector_number=1000,
            default_segment_number=0,
            indexing_threshold=DEFAULT_INDEXING_THRESHOLD_KB,
            flush_interval_sec=5,
        )
        params = {
            "shard_number": body.shard_number or 1,
            "replication_factor": body.replication_factor or 1,
            "write_consistency_factor": body.write_consistency_factor or 1,
            "on_disk_payload": True if body.on_disk_payload is None else body.on_disk_payload,
        }
        return cls(
            params=params,
            hnsw=merge_diff(hnsw, body.hnsw_config),
            optimizer=merge_diff(optimizer, body.optimizers_config),
            quantization=body.quantization_config,
        )

    def update(self, body: m.UpdateCollection) -> None:
        """Merge a PATCH: optimizer and HNSW diffs, params, quantization (``Disabled``: none)."""
        self.optimizer = merge_diff(self.optimizer, body.optimizers_config)
        self.hnsw = merge_diff(self.hnsw, body.hnsw_config)
        if body.params is not None:
            for key, value in body.params.model_dump(exclude_none=True).items():
                if key in self.params:
                    self.params[key] = value
        if body.quantization_config is not None:
            disabled = isinstance(body.quantization_config, m.Disabled)
            self.quantization = None if disabled else body.quantization_config

    def add_index(self, field_name: str, schema: m.PayloadFieldSchema | None) -> None:
        """Record a payload index as ``payload_schema`` reports it (``points`` filled in later)."""
        if schema is None:
            raise ApiError(400, "Wrong input: field_schema is required")
        if isinstance(schema, m.PayloadSchemaType):
            info = m.PayloadIndexInfo(data_type=schema, points=0)
        else:  # an index with params: its type names the schema type
            info = m.PayloadIndexInfo(
                data_type=m.PayloadSchemaType(schema.type.value), params=schema, points=0
            )
        self.payload_schema[field_name] = info


class BaseFacade(ABC):
    """A backend of the façade: one method per route :func:`build_app` serves.

    What every backend shares lives here: the reported version and the gating of newer
    fields, request counters (``/__facade__/stats``), operation ids. A backend is one
    subclass; ``tests.qdrant_server.server.BACKENDS`` names them.
    """

    #: The name ``running_server(backend=...)`` and ``/__facade__/stats`` use.
    backend: ClassVar[str]

    def __init__(self, *, version: str, strict: bool = True) -> None:
        self.version = version
        self.version_tuple = parse_version(version)
        self.strict = strict
        self.stats: Counter[str] = Counter()
        #: ``(epoch seconds, collection, points)`` of every upsert and vector update.
        self.writes: deque[tuple[float, str, int]] = deque(maxlen=WRITES_KEPT)
        self._operation_id = 0

    # -- helpers -------------------------------------------------------------------------

    def gate(self, name: str, value: Any) -> None:
        """Refuse a field the reported server version does not know (when strict)."""
        since = FIELD_SINCE[name]
        if value is not None and self.strict and self.version_tuple < since:
            raise ApiError(
                400,
                f"Format error in JSON body: unknown field `{name}` "
                f"(introduced in Qdrant {'.'.join(map(str, since))}, this server is "
                f"{self.version})",
            )

    def count_conditional(self, kind: str, update_mode: Any, update_filter: Any) -> None:
        """Count a write that carried ``update_mode`` / ``update_filter`` (after gating)."""
        if update_mode is not None:
            self.stats[f"{kind}.update_mode.{update_mode.value}"] += 1
        if update_filter is not None:
            self.stats[f"{kind}.update_filter"] += 1

    def log_write(self, collection: str, points: int) -> None:
        """Note the points a write request carried (the alias resolved to its collection)."""
        self.writes.append((time.time(), collection, points))

    def _completed(self) -> m.UpdateResult:
        self._operation_id += 1
        return m.UpdateResult(operation_id=self._operation_id, status=m.UpdateStatus.COMPLETED)

    # -- service -------------------------------------------------------------------------

    def root(self) -> dict[str, Any]:
        return {"title": TITLE, "version": self.version, "commit": None}

    def report(self) -> dict[str, Any]:
        import psutil

        rss = psutil.Process(os.getpid()).memory_info().rss
        return {
            "version": self.version,
            "backend": self.backend,
            "rss_bytes": rss,
            "counts": dict(self.stats),
            "writes": [list(write) for write in self.writes],
        }

    def require_vector_names(self) -> None:
        """Adding and deleting named vectors is new in 1.18: older servers have no route."""
        if self.version_tuple < VECTOR_NAMES_SINCE:
            raise ApiError(404, "Not Found")

    def create_vector_name(self, name: str, vector: str, body: Any) -> m.UpdateResult:
        raise ApiError(400, f"Wrong input: the {self.backend} backend cannot add vectors")

    def delete_vector_name(self, name: str, vector: str) -> m.UpdateResult:
        raise ApiError(400, f"Wrong input: the {self.backend} backend cannot delete vectors")

    def query_batch(self, name: str, body: m.QueryRequestBatch) -> list[m.QueryResponse]:
        return [self.query(name, request) for request in body.searches]

    @abstractmethod
    def close(self) -> None:
        """Release what the backend holds (files, threads): the process is about to end."""

    # -- routes --------------------------------------------------------------------------

    @abstractmethod
    def list_collections(self) -> m.CollectionsResponse: ...

    @abstractmethod
    def collection_exists(self, name: str) -> m.CollectionExistence: ...

    @abstractmethod
    def get_collection(self, name: str) -> m.CollectionInfo: ...

    @abstractmethod
    def create_collection(self, name: str, body: m.CreateCollection) -> bool: ...

    @abstractmethod
    def update_collection(self, name: str, body: m.UpdateCollection) -> bool: ...

    @abstractmethod
    def delete_collection(self, name: str) -> bool: ...

    @abstractmethod
    def list_aliases(self) -> m.CollectionsAliasesResponse: ...

    @abstractmethod
    def collection_aliases(self, name: str) -> m.CollectionsAliasesResponse: ...

    @abstractmethod
    def update_aliases(self, body: m.ChangeAliasesOperation) -> bool: ...

    @abstractmethod
    def create_index(self, name: str, body: m.CreateFieldIndex) -> m.UpdateResult: ...

    @abstractmethod
    def delete_index(self, name: str, field_name: str) -> m.UpdateResult: ...

    @abstractmethod
    def upsert(self, name: str, body: m.PointsList | m.PointsBatch) -> m.UpdateResult: ...

    @abstractmethod
    def update_vectors(self, name: str, body: m.UpdateVectors) -> m.UpdateResult: ...

    @abstractmethod
    def set_payload(self, name: str, body: m.SetPayload) -> m.UpdateResult: ...

    @abstractmethod
    def overwrite_payload(self, name: str, body: m.SetPayload) -> m.UpdateResult: ...

    @abstractmethod
    def delete_points(self, name: str, selector: Any) -> m.UpdateResult: ...

    @abstractmethod
    def retrieve(self, name: str, body: m.PointRequest) -> list[m.Record]: ...

    @abstractmethod
    def get_point(self, name: str, point_id: str) -> m.Record: ...

    @abstractmethod
    def scroll(self, name: str, body: m.ScrollRequest) -> m.ScrollResult: ...

    @abstractmethod
    def count(self, name: str, body: m.CountRequest) -> m.CountResult: ...

    @abstractmethod
    def query(self, name: str, body: m.QueryRequest) -> m.QueryResponse: ...

    @abstractmethod
    def reset(self) -> bool:
        """Drop every collection and alias, and zero the request counters."""


class Facade(BaseFacade):
    """Backend ``local``: qdrant-client's local mode plus the server-side bookkeeping."""

    backend = "local"

    def __init__(self, *, version: str, path: str | None = None, strict: bool = True) -> None:
        super().__init__(version=version, strict=strict)
        self.path = path
        self.client = QdrantClient(path=path) if path else QdrantClient(":memory:")
        self.settings: dict[str, CollectionSettings] = {}
        #: Per collection, its ids in Qdrant's order (and their sort keys), built on the first
        #: unfiltered scroll after a write: local mode sorts every id on every scroll call,
        #: which makes a full scroll quadratic; a server pages in O(log n + limit).
        self._order: dict[str, tuple[list[tuple[str, int]], list[Any]]] = {}

    # -- helpers -------------------------------------------------------------------------

    def resolve(self, name: str) -> str:
        """The collection behind ``name`` (a collection or an alias), or 404."""
        for alias in self.client.get_aliases().aliases:
            if alias.alias_name == name:
                return str(alias.collection_name)
        if self.client.collection_exists(name):  # local mode also says yes for an alias
            return name
        raise ApiError(404, f"Not found: Collection `{name}` doesn't exist!")

    def _settings_of(self, name: str) -> CollectionSettings:
        if name not in self.settings:  # created before the façade started (a path store)
            self.settings[name] = CollectionSettings.create(m.CreateCollection())
        return self.settings[name]

    # -- collections ---------------------------------------------------------------------

    def list_collections(self) -> m.CollectionsResponse:
        return self.client.get_collections()

    def collection_exists(self, name: str) -> m.CollectionExistence:
        return m.CollectionExistence(exists=self.client.collection_exists(name))

    def get_collection(self, name: str) -> m.CollectionInfo:
        real = self.resolve(name)
        info = self.client.get_collection(real)
        extra = self._settings_of(real)
        config = info.config
        for key, value in extra.params.items():
            setattr(config.params, key, value)
        config.hnsw_config = extra.hnsw.model_copy()
        config.optimizer_config = extra.optimizer.model_copy()
        config.quantization_config = extra.quantization
        if self.version_tuple < FIELD_SINCE["metadata"]:
            config.metadata = None
        points = info.points_count or 0
        info.payload_schema = {
            key: index.model_copy(update={"points": points})
            for key, index in extra.payload_schema.items()
        }
        info.indexed_vectors_count = self._indexed(info, extra.optimizer, points)
        return info

    @staticmethod
    def _indexed(info: m.CollectionInfo, optimizer: m.OptimizersConfig, points: int) -> int:
        threshold_kb = optimizer.indexing_threshold or 0
        vectors = info.config.params.vectors
        sizes = (
            [vectors.size]
            if isinstance(vectors, m.VectorParams)
            else [v.size for v in (vectors or {}).values()]
        )
        vector_kb = points * sum(sizes) * 4 / 1024
        return points if threshold_kb and sizes and vector_kb >= threshold_kb else 0

    def create_collection(self, name: str, body: m.CreateCollection) -> bool:
        self.gate("metadata", body.metadata)
        if self.client.collection_exists(name):
            raise ApiError(409, f"Wrong input: Collection `{name}` already exists!")
        self.client.create_collection(
            name,
            vectors_config=body.vectors,
            sparse_vectors_config=body.sparse_vectors,
            metadata=body.metadata,
        )
        self.settings[name] = CollectionSettings.create(body)
        self._order.pop(name, None)
        return True

    def update_collection(self, name: str, body: m.UpdateCollection) -> bool:
        self.gate("metadata", body.metadata)
        real = self.resolve(name)
        self.client.update_collection(
            real, sparse_vectors_config=body.sparse_vectors, metadata=body.metadata
        )
        self._settings_of(real).update(body)
        return True

    def delete_collection(self, name: str) -> bool:
        deleted = self.client.delete_collection(name)
        self.settings.pop(name, None)
        self._order.pop(name, None)
        return bool(deleted)

    # -- aliases -------------------------------------------------------------------------

    def list_aliases(self) -> m.CollectionsAliasesResponse:
        return self.client.get_aliases()

    def collection_aliases(self, name: str) -> m.CollectionsAliasesResponse:
        return self.client.get_collection_aliases(self.resolve(name))

    def update_aliases(self, body: m.ChangeAliasesOperation) -> bool:
        for action in body.actions:
            if isinstance(action, m.CreateAliasOperation):
                self.resolve(action.create_alias.collection_name)
        return bool(self.client.update_collection_aliases(change_aliases_operations=body.actions))

    # -- payload indexes -----------------------------------------------------------------

    def create_index(self, name: str, body: m.CreateFieldIndex) -> m.UpdateResult:
        real = self.resolve(name)
        self._settings_of(real).add_index(body.field_name, body.field_schema)
        if isinstance(body.field_schema, m.TextIndexParams):  # local mode scores text matches
            self.client.create_payload_index(real, body.field_name, field_schema=body.field_schema)
        return self._completed()

    def delete_index(self, name: str, field_name: str) -> m.UpdateResult:
        real = self.resolve(name)
        self._settings_of(real).payload_schema.pop(field_name, None)
        return self._completed()

    # -- points --------------------------------------------------------------------------

    def upsert(self, name: str, body: m.PointsList | m.PointsBatch) -> m.UpdateResult:
        self.gate("update_mode", body.update_mode)
        self.gate("update_filter", body.update_filter)
        real = self.resolve(name)
        points: Any = body.points if isinstance(body, m.PointsList) else body.batch
        self.count_conditional("upsert", body.update_mode, body.update_filter)
        self.log_write(real, written_points(body))
        self.client.upsert(
            real, points, update_filter=body.update_filter, update_mode=body.update_mode
        )
        self._order.pop(real, None)
        return self._completed()

    def create_vector_name(self, name: str, vector: str, body: Any) -> m.UpdateResult:
        self.require_vector_names()
        self.client.create_vector_name(self.resolve(name), vector, body)
        return self._completed()

    def delete_vector_name(self, name: str, vector: str) -> m.UpdateResult:
        self.require_vector_names()
        self.client.delete_vector_name(self.resolve(name), vector)
        return self._completed()

    def update_vectors(self, name: str, body: m.UpdateVectors) -> m.UpdateResult:
        """Replace the given vectors of existing points (only where ``update_filter`` matches)."""
        self.gate("update_filter", body.update_filter)
        self.count_conditional("update_vectors", None, body.update_filter)
        self.log_write(self.resolve(name), len(body.points))
        self.client.update_vectors(
            self.resolve(name), body.points, update_filter=body.update_filter
        )
        return self._completed()

    def set_payload(self, name: str, body: m.SetPayload) -> m.UpdateResult:
        selector: Any = body.points if body.points is not None else body.filter
        self.client.set_payload(self.resolve(name), body.payload, selector, key=body.key)
        return self._completed()

    def overwrite_payload(self, name: str, body: m.SetPayload) -> m.UpdateResult:
        selector: Any = body.points if body.points is not None else body.filter
        self.client.overwrite_payload(self.resolve(name), body.payload, selector)
        return self._completed()

    def delete_points(self, name: str, selector: Any) -> m.UpdateResult:
        real = self.resolve(name)
        self.client.delete(real, points_selector=selector)
        self._order.pop(real, None)
        return self._completed()

    def retrieve(self, name: str, body: m.PointRequest) -> list[m.Record]:
        found: list[m.Record] = self.client.retrieve(
            self.resolve(name),
            body.ids,
            with_payload=True if body.with_payload is None else body.with_payload,
            with_vectors=False if body.with_vector is None else body.with_vector,
        )
        return found

    def get_point(self, name: str, point_id: str) -> m.Record:
        key: int | str = int(point_id) if point_id.isdigit() else point_id
        found = self.client.retrieve(self.resolve(name), [key], with_vectors=True)
        if not found:
            raise ApiError(404, f"Not found: No point with id {point_id} found")
        return found[0]

    def scroll(self, name: str, body: m.ScrollRequest) -> m.ScrollResult:
        real = self.resolve(name)
        limit = 10 if body.limit is None else body.limit
        with_payload = True if body.with_payload is None else body.with_payload
        with_vectors = False if body.with_vector is None else body.with_vector
        if body.filter is not None or body.order_by is not None:
            points, next_offset = self.client.scroll(
                real,
                scroll_filter=body.filter,
                limit=limit,
                order_by=body.order_by,
                offset=body.offset,
                with_payload=with_payload,
                with_vectors=with_vectors,
            )
            return m.ScrollResult(points=points, next_page_offset=next_offset)
        keys, ids = self._id_order(real)
        start = 0 if body.offset is None else bisect_left(keys, _id_key(body.offset))
        page = ids[start : start + limit + 1]
        points = self.client.retrieve(
            real, page[:limit], with_payload=with_payload, with_vectors=with_vectors
        )
        return m.ScrollResult(
            points=points, next_page_offset=page[limit] if len(page) > limit else None
        )

    def _id_order(self, real: str) -> tuple[list[tuple[str, int]], list[Any]]:
        if real not in self._order:
            total = self.client.count(real, exact=True).count
            points, _ = self.client.scroll(real, limit=max(total, 1), with_payload=False)
            ids = [p.id for p in points]
            self._order[real] = ([_id_key(i) for i in ids], ids)
        return self._order[real]

    def count(self, name: str, body: m.CountRequest) -> m.CountResult:
        return self.client.count(
            self.resolve(name), count_filter=body.filter, exact=body.exact is not False
        )

    def query(self, name: str, body: m.QueryRequest) -> m.QueryResponse:
        return self.client.query_points(
            self.resolve(name),
            query=body.query,
            using=body.using,
            prefetch=body.prefetch,
            query_filter=body.filter,
            search_params=body.params,
            limit=10 if body.limit is None else body.limit,
            offset=body.offset,
            with_payload=False if body.with_payload is None else body.with_payload,
            with_vectors=False if body.with_vector is None else body.with_vector,
            score_threshold=body.score_threshold,
            lookup_from=body.lookup_from,
        )

    # -- the façade's own ----------------------------------------------------------------

    def reset(self) -> bool:
        for alias in self.client.get_aliases().aliases:
            self.client.update_collection_aliases(
                change_aliases_operations=[
                    m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias.alias_name))
                ]
            )
        for collection in self.client.get_collections().collections:
            self.client.delete_collection(collection.name)
        self.settings.clear()
        self.stats.clear()
        self.writes.clear()
        self._order.clear()
        return True

    def close(self) -> None:
        self.client.close()


def _id_key(point_id: Any) -> tuple[str, int]:
    """Qdrant's id order (local mode's too): integers first, then UUIDs in canonical form."""
    if isinstance(point_id, int):
        return ("", point_id)
    return (str(uuid.UUID(str(point_id))), 0)


# -- HTTP ------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


def _ok(result: Any, started: float) -> Response:
    body = b'{"result":%s,"status":"ok","time":%s}' % (
        pydantic_core.to_json(result),
        f"{time.perf_counter() - started:.6f}".encode(),
    )
    return Response(body, media_type=_JSON)


def _error(status: int, message: str, started: float) -> Response:
    payload = {"status": {"error": message}, "time": time.perf_counter() - started}
    return Response(pydantic_core.to_json(payload), status_code=status, media_type=_JSON)


def _parse(model: Any, raw: bytes) -> Any:
    if isinstance(model, TypeAdapter):
        return model.validate_json(raw or b"{}")
    return model.model_validate_json(raw or b"{}")


def written_points(body: m.PointsList | m.PointsBatch) -> int:
    return len(body.points) if isinstance(body, m.PointsList) else len(body.batch.ids)


def build_app(facade: BaseFacade) -> FastAPI:
    """The FastAPI app serving ``facade`` (routes are added in the order of Qdrant's API)."""
    app = FastAPI(title="qdrant REST façade", openapi_url=None, docs_url=None, redoc_url=None)

    def route(method: str, path: str, action: Callable[..., Any], body: Any = None) -> None:
        key = f"{method} {path}"

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            facade.stats[key] += 1
            try:
                args = list(request.path_params.values())
                if body is not None:
                    args.append(_parse(body, await request.body()))
                return _ok(action(*args), started)
            except ApiError as err:
                return _error(err.status, err.message, started)
            except ValidationError as err:
                return _error(400, f"Format error in JSON body: {err}", started)
            except ValueError as err:  # local mode's wording for a bad request
                status = 404 if "not found" in str(err).lower() else 400
                return _error(status, f"Wrong input: {err}", started)

        app.add_api_route(path, endpoint, methods=[method], name=key)

    async def root(request: Request) -> Response:  # the one answer without an envelope
        facade.stats["GET /"] += 1
        return Response(pydantic_core.to_json(facade.root()), media_type=_JSON)

    app.add_api_route("/", root, methods=["GET"])
    for probe in ("/healthz", "/livez", "/readyz"):
        app.add_api_route(probe, _probe, methods=["GET"])
    route("GET", "/collections", facade.list_collections)
    route("GET", "/aliases", facade.list_aliases)
    route("POST", "/collections/aliases", facade.update_aliases, m.ChangeAliasesOperation)
    route("GET", "/collections/{collection_name}", facade.get_collection)
    route("PUT", "/collections/{collection_name}", facade.create_collection, m.CreateCollection)
    route("PATCH", "/collections/{collection_name}", facade.update_collection, m.UpdateCollection)
    route("DELETE", "/collections/{collection_name}", facade.delete_collection)
    route("GET", "/collections/{collection_name}/exists", facade.collection_exists)
    route("GET", "/collections/{collection_name}/aliases", facade.collection_aliases)
    route("PUT", "/collections/{collection_name}/index", facade.create_index, m.CreateFieldIndex)
    route("DELETE", "/collections/{collection_name}/index/{field_name}", facade.delete_index)
    route("PUT", "/collections/{collection_name}/points", facade.upsert, _POINT_INSERT)
    route("POST", "/collections/{collection_name}/points", facade.retrieve, m.PointRequest)
    route("POST", "/collections/{collection_name}/points/scroll", facade.scroll, m.ScrollRequest)
    route("POST", "/collections/{collection_name}/points/count", facade.count, m.CountRequest)
    route("POST", "/collections/{collection_name}/points/query", facade.query, m.QueryRequest)
    route(
        "POST",
        "/collections/{collection_name}/points/query/batch",
        facade.query_batch,
        m.QueryRequestBatch,
    )
    route(
        "POST",
        "/collections/{collection_name}/points/delete",
        facade.delete_points,
        _POINTS_SELECTOR,
    )
    route(
        "PUT",
        "/collections/{collection_name}/points/vectors",
        facade.update_vectors,
        m.UpdateVectors,
    )
    route("POST", "/collections/{collection_name}/points/payload", facade.set_payload, m.SetPayload)
    route(
        "PUT",
        "/collections/{collection_name}/points/payload",
        facade.overwrite_payload,
        m.SetPayload,
    )
    route("GET", "/collections/{collection_name}/points/{point_id}", facade.get_point)
    route(
        "PUT",
        "/collections/{collection_name}/vectors/{vector_name}",
        facade.create_vector_name,
        _VECTOR_NAME_CONFIG,
    )
    route(
        "DELETE", "/collections/{collection_name}/vectors/{vector_name}", facade.delete_vector_name
    )
    route("POST", "/__facade__/reset", facade.reset)
    route("GET", "/__facade__/stats", facade.report)
    hold = getattr(facade, "hold_indexing", None)
    if hold is not None:  # the engine backend builds indexes; a test may hold them
        from tests.qdrant_server.engine import IndexingHold

        route("POST", "/__facade__/indexing", hold, IndexingHold)
    return app


async def _probe(request: Request) -> Response:
    return Response(b"healthz check passed", media_type="text/plain")
