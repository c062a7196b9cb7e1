"""The README stays true: its two commands, CI's use of the same test command, every param."""

from __future__ import annotations

from pathlib import Path

import pytest

from include.qdrant_migration.spec import LIFECYCLE_PARAM_SCHEMA, PARAM_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_first_lines_give_the_demo_and_the_test_command() -> None:
    first = README.splitlines()[:6]
    assert any(line.startswith("make demo") for line in first)
    assert any(line.startswith("make test") for line in first)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "\nmake test\n" in ci


@pytest.mark.parametrize("name", sorted(set(PARAM_SCHEMA) | set(LIFECYCLE_PARAM_SCHEMA)))
def test_every_param_is_documented(name: str) -> None:
    assert f"`{name}`" in README, f"README does not document the param {name!r}"
