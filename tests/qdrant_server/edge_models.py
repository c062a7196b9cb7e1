"""qdrant-client's HTTP models to ``qdrant_edge`` types, and the engine's answers back.

:class:`tests.qdrant_server.engine.EngineFacade` parses request bodies into
``qdrant_client.http.models`` (as the local backend does), translates them here into what
an ``EdgeShard`` takes, and turns the shard's records and scored points back into the
models qdrant-client expects. What has no counterpart in the engine's Python API (or that
the migration never sends) is refused with a 400 that names it, so a test notices instead
of getting a silently different answer.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterable
from datetime import date
from enum import Enum
from functools import cache
from typing import Any

import qdrant_edge as edge
from qdrant_client.http import models as m

from tests.qdrant_server.app import ApiError, merge_diff

#: Name of the sparse vector a shard gets when the collection has no vector at all
#: (``vectors_config={}``, as the migration's state store creates): the engine needs at
#: least one, and this one is never written, reported or returned.
HIDDEN_VECTOR = "__facade_no_vectors__"

#: Index params the engine takes as nested objects of its own; left out (default values).
_UNTRANSLATED_INDEX_PARAMS = frozenset({"type", "stopwords", "stemmer", "scoring"})


def unsupported(what: str) -> ApiError:
    return ApiError(400, f"Wrong input: {what} is not supported by the engine façade")


def enum_of(edge_enum: Any, value: Enum | str) -> Any:
    """The member of a ``qdrant_edge`` enum that a qdrant-client value names.

    Both name the same things in different spellings (``one_and_half_bits`` and
    ``OneAndHalfBits``, ``x16`` and ``X16``): compare without case and underscores.
    """
    raw = str(value.value if isinstance(value, Enum) else value)
    wanted = raw.replace("_", "").lower()
    for name in dir(edge_enum):
        if not name.startswith("_") and name.replace("_", "").lower() == wanted:
            return getattr(edge_enum, name)
    raise unsupported(f"{type(value).__name__} {raw!r}")


def _enum_or_none(edge_enum: Any, value: Enum | str | None) -> Any:
    return None if value is None else enum_of(edge_enum, value)


# -- ids, vectors, points ------------------------------------------------------------------


#: A point id as the engine takes it (its stubs' ``PointId``).
EdgeId = int | str | uuid.UUID


def point_id(value: m.ExtendedPointId) -> EdgeId:
    """An id as the engine takes it: an integer, or a UUID in canonical form."""
    if isinstance(value, int):
        return value
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ApiError(400, f"Wrong input: Unable to parse UUID: {value}") from None


def point_ids(values: list[m.ExtendedPointId]) -> list[EdgeId]:
    return [point_id(v) for v in values]


def id_out(value: Any) -> int | str:
    return value if isinstance(value, int) else str(value)


_BM25 = "qdrant/bm25"


@cache
def _bm25() -> Any:
    return edge.Bm25(edge.Bm25Config(language="english"))


def _document(value: m.Document, *, query: bool) -> edge.SparseVector:
    """Server-side inference: only Qdrant's own BM25, as a server runs it."""
    if value.model.lower() != _BM25:
        raise ApiError(400, f"Wrong input: model {value.model!r} is not available for inference")
    embedder = _bm25()
    made: edge.SparseVector = (
        embedder.embed_query(value.text) if query else embedder.embed_document(value.text)
    )
    return made


def _one_vector(value: Any) -> Any:
    if isinstance(value, list):
        return value
    if isinstance(value, m.SparseVector):
        return edge.SparseVector(value.indices, value.values)
    if isinstance(value, m.Document):
        return _document(value, query=False)
    raise unsupported(f"vector input {type(value).__name__} (inference)")


def vector_in(value: Any) -> Any:
    """A point's vectors: a list (the unnamed vector, or a multivector) or ``{name: vector}``."""
    if isinstance(value, dict):
        return {name: _one_vector(v) for name, v in value.items()}
    return _one_vector(value)


