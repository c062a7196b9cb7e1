"""A production query log, as an application would write it, for the demo corpus.

Users search the Python standard library's documentation: by name (``json dumps``), by
task (``how do I serialize obj to a json``), by a few keywords (``asyncio queue
timeout``), or paste an error message. Each query is made from one document of the
corpus (most from the documents seeded in the test store, some from the rest: users ask
for what is not indexed), in one of those styles. The log repeats popular queries and
varies their case, as real logs do, and holds a few lines that are not queries at all.

Deterministic: the same corpus and seed give the same log.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

_WORD = re.compile(r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])|\d+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "the",
        "this",
        "to",
        "was",
        "which",
        "with",
    ]
)
_FORMS = (
    "{name}",
    "{name} {module}",
    "how do i {task}",
    "how to {task} in python",
    "{module} {keywords}",
    "{name} example",
    "{name} vs {other}",
    "what does {name} do",
    "{keywords}",
    "python {name} not working",
)
#: Pasted errors: long, as users paste them (the report must cut them).
_PASTED = (
    "Traceback (most recent call last): TypeError raised inside {title} when called with "
    "the arguments my code passes, how do I fix this error in {module}"
)


def _name_words(title: str) -> str:
    last = title.rsplit(".", 1)[-1]
    return " ".join(w.lower() for w in _WORD.findall(last.replace("_", " ")))


def _task(text: str) -> str:
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return " ".join(first.rstrip(".").lower().split()[:7])


def _keywords(text: str, rng: random.Random) -> str:
    words = [w.lower() for w in _WORD.findall(text) if len(w) > 3 and w.lower() not in _STOP]
    return " ".join(rng.sample(words, k=min(3, len(words))))


def queries_for(docs: Sequence[dict[str, Any]], count: int, seed: int = 2026) -> list[str]:
    """``count`` distinct queries made from ``docs`` (each form at most once a document)."""
    rng = random.Random(seed)
    made: dict[str, str] = {}
    while len(made) < count:
        doc, other = rng.choice(docs), rng.choice(docs)
        if rng.random() < 0.01:
            query = _PASTED.format(title=doc["title"], module=doc["module"])
        else:
            query = rng.choice(_FORMS).format(
                name=_name_words(doc["title"]),
                module=doc["module"],
                task=_task(doc["text"]),
                keywords=_keywords(doc["text"], rng),
                other=_name_words(other["title"]),
            )
        query = " ".join(query.split())
        made.setdefault(query.casefold(), query)
    return list(made.values())


def log_lines(queries: Sequence[str], seed: int = 7) -> Iterator[dict[str, Any]]:
    """The log's JSON lines: every query once, popular ones again (some in another case),
    and a few events that are not searches."""
    rng = random.Random(seed)
    popular = queries[: max(1, len(queries) // 20)]
    events: list[str | None] = list(queries)
    events += [rng.choice(popular) for _ in range(len(queries) // 4)]
    events += [q.upper() for q in rng.sample(popular, k=min(10, len(popular)))]
    events += [None] * 5  # a page view: no query
    rng.shuffle(events)
    for second, query in enumerate(events):
        user = f"user-{rng.randrange(400):03d}"
        if query is None:
            yield {"ts": 1_790_000_000 + second, "user": user, "event": "page_view"}
        else:
            yield {"ts": 1_790_000_000 + second, "user": user, "event": "search", "query": query}


def write_log(path: Path, queries: Sequence[str]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for line in log_lines(queries):
            out.write(json.dumps(line) + "\n")
    return path


def production_queries(
    corpus: Sequence[dict[str, Any]], indexed: int, count: int = 1000
) -> list[str]:
    """``count`` distinct queries: 85% about the first ``indexed`` documents of ``corpus``
    (those in the store), the rest about documents the store does not hold."""
    about_indexed = queries_for(corpus[:indexed], count * 85 // 100)
    seen = {q.casefold() for q in about_indexed}
    rest = [q for q in queries_for(corpus[indexed:], count, seed=2027) if q.casefold() not in seen]
    return about_indexed + rest[: count - len(about_indexed)]
