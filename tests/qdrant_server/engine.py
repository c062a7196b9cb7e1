"""Backend ``engine`` of the Qdrant façade: Qdrant's Rust engine in-process (qdrant-edge-py).

Each collection is one ``qdrant_edge.EdgeShard`` (segments, WAL, payload indexes, HNSW,
quantization, the optimizer) in a directory under a temporary root. A shard has no
collections, aliases or metadata, so :class:`EngineFacade` keeps those itself, with the
configuration the server reports (params, HNSW, optimizer, quantization, payload schema),
and translates requests with :mod:`tests.qdrant_server.edge_models`.

**Indexing for real.** The engine builds HNSW (and quantizes) only when ``optimize()``
runs, and honours ``indexing_threshold`` (KB, as the server; 0 disables indexing).
:class:`Indexer` is the façade's optimizer: a thread that builds a collection's index once
the vectors written since its last build exceed the threshold (or its HNSW/quantization
changed) and its writes pause. ``optimize()`` holds the GIL for the whole build, which
would freeze the façade's event loop, so :class:`LiveShard` builds on a copy in a child
process and swaps the result in, replaying the writes made meanwhile: reads and writes go
on during the build (requests wait only while the folder is copied, sparse, and while the
result is opened and the writes replayed: tens of ms for thousands of points).
``get_collection`` reports ``yellow`` while a build is due or running and ``green`` after,
with ``indexed_vectors_count`` and ``points_count`` from the engine's ``info()``.
Approximate search (``exact=False``) uses that HNSW graph and its ``hnsw_ef``;
``exact=True`` is brute force; small segments (below ``full_scan_threshold`` KB) are
searched exactly, as on a server.

Supported: collections with dense (named or unnamed, multi-vector), sparse or no vectors;
create/PATCH of HNSW, optimizers, quantization (scalar, binary, product, TurboQuant, per
collection or per vector; a PATCH reopens the shard with the new config and the next build
re-indexes), metadata (merged), params; aliases (create/delete/rename, atomic); payload
indexes (reported in ``payload_schema`` with the engine's point counts); upsert (list or
batch, ``update_mode``, ``update_filter``), vector updates (``update_filter``), set /
overwrite payload and delete (by ids or filter), retrieve, get point, scroll (Qdrant's id
order and ``next_page_offset``; ``order_by`` with a range index), count, query (nearest
dense or sparse with ``using``, random sample, prefetch + fusion, order by, ``params``
``exact`` / ``hnsw_ef`` / quantization, filter, offset, score threshold) and query batch.
Filters: must / should / must_not / min_should, nested filters, match value / any /
except / text / phrase, range and datetime range, values count, geo, has id, has vector,
is empty, is null, nested conditions. Version gating and ``/__facade__/stats`` /
``/__facade__/reset`` are shared with the local backend (:class:`~tests.qdrant_server.app.
BaseFacade`); stats add ``builds`` (each finished index build: points, indexed vectors,
seconds, writes replayed) and ``building`` (collections being indexed now).

What a real server does that this backend does not reproduce:

* one shard per collection: ``shard_number``, replication and write consistency are
  reported as configured but change nothing; there are no shard keys, no cluster, no
  snapshots, no strict mode, no WAL settings (``wal_config`` is reported as a default);
  nothing survives the façade's process (its shards live in a temporary folder);
* the optimizer runs only in :class:`Indexer`: builds start after writes pause (or 2 s
  into a steady stream), one collection at a time, and a build copies the collection's
  files first; ``flush_interval_sec``, ``max_optimization_threads`` and the memmap
  threshold are ignored, and vacuum / merges happen only as part of a build;
* "un-indexed" is estimated from the vectors written since the last build: points that a
  payload update moves out of an indexed segment (copy-on-write) do not count until the
  next write, and ``indexed_vectors_count`` is the engine's (it includes sparse vectors
  and, until a vacuum, deleted ones: it can exceed ``points_count``, as on a server);
* payload floats can come back one ulp off (about 15% of full-precision timestamps such
  as ``time.time()``): the engine parses JSON numbers with a fast parser that is not
  always correctly rounded; integers and short decimals are exact;
* status is ``green`` or ``yellow`` only (never ``grey`` or ``red``); a failed build is
  logged to stderr and leaves the collection as it was;
* on-disk / ``memory`` placement is passed on where the engine takes it, but the façade
  keeps everything on the local disk and in its own RAM, so memory figures differ;
* inference (``Document``/``Image`` inputs), query by point id, MMR, recommend /
  discover / context / formula queries, ``lookup_from``, facets, creating or deleting
  named vectors on an existing collection, and index params with stopwords, stemmers or
  text scoring (created with the engine's defaults) are refused with 400 or ignored.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as edge
from pydantic import BaseModel
from qdrant_client.http import models as m

from tests.qdrant_server.app import (
    FIELD_SINCE,
    ApiError,
    BaseFacade,
    CollectionSettings,
    merge_diff,
    written_points,
)
from tests.qdrant_server.edge_models import (
    HIDDEN_VECTOR,
    batch_rows,
    dense_names,
    enum_of,
    filter_in,
    hnsw_in,
    id_out,
    index_schema_in,
    optimizers_in,
    order_by_in,
    point_id,
    point_ids,
    point_vectors_in,
    points_in,
    quantization_in,
    query_request_in,
    record_out,
    scored_out,
    sparse_params_in,
    vector_params_in,
    with_payload_in,
    with_vector_in,
)

T = TypeVar("T")

#: A build starts once a collection's writes have paused this long...
QUIET_S = 0.2
#: ... or once a build has been due this long, however busy the writes.
MAX_DELAY_S = 2.0
#: Bytes per dimension of each vector datatype (the threshold counts stored vectors).
_DATATYPE_BYTES = {m.Datatype.FLOAT16: 2, m.Datatype.UINT8: 1}

#: The child process that builds an index: open the copy, optimize, report.
_BUILD = """\
import json, sys, time
from qdrant_edge import EdgeShard
started = time.perf_counter()
shard = EdgeShard.load(sys.argv[1])
optimized = shard.optimize()
shard.flush()
info = shard.info()
shard.close()
print(json.dumps({"optimized": optimized, "points": info.points_count,
                  "indexed": info.indexed_vectors_count,
                  "seconds": round(time.perf_counter() - started, 3)}))
