"""The docs stay true: the params page matches the schemas."""

from __future__ import annotations

import pytest

from scripts import params_doc


def test_the_params_page_matches_the_schemas() -> None:
    current = params_doc.PAGE.read_text(encoding="utf-8")
    assert current == params_doc.render(), "docs/params.md is out of date: run `make docs`"


def test_the_params_page_has_every_param() -> None:
    page = params_doc.PAGE.read_text(encoding="utf-8")
    for dag_id, schema, _ in params_doc.DAGS:
        section = page.split(f"## {dag_id}\n", 1)[1].split("\n## ", 1)[0]
        missing = [name for name in schema if f"| `{name}` |" not in section]
        assert not missing, f"{dag_id}: {missing} missing from docs/params.md: run `make docs`"


def test_a_note_on_a_param_that_does_not_exist_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    notes = {"qdrant_migration_catch_up": {"no_such_param": "stale"}}
    monkeypatch.setattr(params_doc, "NOTES", notes)
    with pytest.raises(ValueError, match="no_such_param"):
        params_doc.render()
