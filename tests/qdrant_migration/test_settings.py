"""The deployment settings: read from the environment through one accessor, checked, and
documented by a page generated from the dataclass."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from include.qdrant_migration.settings import Settings, SettingsError, settings
from include.qdrant_migration.spec import MigrationSpec
from scripts import settings_doc

ROOT = Path(__file__).resolve().parents[2]


def test_an_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings() == Settings(
        max_parallel_partitions=4,
        max_active_migrations=4,
        backfill_pool="default_pool",
        recall_poke_s=30.0,
        catch_up_schedule="@daily",
        lease_ttl_s=300.0,
        lease_wait_s=900.0,
        ui_qdrant_conn_ids=("qdrant_default",),
    )
    blank = {f.metadata["env"]: " " for f in dataclasses.fields(Settings)}
    assert Settings.from_env(blank) == Settings()  # empty counts as unset (compose's VAR=)


def test_values_are_read_as_their_types() -> None:
    read = Settings.from_env(
        {
            "QMM_MAX_PARALLEL_PARTITIONS": "2",
            "QMM_MAX_ACTIVE_MIGRATIONS": "8",
            "QMM_BACKFILL_POOL": " qdrant_backfill ",
            "QMM_RECALL_POKE_S": "2.5",
            "QMM_CATCH_UP_SCHEDULE": "None",
            "QMM_LEASE_TTL_S": "60",
            "QMM_LEASE_WAIT_S": "0",
            "QMM_UI_QDRANT_CONN_IDS": "qdrant_default, staging ,,",
            "QMM_UNKNOWN": "ignored",
        }
    )
    assert read == Settings(
        max_parallel_partitions=2,
        max_active_migrations=8,
        backfill_pool="qdrant_backfill",
        recall_poke_s=2.5,
        catch_up_schedule=None,
        lease_ttl_s=60.0,
        lease_wait_s=0.0,
        ui_qdrant_conn_ids=("qdrant_default", "staging"),
    )
    assert Settings.from_env({"QMM_CATCH_UP_SCHEDULE": "*/5 * * * *"}).catch_up_schedule == (
        "*/5 * * * *"
    )


@pytest.mark.parametrize(
    ("env", "value", "said"),
    [
        ("QMM_MAX_PARALLEL_PARTITIONS", "four", "must be a whole number, at least 1; got 'four'"),
        ("QMM_MAX_PARALLEL_PARTITIONS", "2.5", "must be a whole number"),
        ("QMM_MAX_ACTIVE_MIGRATIONS", "0", "must be a whole number, at least 1; got '0'"),
        ("QMM_RECALL_POKE_S", "-1", "must be seconds, more than 0"),
        ("QMM_RECALL_POKE_S", "nan", "must be seconds, more than 0"),
        ("QMM_LEASE_TTL_S", "5m", "must be seconds, more than 0; got '5m'"),
        ("QMM_LEASE_WAIT_S", "inf", "must be seconds, 0 or more"),
        ("QMM_UI_QDRANT_CONN_IDS", ", ,", "must be names separated by commas"),
    ],
)
def test_a_bad_value_names_its_variable(env: str, value: str, said: str) -> None:
    with pytest.raises(SettingsError, match=f"{env} {said}"):
        Settings.from_env({env: value})


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"QMM_MAX_PARALLEL_PARTITIONS": "x", "QMM_LEASE_TTL_S": "y"})
    assert "QMM_MAX_PARALLEL_PARTITIONS" in str(raised.value)
    assert "QMM_LEASE_TTL_S" in str(raised.value)
    assert "docs/settings.md" in str(raised.value)


def test_the_accessor_reads_the_environment_once_until_cleared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QMM_MAX_PARALLEL_PARTITIONS", "3")
    assert settings().max_parallel_partitions == 3
    assert MigrationSpec(alias="a").parallel_tasks(10) == 3
    monkeypatch.setenv("QMM_MAX_PARALLEL_PARTITIONS", "5")
    assert settings().max_parallel_partitions == 3  # once per process
    settings.cache_clear()
    assert MigrationSpec(alias="a").parallel_tasks(10) == 5


def test_every_field_is_documented() -> None:
    names = set()
    for field in dataclasses.fields(Settings):
        meta = field.metadata
        assert meta["env"] == f"QMM_{field.name.upper()}", field.name
        assert len(meta["meaning"]) > 40 and meta["read"] and meta["kind"], field.name
        names.add(meta["env"])
    assert len(names) == len(dataclasses.fields(Settings))


def test_the_settings_page_is_generated_from_the_dataclass() -> None:
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert page == settings_doc.render(), "docs/settings.md is stale: run `make settings-doc`"
    for field in dataclasses.fields(Settings):
        assert f"## {field.metadata['env']}" in page


def _environment_reads(tree: ast.AST) -> list[str]:
    """The QMM_* names read with os.environ[...], os.environ.get(...) or os.getenv(...)."""
    found = []
    for node in ast.walk(tree):
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            key = node.slice
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
            "os.environ.get",
            "os.getenv",
            "os.environ.setdefault",
        ):
            key = node.args[0] if node.args else None
        if isinstance(key, ast.Constant) and str(key.value).startswith("QMM_"):
            found.append(str(key.value))
    return found


def test_nothing_else_reads_a_qmm_variable() -> None:
    """One home: every QMM_* setting is read by settings.py, and only there."""
    reads = {}
    for folder in ("include", "dags", "plugins", "scripts", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            found = _environment_reads(ast.parse(path.read_text(encoding="utf-8")))
            if found:
                reads[str(path.relative_to(ROOT))] = found
    assert reads == {}
    assert _environment_reads(ast.parse('os.environ.get("QMM_X", "1")')) == ["QMM_X"]
