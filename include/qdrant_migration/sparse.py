"""BM25 sparse vectors, made the way Qdrant makes them.

``add_sparse`` gives the new collection a BM25 vector of each point's text, so that
applications can start hybrid search at the swap. A Qdrant server from 1.16 computes it
itself: the point carries ``Document(text, model="qdrant/bm25")`` and the server embeds it.
The embedded store (and an older server) gets the vector computed here by Qdrant Edge's
BM25 embedder, which uses the server's tokenizer, token ids and formula (English stemming
and stopwords, k=1.2, b=0.75, avg_len=256) and needs no download. The vector is stored
with the IDF modifier, which BM25 needs: the collection supplies the IDF part.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.qdrant import server_version, supports

MODEL = "qdrant/bm25"
#: Servers that embed ``Document(model="qdrant/bm25")`` themselves.
SERVER_BM25 = (1, 16, 0)


@cache
def _embedder() -> Any:
    from qdrant_edge import Bm25, Bm25Config

    return Bm25(Bm25Config(language="english"))


def _sparse(vector: Any) -> qm.SparseVector:
    return qm.SparseVector(indices=list(vector.indices), values=[float(v) for v in vector.values])


def on_server(client: QdrantClient) -> bool:
    """Whether ``client``'s Qdrant makes the BM25 vectors itself."""
    return server_version(client) is not None and supports(client, SERVER_BM25)


def documents(
    client: QdrantClient, texts: Sequence[str]
) -> Sequence[qm.SparseVector | qm.Document]:
    """The BM25 vector of each text as written: made by the server, or here."""
    if on_server(client):
        return [qm.Document(text=text, model=MODEL) for text in texts]
    return list(computed(texts))


def computed(texts: Sequence[str]) -> list[qm.SparseVector]:
    """The BM25 vectors of ``texts``, made here (what a server would make of them)."""
    embedder = _embedder()
    return [_sparse(embedder.embed_document(text)) for text in texts]


def query(client: QdrantClient, text: str) -> qm.SparseVector | qm.Document:
    """The BM25 query vector of ``text`` (every term weighs 1; the IDF comes from Qdrant)."""
    if on_server(client):
        return qm.Document(text=text, model=MODEL)
    return _sparse(_embedder().embed_query(text))