"""


def engine_call(call: Callable[[], T]) -> T:
    """Run an engine call; its errors become the server's 400 / 404 answers."""
    try:
        return call()
    except ApiError:
        raise
    except Exception as err:  # the engine raises plain Exception (and ValueError) with text
        if type(err) is not Exception and not isinstance(err, ValueError):
            raise
        message = str(err)
        if message.startswith("No point with id"):
            raise ApiError(404, f"Not found: {message} found") from err
        raise ApiError(400, f"Wrong input: {message}") from err


def _copy_sparse(source: Path, target: Path) -> None:
    """Copy a shard's folder, keeping its files sparse (WAL and storage are preallocated:
    ~130 MB apparent for a few MB of data, which a plain copy would write out)."""
    try:
        subprocess.run(["cp", "-a", "--sparse=always", str(source), str(target)], check=True)
    except (OSError, subprocess.CalledProcessError):  # no GNU cp: a plain, slower copy
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


@dataclass
class _Build:
    """An index build in progress: the copy it works on, and the writes made since."""

    directory: Path
    config_version: int
    #: The config the copy was made under (a vector added or removed since is replayed).
    config: edge.EdgeConfig | None = None
    log: list[edge.UpdateOperation] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None


class LiveShard:
    """One collection's ``EdgeShard`` that stays readable and writable while its index builds.

    Every call into the engine holds :attr:`lock`: the engine takes one writer at a time,
    and a swap must see no write in between. :meth:`build` (the indexer's thread) holds it
    only to copy and to swap, not while the child process optimizes.
    """

    def __init__(self, home: Path, config: edge.EdgeConfig) -> None:
        self.home = home
        self.lock = threading.RLock()
        self.config = config
        self.config_version = 0
        self._generation = 0
        self.directory = home / "0"
        self.shard = engine_call(lambda: edge.EdgeShard.create(str(self.directory), config))
        #: KB of dense vectors written since the last build's copy, per vector name.
        self.unindexed_kb: dict[str, float] = {}
        self.unindexed_since: float | None = None
        self.last_write = 0.0
        #: HNSW or quantization changed under an index: the next build redoes it.
        self.stale = False
        #: Some build indexed something (a config change then needs a rebuild).
        self.indexed = False
        self.building: _Build | None = None
        self.closed = False

    # -- use -----------------------------------------------------------------------------

    def read(self, call: Callable[[edge.EdgeShard], T]) -> T:
        with self.lock:
            return engine_call(lambda: call(self.shard))

    def write(self, operation: edge.UpdateOperation, kb: dict[str, float] | None = None) -> None:
        with self.lock:
            engine_call(lambda: self.shard.update(operation))
            if self.building is not None:
                self.building.log.append(operation)
            now = time.monotonic()
            self.last_write = now
            for name, written in (kb or {}).items():
                self.unindexed_kb[name] = self.unindexed_kb.get(name, 0.0) + written
                self.unindexed_since = self.unindexed_since or now

    def change_vectors(self, operation: edge.UpdateOperation, config: edge.EdgeConfig) -> None:
        """Add or delete a named vector: an operation of the shard (replayed into a build)."""
        with self.lock:
            self.write(operation)
            self.config = config
            self.config_version += 1

    def reconfigure(self, config: edge.EdgeConfig, *, reindex: bool) -> None:
        """Reopen the shard with ``config`` (persisted); a build then applies it."""
        with self.lock:
            self.shard.close()
            try:
                self.shard = engine_call(lambda: edge.EdgeShard.load(str(self.directory), config))
            except ApiError:
                self.shard = edge.EdgeShard.load(str(self.directory), self.config)
                raise
            self.config = config
            self.config_version += 1
            if reindex and (self.indexed or self.building is not None):
                self.stale = True
                self.unindexed_since = self.unindexed_since or time.monotonic()

    # -- indexing ------------------------------------------------------------------------

    @property
    def threshold_kb(self) -> int:
        optimizers = self.config.optimizers
        threshold = optimizers.indexing_threshold if optimizers is not None else None
        return 0 if threshold is None else threshold

    def due(self) -> bool:
        """An index build is due: HNSW/quantization changed, or enough new vectors."""
        threshold = self.threshold_kb
        if self.closed or threshold <= 0:
            return False
        return self.stale or max(self.unindexed_kb.values(), default=0.0) >= threshold

    @property
    def busy(self) -> bool:
        """Optimizing, as ``status: yellow`` says: a build is running or due."""
        return self.building is not None or self.due()

    def ready_to_build(self, now: float) -> bool:
        if self.building is not None or not self.due():
            return False
        waited = now - (self.unindexed_since or now)
        return now - self.last_write >= QUIET_S or waited >= MAX_DELAY_S

    def build(self, record: Callable[[dict[str, Any]], None]) -> None:
        """Build the index on a copy in a child process, then swap it in (indexer thread).

        ``record`` gets the build's report before the collection turns green. What was due
        is taken by this build, failed or not: a failure is not retried in a loop, the next
        writes make a build due again.
        """
        with self.lock:
            if self.closed or self.building is not None or not self.due():
                return
            self.unindexed_kb, self.unindexed_since = {}, None
            engine_call(self.shard.flush)
            self._generation += 1
            target = self.home / str(self._generation)
            _copy_sparse(self.directory, target)
            build = self.building = _Build(target, self.config_version, self.config)
        started = time.perf_counter()
        try:
            build.process = subprocess.Popen(
                [sys.executable, "-c", _BUILD, str(target)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            out, err = build.process.communicate()  # waits without the GIL
            with self.lock:
                if self.closed:
                    return
                if build.process.returncode != 0:
                    raise RuntimeError(f"index build failed: {err.strip()[-2000:]}")
                self._swap(build)
                report = json.loads(out)
                report["wall_seconds"] = round(time.perf_counter() - started, 3)
                report["replayed"] = len(build.log)
                self.indexed = self.indexed or bool(report["optimized"])
                record(report)
        finally:
            with self.lock:
                self.building = None
                if build.config_version == self.config_version:
                    self.stale = False
            if self.directory != target:
                shutil.rmtree(target, ignore_errors=True)

    def _swap(self, build: _Build) -> None:
        """Open the optimized copy with the current config, replay, and serve it (locked)."""
        try:
            fresh = edge.EdgeShard.load(str(build.directory), self.config)
        except Exception:  # a vector was added or deleted during the build: replayed below
            fresh = edge.EdgeShard.load(str(build.directory), build.config)
        try:
            for operation in build.log:
                fresh.update(operation)
        except Exception:
            fresh.close()
            raise
        old, old_directory = self.shard, self.directory
        self.shard, self.directory = fresh, build.directory
        old.close()
        shutil.rmtree(old_directory, ignore_errors=True)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.building is not None and self.building.process is not None:
                self.building.process.kill()
            self.shard.close()
        shutil.rmtree(self.home, ignore_errors=True)


class IndexingHold(BaseModel):
    """``POST /__facade__/indexing`` body."""

    hold: bool


class Indexer(threading.Thread):
    """The façade's optimizer: builds each collection's index when one is due."""

    def __init__(
        self,
        shards: Callable[[], list[tuple[str, LiveShard]]],
        on_build: Callable[[str, dict[str, Any]], None],
    ) -> None:
        super().__init__(name="qdrant-facade-indexer", daemon=True)
        self.shards = shards
        self.on_build = on_build
        self.stopped = threading.Event()
        #: Set by a test to keep builds waiting (the collections stay yellow meanwhile).
        self.held = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(QUIET_S / 2):
            if self.held.is_set():
                continue
            for name, shard in self.shards():
                if self.stopped.is_set():
                    return
                if not shard.ready_to_build(time.monotonic()):
                    continue
                try:
                    shard.build(partial(self.on_build, name))
                except Exception:  # keep indexing the others; the error goes to stderr
                    traceback.print_exc()

    def stop(self) -> None:
        self.stopped.set()


@dataclass
class _Collection:
    """What the façade keeps about a collection; the points live in :attr:`shard`."""

    settings: CollectionSettings
    #: As created: one ``VectorParams`` (the unnamed vector) or ``{name: VectorParams}``.
    vectors: m.VectorParams | dict[str, m.VectorParams]
    sparse: dict[str, m.SparseVectorParams] | None
    metadata: dict[str, Any] | None
    shard: LiveShard = field(init=False)

    @property
    def unnamed(self) -> bool:
        return isinstance(self.vectors, m.VectorParams)

    def dense(self) -> dict[str, m.VectorParams]:
        return {"": self.vectors} if isinstance(self.vectors, m.VectorParams) else self.vectors

    def edge_config(self) -> edge.EdgeConfig:
        hnsw = self.settings.hnsw
        vectors = {name: vector_params_in(p, hnsw) for name, p in self.dense().items()}
        sparse = {name: sparse_params_in(p) for name, p in (self.sparse or {}).items()}
        if not vectors and not sparse:
            sparse = {HIDDEN_VECTOR: edge.EdgeSparseVectorParams()}
        return edge.EdgeConfig(
            vectors=vectors or None,
            sparse_vectors=sparse or None,
            on_disk_payload=self.settings.params["on_disk_payload"],
            hnsw_config=hnsw_in(hnsw),
            quantization_config=quantization_in(self.settings.quantization),
            optimizers=optimizers_in(self.settings.optimizer),
        )

    def index_signature(self) -> str:
        """What an index is built from: HNSW and quantization, per collection and vector."""
        parts = [self.settings.hnsw, self.settings.quantization, *self.dense().values()]
        return repr([p.model_dump() if isinstance(p, BaseModel) else p for p in parts])

    def written_kb(self, vectors: list[Any]) -> dict[str, float]:
        """KB of dense vectors in a write, per name (what ``indexing_threshold`` counts)."""
        per_point = {
            name: p.size * _DATATYPE_BYTES.get(p.datatype or m.Datatype.FLOAT32, 4) / 1024
            for name, p in self.dense().items()
        }
        kb: dict[str, float] = {}
        for vector in vectors:
            for name in dense_names(vector):
                if name in per_point:
                    kb[name] = kb.get(name, 0.0) + per_point[name]
        return kb


class EngineFacade(BaseFacade):
    """Backend ``engine``: one ``EdgeShard`` per collection, indexed in the background."""

    backend = "engine"

    def __init__(self, *, version: str, path: str | None = None, strict: bool = True) -> None:
        super().__init__(version=version, strict=strict)
        self.home = Path(tempfile.mkdtemp(prefix="qdrant-engine-", dir=path))
        self.collections: dict[str, _Collection] = {}
        self.aliases: dict[str, str] = {}
        self.builds: list[dict[str, Any]] = []
        self._homes = 0
        self._registry = threading.Lock()  # the indexer lists collections from its thread
        self.indexer = Indexer(self._shards, self._built)
        self.indexer.start()

    # -- helpers -------------------------------------------------------------------------

    def _shards(self) -> list[tuple[str, LiveShard]]:
        with self._registry:
            return [(name, c.shard) for name, c in self.collections.items()]

    def _built(self, name: str, report: dict[str, Any]) -> None:
        self.builds.append({"collection": name, **report})

    def resolve(self, name: str) -> _Collection:
        """The collection behind ``name`` (a collection or an alias), or 404."""
        found = self.collections.get(self.aliases.get(name, name))
        if found is None:
            raise ApiError(404, f"Not found: Collection `{name}` doesn't exist!")
        return found

    def _name_of(self, name: str) -> str:
        self.resolve(name)
        return self.aliases.get(name, name)

    # -- collections ---------------------------------------------------------------------

    def list_collections(self) -> m.CollectionsResponse:
        return m.CollectionsResponse(
            collections=[m.CollectionDescription(name=name) for name in self.collections]
        )

    def collection_exists(self, name: str) -> m.CollectionExistence:
        return m.CollectionExistence(exists=name in self.collections or name in self.aliases)

    def get_collection(self, name: str) -> m.CollectionInfo:
        collection = self.resolve(name)
        shard = collection.shard
        info = shard.read(lambda s: s.info())
        settings = collection.settings
        params = m.CollectionParams(
            vectors=collection.vectors, sparse_vectors=collection.sparse, **settings.params
        )
        metadata = collection.metadata if self.version_tuple >= FIELD_SINCE["metadata"] else None
        engine_schema = info.payload_schema
        schema = {
            key: index.model_copy(
                update={"points": engine_schema[key].points if key in engine_schema else 0}
            )
            for key, index in settings.payload_schema.items()
        }
        return m.CollectionInfo(
            status=m.CollectionStatus.YELLOW if shard.busy else m.CollectionStatus.GREEN,
            optimizer_status=m.OptimizersStatusOneOf.OK,
            indexed_vectors_count=info.indexed_vectors_count,
            points_count=info.points_count,
            segments_count=info.segments_count,
            config=m.CollectionConfig(
                params=params,
                hnsw_config=settings.hnsw.model_copy(),
                optimizer_config=settings.optimizer.model_copy(),
                wal_config=m.WalConfig(wal_capacity_mb=32, wal_segments_ahead=0),
                quantization_config=settings.quantization,
                metadata=metadata,
            ),
            payload_schema=schema,
        )

    def create_collection(self, name: str, body: m.CreateCollection) -> bool:
        self.gate("metadata", body.metadata)
        if name in self.collections or name in self.aliases:
            raise ApiError(409, f"Wrong input: Collection `{name}` already exists!")
        collection = _Collection(
            settings=CollectionSettings.create(body),
            vectors={} if body.vectors is None else body.vectors,
            sparse=body.sparse_vectors,
            metadata=body.metadata,
        )
        self._homes += 1
        collection.shard = LiveShard(self.home / str(self._homes), collection.edge_config())
        with self._registry:
            self.collections[name] = collection
        return True

    def update_collection(self, name: str, body: m.UpdateCollection) -> bool:
        self.gate("metadata", body.metadata)
        collection = self.resolve(name)
        before = (collection.index_signature(), repr(collection.settings.optimizer))
        collection.settings.update(body)
        if body.metadata is not None:
            collection.metadata = (collection.metadata or {}) | body.metadata
        self._update_vectors_config(collection, body)
        signature = collection.index_signature()
        if before != (signature, repr(collection.settings.optimizer)) or body.sparse_vectors:
            collection.shard.reconfigure(collection.edge_config(), reindex=signature != before[0])
        return True

    @staticmethod
    def _update_vectors_config(collection: _Collection, body: m.UpdateCollection) -> None:
        """Apply per-vector diffs (HNSW, quantization, on_disk) and sparse-vector changes."""
        dense = collection.dense()
        for name, diff in (body.vectors or {}).items():
            if name not in dense:
                raise ApiError(400, f"Wrong input: Not existing vector name error: {name}")
            params = dense[name]
            if diff.hnsw_config is not None:
                own = params.hnsw_config or m.HnswConfigDiff()
                params.hnsw_config = merge_diff(own, diff.hnsw_config)
            quantization = diff.quantization_config
            if isinstance(quantization, m.Disabled):
                params.quantization_config = None
            elif quantization is not None:
                params.quantization_config = quantization
            if diff.on_disk is not None:
                params.on_disk = diff.on_disk
        for name, sparse in (body.sparse_vectors or {}).items():
            known = (collection.sparse or {}).get(name)
            if known is None:
                raise ApiError(400, f"Wrong input: Not existing vector name error: {name}")
            if sparse.index is not None:
                known.index = merge_diff(known.index or m.SparseIndexParams(), sparse.index)
            if sparse.modifier is not None:
                known.modifier = sparse.modifier

    def create_vector_name(
        self, name: str, vector: str, body: m.VectorNameConfig
    ) -> m.UpdateResult:
        """Add a dense named vector to an existing collection (Qdrant 1.18+)."""
        self.require_vector_names()
        collection = self.resolve(name)
        if not isinstance(body, m.DenseVectorNameConfig):
            raise ApiError(400, "Wrong input: this test server adds dense vectors only")
        if collection.unnamed:
            raise ApiError(
                400, "Wrong input: a collection with an unnamed vector takes no named vector"
            )
        if vector in collection.dense() or vector in (collection.sparse or {}):
            raise ApiError(400, f"Wrong input: Vector with name `{vector}` already exists")
        dense = body.dense
        datatype = None if dense.datatype is None else m.Datatype(dense.datatype.value)
        params = m.VectorParams(
            size=dense.size,
            distance=dense.distance,
            multivector_config=dense.multivector_config,
            datatype=datatype,
        )
        multivector = None
        if dense.multivector_config is not None:
            comparator = dense.multivector_config.comparator
            multivector = edge.MultiVectorConfig(enum_of(edge.MultiVectorComparator, comparator))
        operation = edge.UpdateOperation.create_dense_vector(
            vector,
            dense.size,
            enum_of(edge.Distance, dense.distance),
            multivector_config=multivector,
            datatype=None
            if dense.datatype is None
            else enum_of(edge.VectorStorageDatatype, dense.datatype),
        )
        assert isinstance(collection.vectors, dict)
        collection.vectors[vector] = params
        collection.shard.change_vectors(operation, collection.edge_config())
        return self._completed()

    def delete_vector_name(self, name: str, vector: str) -> m.UpdateResult:
        self.require_vector_names()
        collection = self.resolve(name)
        if collection.unnamed or vector not in collection.dense():
            raise ApiError(404, f"Not found: Vector with name `{vector}` does not exist")
        assert isinstance(collection.vectors, dict)
        del collection.vectors[vector]
        operation = edge.UpdateOperation.delete_vector_name(vector)
        collection.shard.change_vectors(operation, collection.edge_config())
        return self._completed()

    def delete_collection(self, name: str) -> bool:
        with self._registry:
            collection = self.collections.pop(name, None)
        if collection is None:
            return False
        self.aliases = {a: c for a, c in self.aliases.items() if c != name}
        collection.shard.close()
        return True

    # -- aliases -------------------------------------------------------------------------

    def _alias_list(self, collection: str | None = None) -> m.CollectionsAliasesResponse:
        return m.CollectionsAliasesResponse(
            aliases=[
                m.AliasDescription(alias_name=alias, collection_name=target)
                for alias, target in self.aliases.items()
                if collection is None or target == collection
            ]
        )

    def list_aliases(self) -> m.CollectionsAliasesResponse:
        return self._alias_list()

    def collection_aliases(self, name: str) -> m.CollectionsAliasesResponse:
        return self._alias_list(self._name_of(name))

    def update_aliases(self, body: m.ChangeAliasesOperation) -> bool:
        """All actions or none: they are applied to a copy that replaces the aliases."""
        aliases = dict(self.aliases)
        for action in body.actions:
            if isinstance(action, m.CreateAliasOperation):
                alias, target = action.create_alias.alias_name, action.create_alias.collection_name
                if target not in self.collections:
                    raise ApiError(404, f"Not found: Collection `{target}` doesn't exist!")
                self._refuse_collection_name(alias)
                aliases[alias] = target
            elif isinstance(action, m.DeleteAliasOperation):
                aliases.pop(action.delete_alias.alias_name, None)
            else:
                old, new = action.rename_alias.old_alias_name, action.rename_alias.new_alias_name
                if old not in aliases:
                    raise ApiError(404, f"Not found: Alias {old} does not exist")
                self._refuse_collection_name(new)
                aliases[new] = aliases.pop(old)
        self.aliases = aliases
        return True

    def _refuse_collection_name(self, alias: str) -> None:
        if alias in self.collections:
            raise ApiError(409, f"Wrong input: Collection `{alias}` already exists!")

    # -- payload indexes -----------------------------------------------------------------

    def create_index(self, name: str, body: m.CreateFieldIndex) -> m.UpdateResult:
        collection = self.resolve(name)
        collection.settings.add_index(body.field_name, body.field_schema)
        assert body.field_schema is not None  # add_index refuses a missing one
        schema = index_schema_in(body.field_schema)
        collection.shard.write(edge.UpdateOperation.create_field_index(body.field_name, schema))
        return self._completed()

    def delete_index(self, name: str, field_name: str) -> m.UpdateResult:
        collection = self.resolve(name)
        if collection.settings.payload_schema.pop(field_name, None) is not None:
            collection.shard.write(edge.UpdateOperation.delete_field_index(field_name))
        return self._completed()

    # -- points --------------------------------------------------------------------------

    def upsert(self, name: str, body: m.PointsList | m.PointsBatch) -> m.UpdateResult:
        self.gate("update_mode", body.update_mode)
        self.gate("update_filter", body.update_filter)
        collection = self.resolve(name)
        self.count_conditional("upsert", body.update_mode, body.update_filter)
        self.log_write(self.aliases.get(name, name), written_points(body))
        mode = None if body.update_mode is None else enum_of(edge.UpdateMode, body.update_mode)
        operation = edge.UpdateOperation.upsert_points(
            points_in(body), condition=filter_in(body.update_filter), update_mode=mode
        )
        if isinstance(body, m.PointsList):
            vectors = [p.vector for p in body.points]
        else:
            vectors = batch_rows(body.batch)
        collection.shard.write(operation, collection.written_kb(vectors))
        return self._completed()

    def update_vectors(self, name: str, body: m.UpdateVectors) -> m.UpdateResult:
        """Replace the given vectors of existing points (only where ``update_filter`` matches)."""
        self.gate("update_filter", body.update_filter)
        collection = self.resolve(name)
        self.count_conditional("update_vectors", None, body.update_filter)
        self.log_write(self.aliases.get(name, name), len(body.points))
        operation = edge.UpdateOperation.update_vectors(
            point_vectors_in(body.points), condition=filter_in(body.update_filter)
        )
        collection.shard.write(operation, collection.written_kb([p.vector for p in body.points]))
        return self._completed()

    def set_payload(self, name: str, body: m.SetPayload) -> m.UpdateResult:
        ops = edge.UpdateOperation
        return self._write_payload(name, body, ops.set_payload, ops.set_payload_by_filter)

    def overwrite_payload(self, name: str, body: m.SetPayload) -> m.UpdateResult:
        ops = edge.UpdateOperation
        return self._write_payload(
            name, body, ops.overwrite_payload, ops.overwrite_payload_by_filter
        )

    def _write_payload(
        self,
        name: str,
        body: m.SetPayload,
        by_ids: Callable[..., Any],
        by_filter: Callable[..., Any],
    ) -> m.UpdateResult:
        """A payload write to the points ``body`` names, by ids or by filter."""
        collection = self.resolve(name)
        if body.points is not None:
            operation = by_ids(point_ids(body.points), body.payload, key=body.key)
        else:
            operation = by_filter(_required_filter(body.filter), body.payload, key=body.key)
        collection.shard.write(operation)
        return self._completed()

    def delete_points(self, name: str, selector: Any) -> m.UpdateResult:
        collection = self.resolve(name)
        if isinstance(selector, m.PointIdsList):
            operation = edge.UpdateOperation.delete_points(point_ids(selector.points))
        else:
            operation = edge.UpdateOperation.delete_points_by_filter(
                _required_filter(selector.filter)
            )
        collection.shard.write(operation)
        return self._completed()

    def retrieve(self, name: str, body: m.PointRequest) -> list[m.Record]:
        collection = self.resolve(name)
        ids = point_ids(body.ids)
        with_payload = with_payload_in(body.with_payload, True)
        with_vector = with_vector_in(body.with_vector, False)
        found = collection.shard.read(lambda s: s.retrieve(ids, with_payload, with_vector))
        return [record_out(r, unnamed=collection.unnamed) for r in found]

    def get_point(self, name: str, point_id: str) -> m.Record:
        key: int | str = int(point_id) if point_id.isdigit() else point_id
        found = self.retrieve(name, m.PointRequest(ids=[key], with_vector=True))
        if not found:
            raise ApiError(404, f"Not found: No point with id {point_id} found")
        return found[0]

    def scroll(self, name: str, body: m.ScrollRequest) -> m.ScrollResult:
        collection = self.resolve(name)
        request = edge.ScrollRequest(
            offset=None if body.offset is None else point_id(body.offset),
            limit=10 if body.limit is None else body.limit,
            filter=filter_in(body.filter),
            with_payload=with_payload_in(body.with_payload, True),
            with_vector=with_vector_in(body.with_vector, False),
            order_by=order_by_in(body.order_by),
        )
        records, following = collection.shard.read(lambda s: s.scroll(request))
        # Ordered by a payload field, the server pages with start_from, not an offset.
        next_offset = None if following is None or body.order_by else id_out(following)
        return m.ScrollResult(
            points=[record_out(r, unnamed=collection.unnamed) for r in records],
            next_page_offset=next_offset,
        )

    def count(self, name: str, body: m.CountRequest) -> m.CountResult:
        collection = self.resolve(name)
        request = edge.CountRequest(exact=body.exact is not False, filter=filter_in(body.filter))
        return m.CountResult(count=collection.shard.read(lambda s: s.count(request)))

    def query(self, name: str, body: m.QueryRequest) -> m.QueryResponse:
        collection = self.resolve(name)
        request = query_request_in(body)
        found = collection.shard.read(lambda s: s.query(request))
        return m.QueryResponse(points=[scored_out(p, unnamed=collection.unnamed) for p in found])

    # -- the façade's own ----------------------------------------------------------------

    def reset(self) -> bool:
        for name in list(self.collections):
            self.delete_collection(name)
        self.aliases.clear()
        self.stats.clear()
        self.writes.clear()
        self.builds.clear()
        return True

    def hold_indexing(self, body: IndexingHold) -> bool:
        """Hold index builds (collections that need one stay yellow) or let them run."""
        if body.hold:
            self.indexer.held.set()
        else:
            self.indexer.held.clear()
        return True

    def report(self) -> dict[str, Any]:
        building = [name for name, shard in self._shards() if shard.building is not None]
        disk = {name: _disk_bytes(shard.directory) for name, shard in self._shards()}
        return super().report() | {
            "builds": list(self.builds),
            "building": building,
            "disk_bytes": disk,
        }

    def close(self) -> None:
        self.indexer.stop()
        self.reset()
        shutil.rmtree(self.home, ignore_errors=True)


def _disk_bytes(directory: Path) -> int:
    """Bytes a shard's data holds on disk (allocated blocks: sparse files count as used).

    The write-ahead log is left out: it is a bounded ring of recent operations (a Qdrant
    server preallocates its segments, ``wal_capacity_mb`` each), not the data, and it holds
    whatever the last writes carried (filters included).
    """
    total = 0
    for path in directory.rglob("*"):
        if "wal" in path.relative_to(directory).parts:
            continue
        try:
            if path.is_file():
                total += path.stat().st_blocks * 512
        except OSError:  # a file an optimizer removed meanwhile
            continue
    return total


def _required_filter(selector: m.Filter | None) -> edge.Filter:
    translated = filter_in(selector)
    if translated is None:
        raise ApiError(400, "Wrong input: either points or filter is required")
    return translated