def dense_names(vector: Any) -> Iterable[str]:
    """The names of the dense vectors in a point's vectors (``""``: the unnamed one)."""
    if isinstance(vector, dict):
        yield from (name for name, v in vector.items() if isinstance(v, list) and v)
    elif isinstance(vector, list) and vector:
        yield ""


def batch_rows(batch: m.Batch) -> list[Any]:
    """A batch's vectors, one entry per point (``{name: vector}`` for named vectors)."""
    vectors: Any = batch.vectors
    if isinstance(vectors, dict):
        return [
            {name: column[i] for name, column in vectors.items() if column[i] is not None}
            for i in range(len(batch.ids))
        ]
    return list(vectors)


def points_in(body: m.PointsList | m.PointsBatch) -> list[edge.Point]:
    """The points of an upsert, either as a list of points or as a batch of columns."""
    if isinstance(body, m.PointsList):
        return [edge.Point(point_id(p.id), vector_in(p.vector), p.payload) for p in body.points]
    batch = body.batch
    payloads: list[Any] = batch.payloads or [None] * len(batch.ids)
    return [
        edge.Point(point_id(i), vector_in(v), p)
        for i, v, p in zip(batch.ids, batch_rows(batch), payloads, strict=True)
    ]


def point_vectors_in(points: list[m.PointVectors]) -> list[edge.PointVectors]:
    return [edge.PointVectors(point_id(p.id), vector_in(p.vector)) for p in points]


def vector_out(vector: Any, *, unnamed: bool) -> Any:
    """A record's vectors as the server returns them: a list for an unnamed collection."""
    if vector is None:
        return None
    if isinstance(vector, list):  # a shard with only the unnamed vector returns it bare
        return vector if unnamed else {"": vector}
    out: dict[str, Any] = {}
    for name, value in vector.items():
        if name == HIDDEN_VECTOR:
            continue
        if isinstance(value, edge.SparseVector):
            value = m.SparseVector(indices=value.indices, values=value.values)
        out[name] = value
    if unnamed and set(out) == {""}:
        return out[""]  # the unnamed vector alone comes back bare, as from Qdrant
    return out


def record_out(record: edge.Record, *, unnamed: bool) -> m.Record:
    # model_construct: the engine's answer is well-formed, and scrolls return many records.
    return m.Record.model_construct(
        id=id_out(record.id),
        payload=record.payload,
        vector=vector_out(record.vector, unnamed=unnamed),
        shard_key=None,
        order_value=record.order_value,
    )


def scored_out(point: edge.ScoredPoint, *, unnamed: bool) -> m.ScoredPoint:
    return m.ScoredPoint.model_construct(
        id=id_out(point.id),
        version=point.version,
        score=point.score,
        payload=point.payload,
        vector=vector_out(point.vector, unnamed=unnamed),
        shard_key=None,
        order_value=point.order_value,
    )


def with_payload_in(value: m.WithPayloadInterface | None, default: bool) -> Any:
    if value is None:
        return default
    if isinstance(value, m.PayloadSelectorInclude):
        return edge.PayloadSelector.Include(value.include)
    if isinstance(value, m.PayloadSelectorExclude):
        return edge.PayloadSelector.Exclude(value.exclude)
    return value  # a bool or a list of keys


def with_vector_in(value: m.WithVector | None, default: bool) -> Any:
    return default if value is None else value


# -- filters -------------------------------------------------------------------------------


def filter_in(value: m.Filter | None) -> edge.Filter | None:
    return None if value is None else _filter(value)


def _filter(value: m.Filter) -> edge.Filter:
    min_should = None
    if value.min_should is not None:
        min_should = edge.MinShould(
            [condition_in(c) for c in value.min_should.conditions], value.min_should.min_count
        )
    return edge.Filter(
        must=_conditions(value.must),
        should=_conditions(value.should),
        must_not=_conditions(value.must_not),
        min_should=min_should,
    )


