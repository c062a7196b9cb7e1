"""Production queries to replay on both models: where they are, read, checked and sampled.

The ``query_log`` param names them (:func:`parse`): a file path (JSONL with the query in a
field, ``"query"`` unless ``{"path": ..., "field": ...}`` says otherwise, or plain text,
one query a line), an inline JSON list of strings, or ``{"collection": ..., "field":
...}``: the payload field of a Qdrant collection where the application logs its queries.
Reading (:func:`read`) skips entries without text and counts them; a log that is missing,
empty, not text, or whose collection or field does not exist fails with what to change
(:class:`QueryLogError`), in ``assess_compatibility``, before anything is created.

Sampling (:func:`sample`) is deterministic and does not depend on the order of the log:
queries that differ only in case and spacing are one query, and each distinct query is
ranked by a keyed hash of its normalized text; the ``size`` lowest are kept. The same log
gives the same sample on every worker and run. Each distinct query counts once: a head
query asked a thousand times weighs as much as one asked once.

An inline list stays in the run's conf, where the user put it: the plan (an XCom, and the
migration's record) keeps only its count. Nothing here logs a query; callers get the texts
in memory only, and the report keeps them truncated (``checks/traffic.py``).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from qdrant_client import QdrantClient

from include.qdrant_migration.choices import named_with_hints
from include.qdrant_migration.texts import extract_text

#: The JSONL field that holds the query unless the param names another.
DEFAULT_FIELD = "query"
#: The most entries read from a file or an inline list, and points from a collection
#: (scrolled in id order): a bigger log is sampled from its first ones.
MAX_ENTRIES = 1_000_000
MAX_POINTS = 100_000
#: The keys of the object form of ``query_log``.
KEYS = ("path", "collection", "field")
#: Points scrolled per request from a query-log collection.
PAGE = 1_000
#: The key of the hash that ranks queries (changing it changes every sample).
_SAMPLE_KEY = b"qdrant-migration-query-log"


class QueryLogError(ValueError):
    """The query log cannot be read as queries; the message says what to change."""


@dataclass(frozen=True)
class QueryLog:
    """Where the production queries are (one of ``path``, ``collection``, ``inline``)."""

    path: str | None = None
    collection: str | None = None
    #: The payload field of ``collection``, or the JSONL field of ``path``.
    field: str | None = None
    #: How many queries the run's conf lists inline (they stay there).
    inline: int = 0

    def describe(self) -> str:
        if self.collection:
            return f"payload field {self.field!r} of collection {self.collection!r}"
        if self.path:
            return f"file {self.path!r}"
        return f"{self.inline} queries listed in the run's conf"


@dataclass(frozen=True)
class Sample:
    """The sampled queries (in memory only) and what reading the log found."""

    queries: list[str]
    #: Entries read (lines, list items, points), those without text, and distinct queries.
    entries: int
    skipped: int
    distinct: int


def parse(value: object) -> QueryLog | None:
    """The ``query_log`` param, checked for its shape (nothing is read yet)."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, str):
        return QueryLog(path=value)
    if isinstance(value, list):
        for number, item in enumerate(value, 1):
            if not isinstance(item, str):
                raise QueryLogError(
                    f"query_log item {number} must be a query (a string); got {str(item)[:80]!r}."
                )
        return QueryLog(inline=len(value))
    if isinstance(value, dict):
        return _parse_object(value)
    raise QueryLogError(
        "query_log must be a file path, a JSON list of queries, or "
        '{"collection": ..., "field": ...}; got ' + f"{type(value).__name__}."
    )


def _parse_object(value: dict[object, object]) -> QueryLog:
    unknown = sorted(str(k) for k in value if k not in KEYS)
    if unknown:
        raise QueryLogError(
            f"query_log has unknown key(s) {named_with_hints(unknown, KEYS)}; it takes "
            f"{', '.join(KEYS)}."
        )
    given: dict[str, str | None] = {}
    for name in KEYS:
        item = value.get(name)
        if item is not None and (not isinstance(item, str) or not item.strip()):
            raise QueryLogError(f"query_log.{name} must be a non-empty string; got {item!r}.")
        given[name] = item if isinstance(item, str) else None
    path, collection, field = given["path"], given["collection"], given["field"]
    if bool(path) == bool(collection):
        raise QueryLogError(
            'query_log needs either "path" (a JSONL or text file) or "collection" (with '
            '"field", the payload field that holds the query), not both or neither.'
        )
    if collection and not field:
        raise QueryLogError(
            f'query_log names collection {collection!r} but no "field": name the payload '
            "field that holds each logged query."
        )
    return QueryLog(path=path, collection=collection, field=field)


def read(
    client: QdrantClient | None,
    log: QueryLog,
    inline: Sequence[object] | None,
    size: int,
) -> Sample:
    """The log's queries, sampled to ``size``; :class:`QueryLogError` when there are none.

    ``inline``: the list of the run's conf (for an inline log); ``client``: for a
    collection.
    """
    if log.collection:
        if client is None:
            raise QueryLogError("A query log in a collection needs the Qdrant connection.")
        found = sample(_collection_entries(client, log.collection, str(log.field)), size)
    elif log.path:
        found = sample(_file_entries(Path(log.path), log.field), size)
    else:
        found = sample(
            (i if isinstance(i, str) else None for i in islice(inline or [], MAX_ENTRIES)), size
        )
    if not found.queries:
        raise QueryLogError(
            f"query_log ({log.describe()}) has no query: {found.entries} entries read, "
            f"none with text. Name a log with the application's search queries."
        )
    return found


