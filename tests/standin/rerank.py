"""Stand-ins for rerank endpoints, served by :class:`tests.standin.server.StandIn`.

* ``POST /v2/rerank`` (Cohere, what ``cohere.ClientV2().rerank`` sends): ``model``,
  ``query``, ``documents`` (strings), ``top_n``, ``max_tokens_per_doc``; the real response
  (``results`` best first with ``index`` and ``relevance_score``, ``meta.billed_units.
  search_units``: one per 100 documents) and Cohere's error bodies (``{"id", "message"}``),
  the Cohere key.
* ``POST /v1/rerank`` (Jina AI, vLLM: Cohere's first format): the same request, the
  response with ``model``, ``usage.total_tokens`` and each result's ``document``; vLLM's
  error bodies, the OpenAI key.

The server checks the key and applies the faults set with ``StandIn.fail_next(path=...)``
(429 with ``Retry-After``, 5xx, disconnects) before it gets here, as for embeddings.

Scores are deterministic, and meaningful: :func:`relevance` is the share of the query's
words (stopwords left out) the document contains, with a small hash-seeded tie-break, so
a result list that holds the documents sharing the query's words is judged better.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.standin.server import RequestRecord

COHERE_PATH, COMPATIBLE_PATH = "/v2/rerank", "/v1/rerank"
PATHS = (COHERE_PATH, COMPATIBLE_PATH)
COHERE_MODELS = ("rerank-v3.5", "rerank-english-v3.0", "rerank-multilingual-v3.0")
COMPATIBLE_MODELS = ("standin-reranker", "BAAI/bge-reranker-v2-m3")
MAX_DOCUMENTS = 10_000

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "be",
        "by",
        "can",
        "do",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "use",
        "using",
        "what",
        "when",
        "with",
    ]
)


def words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def relevance(query: str, document: str) -> float:
    """The stand-in judge's score, in [0.01, 0.99]: the share of the query's words found in
    the document, plus a tie-break below 0.01 drawn from both texts."""
    wanted = words(query)
    share = len(wanted & words(document)) / len(wanted) if wanted else 0.0
    digest = hashlib.sha256(f"{query}\x00{document}".encode()).digest()
    return round(0.01 + 0.97 * share + int.from_bytes(digest[:2], "big") / 65536 / 100, 6)


def answer(path: str, payload: Mapping[str, Any], record: RequestRecord) -> tuple[int, bytes]:
    """The status and body of a rerank request (after the key and the faults)."""
    cohere = path == COHERE_PATH
    model, query, documents = payload.get("model"), payload.get("query"), payload.get("documents")
    record.model = str(model)
    record.texts = list(documents) if isinstance(documents, list) else []
    record.input_type = "rerank"
    known = COHERE_MODELS if cohere else COMPATIBLE_MODELS
    if model not in known:
        if cohere:
            said = f"model '{model}' not found, make sure the correct model ID was used"
        else:
            said = f"The model `{model}` does not exist."
        return _error(cohere, 404, said)
    problem = _invalid(query, documents, payload.get("top_n"))
    if problem:
        return _error(cohere, 400, problem if not cohere else f"invalid request: {problem}")
    assert isinstance(query, str) and isinstance(documents, list)
    scored = sorted(
        ((i, relevance(query, d)) for i, d in enumerate(documents)), key=lambda r: -r[1]
    )[: payload.get("top_n") or len(documents)]
    units = math.ceil(len(documents) / 100)
    record.tokens = units
    if cohere:
        body: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "results": [{"index": i, "relevance_score": s} for i, s in scored],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": units}},
        }
    else:
        tokens = sum(len(words(d)) + len(words(query)) for d in documents)
        body = {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": model,
            "usage": {"total_tokens": tokens},
            "results": [
                {"index": i, "document": {"text": documents[i]}, "relevance_score": s}
                for i, s in scored
            ],
        }
    return 200, json.dumps(body).encode()


def _invalid(query: object, documents: object, top_n: object) -> str | None:
    if not isinstance(query, str) or not query.strip():
        return "query must be a non-empty string"
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        return "documents must be a list of strings"
    if not documents:
        return "list of documents must not be empty"
    if len(documents) > MAX_DOCUMENTS:
        return f"too many documents: {len(documents)} > {MAX_DOCUMENTS}"
    if top_n is not None and (not isinstance(top_n, int) or top_n < 1):
        return "top_n must be a positive integer"
    return None


def _error(cohere: bool, status: int, message: str) -> tuple[int, bytes]:
    if cohere:
        body: dict[str, Any] = {"id": str(uuid.uuid4()), "message": message}
    else:
        kind = "NotFoundError" if status == 404 else "BadRequestError"
        body = {"object": "error", "message": message, "type": kind, "code": status}
    return status, json.dumps(body).encode()
