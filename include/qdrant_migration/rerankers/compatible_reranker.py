"""The ``/rerank`` wire format that Jina AI, vLLM, Infinity and LiteLLM serve.

OpenAI's API has no rerank endpoint; the servers that rerank beside their OpenAI-compatible
routes speak Cohere's first rerank format instead, at ``<base URL>/rerank`` with the base
URL ending in ``/v1`` as for embeddings (``https://api.jina.ai/v1``,
``http://vllm:8000/v1``): ``{"model", "query", "documents": [str], "top_n"}`` in,
``{"results": [{"index", "relevance_score"}], "usage": {"total_tokens"}}`` out, the key as
a bearer token. There is no SDK for it, so it is one ``httpx`` request. Hugging Face's
text-embeddings-inference is not this format (``/rerank`` takes ``texts`` and answers a bare
list of ``{"index", "score"}``); a server in front of it that speaks the format is.
"""

from __future__ import annotations

from typing import Any, ClassVar

from include.qdrant_migration.providers import ProviderConfigError
from include.qdrant_migration.rerankers.base import Reranker, Scores, ordered, transport_errors


class CompatibleReranker(Reranker):
    name: ClassVar[str] = "compatible"

    def _configure(self) -> None:
        if not self.base_url():
            raise ProviderConfigError(
                f"The compatible judge needs its server's base URL (ending in /v1): set the host "
                f"of Airflow connection {self.conn_id!r} (or its extra base_url)."
            )

    def _client(self) -> Any:
        with self._sdk_lock:
            if self._sdk is None:
                import httpx

                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                self._sdk = httpx.Client(base_url=str(self.base_url()).rstrip("/"), headers=headers)
            return self._sdk

    def _request(self, query: str, documents: list[str], timeout: float) -> Scores:
        body = {"model": self.model, "query": query, "documents": documents}
        with transport_errors(timeout):
            answer = self._client().post(
                "/rerank", json=body | {"top_n": len(documents)}, timeout=timeout
            )
        if answer.status_code >= 400:
            raise self._refused(answer.status_code, dict(answer.headers), _message(answer))
        try:
            results = answer.json()["results"]
            pairs = [(int(r["index"]), float(r["relevance_score"])) for r in results]
        except (ValueError, TypeError, KeyError) as error:
            raise self._malformed(f"{type(error).__name__}: {answer.text[:120]}") from None
        return Scores(ordered(pairs, len(documents), self.what))


def _message(answer: Any) -> str:
    """The server's words: vLLM and Jina put them in ``message`` or ``detail``."""
    try:
        body = answer.json()
    except ValueError:
        return str(answer.text)
    if isinstance(body, dict):
        error = body.get("error")
        said = body.get("message") or body.get("detail") or error
        return str(said.get("message", said) if isinstance(said, dict) else said)
    return str(body)
