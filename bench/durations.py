"""``python -m bench.durations``: the dry run's duration against real runs, phase by phase.

Two runs, each through ``scripts/demo.py`` (an embedded store, ``dag.test()`` on a real
metadata DB, real local models) in a folder of its own:

* **the demo**: 2,817 texts (the Python standard library's docstrings), its 200 labeled
  queries, a BM25 vector added;
* **4,000 short documents with a 4,000-query eval set**: 12-word windows of the demo
  corpus, each labeled with a query of 4 of its words.

For each, the report's plan and actuals per phase: whether the run's duration fell inside
the plan's range, and whether each phase's estimate (the middle of its range) is within
25% of what it took. The machine must be quiet: another process on the same cores slows
every measured phase, which the estimate (made before) cannot know.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from include.qdrant_migration.phases import ORDER, Timeline, actual_phases
from scripts.seeding import read_corpus

ROOT = Path(__file__).resolve().parents[1]
WINDOWS = 4_000
TOLERANCE = 0.25


def windows_corpus(folder: Path, count: int = WINDOWS) -> tuple[Path, Path]:
    """``count`` 12-word windows of the demo corpus (stride 3), and a query for each: 4 of
    its words, in order (a known-item query, as a user who remembers a few words types)."""
    words = " ".join(r["text"] for r in read_corpus()).split()
    texts = [" ".join(words[i : i + 12]) for i in range(0, len(words) - 12, 3)][:count]
    rng = random.Random(7)
    corpus, queries = folder / "windows.jsonl", folder / "windows_queries.jsonl"
    with corpus.open("w") as out_corpus, queries.open("w") as out_queries:
        for number, text in enumerate(texts, 1):
            out_corpus.write(json.dumps({"id": number, "text": text}) + "\n")
            picked = sorted(rng.sample(range(12), 4))
            query = " ".join(text.split()[i] for i in picked)
            out_queries.write(json.dumps({"query": query, "relevant_ids": [number]}) + "\n")
    return corpus, queries


def run(name: str, folder: Path, *args: str) -> dict[str, Any]:
    """One run of the demo script; its report."""
    report = folder / f"{name}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "QMM_"))}
    env |= {"DEMO_DIR": str(folder / name), "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "scripts/demo.py", "--report", str(report), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    print(f"{name}: done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    found: dict[str, Any] = json.loads(report.read_text())
    return found


def table(name: str, report: dict[str, Any]) -> tuple[list[str], bool]:
    """The phase table of one run, and whether it meets both targets."""
    estimate = report["estimate"]
    took = actual_phases(Timeline(**report["evidence"]["timeline"]))
    planned = {p["name"]: p for p in estimate["phases"]}
    rows, ok = [], True
    for phase in ORDER:
        if phase not in planned:
            continue
        low, high = planned[phase]["seconds"], planned[phase]["max_seconds"]
        middle, actual = (low + high) / 2, took.get(phase, 0.0)
        error = (middle - actual) / actual if actual else 0.0
        within = abs(error) <= TOLERANCE or abs(middle - actual) < 1.0
        ok &= within
        rows.append(
            f"| {name} | {phase} | {low:.0f} to {high:.0f} s | {actual:.0f} s | "
            f"{error:+.0%} | {'yes' if within else 'NO'} |"
        )
    total = sum(took.values())
    inside = estimate["duration_s"] <= total <= estimate["duration_max_s"]
    ok &= inside
    rows.append(
        f"| {name} | **total** | {estimate['duration_s']:.0f} to "
        f"{estimate['duration_max_s']:.0f} s | {total:.0f} s | | "
        f"{'inside' if inside else 'OUTSIDE'} the range |"
    )
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=["demo", "windows"], help="one of the two runs")
    args = parser.parse_args(argv)
    rows: list[str] = []
    passed = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs: dict[str, list[str]] = {"demo": []}
        if args.only != "demo":
            corpus, queries = windows_corpus(folder)
            runs["windows"] = [
                "--corpus", str(corpus), "--eval-set", str(queries), "--no-sparse",
            ]  # fmt: skip
        if args.only == "windows":
            del runs["demo"]
        for name, extra in runs.items():
            found, ok = table(name, run(name, folder, *extra))
            rows += found
            passed &= ok
    print("| run | phase | plan | actual | plan vs actual | within 25% |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
