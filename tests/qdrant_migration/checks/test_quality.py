"""Old model on the old collection vs new model on the new one: labeled metrics, the
label-free overlap, and self-retrieval (do the target's vectors come from the new model?).

The metric arithmetic runs on tiny collections whose rankings are known; the checks'
mechanics on the fast store (hashing models); what only real models show (their vectors,
their quality) in the integration tier.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.checks.quality import (
    WORST,
    EvalQuery,
    Quality,
    Regression,
    SelfRetrieval,
    Side,
    compare_labeled,
    compare_unlabeled,
    evaluate,
    failure,
    failures,
    load_eval_set,
    metric_names,
    self_retrieval,
)
from include.qdrant_migration.providers import (
    EmbeddingProvider,
    ModelInfo,
    ProviderLimits,
    get_provider,
)
from include.qdrant_migration.spec import SpecError
from include.qdrant_migration.texts import query_like
from tests.fakes import HashingProvider
from tests.qdrant_migration.helpers import SOURCE_MODEL, Migrated

# -- tiny collections with known rankings ---------------------------------------------------


class TableProvider(EmbeddingProvider):
    """Queries embedded from a table: every query text points the same way, ``[1, 0]``."""

    name: ClassVar[str] = "table"
    needs_connection: ClassVar[bool] = False

    @property
    def limits(self) -> ProviderLimits:
        return ProviderLimits(max_inputs_per_request=64, max_tokens_per_input=512)

    def model_info(self) -> ModelInfo:
        return ModelInfo(self.model, native_dimension=2)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        raise AssertionError("the comparison embeds queries only, never documents")

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]


def _ranked_collection(store: QdrantClient, name: str, ranking: Sequence[int]) -> None:
    """Points placed so that a ``[1, 0]`` query finds them in ``ranking`` order."""
    store.create_collection(
        name, vectors_config=qm.VectorParams(size=2, distance=qm.Distance.COSINE)
    )
    step = math.pi / 2 / len(ranking)
    store.upsert(
        name,
        [
            qm.PointStruct(id=pid, vector=[math.cos(rank * step), math.sin(rank * step)])
            for rank, pid in enumerate(ranking)
        ],
        wait=True,
    )


def _sides(
    old_ranking: Sequence[int], new_ranking: Sequence[int]
) -> tuple[QdrantClient, Side, Side]:
    store = QdrantClient(":memory:")
    _ranked_collection(store, "old", old_ranking)
    _ranked_collection(store, "new", new_ranking)
    provider = TableProvider("table")
    return store, Side("old", provider, None), Side("new", provider, None)


def _dcg(ranks: Sequence[int]) -> float:
    return sum(1 / math.log2(rank + 1) for rank in ranks)


IDS = list(range(1, 13))


def test_labeled_metrics_of_known_rankings() -> None:
    # old finds the relevant 2 and 4 at ranks 2 and 4; new finds them at 1 and 2
    store, old, new = _sides(IDS, [4, 2, *(i for i in IDS if i not in (2, 4))])
    queries = [EvalQuery("q", [2, 4])]
    found = compare_labeled(store, old, new, queries, k=10, tolerance=0.02)
    assert found.labeled and (found.queries, found.k, found.tolerance) == (1, 10, 0.02)
    # the keys carry their k: recall@10 and MRR@10 here, nDCG@10 always
    assert found.old == {
        "recall@10": 1.0,
        "mrr@10": 0.5,
        "ndcg@10": round(_dcg([2, 4]) / _dcg([1, 2]), 4),
    }
    assert found.new == {"recall@10": 1.0, "mrr@10": 1.0, "ndcg@10": 1.0}
    assert found.worst_regressions == []  # nothing got worse


def test_recall_and_mrr_count_the_top_k_only() -> None:
    store, old, new = _sides(IDS, IDS)
    queries = [EvalQuery("q", [3, 12])]  # 12 ranks last
    found = compare_labeled(store, old, new, queries, k=4, tolerance=0.0)
    assert set(found.new) == {"recall@4", "mrr@4", "ndcg@10"}
    assert found.old["recall@4"] == found.new["recall@4"] == 0.5
    assert found.old["mrr@4"] == found.new["mrr@4"] == round(1 / 3, 4)
    missed = compare_labeled(store, old, new, [EvalQuery("q", [5])], k=4, tolerance=0.0)
    assert missed.new["recall@4"] == missed.new["mrr@4"] == 0.0


def test_ndcg_at_10_counts_ranks_beyond_k() -> None:
    store, old, new = _sides(IDS, IDS)
    found = compare_labeled(store, old, new, [EvalQuery("q", [2, 6])], k=3, tolerance=0.0)
    assert found.new["ndcg@10"] == round(_dcg([2, 6]) / _dcg([1, 2]), 4)


def test_a_regression_past_the_tolerance_fails_with_the_worst_query() -> None:
    # new ranks the relevant 1 last, where old ranks it first
    store, old, new = _sides(IDS, [*IDS[1:], 1])
    queries = [EvalQuery("lost query", [1]), EvalQuery("kept query", [2])]
    found = compare_labeled(store, old, new, queries, k=10, tolerance=0.1)
    message = failure(found)
    assert message is not None
    assert "nDCG@10 falls from" in message and "on 2 evaluation queries" in message
    assert "more than the tolerance 0.1" in message
    assert "Worst query: 'lost query'" in message


def test_regressions_within_the_tolerance_are_listed_worst_first() -> None:
    store, old, new = _sides(IDS, [*IDS[1:], 1])
    queries = [EvalQuery(f"q{i}", [i]) for i in IDS]
    found = compare_labeled(store, old, new, queries, k=10, tolerance=1.0)
    assert len(found.worst_regressions) <= WORST
    assert found.worst_regressions[0] == Regression("q1", 1.0, 0.0)
    assert failure(found) is None  # within the tolerance
    drops = [r.old_ndcg_at_10 - r.new_ndcg_at_10 for r in found.worst_regressions]
    assert drops == sorted(drops, reverse=True) and all(d > 0 for d in drops)


def test_unlabeled_comparison_reports_overlap_and_score_shift() -> None:
    store, old, new = _sides(IDS, [1, 7, 8, *(i for i in IDS if i not in (1, 7, 8))])
    found = compare_unlabeled(store, old, new, ["a", "b"], k=3)
    assert not found.labeled and (found.queries, found.k) == (2, 3)
    assert found.mean_overlap_at_k == round(1 / 3, 4)  # {1, 2, 3} vs {1, 7, 8}
    assert found.old_top1_scores == found.new_top1_scores == {"p10": 1.0, "p50": 1.0, "p90": 1.0}
    third = round(math.cos(2 * math.pi / 2 / len(IDS)), 4)
    assert found.old_topk_scores["p50"] == found.new_topk_scores["p50"] == third


def test_unlabeled_comparison_without_queries() -> None:
    store, old, new = _sides(IDS, IDS)
    found = compare_unlabeled(store, old, new, [], k=3)
    assert found.queries == 0 and found.mean_overlap_at_k is None
    assert found.old_top1_scores == found.new_topk_scores == {}


def test_quality_round_trips_as_json() -> None:
    store, old, new = _sides(IDS, [*IDS[1:], 1])
    found = compare_labeled(store, old, new, [EvalQuery("q1", [1])], k=10, tolerance=1.0)
    assert found.worst_regressions
    restored = codec.decode(Quality, json.loads(json.dumps(codec.encode_dict(found))))
    assert restored == found
    assert isinstance(restored.worst_regressions[0], Regression)


# -- evaluation sets ------------------------------------------------------------------------

ROWS: list[dict[str, object]] = [
    {"query": "abstract base class", "relevant_ids": [1, 2]},
    {"query": "uuid point", "relevant_ids": ["5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"]},
]
EXPECTED = [
    EvalQuery("abstract base class", [1, 2]),
    EvalQuery("uuid point", ["5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"]),
]


def test_an_eval_set_from_a_list_inline_jsonl_or_a_file(tmp_path: Path) -> None:
    jsonl = "\n".join(json.dumps(row) for row in ROWS) + "\n\n"
    path = tmp_path / "eval.jsonl"
    path.write_text(jsonl, encoding="utf-8")
    assert load_eval_set(ROWS) == EXPECTED
    assert load_eval_set(jsonl) == EXPECTED
    assert load_eval_set(str(path)) == EXPECTED
    assert load_eval_set(None) == load_eval_set("") == load_eval_set([]) == []


@pytest.mark.parametrize(
    "row",
    [
        {"relevant_ids": [1]},
        {"query": "", "relevant_ids": [1]},
        {"query": "q", "relevant_ids": []},
        {"query": "q", "relevant_ids": 1},
        ["q", [1]],
    ],
    ids=["no-query", "empty-query", "no-ids", "ids-not-a-list", "not-an-object"],
)
def test_a_bad_eval_row_is_refused_with_its_number(row: Any) -> None:
    with pytest.raises(SpecError, match="eval_set row 2 must be an object with 'query'"):
        load_eval_set([ROWS[0], row])


# -- the checks on the fast store (hashing models) -----------------------------------------


def _eval_set(migrated: Migrated, size: int) -> list[dict[str, object]]:
    points, _ = migrated.client.scroll(migrated.plan.source.collection, limit=size)
    return [{"query": query_like(p.payload["text"]), "relevant_ids": [p.id]} for p in points]  # type: ignore[index]


def test_evaluate_without_labels_compares_top_k_overlap(
    fast_migrated: Migrated, new_model: HashingProvider, old_model: HashingProvider
) -> None:
    own, compared = evaluate(fast_migrated.client, fast_migrated.plan, new_model, old_model)
    assert own.queries == 20 and own.k == 5
    assert own.hit_at_1 is not None and own.hit_at_1 >= 0.9
    assert not compared.labeled and compared.skipped is None
    assert (compared.queries, compared.k) == (20, 5)
    assert compared.mean_overlap_at_k is not None and 0 < compared.mean_overlap_at_k <= 1
    assert set(compared.old_top1_scores) == set(compared.new_top1_scores) == {"p10", "p50", "p90"}


def test_evaluate_with_labels_compares_both_models(
    fast_migrated: Migrated, new_model: HashingProvider, old_model: HashingProvider
) -> None:
    spec = dataclasses.replace(
        fast_migrated.plan.spec, eval_set=_eval_set(fast_migrated, 12), quality_tolerance=1.0
    )
    plan = dataclasses.replace(fast_migrated.plan, spec=spec)
    own, compared = evaluate(fast_migrated.client, plan, new_model, old_model)
    assert compared.labeled and compared.queries == 12
    assert compared.old["recall@5"] >= 0.9 and compared.new["recall@5"] >= 0.9
    assert failures(plan, own, compared) == []


def test_evaluate_fails_when_the_new_side_retrieves_worse(
    fast_migrated: Migrated, old_model: HashingProvider
) -> None:
    """The target queried with the wrong model: labeled quality collapses."""
    spec = dataclasses.replace(
        fast_migrated.plan.spec, eval_set=_eval_set(fast_migrated, 12), min_self_retrieval=0.0
    )
    plan = dataclasses.replace(fast_migrated.plan, spec=spec)
    own, compared = evaluate(fast_migrated.client, plan, old_model, old_model)
    assert compared.old["ndcg@10"] == 1.0 and compared.new["ndcg@10"] < 0.5  # all measured
    (message,) = failures(plan, own, compared)
    assert re.match(r"nDCG@10 falls from 1\.000", message)


def test_evaluate_without_the_old_model_skips_the_comparison(
    fast_migrated: Migrated, new_model: HashingProvider
) -> None:
    own, compared = evaluate(fast_migrated.client, fast_migrated.plan, new_model, None)
    assert own.queries == 20
    assert compared == Quality(
        skipped="the old model is unknown: set source_provider and source_model"
    )


def test_vectors_of_another_model_fail_self_retrieval(
    fast_migrated: Migrated, old_model: HashingProvider
) -> None:
    own, compared = evaluate(fast_migrated.client, fast_migrated.plan, old_model, None)
    (message,) = failures(fast_migrated.plan, own, compared)
    assert "of 20 sampled documents are found first" in message
    assert "embedded with hash-new (minimum 50%)" in message
    assert "the target's vectors do not look like this model's" in message
    spec = dataclasses.replace(fast_migrated.plan.spec, min_self_retrieval=0.0)  # check off
    own, _ = evaluate(
        fast_migrated.client, dataclasses.replace(fast_migrated.plan, spec=spec), old_model, None
    )
    assert own.hit_at_1 is not None and own.hit_at_1 < 0.5


def test_self_retrieval_without_text(fast_migrated: Migrated, new_model: HashingProvider) -> None:
    client, plan = fast_migrated.client, fast_migrated.plan
    samples, _ = client.scroll(plan.target_collection, limit=3, with_payload=True)
    for point in samples:
        point.payload = {"title": "no text"}
    side = Side(plan.target_collection, new_model, None)
    assert self_retrieval(client, side, samples, "text", k=5) == SelfRetrieval(k=5)


# -- real models ----------------------------------------------------------------------------


def _samples(migrated: Migrated, collection: str, limit: int) -> list[qm.Record]:
    return migrated.client.scroll(collection, limit=limit, with_payload=True)[0]


@pytest.mark.integration
def test_self_retrieval_finds_each_document_with_new_model_queries(
    migrated: Migrated, e5: EmbeddingProvider
) -> None:
    side = Side(migrated.plan.target_collection, e5, None)
    samples = _samples(migrated, side.collection, 30)
    found = self_retrieval(migrated.client, side, samples, "text", k=10)
    assert found.queries == 30 and found.k == 10
    assert found.hit_at_1 is not None and found.hit_at_1 >= 0.9
    assert found.mrr_at_k is not None and found.mrr_at_k >= found.hit_at_1


@pytest.mark.integration
def test_self_retrieval_exposes_vectors_of_another_model(
    migrated: Migrated, e5: EmbeddingProvider
) -> None:
    """The same check on the old collection (MiniLM vectors, same size) scores poorly."""
    side = Side(migrated.plan.source.collection, e5, None)
    samples = _samples(migrated, side.collection, 30)
    found = self_retrieval(migrated.client, side, samples, "text", k=10)
    assert found.queries == 30
    assert found.hit_at_1 is not None and found.hit_at_1 < 0.5


@pytest.mark.integration
def test_labeled_quality_searches_each_side_with_its_own_model(
    migrated: Migrated, e5: EmbeddingProvider
) -> None:
    minilm = get_provider("local", SOURCE_MODEL)
    spec = dataclasses.replace(
        migrated.plan.spec, eval_set=_eval_set(migrated, 20), quality_tolerance=1.0
    )
    plan = dataclasses.replace(migrated.plan, spec=spec)
    own, compared = evaluate(migrated.client, plan, e5, minilm)
    assert own.hit_at_1 is not None and own.hit_at_1 >= 0.9
    assert compared.labeled and compared.queries == 20
    # each side searched with its own model finds the documents; a side searched with the
    # other model would not (see the self-retrieval test above)
    recall_k, mrr_k, _ = metric_names(compared.k)
    assert compared.old[mrr_k] >= 0.9 and compared.new[mrr_k] >= 0.9
    assert compared.old[recall_k] >= 0.9 and compared.new[recall_k] >= 0.9
