"""The Airflow adapters of connections: the Qdrant hook and the providers' credentials."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from airflow.providers.qdrant.hooks.qdrant import QdrantHook

from include.qdrant_migration.airflow.hooks import (
    MigrationQdrantHook,
    build_judge,
    build_provider,
    provider_credentials,
)
from include.qdrant_migration.spec import MigrationSpec
from tests.standin import OPENAI_KEY, StandIn


def _connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_the_hook_is_the_qdrant_providers_with_an_embedded_mode() -> None:
    """Same connection type, default connection, form and test_connection as the
    provider's QdrantHook: a connection made for one works with the other."""
    assert issubclass(MigrationQdrantHook, QdrantHook)
    assert (MigrationQdrantHook.conn_type, MigrationQdrantHook.default_conn_name) == (
        "qdrant",
        "qdrant_default",
    )
    assert MigrationQdrantHook.conn_name_attr == QdrantHook.conn_name_attr
    assert MigrationQdrantHook.get_ui_field_behaviour() == QdrantHook.get_ui_field_behaviour()
    for inherited in ("get_connection_form_widgets", "test_connection", "__init__"):
        assert inherited not in vars(MigrationQdrantHook), inherited
    assert MigrationQdrantHook("other").conn_id == "other"


def test_the_client_timeout_is_an_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch, "slow", conn_type="qdrant", host="h", extra={"timeout": 300})
    assert MigrationQdrantHook("slow").settings.client_kwargs()["timeout"] == 300
    _connection(monkeypatch, "plain", conn_type="qdrant", host="h")
    assert MigrationQdrantHook("plain").settings.timeout == 60


def test_server_connection_is_read_the_qdrant_providers_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _connection(
        monkeypatch,
        "qdrant_default",
        conn_type="qdrant",
        host="qdrant.internal",
        port=6334,
        password="the-api-key",
        extra={"https": True, "prefix": "db", "grpc_port": 7334, "prefer_gprc": True},
    )
    settings = MigrationQdrantHook().settings
    assert (settings.host, settings.port, settings.api_key) == (
        "qdrant.internal",
        6334,
        "the-api-key",
    )
    assert (settings.https, settings.prefix, settings.grpc_port, settings.prefer_grpc) == (
        True,
        "db",
        7334,
        True,
    )
    assert not settings.embedded
    assert "the-api-key" not in repr(settings)


def test_url_extra_wins_over_host(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch, "cloud", conn_type="qdrant", extra={"url": "https://x.cloud:6333"})
    settings = MigrationQdrantHook("cloud").settings
    assert settings.client_kwargs()["url"] == "https://x.cloud:6333"
    assert settings.client_kwargs()["host"] is None


def test_get_conn_holds_the_embedded_stores_lock_until_closed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _connection(monkeypatch, "embedded", conn_type="qdrant", extra={"path": str(tmp_path / "q")})
    hook = MigrationQdrantHook("embedded")
    client = hook.get_conn()
    entered = threading.Event()

    def second_opener() -> None:
        with MigrationQdrantHook("embedded").client():
            entered.set()

    other = threading.Thread(target=second_opener, daemon=True)
    other.start()
    # While get_conn's client is open, nobody else gets in (a wait that can only pass early
    # if the lock is broken, never fail on a slow machine).
    assert not entered.wait(0.5)
    ok, message = hook.test_connection()  # this thread holds the store: a clear refusal
    assert not ok and "already has the embedded store" in message
    client.close()
    assert entered.wait(60), "the second opener never got the store after close()"
    other.join(60)
    ok, message = hook.test_connection()
    assert ok and "embedded store" in message


def test_provider_credentials_take_the_key_and_base_url_from_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _connection(
        monkeypatch,
        "openai_default",
        conn_type="generic",
        password="sk-secret-key",
        extra={"base_url": "http://localhost:9/v1", "organization": "org-1"},
    )
    credentials = provider_credentials("openai_default")
    assert credentials.api_key == "sk-secret-key"
    assert credentials.base_url == "http://localhost:9/v1"
    assert dict(credentials.extra) == {"organization": "org-1"}
    assert "sk-secret-key" not in repr(credentials)


def test_an_openai_connection_is_read_by_the_openai_providers_hook(
    monkeypatch: pytest.MonkeyPatch, standin: StandIn
) -> None:
    """Type ``openai``: the client is OpenAIHook's (key in the password, base URL in the
    host), with this project's timeout and no SDK retries; it embeds through the stand-in."""
    _connection(
        monkeypatch, "openai_typed", conn_type="openai", password=OPENAI_KEY,
        host=standin.openai_base_url,
    )  # fmt: skip
    credentials = provider_credentials("openai_typed")
    assert (credentials.api_key, credentials.base_url) == (OPENAI_KEY, standin.openai_base_url)
    assert credentials.client is not None and OPENAI_KEY not in repr(credentials)
    spec = MigrationSpec.from_params(
        {"alias": "a", "provider": "openai", "model": "text-embedding-3-small",
         "dimensions": 64, "provider_conn_id": "openai_typed"}
    )  # fmt: skip
    provider = build_provider(spec)
    assert len(provider.embed_documents(["one text"])[0]) == 64
    client = provider.sdk_client()  # type: ignore[attr-defined]
    assert (client.max_retries, str(client.base_url).rstrip("/")) == (0, standin.openai_base_url)


def test_a_cohere_connection_is_read_as_the_cohere_providers_hook_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _connection(monkeypatch, "co", conn_type="cohere", password="co-key", host="http://co:1")
    credentials = provider_credentials("co")
    assert (credentials.api_key, credentials.base_url) == ("co-key", "http://co:1")


def test_the_judge_is_built_from_its_own_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch, "co", conn_type="cohere", password="co-key", host="http://co:1/v2")
    _connection(monkeypatch, "vllm", conn_type="generic", extra={"base_url": "http://v:8000/v1"})
    base = {"alias": "a", "query_log": ["json dumps"]}
    assert build_judge(MigrationSpec.from_params(base)) is None
    cohere = build_judge(MigrationSpec.from_params(base | {"judge": {"conn_id": "co"}}))
    assert cohere is not None and (cohere.name, cohere.model) == ("cohere", "rerank-v3.5")
    assert (cohere.api_key, cohere.base_url()) == ("co-key", "http://co:1")
    judge = {
        "provider": "compatible",
        "model": "bge",
        "conn_id": "vllm",
        "options": {"max_concurrency": 8},
    }
    compatible = build_judge(MigrationSpec.from_params(base | {"judge": judge}))
    assert compatible is not None and compatible.base_url() == "http://v:8000/v1"
    assert compatible.api_key is None and compatible.concurrency == 8


def test_each_backfill_task_gets_its_share_of_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    _connection(monkeypatch, "emb", conn_type="generic", password="sk-key", host="http://h/v1")
    spec = MigrationSpec.from_params(
        {
            "alias": "a",
            "provider": "openai",
            "model": "text-embedding-3-small",
            "provider_conn_id": "emb",
            "provider_options": {"requests_per_minute": 400, "tokens_per_minute": 80_000},
        }
    )
    whole = build_provider(spec)
    share = build_provider(spec, partitions=10)
    assert whole.options["requests_per_minute"] == 400
    assert share.options["requests_per_minute"] == 100  # at most 4 tasks run at once
    assert share.options["tokens_per_minute"] == 20_000
