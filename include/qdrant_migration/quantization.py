"""Quantization: the choices of the ``quantization`` param, what a collection has now, and
the one sanctioned change to a source collection's configuration.

Quantization changes how Qdrant stores the vectors it already has (int8 or bits instead of
float32 in RAM, with the originals kept for rescoring), not the vectors themselves. With
the same model and size, a new quantization needs no new collection, no embedding calls
and no alias move: :func:`requantize_source` updates the source's config and Qdrant
re-quantizes in the background. No point is ever written.
"""

from __future__ import annotations

import logging
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.choices import Quantization

log = logging.getLogger(__name__)

#: Bytes per dimension that each quantization keeps in RAM (the float32 originals can stay
#: on disk for rescoring).
BYTES_PER_DIMENSION = {"none": 4.0, "scalar_int8": 1.0, "product_x16": 0.25, "binary": 0.125}


def config_for(name: Quantization | None) -> qm.QuantizationConfig | None:
    """The Qdrant config for a ``quantization`` param value (None: none / keep)."""
    if name == "scalar_int8":
        return qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, always_ram=True)
        )
    if name == "binary":
        return qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(always_ram=True))
    if name == "product_x16":
        return qm.ProductQuantization(
            product=qm.ProductQuantizationConfig(
                compression=qm.CompressionRatio.X16, always_ram=True
            )
        )
    return None


def describe(config: Any) -> str:
    """The ``quantization`` param value that a collection's config corresponds to."""
    if isinstance(config, qm.ScalarQuantization):
        return "scalar_int8"
    if isinstance(config, qm.BinaryQuantization):
        return "binary"
    if isinstance(config, qm.ProductQuantization):
        ratio = config.product.compression.value  # "x16"
        return f"product_{ratio}"
    return "none"


def _vector_params(info: qm.CollectionInfo, vector_name: str | None) -> qm.VectorParams | None:
    vectors = info.config.params.vectors
    if isinstance(vectors, qm.VectorParams):
        return vectors
    return (vectors or {}).get(vector_name or "")


def current(info: qm.CollectionInfo, vector_name: str | None) -> str:
    """The quantization in effect for the migrated vector (its own config wins)."""
    params = _vector_params(info, vector_name)
    own = params.quantization_config if params is not None else None
    return describe(own if own is not None else info.config.quantization_config)


def for_target(source: qm.CollectionInfo, requested: Quantization | None) -> Any:
    """Collection-level quantization of a new target: the source's, unless one is requested."""
    if requested is None:
        return source.config.quantization_config
    return config_for(requested)


def vector_quantization(params: qm.VectorParams, requested: Quantization | None) -> Any:
    """Per-vector quantization of a new target: the source vector's, unless one is requested.

    A requested quantization is set at the collection level, so the vector's own (which
    would override it) is dropped.
    """
    return params.quantization_config if requested is None else None


def requantize_source(
    client: QdrantClient, collection: str, vector_name: str | None, requested: Quantization
) -> dict[str, Any]:
    """Change the quantization of an existing collection: the only write to a source.

    Writes the collection-level config and, when the vector has its own quantization
    (which would win over it), that one too. Returns what was asked and what Qdrant now
    reports (the embedded store keeps no quantization: it searches full vectors exactly).
    """
    info = client.get_collection(collection)
    before = current(info, vector_name)
    wanted = config_for(requested)
    collection_level: Any = wanted if wanted is not None else qm.Disabled.DISABLED
    kwargs: dict[str, Any] = {"quantization_config": collection_level}
    params = _vector_params(info, vector_name)
    if params is not None and params.quantization_config is not None:
        kwargs["vectors_config"] = {
            vector_name or "": qm.VectorParamsDiff(quantization_config=collection_level)
        }
    client.update_collection(collection, **kwargs)
    after = current(client.get_collection(collection), vector_name)
    log.info("Quantization of %s: %s -> %s (requested %s)", collection, before, after, requested)
    if after != requested:
        log.warning(
            "%s still reports quantization %r: an embedded (local-mode) store keeps none and "
            "searches full vectors exactly; a Qdrant server applies %r in the background.",
            collection,
            after,
            requested,
        )
    return {"collection": collection, "before": before, "requested": requested, "now": after}


def ram_bytes(points: int, dimension: int, quantization: str) -> int:
    """RAM the quantized vectors need (without HNSW links and payload)."""
    return int(points * dimension * BYTES_PER_DIMENSION.get(quantization, 4.0))
