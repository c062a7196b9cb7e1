"""The query log: its shapes, reading files, inline lists and collections, the deterministic
sample, and every way a log can be bad, each with a message that says what to change."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.querylog import (
    QueryLog,
    QueryLogError,
    parse,
    read,
    sample,
)
from include.qdrant_migration.spec import Judge, MigrationSpec, SpecError

QUERIES = [f"how do I parse {word} values" for word in ("json", "csv", "xml", "toml", "ini")]


def _jsonl(path: Path, rows: list[object]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_the_shapes_of_the_param() -> None:
    assert parse(None) is None and parse("") is None and parse([]) is None
    assert parse("/logs/q.jsonl") == QueryLog(path="/logs/q.jsonl")
    assert parse(["a", "b"]) == QueryLog(inline=2)
    assert parse({"collection": "search_log", "field": "q"}) == QueryLog(
        collection="search_log", field="q"
    )
    assert parse({"path": "/l.jsonl", "field": "text"}) == QueryLog(path="/l.jsonl", field="text")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"colection": "log", "field": "q"}, ["'colection'", "did you mean 'collection'"]),
        ({"collection": "log"}, ['no "field"']),
        ({"path": "/a", "collection": "log", "field": "q"}, ["either", "not both"]),
        ({"field": "q"}, ["either"]),
        ({"collection": "", "field": "q"}, ["query_log.collection", "non-empty"]),
        (["ok", 3], ["item 2", "string"]),
        (42, ["file path", "int"]),
    ],
)
def test_a_bad_shape_is_refused_with_what_to_change(value: object, words: list[str]) -> None:
    with pytest.raises(QueryLogError) as refused:
        parse(value)
    for word in words:
        assert word in str(refused.value)


def test_jsonl_plain_text_and_inline_logs(tmp_path: Path) -> None:
    rows: list[object] = [{"query": q, "ts": i} for i, q in enumerate(QUERIES)]
    rows += [{"ts": 99}, {"query": 7}, "not an object"]  # skipped: no text in "query"
    jsonl = read(None, QueryLog(path=_jsonl(tmp_path / "log.jsonl", rows)), None, 100)
    assert sorted(jsonl.queries) == sorted(QUERIES)
    assert (jsonl.entries, jsonl.skipped, jsonl.distinct) == (8, 3, 5)

    named = [{"q": {"text": q}} for q in QUERIES]
    nested = QueryLog(path=_jsonl(tmp_path / "nested.jsonl", named), field="q.text")
    assert sorted(read(None, nested, None, 100).queries) == sorted(QUERIES)

    text = tmp_path / "log.txt"
    text.write_text("\n".join(["", *QUERIES, "  ", QUERIES[0].upper()]) + "\n", encoding="utf-8")
    plain = read(None, QueryLog(path=str(text)), None, 100)
    assert sorted(plain.queries) == sorted(QUERIES)  # the upper-case repeat is the same query

    inline = read(None, QueryLog(inline=3), ["a  query", "A query", ""], 100)
    assert inline.queries == ["a query"] and (inline.skipped, inline.distinct) == (1, 1)


def test_the_sample_is_deterministic_whatever_the_order() -> None:
    log = [f"query number {i}" for i in range(500)]
    first = sample(log, 50)
    shuffled = log[:]
    random.Random(7).shuffle(shuffled)
    again = sample(shuffled + [q.upper() for q in log[:100]], 50)  # and with duplicates
    assert first.queries == again.queries and len(first.queries) == 50
    assert (first.distinct, again.distinct) == (500, 500)
    # a bigger sample keeps the smaller one (the same ranks, more of them)
    assert sample(log, 80).queries[:50] == first.queries


def test_an_inline_log_stays_in_the_conf_not_in_the_plan() -> None:
    secret = "how do I reset the password of the customer 4711"
    spec = MigrationSpec.from_params({"alias": "docs", "query_log": [secret, "other"]})
    assert spec.query_log == QueryLog(inline=2)
    assert secret not in json.dumps(codec.encode(spec))


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.jsonl", None, ["does not exist on this worker"]),
        ("empty.jsonl", b"", ["is empty"]),
        ("blank.txt", b"\n  \n\n", ["is empty"]),
        ("binary.bin", bytes(range(256)) * 4, ["is not text"]),
        ("nul.txt", b"a query\n\x00\x01\x02\n", ["is not text", "NUL"]),
        (
            "wrong_field.jsonl",
            b'{"q": "json dumps", "ts": 1}\n{"q": "csv reader"}\n',
            ["no line has text in field 'query'", "keys: q, ts", '"field"'],
        ),
    ],
)
def test_a_bad_file_says_what_is_wrong(
    tmp_path: Path, name: str, content: bytes | None, words: list[str]
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(QueryLogError) as refused:
        read(None, QueryLog(path=str(path)), None, 10)
    for word in [str(path), *words]:
        assert word in str(refused.value)


def test_a_directory_and_a_text_file_with_a_field(tmp_path: Path) -> None:
    with pytest.raises(QueryLogError, match="is not a file"):
        read(None, QueryLog(path=str(tmp_path)), None, 10)
    text = tmp_path / "log.txt"
    text.write_text("json dumps\n", encoding="utf-8")
    with pytest.raises(QueryLogError, match="plain text"):
        read(None, QueryLog(path=str(text), field="q"), None, 10)
    with pytest.raises(QueryLogError, match="has no query"):
        read(None, QueryLog(inline=1), [""], 10)


@pytest.fixture
def logged() -> QdrantClient:
    """A collection where an application logs its searches (and some other events)."""
    client = QdrantClient(location=":memory:")
    client.create_collection("search_log", vectors_config={})
    payloads: list[dict[str, object]] = [{"q": q, "user": i} for i, q in enumerate(QUERIES)]
    payloads += [{"q": 12}, {"event": "login"}, {"q": ""}]
    client.upsert(
        "search_log",
        [qm.PointStruct(id=i, vector={}, payload=p) for i, p in enumerate(payloads)],
    )
    client.create_collection("empty_log", vectors_config={})
    return client


def test_a_collection_log_reads_the_field_and_skips_what_is_not_text(
    logged: QdrantClient,
) -> None:
    found = read(logged, QueryLog(collection="search_log", field="q"), None, 100)
    assert sorted(found.queries) == sorted(QUERIES)
    assert (found.entries, found.skipped) == (8, 3)


@pytest.mark.parametrize(
    ("log", "words"),
    [
        (
            QueryLog(collection="nope", field="q"),
            ["'nope' does not exist", "empty_log, search_log"],
        ),
        (
            QueryLog(collection="search_log", field="query"),
            ["None of 8 points", "'query'", "Fields present: event, q, user"],
        ),
        (QueryLog(collection="empty_log", field="q"), ["'empty_log' is empty"]),
    ],
)
def test_a_bad_collection_log_says_what_exists(
    logged: QdrantClient, log: QueryLog, words: list[str]
) -> None:
    with pytest.raises(QueryLogError) as refused:
        read(logged, log, None, 10)
    for word in words:
        assert word in str(refused.value)


def test_the_judge_param() -> None:
    base = {"alias": "docs", "query_log": ["json dumps"]}
    spec = MigrationSpec.from_params(base | {"judge": {"conn_id": "cohere_default"}})
    assert spec.judge == Judge("cohere", "rerank-v3.5", "cohere_default")
    compatible = {"provider": "compatible", "model": "BAAI/bge-reranker-v2-m3", "conn_id": "vllm"}
    assert MigrationSpec.from_params(base | {"judge": compatible}).judge == Judge(**compatible)
    for judge, words in [
        ({"provider": "openai", "conn_id": "c"}, "judge.provider must be one of"),
        ({"provider": "compatible", "conn_id": "c"}, "judge.model is needed"),
        ({"model": "rerank-v3.5"}, "needs an Airflow connection"),
        ({"conn_id": "c", "modle": "x"}, "did you mean 'model'"),
        ("cohere", "must be a JSON object"),
    ]:
        with pytest.raises(SpecError, match=words):
            MigrationSpec.from_params(base | {"judge": judge})
    with pytest.raises(SpecError, match="set query_log too"):
        MigrationSpec.from_params({"alias": "docs", "judge": {"conn_id": "c"}})
    with pytest.raises(SpecError, match="query_log item 1"):
        MigrationSpec.from_params({"alias": "docs", "query_log": [1]})
