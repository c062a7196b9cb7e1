"""The bad-input catalogue: conf, connections, names and payloads a user gets wrong.

Every entry runs through the real DAG (``dag.test()``) or the code the backfill runs, and
must fail in the first task, before anything is created, with a message that says what is
wrong and how to fix it; the source is never written. Entries the params schema refuses
never start a run at all. Payload entries must never fail a run: a bad point is recorded
with its reason, a long text is cut to the model's window with the model's own tokenizer.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models as qm

from include.qdrant_migration.providers import get_provider
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.texts import select_texts
from tests.dags.conftest import task_states

pytestmark = pytest.mark.integration

ALIAS = {"alias": "articles"}

#: Query logs a user gets wrong, written once for the catalogue below.
LOGS = Path(tempfile.mkdtemp(prefix="qmm-bad-query-logs-"))
(LOGS / "empty.jsonl").write_bytes(b"")
(LOGS / "binary.jsonl").write_bytes(bytes(range(256)) * 8)
(LOGS / "other_field.jsonl").write_text('{"q": "json dumps", "ts": 1}\n', encoding="utf-8")
#: The old model is named: the seeded store records no lineage.
REPLAY = {**ALIAS, "source_provider": "local", "source_model": "all-MiniLM-L6-v2"}

# -- conf and connections: refused by the first task ------------------------------------

#: (what is wrong, conf, words the error must contain)
FIRST_TASK_REFUSES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("misspelled param", {**ALIAS, "modle": "all-MiniLM-L6-v2"}, ["'modle'", "'model'"]),
    ("unknown param", {**ALIAS, "colour": "blue"}, ["'colour'", "Known params"]),
    (
        "hosted provider without a connection",
        {**ALIAS, "provider": "openai", "model": "text-embedding-3-small"},
        ["provider_conn_id"],
    ),
    (
        "provider connection that does not exist",
        {
            **ALIAS,
            "provider": "openai",
            "model": "text-embedding-3-small",
            "provider_conn_id": "no_such_connection",
        },
        ["no_such_connection", "create"],
    ),
    (
        "qdrant connection that does not exist",
        {**ALIAS, "qdrant_conn_id": "no_such_qdrant"},
        ["no_such_qdrant", "create"],
    ),
    (
        "out-of-range provider option",
        {**ALIAS, "provider_options": {"max_concurrency": -1}},
        ["max_concurrency"],
    ),
    (
        "misspelled provider option",
        {**ALIAS, "provider_options": {"too_long_polciy": "skip"}},
        ["too_long_polciy", "too_long_policy"],
    ),
    (
        "eval_set row without relevant_ids",
        {**ALIAS, "eval_set": [{"query": "what is a vector?"}]},
        ["eval_set row 1", "relevant_ids"],
    ),
    (
        "eval_set path that is not there",
        {**ALIAS, "eval_set": "/nowhere/eval.jsonl"},
        ["eval_set", "/nowhere/eval.jsonl"],
    ),
    (
        "old model's provider without the model",
        {**ALIAS, "source_provider": "local"},
        ["source_model"],
    ),
    (
        "old model's hosted provider without a connection",
        {**ALIAS, "source_provider": "cohere", "source_model": "embed-v4.0"},
        ["source_provider_conn_id"],
    ),
    (
        "old model unknown to its provider",
        {**ALIAS, "source_model": "no-such-model"},
        ["no-such-model"],
    ),
    (
        "negative Qdrant budget",
        {**ALIAS, "qdrant_budget": {"points_per_second": -50}},
        ["qdrant_budget.points_per_second", "positive number", "-50"],
    ),
    (
        "zero Qdrant budget",
        {**ALIAS, "qdrant_budget": {"points_per_second": 0}},
        ["qdrant_budget.points_per_second", "positive number", "got 0"],
    ),
    (
        "Qdrant budget that is not a number",
        {**ALIAS, "qdrant_budget": {"max_search_p99_ms": "fast"}},
        ["qdrant_budget.max_search_p99_ms", "must be a number", "'fast'"],
    ),
    (
        "misspelled Qdrant budget key",
        {**ALIAS, "qdrant_budget": {"points_per_sec": 100}},
        ["'points_per_sec'", "did you mean 'points_per_second'"],
    ),
    ("alias that does not exist", {"alias": "nope"}, ["nope"]),
    ("dimensions the model cannot return", {**ALIAS, "dimensions": 128}, ["128"]),
    ("text field no point has", {**ALIAS, "text_field": "body"}, ["'body'", "Fields present"]),
    (
        "query log file that is not there",
        {**REPLAY, "query_log": "/nowhere/queries.jsonl"},
        ["QueryLogError", "'/nowhere/queries.jsonl' does not exist on this worker"],
    ),
    ("empty query log", {**REPLAY, "query_log": str(LOGS / "empty.jsonl")}, ["is empty"]),
    (
        "query log that is not text",
        {**REPLAY, "query_log": str(LOGS / "binary.jsonl")},
        ["binary.jsonl' is not text", "UTF-8"],
    ),
    (
        "query log without its field",
        {**REPLAY, "query_log": str(LOGS / "other_field.jsonl")},
        ["no line has text in field 'query'", "keys: q, ts"],
    ),
    (
        "query log collection that does not exist",
        {**REPLAY, "query_log": {"collection": "search_log", "field": "query"}},
        ["'search_log' does not exist", "articles_v1"],
    ),
    (
        "query log field that does not exist",
        {**REPLAY, "query_log": {"collection": "articles_v1", "field": "query"}},
        ["has text in payload field 'query'", "Fields present: kind, module, text, title"],
    ),
    (
        "query log object without a field",
        {**REPLAY, "query_log": {"collection": "search_log"}},
        ['no "field"'],
    ),
    (
        "query log without the old model",
        {**ALIAS, "query_log": ["json dumps"]},
        ["query_log replays each query on the old model too", "source_model"],
    ),
    (
        "judge of an unknown provider",
        {**REPLAY, "query_log": ["json dumps"], "judge": {"provider": "voyage", "conn_id": "c"}},
        ["judge.provider must be one of 'cohere', 'compatible'"],
    ),
    (
        "judge connection that does not exist",
        {**REPLAY, "query_log": ["json dumps"], "judge": {"conn_id": "no_judge"}},
        ["no_judge", "the judge's API key", "create"],
    ),
]


def _failure_text(capsys: pytest.CaptureFixture[str]) -> str:
    """What the failed task printed: dag.test() writes task logs to stdout."""
    out = capsys.readouterr()
    return out.out + out.err


def _collections(path: Path) -> set[str]:
    with open_client(QdrantSettings(path=str(path))) as client:
        return {c.name for c in client.get_collections().collections}


def _refused_in(
    dag: Any,
    first_task: str,
    store: Path,
    capsys: pytest.CaptureFixture[str],
    conf: dict[str, Any],
    words: list[str],
) -> dict[str, str | None]:
    """Run ``dag`` with ``conf``: it fails in ``first_task``, saying ``words``, and nothing
    is created (the source untouched). Returns the task states."""
    before = _collections(store)
    run = dag.test(run_conf=conf)

    states = task_states(run)
    assert run.state == "failed" and states[first_task] == "failed", states
    failure = _failure_text(capsys)
    for word in words:
        assert word in failure, failure[-3000:]
    assert _collections(store) == before
    return states


@pytest.mark.parametrize(
    ("conf", "words"),
    [pytest.param(conf, words, id=what) for what, conf, words in FIRST_TASK_REFUSES],
)
def test_the_first_task_refuses_with_the_reason_and_creates_nothing(
    dag: Any,
    qdrant_conn: Path,
    capsys: pytest.CaptureFixture[str],
    conf: dict[str, Any],
    words: list[str],
) -> None:
    states = _refused_in(dag, "assess_compatibility", qdrant_conn, capsys, conf, words)
    assert states["create_collection"] in {"upstream_failed", None}, states


@pytest.mark.parametrize(
    ("conf", "words"),
    [
        pytest.param({"action": "rollback"}, ["rollback needs the alias"], id="rollback"),
        pytest.param({"action": "retire"}, ["retire needs the migration"], id="retire"),
        pytest.param(
            {"action": "rollback", "alias": "articles", "acept_lost_writes": True},
            ["'acept_lost_writes'", "'accept_lost_writes'"],
            id="misspelled",
        ),
    ],
)
def test_the_lifecycle_dag_refuses_in_its_first_task(
    lifecycle_dag: Any,
    qdrant_conn: Path,
    capsys: pytest.CaptureFixture[str],
    conf: dict[str, Any],
    words: list[str],
) -> None:
    _refused_in(lifecycle_dag, "choose_action", qdrant_conn, capsys, conf, words)


# -- names the params schema refuses before any task -----------------------------------


@pytest.mark.parametrize(
    ("conf", "param"),
    [
        pytest.param({"alias": "articles; drop"}, "alias", id="alias with a space"),
        pytest.param({**ALIAS, "text_field": ""}, "text_field", id="empty text field"),
        pytest.param({**ALIAS, "qdrant_conn_id": ""}, "qdrant_conn_id", id="empty connection"),
        pytest.param({**ALIAS, "provider_options": "fast"}, "provider_options", id="options"),
    ],
)
def test_the_schema_refuses_bad_names_before_any_task(
    dag: Any, qdrant_conn: Path, conf: dict[str, Any], param: str
) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match=param):
        dag.test(run_conf=conf)
    assert _collections(qdrant_conn) == {"articles_v1"}


# -- payloads: recorded or cut, never a failed run ----------------------------------------

LONG = " ".join(f"word{i % 97} sentence." for i in range(40_000))  # about 500,000 characters


def _record(point: int, payload: dict[str, Any]) -> qm.Record:
    return qm.Record(id=point, payload=payload, vector=None)


def test_bad_payloads_are_recorded_and_long_texts_cut_with_the_models_tokenizer() -> None:
    provider = get_provider("local", "multilingual-e5-small")
    window = provider.limits.max_tokens_per_input
    assert window is not None
    records = [
        _record(1, {"text": "a normal text"}),
        _record(2, {}),
        _record(3, {"text": ""}),
        _record(4, {"text": "   \n"}),
        _record(5, {"text": 42}),
        _record(6, {"text": ["a", "list"]}),
        _record(7, {"text": LONG[:20_000]}),
        _record(8, {"text": LONG}),
        _record(9, {"text": {"nested": "object"}}),
    ]

    usable = select_texts(
        records, provider, text_field="text", policy="skip", collection="articles_v1"
    )

    skipped = dict(usable.skipped)
    assert set(skipped) == {2, 3, 4, 5, 6, 9}, skipped
    assert all(reason for reason in skipped.values())
    assert [r.id for r in usable.records] == [1, 7, 8]
    assert usable.truncated == 2
    counter = provider.token_counter()
    long_counts = counter.count(usable.texts[1:])
    assert all(count <= window for count in long_counts), long_counts
    assert usable.texts[2] == usable.texts[1][: len(usable.texts[2])] or LONG.startswith(
        usable.texts[2]
    )
    assert len(usable.texts[2]) < 5_000  # the first window only, not 500,000 characters
    assert usable.tokens == sum(counter.count(usable.texts))


def test_a_long_text_policy_of_error_names_the_exact_count() -> None:
    provider = get_provider("local", "multilingual-e5-small", options={"too_long_policy": "skip"})
    usable = select_texts(
        [_record(1, {"text": LONG[:20_000]})],
        provider,
        text_field="text",
        policy="skip",
        collection="articles_v1",
    )
    ((point, reason),) = usable.skipped
    exact = provider.token_counter().count([LONG[:20_000]])[0]
    assert point == 1 and f"{exact} tokens" in reason and json.dumps(exact) in reason
