"""Benchmarks of the backfill: `make bench` (see bench/run.py)."""

from __future__ import annotations
