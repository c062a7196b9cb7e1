"""Cohere's rerank endpoint (``rerank-v3.5`` or the model named) through the official SDK.

``cohere.ClientV2().rerank(model=, query=, documents=, top_n=)`` posts to ``/v2/rerank``
and answers ``results`` (``index``, ``relevance_score`` in [0, 1], best first) and
``meta.billed_units.search_units``: Cohere bills a search unit per query of up to 100
documents (longer documents are cut at ``max_tokens_per_doc``, 4,096 tokens by default).
As for embeddings, the client runs with ``max_retries=0``: the shared limiter retries,
honouring ``Retry-After``. The base URL is the connection's host root (``CO_API_URL``
without one), as for the embedding provider.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from include.qdrant_migration.providers import ProviderConfigError
from include.qdrant_migration.rerankers.base import Reranker, Scores, ordered, transport_errors


class CohereReranker(Reranker):
    name: ClassVar[str] = "cohere"
    billing_unit: ClassVar[str | None] = "search unit"
    documents_per_unit: ClassVar[int] = 100

    def base_url(self) -> str | None:
        url = super().base_url() or os.environ.get("CO_API_URL")
        return url.rstrip("/").removesuffix("/v1").removesuffix("/v2") if url else None

    def _client(self) -> Any:
        with self._sdk_lock:
            if self._sdk is None:
                import cohere

                if not self.api_key:
                    raise ProviderConfigError(
                        f"The Cohere judge needs an API key: set the password of Airflow "
                        f"connection {self.conn_id!r}."
                    )
                self._sdk = cohere.ClientV2(
                    api_key=self.api_key,
                    base_url=self.base_url(),
                    timeout=self.settings.retry.timeout_s,
                    max_retries=0,
                )
            return self._sdk

    def close(self) -> None:
        with self._sdk_lock:
            if self._sdk is not None:
                self._sdk.__exit__(None, None, None)  # closes its httpx client
                self._sdk = None

    def _request(self, query: str, documents: list[str], timeout: float) -> Scores:
        from cohere.core.api_error import ApiError

        client = self._client()
        try:
            with transport_errors(timeout):
                response = client.rerank(
                    model=self.model,
                    query=query,
                    documents=documents,
                    top_n=len(documents),
                    request_options={"max_retries": 0, "timeout": timeout},
                )
        except ApiError as error:
            status = error.status_code
            if status is None or 200 <= status < 300:
                raise self._malformed(error.body) from None
            body = error.body
            said = body.get("message", body) if isinstance(body, dict) else body
            raise self._refused(status, dict(error.headers or {}), str(said)) from None
        except (ValueError, TypeError, AttributeError) as error:
            raise self._malformed(error) from None
        try:
            pairs = [(r.index, r.relevance_score) for r in response.results]
        except (TypeError, AttributeError) as error:
            raise self._malformed(error) from None
        billed = getattr(getattr(response.meta, "billed_units", None), "search_units", None)
        return Scores(ordered(pairs, len(documents), self.what), billed)