def _conditions(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return [condition_in(c) for c in (value if isinstance(value, list) else [value])]


def condition_in(condition: Any) -> Any:
    if isinstance(condition, m.FieldCondition):
        return _field_condition(condition)
    if isinstance(condition, m.Filter):
        return _filter(condition)
    if isinstance(condition, m.HasIdCondition):
        return edge.HasIdCondition({point_id(i) for i in condition.has_id})
    if isinstance(condition, m.HasVectorCondition):
        return edge.HasVectorCondition(condition.has_vector)
    if isinstance(condition, m.IsEmptyCondition):
        return edge.IsEmptyCondition(condition.is_empty.key)
    if isinstance(condition, m.IsNullCondition):
        return edge.IsNullCondition(condition.is_null.key)
    if isinstance(condition, m.NestedCondition):
        return edge.NestedCondition(condition.nested.key, _filter(condition.nested.filter))
    raise unsupported(f"filter condition {type(condition).__name__}")


def _field_condition(c: m.FieldCondition) -> edge.FieldCondition:
    values_count = None
    if c.values_count is not None:
        v = c.values_count
        values_count = edge.ValuesCount(lt=v.lt, gt=v.gt, gte=v.gte, lte=v.lte)
    return edge.FieldCondition(
        c.key,
        match=_match(c.match),
        range=_range(c.range),
        geo_bounding_box=_geo_box(c.geo_bounding_box),
        geo_radius=_geo_radius(c.geo_radius),
        geo_polygon=_geo_polygon(c.geo_polygon),
        values_count=values_count,
        is_empty=c.is_empty,
        is_null=c.is_null,
    )


def _match(match: Any) -> Any:
    if match is None:
        return None
    if isinstance(match, m.MatchValue):
        return edge.MatchValue(match.value)
    if isinstance(match, m.MatchAny):
        return edge.MatchAny(match.any)
    if isinstance(match, m.MatchExcept):
        return edge.MatchExcept(match.except_)
    if isinstance(match, m.MatchText):
        return edge.MatchText(match.text)
    if isinstance(match, m.MatchTextAny):
        return edge.MatchTextAny(match.text_any)
    if isinstance(match, m.MatchPhrase):
        return edge.MatchPhrase(match.phrase)
    raise unsupported(f"match {type(match).__name__}")


def _moment(value: Any) -> str | None:
    """A datetime bound as RFC 3339 text (a naive one is UTC, as on the server)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, date):
        return value.isoformat()
    raise unsupported(f"datetime bound {value!r}")


def _range(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, m.DatetimeRange):
        return edge.RangeDateTime(
            gte=_moment(value.gte),
            gt=_moment(value.gt),
            lte=_moment(value.lte),
            lt=_moment(value.lt),
        )
    return edge.RangeFloat(gte=value.gte, gt=value.gt, lte=value.lte, lt=value.lt)


def _geo(point: m.GeoPoint) -> edge.GeoPoint:
    return edge.GeoPoint(point.lon, point.lat)


def _geo_box(box: m.GeoBoundingBox | None) -> edge.GeoBoundingBox | None:
    return None if box is None else edge.GeoBoundingBox(_geo(box.top_left), _geo(box.bottom_right))


def _geo_radius(radius: m.GeoRadius | None) -> edge.GeoRadius | None:
    return None if radius is None else edge.GeoRadius(_geo(radius.center), radius.radius)


def _geo_polygon(polygon: m.GeoPolygon | None) -> edge.GeoPolygon | None:
    if polygon is None:
        return None
    interiors = [[_geo(p) for p in ring.points] for ring in polygon.interiors or []]
    return edge.GeoPolygon([_geo(p) for p in polygon.exterior.points], interiors or None)


# -- queries -------------------------------------------------------------------------------


def search_params_in(params: m.SearchParams | None) -> edge.SearchParams | None:
    if params is None:
        return None
    quantization = None
    if params.quantization is not None:
        q = params.quantization
        quantization = edge.QuantizationSearchParams(
            ignore=bool(q.ignore), rescore=q.rescore, oversampling=q.oversampling
        )
    acorn = None
    if params.acorn is not None:
        acorn = edge.AcornSearchParams(
            enable=bool(params.acorn.enable), max_selectivity=params.acorn.max_selectivity
        )
    return edge.SearchParams(
        hnsw_ef=params.hnsw_ef,
        exact=bool(params.exact),
        quantization=quantization,
        indexed_only=bool(params.indexed_only),
        acorn=acorn,
    )


def order_by_in(value: m.OrderByInterface | None) -> edge.OrderBy | None:
    if value is None:
        return None
    if isinstance(value, str):
        return edge.OrderBy(value)
    start: Any = value.start_from
    if start is not None and not isinstance(start, int | float):
        start = _moment(start)
    return edge.OrderBy(
        value.key, direction=_enum_or_none(edge.Direction, value.direction), start_from=start
    )


def query_in(query: Any, using: str | None) -> Any:
    """The scoring part of a query: nearest (dense, sparse, multi), random sample, fusion,
    order by a payload field. Searching by a point's id needs its vector looked up first,
    which the façade does not do."""
    if query is None:
        return None
    if isinstance(query, m.NearestQuery):
        if query.mmr is not None:
            raise unsupported("MMR")
        query = query.nearest
    if isinstance(query, list | m.SparseVector):
        return edge.Query.Nearest(_one_vector(query), using=using)
    if isinstance(query, m.Document):
        return edge.Query.Nearest(_document(query, query=True), using=using)
    if isinstance(query, m.SampleQuery):
        return edge.Sample.Random
    if isinstance(query, m.FusionQuery):
        return edge.Fusion.Rrf(k=2) if query.fusion == m.Fusion.RRF else edge.Fusion.Dbsf()
    if isinstance(query, m.RrfQuery):
        k = 2 if query.rrf.k is None else query.rrf.k
        return edge.Fusion.Rrf(k=k, weights=query.rrf.weights)
    if isinstance(query, m.OrderByQuery):
        return order_by_in(query.order_by)
    if isinstance(query, int | str | uuid.UUID):
        raise unsupported("a query by point id")
    raise unsupported(f"query {type(query).__name__}")


def prefetch_in(prefetch: Any) -> list[edge.Prefetch] | None:
    if prefetch is None:
        return None
    items = prefetch if isinstance(prefetch, list) else [prefetch]
    out = []
    for p in items:
        if p.lookup_from is not None:
            raise unsupported("lookup_from")
        out.append(
            edge.Prefetch(
                10 if p.limit is None else p.limit,
                query=query_in(p.query, p.using),
                prefetches=prefetch_in(p.prefetch),
                params=search_params_in(p.params),
                filter=filter_in(p.filter),
                score_threshold=p.score_threshold,
            )
        )
    return out


def query_request_in(body: m.QueryRequest) -> edge.QueryRequest:
    if body.lookup_from is not None:
        raise unsupported("lookup_from")
    return edge.QueryRequest(
        10 if body.limit is None else body.limit,
        offset=body.offset,
        query=query_in(body.query, body.using),
        prefetches=prefetch_in(body.prefetch),
        with_vector=with_vector_in(body.with_vector, False),
        with_payload=with_payload_in(body.with_payload, False),
        filter=filter_in(body.filter),
        score_threshold=body.score_threshold,
        params=search_params_in(body.params),
    )


# -- collection configuration --------------------------------------------------------------


def hnsw_in(config: m.HnswConfig) -> edge.HnswIndexConfig:
    return edge.HnswIndexConfig(
        config.m,
        config.ef_construct,
        config.full_scan_threshold,
        max_indexing_threads=config.max_indexing_threads or 0,
        on_disk=config.on_disk,
        payload_m=config.payload_m,
        inline_storage=config.inline_storage,
    )


def quantization_in(config: Any) -> Any:
    """Scalar, product, binary or TurboQuant; None (or ``Disabled``) for none."""
    if config is None or isinstance(config, m.Disabled):
        return None
    if isinstance(config, m.ScalarQuantization):
        s = config.scalar
        return edge.ScalarQuantizationConfig(
            enum_of(edge.ScalarType, s.type), quantile=s.quantile, always_ram=s.always_ram
        )
    if isinstance(config, m.ProductQuantization):
        p = config.product
        return edge.ProductQuantizationConfig(
            enum_of(edge.CompressionRatio, p.compression), always_ram=p.always_ram
        )
    if isinstance(config, m.BinaryQuantization):
        b = config.binary
        return edge.BinaryQuantizationConfig(
            always_ram=b.always_ram,
            encoding=_enum_or_none(edge.BinaryQuantizationEncoding, b.encoding),
            query_encoding=_enum_or_none(edge.BinaryQuantizationQueryEncoding, b.query_encoding),
        )
    if isinstance(config, m.TurboQuantization):
        t = config.turbo
        return edge.TurboQuantQuantizationConfig(
            always_ram=t.always_ram, bits=_enum_or_none(edge.TurboQuantBitSize, t.bits)
        )
    raise unsupported(f"quantization {type(config).__name__}")


def vector_params_in(params: m.VectorParams, hnsw: m.HnswConfig) -> edge.EdgeVectorParams:
    """A dense vector's config; its own HNSW diff is applied over the collection's."""
    multivector = None
    if params.multivector_config is not None:
        comparator = enum_of(edge.MultiVectorComparator, params.multivector_config.comparator)
        multivector = edge.MultiVectorConfig(comparator)
    own_hnsw = None if params.hnsw_config is None else hnsw_in(merge_diff(hnsw, params.hnsw_config))
    return edge.EdgeVectorParams(
        params.size,
        enum_of(edge.Distance, params.distance),
        on_disk=params.on_disk,
        multivector_config=multivector,
        datatype=_enum_or_none(edge.VectorStorageDatatype, params.datatype),
        quantization_config=quantization_in(params.quantization_config),
        hnsw_config=own_hnsw,
    )


def sparse_params_in(params: m.SparseVectorParams) -> edge.EdgeSparseVectorParams:
    index = params.index or m.SparseIndexParams()
    modifier = params.modifier if params.modifier != m.Modifier.NONE else None
    return edge.EdgeSparseVectorParams(
        full_scan_threshold=index.full_scan_threshold,
        on_disk=index.on_disk,
        modifier=_enum_or_none(edge.Modifier, modifier),
        datatype=_enum_or_none(edge.VectorStorageDatatype, index.datatype),
    )


def optimizers_in(config: m.OptimizersConfig) -> edge.EdgeOptimizersConfig:
    """The optimizer settings the engine has (``indexing_threshold`` in KB, as the server)."""
    return edge.EdgeOptimizersConfig(
        deleted_threshold=config.deleted_threshold,
        vacuum_min_vector_number=config.vacuum_min_vector_number,
        default_segment_number=config.default_segment_number,
        max_segment_size=config.max_segment_size,
        indexing_threshold=config.indexing_threshold,
        prevent_unoptimized=config.prevent_unoptimized,
    )


def index_schema_in(schema: m.PayloadFieldSchema) -> Any:
    """A payload index: its type, or its params (tokenizer, ``is_tenant``, ``range``, ...)."""
    if isinstance(schema, m.PayloadSchemaType):
        return enum_of(edge.PayloadSchemaType, schema)
    edge_class = getattr(edge, type(schema).__name__, None)
    if edge_class is None:
        raise unsupported(f"payload index {type(schema).__name__}")
    accepted = inspect.signature(edge_class).parameters
    kwargs: dict[str, Any] = {}
    for key, value in schema.model_dump(exclude_none=True).items():
        if key in _UNTRANSLATED_INDEX_PARAMS or key not in accepted:
            continue
        if key == "tokenizer":
            value = enum_of(edge.TokenizerType, value)
        elif key == "memory":
            value = enum_of(edge.Memory, value)
        kwargs[key] = value
    return edge_class(**kwargs)
