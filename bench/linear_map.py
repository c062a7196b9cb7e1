"""``python -m bench.linear_map``: how much search quality each map from old vectors to new
ones keeps, at 500, 1,000 and 2,000 calibration texts, on two corpora.

The migration is the demo's, all-MiniLM-L6-v2 -> multilingual-e5-small, on:

* **demo**: ``demo/corpus.jsonl`` (2,817 standard-library docstrings) and its 200 labeled
  queries (``demo/eval_queries.jsonl``);
* **third-party**: about 2,600 lead paragraphs of the docstrings of third-party packages
  the requirements install (numpy, torch, sqlalchemy, airflow, networkx, sympy, click,
  qdrant_client, ...), built with the demo's own builder (``demo/build_corpus.py``), and 200
  labeled queries made the same way (the texts follow the installed versions).

Per corpus, sample size and map family (ridge, Procrustes, low-rank: what
``fit_linear_map`` chooses among, each with its regularization chosen on the validation
split; and a small residual MLP over ridge, measured here only) it prints:

* **retention**, as the gate defines it (``linear_map.RETENTION_MEANS``): held-out sample
  documents found by a passage from their middle among all sample documents, cross-fitted
  mapped vs re-embedded;
* recall@10 of the labeled queries over the **whole corpus** mapped (every vector mapped)
  and its ratio to a full re-embed, what users feel;
* the same with the calibration documents' true vectors written instead of mapped ones
  (**mixed**): the measured answer to which of the two the target should get;
* the old model's recall@10 on the same labeled queries (what not migrating gives), the
  fit time, and the embedding calls saved.

Models run on CPU: about 8-10 minutes on 2 cores, most of it embedding both corpora twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from include.qdrant_migration import linear_map  # noqa: E402
from include.qdrant_migration.providers import get_provider  # noqa: E402
from scripts.seeding import read_corpus  # noqa: E402

OLD_MODEL = "all-MiniLM-L6-v2"
NEW_MODEL = "multilingual-e5-small"
QUERIES = ROOT / "demo" / "eval_queries.jsonl"
THIRD_PARTY = (
    "numpy", "numpy.linalg", "numpy.random", "numpy.ma", "numpy.polynomial", "numpy.fft",
    "torch", "torch.nn", "torch.optim", "torch.utils.data", "sqlalchemy", "sqlalchemy.orm",
    "sqlalchemy.sql.expression", "airflow.sdk", "airflow.models.dag", "huggingface_hub",
    "networkx", "sympy", "scipy.linalg", "sklearn", "click", "click.types", "qdrant_client",
    "qdrant_client.http.models", "jinja2", "jinja2.ext", "pydantic", "pydantic.fields",
    "rich.console", "rich.table", "httpx", "psutil", "fsspec", "tokenizers", "pendulum",
    "urllib3", "fastapi", "starlette.requests", "requests", "structlog", "attr", "yaml",
    "tiktoken", "dateutil.parser", "packaging.version",
)  # fmt: skip
K = 10
PEERS = "87-91% (BEIR, nDCG@10 ratio, ~2k-sample ridge maps)"
Matrix = Any


class Corpus:
    """Texts, labeled queries, and every vector the measurements need."""

    def __init__(self, name: str, texts: list[str], ids: list[int], labeled: list[Any]) -> None:
        self.name, self.texts = name, texts
        position = {i: k for k, i in enumerate(ids)}
        self.relevant = [[position[int(i)] for i in q["relevant_ids"]] for q in labeled]
        self.questions = [q["query"] for q in labeled]

    def embed(self, old_model: Any, new_model: Any) -> None:
        passages = [linear_map.known_item_query(t) for t in self.texts]
        self.old = _embed(self.texts, old_model.embed_documents, f"{self.name}: {OLD_MODEL} docs")
        self.new = _embed(self.texts, new_model.embed_documents, f"{self.name}: {NEW_MODEL} docs")
        self.q_new = _embed(self.questions, new_model.embed_queries, "labeled queries, new")
        self.q_old = _embed(self.questions, old_model.embed_queries, "labeled queries, old")
        self.passages = _embed(passages, new_model.embed_queries, "passage queries, new")


def _embed(texts: Sequence[str], embed: Any, label: str, batch: int = 256) -> Matrix:
    started = time.monotonic()
    rows: list[list[float]] = []
    for start in range(0, len(texts), batch):
        rows += embed(list(texts[start : start + batch]))
    print(f"  {label}: {len(texts)} texts in {time.monotonic() - started:.0f} s", flush=True)
    return np.asarray(rows, dtype=np.float64)


def _recall(queries: Matrix, docs: Matrix, relevant: list[list[int]]) -> float:
    top = linear_map.top_k(queries, docs, K).tolist()
    return float(
        np.mean([len(set(t) & set(r)) / len(r) for t, r in zip(top, relevant, strict=True)])
    )


def demo_corpus() -> Corpus:
    records = list(read_corpus())
    labeled = [json.loads(line) for line in QUERIES.read_text().splitlines() if line.strip()]
    return Corpus("demo", [r["text"] for r in records], [int(r["id"]) for r in records], labeled)


def third_party_corpus() -> Corpus:
    sys.path.insert(0, str(ROOT / "demo"))
    import build_corpus as builder

    docs = builder.select_docs(builder.collect_candidates(THIRD_PARTY), target=2600)
    labeled = [
        {"query": q.query, "relevant_ids": q.relevant_ids} for q in builder.build_eval_queries(docs)
    ]
    return Corpus("third-party", [d.text for d in docs], [d.id for d in docs], labeled)


def _mlp(old: Matrix, new: Matrix, train: list[int], validation: list[int]) -> Callable[..., Any]:
    """A residual MLP over the ridge map (one hidden layer of 512, cosine loss), its weight
    decay chosen on the validation split: returns a function mapping old vectors."""
    import torch

    lam = linear_map.LAMBDAS[4]

    def train_on(rows: list[int], decay: float) -> Callable[[Matrix], Matrix]:
        torch.manual_seed(0)
        ridge = linear_map.fit_ridge(old[rows], new[rows], lam, normalize=False)
        x = torch.tensor(old[rows], dtype=torch.float32)
        y = torch.tensor(linear_map._unit(new[rows]), dtype=torch.float32)
        base = torch.tensor(ridge.apply_array(old[rows]), dtype=torch.float32)
        net = torch.nn.Sequential(
            torch.nn.Linear(old.shape[1], 512), torch.nn.GELU(), torch.nn.Linear(512, new.shape[1])
        )
        torch.nn.init.zeros_(net[2].weight)
        torch.nn.init.zeros_(net[2].bias)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=decay)
        for _ in range(300):
            optimizer.zero_grad()
            loss = 1 - torch.nn.functional.cosine_similarity(base + net(x), y).mean()
            loss.backward()
            optimizer.step()

        def apply(vectors: Matrix) -> Matrix:
            with torch.no_grad():
                start = torch.tensor(ridge.apply_array(vectors), dtype=torch.float32)
                return (start + net(torch.tensor(vectors, dtype=torch.float32))).numpy()

        return apply

    def score(decay: float) -> float:
        mapped = linear_map._unit(train_on(train, decay)(old[validation]))
        return float(np.mean(np.sum(mapped * linear_map._unit(new[validation]), axis=1)))

    best = max((1e-3, 1e-2, 1e-1), key=score)
    return train_on(train + validation, best)


def measure(corpus: Corpus, samples: Sequence[int], seed: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(seed)
    total = len(corpus.texts)
    for n in samples:
        n = min(n, total)
        s = rng.permutation(total)[:n]
        old, new, passages = corpus.old[s], corpus.new[s], corpus.passages[s]
        train, validation, held_out = linear_map.split(n, seed=seed)
        started = time.monotonic()
        found = linear_map.candidates(old, new, train, validation, normalize=True)
        chosen = linear_map.fit(
            old, new, passages[held_out], held_out, train, validation,
            validation_queries=passages[validation],
        ).kind  # fmt: skip
        choice_s = time.monotonic() - started
        truth = linear_map.recall_of_own(passages[held_out], new, held_out)
        for candidate in found:
            started = time.monotonic()
            final = candidate.make(old[train + validation], new[train + validation])
            fit_s = time.monotonic() - started
            crossed = linear_map.cross_fitted(candidate.make, old, new)
            gate = linear_map.recall_of_own(passages[held_out], crossed, held_out) / truth
            rows.append(
                _row(
                    corpus, n, s, candidate.kind, candidate.setting, gate, fit_s, final.apply_array
                )
            )
            rows[-1]["chosen"] = candidate.kind == chosen
            rows[-1]["choice_s"] = choice_s
        started = time.monotonic()
        apply = _mlp(old, new, train, validation)
        rows.append(
            _row(corpus, n, s, "mlp (bench only)", "", None, time.monotonic() - started, apply)
        )
    return rows


def _row(
    corpus: Corpus,
    n: int,
    sample: Matrix,
    kind: str,
    setting: str,
    gate: float | None,
    fit_s: float,
    apply: Callable[[Matrix], Matrix],
) -> dict[str, Any]:
    mapped = apply(corpus.old)
    mixed = mapped.copy()
    mixed[sample] = corpus.new[sample]
    full = _recall(corpus.q_new, corpus.new, corpus.relevant)
    return {
        "corpus": corpus.name,
        "n": n,
        "kind": kind,
        "setting": setting,
        "gate": gate,
        "mapped": _recall(corpus.q_new, mapped, corpus.relevant),
        "mixed": _recall(corpus.q_new, mixed, corpus.relevant),
        "full": full,
        "old": _recall(corpus.q_old, corpus.old, corpus.relevant),
        "fit_s": fit_s,
        "saved": len(corpus.texts) - n,
        "total": len(corpus.texts),
        "chosen": False,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="500,1000,2000", help="calibration sample sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpora", default="demo,third-party")
    args = parser.parse_args(argv)
    samples = [int(n) for n in args.samples.split(",")]
    old_model, new_model = get_provider("local", OLD_MODEL), get_provider("local", NEW_MODEL)
    makers = {"demo": demo_corpus, "third-party": third_party_corpus}
    rows: list[dict[str, Any]] = []
    for name in args.corpora.split(","):
        corpus = makers[name]()
        print(f"{corpus.name}: {len(corpus.texts)} documents, {len(corpus.questions)} queries")
        corpus.embed(old_model, new_model)
        rows += measure(corpus, samples, args.seed)

    print()
    print(f"Maps {OLD_MODEL} -> {NEW_MODEL}; recall@{K} of the labeled queries over the whole")
    print("corpus (ratio to a full re-embed); * = the family fit_linear_map chooses")
    print()
    print(
        "| corpus | calibration texts | map | retention (gate) | recall@10 mapped | mixed: "
        "calibration vectors true | full re-embed | old model | fit s | embedding calls saved |"
    )
    print("| " + " | ".join(["---"] * 10) + " |")
    for r in rows:
        gate = "n/a" if r["gate"] is None else f"{r['gate']:.3f}"
        star = " *" if r["chosen"] else ""
        print(
            f"| {r['corpus']} | {r['n']} | {r['kind']}{star} {r['setting']} | {gate} | "
            f"{r['mapped']:.3f} ({r['mapped'] / r['full']:.0%}) | "
            f"{r['mixed']:.3f} ({r['mixed'] / r['full']:.0%}) | {r['full']:.3f} | "
            f"{r['old']:.3f} | {r['fit_s']:.2f} | {r['saved']} of {r['total']} |"
        )
    print()
    print(f"Published peers report {PEERS}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
