"""Cohere embed v2 (``embed-v4.0`` and the v3 family) through the official SDK.

``cohere.ClientV2`` runs with ``max_retries=0`` (client and per request): retries, backoff
and budgets live in :mod:`.ratelimit`, where they are bounded and logged. The SDK's own
retries ignore fractional ``Retry-After`` values and cap waits at 60 s.

Stored texts are embedded with ``input_type="search_document"`` and queries with
``search_query``: Cohere's models embed the two differently, and an application that
searches the new collection must use ``search_query`` (see :meth:`CohereProvider.lineage`).

Options (besides the budget/retry keys of :mod:`.ratelimit` and the packing keys):

* ``embedding_types``: one of ``float`` (default), ``int8``, ``uint8``, ``binary``,
  ``ubinary`` (a one-element list is accepted too). Vectors are always returned as
  floats of the full ``dimension``: ``int8``/``uint8`` values as they come (-128..127,
  0..255); ``binary``/``ubinary`` arrive packed, ``dimension / 8`` bytes per text, bit 1
  of each byte first (``numpy.packbits`` order; ``binary`` is the unsigned byte minus
  128), and are unpacked to +1.0 (bit set) / -1.0 (bit clear). On ±1 vectors cosine and
  dot product rank exactly as Hamming distance does.
* ``approx_bytes_per_token`` (default 3): Cohere's tokenizer is not available offline,
  so token counts (budgets, the ``skip`` policy) are estimates. Under the default
  ``truncate`` policy the API cuts long texts itself (``truncate="END"``); under
  ``skip``/``error`` it is asked not to (``truncate="NONE"``).

Any other key, or a value out of range, raises ``ProviderConfigError`` when the provider
is built (see :mod:`.options`).

The base URL is the host root (``https://api.cohere.com``), not ``/v2``; a trailing
``/v1`` or ``/v2`` is removed. Without a connection host, ``CO_API_URL`` is read when the
client is built (the SDK itself reads it only once, at import).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import include.qdrant_migration.providers.packing as packing
import include.qdrant_migration.providers.ratelimit as ratelimit
from include.qdrant_migration.providers.base import ModelInfo, ModelLineage
from include.qdrant_migration.providers.batching import BatchAPI
from include.qdrant_migration.providers.cohere_jobs import CohereEmbedJobs
from include.qdrant_migration.providers.errors import EmbeddingError, ProviderConfigError
from include.qdrant_migration.providers.options import float_option
from include.qdrant_migration.providers.packing import (
    ApproximateCounter,
    PreparedTexts,
    ProviderLimits,
    TokenCounter,
)
from include.qdrant_migration.providers.ratelimit import RetryableError
from include.qdrant_migration.providers.remote import Answer, RemoteProvider

if TYPE_CHECKING:
    import cohere

log = logging.getLogger(__name__)

COHERE_MODELS: dict[str, ModelInfo] = {
    "embed-v4.0": ModelInfo("embed-v4.0", 1536, matryoshka_dimensions=(256, 512, 1024, 1536)),
    "embed-english-v3.0": ModelInfo("embed-english-v3.0", 1024),
    "embed-multilingual-v3.0": ModelInfo("embed-multilingual-v3.0", 1024),
    "embed-english-light-v3.0": ModelInfo("embed-english-light-v3.0", 384),
    "embed-multilingual-light-v3.0": ModelInfo("embed-multilingual-light-v3.0", 384),
}
#: Context length per input: embed-v4.0 reads 128k tokens, the v3 models 512.
MAX_TOKENS_PER_INPUT = {"embed-v4.0": 128_000}
V3_MAX_TOKENS_PER_INPUT = 512
MAX_TEXTS_PER_CALL = 96
EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
DOCUMENT_INPUT = "search_document"
QUERY_INPUT = "search_query"


class CohereProvider(RemoteProvider):
    """Cohere's hosted embedding models, through the connection's API key."""

    name: ClassVar[str] = "cohere"
    batch_api: ClassVar[type[BatchAPI] | None] = CohereEmbedJobs
    known_options: ClassVar[tuple[str, ...]] = (
        *RemoteProvider.known_options,
        "embedding_types",
        "approx_bytes_per_token",
    )

    def _configure(self) -> None:
        if self.model not in COHERE_MODELS:
            known = ", ".join(COHERE_MODELS)
            raise ProviderConfigError(
                f"Unknown Cohere embedding model {self.model!r}; choose one of {known}."
            )
        super()._configure()
        self.embedding_type = _embedding_type(self.options.get("embedding_types", "float"))
        self.output_dimension = self._check_dimensions()
        self._counter = ApproximateCounter(
            float_option(self.options, "approx_bytes_per_token", 3.0, minimum=0, inclusive=False)
        )

    def _check_dimensions(self) -> int | None:
        """The ``output_dimension`` to send (embed-v4.0 only), or None for the native size."""
        info = COHERE_MODELS[self.model]
        wanted = self.requested_dimensions
        if wanted is None or wanted == info.native_dimension:
            return None
        if wanted not in info.matryoshka_dimensions:
            sizes = ", ".join(map(str, info.matryoshka_dimensions)) or str(info.native_dimension)
            raise ProviderConfigError(
                f"{self.model} returns dimensions {sizes}; got {wanted}"
                + ("" if info.matryoshka_dimensions else " (only embed-v4.0 can shorten vectors)")
                + "."
            )
        if self.embedding_type in ("binary", "ubinary") and wanted % 8:
            raise ProviderConfigError("Binary embeddings need a dimension divisible by 8.")
        return wanted

    # -- the interface -------------------------------------------------------------------

    @property
    def limits(self) -> ProviderLimits:
        hard = ProviderLimits(
            max_inputs_per_request=MAX_TEXTS_PER_CALL,
            max_tokens_per_input=MAX_TOKENS_PER_INPUT.get(self.model, V3_MAX_TOKENS_PER_INPUT),
        )
        return packing.effective_limits(
            hard, self.options, tokens_per_window=self.settings.budget.token_allowance
        )

    def model_info(self) -> ModelInfo:
        info = COHERE_MODELS[self.model]
        if self.embedding_type != "float":  # int8 and ±1 vectors are not unit length
            return dataclasses.replace(info, normalized=False)
        return info

    def token_counter(self) -> TokenCounter:
        return self._counter

    def prepare(self, texts: Sequence[str]) -> PreparedTexts:
        """The API truncates long texts itself (``truncate="END"``); empty texts are skipped."""
        return packing.prepare_texts(
            texts,
            counter=self._counter,
            max_tokens_per_input=self.limits.max_tokens_per_input,
            policy=self.too_long_policy,
            truncate_locally=False,
            skip_empty=True,
        )

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self._embed(texts, DOCUMENT_INPUT)

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self._embed(texts, QUERY_INPUT)

    def document_input_type(self) -> str:
        return DOCUMENT_INPUT

    def query_input_type(self) -> str:
        return QUERY_INPUT

    def lineage(self) -> ModelLineage:
        info = super().lineage()
        info["embedding_type"] = self.embedding_type
        return info

    def _close_sdk(self, sdk: Any) -> None:
        sdk.__exit__(None, None, None)  # closes its httpx client

    def base_url(self) -> str | None:
        url = self.credentials.base_url if self.credentials is not None else None
        url = url or os.environ.get("CO_API_URL")
        if not url:
            return None
        url = url.rstrip("/")
        for suffix in ("/v1", "/v2"):
            url = url.removesuffix(suffix)
        return url

    # -- requests ------------------------------------------------------------------------

    def _embed(self, texts: Sequence[str], input_type: str) -> list[list[float]]:
        if not texts:
            return []
        return packing.embed_in_requests(
            self.prepare(texts),
            limits=self.limits,
            dimension=self.dimension,
            send=lambda batch, tokens: self._send(batch, tokens, input_type),
            what=self.what,
        )

    def _send(self, texts: Sequence[str], tokens: int, input_type: str) -> list[list[float]]:
        answer = self._limiter.call(
            lambda timeout: self._request(texts, input_type, timeout),
            tokens=tokens,
            retry=self.settings.retry,
            what=self.what,
            actual_tokens=lambda a: a.tokens,
        )
        return answer.vectors

    def sdk_client(self) -> cohere.ClientV2:
        """The SDK client (for the embed jobs, :mod:`.cohere_jobs`)."""
        return self._client()

    def api_error(self, exc: Exception) -> Exception:
        """An HTTP error of the API as this provider's error (the key redacted)."""
        return self._api_error(exc)

    def vector_of(self, values: Sequence[Any]) -> list[float]:
        """One embedding as Cohere sends it (of :attr:`embedding_type`) as floats: int8 and
        uint8 values as they come, packed bits unpacked to +1.0 / -1.0."""
        if self.embedding_type in ("binary", "ubinary"):
            return unpack_bits(values, offset=128 if self.embedding_type == "binary" else 0)
        return [float(x) for x in values]

    def _client(self) -> cohere.ClientV2:
        with self._sdk_lock:
            if self._sdk is None:
                import cohere

                key = self.credentials.api_key if self.credentials is not None else None
                if not key:
                    raise ProviderConfigError(
                        f"Cohere needs an API key: set the password of Airflow connection "
                        f"{self.conn_id!r}."
                    )
                self._sdk = cohere.ClientV2(
                    api_key=key,
                    base_url=self.base_url(),
                    timeout=self.settings.retry.timeout_s,
                    max_retries=0,
                )
            return cast("cohere.ClientV2", self._sdk)

    def _request(self, texts: Sequence[str], input_type: str, timeout: float) -> Answer:
        import httpx
        from cohere.core.api_error import ApiError

        kwargs: dict[str, Any] = {
            "texts": list(texts),
            "model": self.model,
            "input_type": input_type,
            "embedding_types": [self.embedding_type],
            "truncate": "END" if self.too_long_policy == "truncate" else "NONE",
            "request_options": {"max_retries": 0, "timeout": timeout},
        }
        if self.output_dimension is not None:
            kwargs["output_dimension"] = self.output_dimension
        client = self._client()
        try:
            response = client.embed(**kwargs)
        except ApiError as exc:
            raise self._api_error(exc) from None
        except httpx.TimeoutException:
            raise RetryableError(f"timed out after {timeout:.1f} s", kind="timeout") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"connection failed: {exc}", kind="connection") from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._malformed(exc) from None
        try:
            return self._read(response, len(texts))
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._malformed(exc) from None

    def _read(self, response: Any, expected: int) -> Answer:
        embeddings = response.embeddings
        field = "float_" if self.embedding_type == "float" else self.embedding_type
        rows = getattr(embeddings, field, None)
        if rows is None and isinstance(embeddings, Mapping):
            rows = embeddings.get(self.embedding_type)
        if rows is None:
            raise EmbeddingError(f"{self.what}: no {self.embedding_type!r} embeddings in response.")
        if len(rows) != expected:
            raise EmbeddingError(f"{self.what}: returned {len(rows)} vectors for {expected} texts.")
        vectors = [self.vector_of(row) for row in rows]
        meta = getattr(response, "meta", None)
        billed = getattr(getattr(meta, "billed_units", None), "input_tokens", None)
        return Answer(vectors, int(billed) if billed else None)

    def _api_error(self, exc: Exception) -> Exception:
        status = getattr(exc, "status_code", None)
        body = getattr(exc, "body", None)
        if status is None or 200 <= status < 300:  # a 2xx the SDK could not decode
            return self._malformed(exc)
        message = body.get("message", body) if isinstance(body, dict) else body
        return ratelimit.classify_http_error(
            status,
            getattr(exc, "headers", None) or {},
            str(message),
            what=self.what,
            conn_id=self.conn_id,
            api_key=self.credentials.api_key if self.credentials is not None else None,
        )

    def _malformed(self, exc: Exception) -> EmbeddingError:
        secret = self.credentials.api_key if self.credentials is not None else None
        detail = ratelimit.redact(str(getattr(exc, "body", None) or exc), secret)[:200]
        return EmbeddingError(f"{self.what}: malformed response ({type(exc).__name__}: {detail}).")


def _embedding_type(value: Any) -> str:
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise ProviderConfigError("embedding_types takes exactly one type per provider.")
        value = value[0]
    if value not in EMBEDDING_TYPES:
        raise ProviderConfigError(
            f"embedding_types must be one of {', '.join(EMBEDDING_TYPES)}; got {value!r}."
        )
    return str(value)


def unpack_bits(packed: Sequence[int], *, offset: int = 0) -> list[float]:
    """Packed bits (first bit = highest) to +1.0 / -1.0 floats, 8 per byte.

    ``offset`` 128 undoes Cohere's signed ``binary`` encoding (unsigned byte - 128).
    """
    out: list[float] = []
    for value in packed:
        byte = int(value) + offset
        if not 0 <= byte <= 255:
            raise ValueError(f"packed byte {value} out of range")
        out.extend(1.0 if byte >> shift & 1 else -1.0 for shift in range(7, -1, -1))
    return out