def sample(entries: Iterable[str | None], size: int) -> Sample:
    """The ``size`` distinct queries of lowest rank (a keyed hash of the normalized text),
    lowest first; ``None`` entries and blank ones are counted as skipped."""
    kept: list[tuple[int, str]] = []  # a max-heap of the kept ranks, negated
    seen: set[int] = set()
    entries_read = skipped = 0
    for entry in entries:
        entries_read += 1
        text = " ".join(entry.split()) if entry else ""
        if not text:
            skipped += 1
            continue
        digest = hashlib.blake2b(text.casefold().encode(), key=_SAMPLE_KEY, digest_size=8)
        rank = int.from_bytes(digest.digest(), "big")
        if rank in seen:
            continue
        seen.add(rank)
        if len(kept) < size:
            heapq.heappush(kept, (-rank, text))
        elif -kept[0][0] > rank:
            heapq.heapreplace(kept, (-rank, text))
    queries = [text for _, text in sorted(kept, reverse=True)]
    return Sample(queries, entries_read, skipped, len(seen))


def _file_entries(path: Path, field: str | None) -> Iterator[str | None]:
    lines = _text_lines(path)
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise QueryLogError(f"query_log file {str(path)!r} is empty (no line with a query).")
    if not first.lstrip().startswith("{"):
        if field:
            raise QueryLogError(
                f"query_log file {str(path)!r} is plain text (one query a line), but a JSONL "
                f"field {field!r} is named: give JSONL lines, or leave field out."
            )
        yield first
        yield from islice(lines, MAX_ENTRIES - 1)
        return
    wanted = field or DEFAULT_FIELD
    rows = (_jsonl_query(line, wanted) for line in islice(lines, MAX_ENTRIES - 1))
    head = _jsonl_query(first, wanted)
    yield head
    texts = 1 if head else 0
    for text in rows:
        texts += text is not None
        yield text
    if not texts:
        keys = ", ".join(sorted(json.loads(first))) if _is_object(first) else "not JSON"
        raise QueryLogError(
            f"query_log file {str(path)!r} is JSONL, but no line has text in field {wanted!r} "
            f"(the first line's keys: {keys}). Name the field: "
            f'{{"path": "{path}", "field": "<the key that holds the query>"}}.'
        )


def _text_lines(path: Path) -> Iterator[str]:
    """The file's lines; errors that say it is missing, not a file, or not UTF-8 text."""
    if not path.exists():
        raise QueryLogError(
            f"query_log file {str(path)!r} does not exist on this worker. Give a path every "
            "Airflow worker can read, an inline JSON list of queries, or a collection."
        )
    if not path.is_file():
        raise QueryLogError(f"query_log {str(path)!r} is not a file.")
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if "\x00" in line:
                    raise UnicodeError(f"a NUL byte on line {number}")
                yield line
    except UnicodeError as error:  # a decoding error, or the NUL byte above
        raise QueryLogError(
            f"query_log file {str(path)!r} is not text ({error}): give a UTF-8 JSONL file "
            "with a query per line, or plain text with one query a line."
        ) from None
    except OSError as error:
        raise QueryLogError(f"query_log file {str(path)!r} cannot be read: {error}.") from None


def _is_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _jsonl_query(line: str, field: str) -> str | None:
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return extract_text(row, field)[0] if isinstance(row, dict) else None


def _collection_entries(client: QdrantClient, collection: str, field: str) -> Iterator[str | None]:
    if not client.collection_exists(collection):
        names = sorted(c.name for c in client.get_collections().collections)
        raise QueryLogError(
            f"query_log collection {collection!r} does not exist. Existing collections: "
            f"{', '.join(names) or 'none'}."
        )
    top = field.split(".")[0]
    offset = None
    read = texts = 0
    while read < MAX_POINTS:
        page, offset = client.scroll(
            collection,
            limit=min(PAGE, MAX_POINTS - read),
            offset=offset,
            with_payload=[top],
            with_vectors=False,
        )
        for point in page:
            text = extract_text(point.payload, field)[0]
            texts += text is not None
            yield text
        read += len(page)
        if offset is None or not page:
            break
    if not texts:
        raise QueryLogError(_no_field(client, collection, field, read))


def _no_field(client: QdrantClient, collection: str, field: str, read: int) -> str:
    if not read:
        return f"query_log collection {collection!r} is empty: it logs no query yet."
    sample, _ = client.scroll(collection, limit=16, with_payload=True, with_vectors=False)
    fields = sorted({k for p in sample for k in (p.payload or {})})
    return (
        f"None of {read} points of query_log collection {collection!r} has text in payload "
        f"field {field!r}. Fields present: {', '.join(fields) or 'none'}. Set query_log's "
        '"field" to the one that holds the query.'
    )
