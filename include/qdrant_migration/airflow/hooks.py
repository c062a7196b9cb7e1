"""Connections, resolved the Airflow way: Qdrant through a hook, providers' keys from their
connections. Nothing outside this subpackage sees a connection; secrets stay here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

from airflow.providers.qdrant.hooks.qdrant import QdrantHook
from airflow.sdk import BaseHook, Connection
from airflow.sdk.exceptions import AirflowNotFoundException
from qdrant_client import QdrantClient

from include.qdrant_migration.plan import Plan, SourceInfo, old_model_of
from include.qdrant_migration.providers import (
    Credentials,
    EmbeddingProvider,
    get_provider,
)
from include.qdrant_migration.qdrant import QdrantSettings, connect, open_client
from include.qdrant_migration.rerankers import Reranker, get_reranker
from include.qdrant_migration.spec import MigrationSpec, SpecError


def connection(conn_id: str, what: str) -> Connection:
    """An Airflow connection, or an error that says to create it (not a retried lookup)."""
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise SpecError(
            f"Airflow connection {conn_id!r} ({what}) does not exist: create it (Admin -> "
            f"Connections, `airflow connections add {conn_id} ...`, or an "
            f"AIRFLOW_CONN_{conn_id.upper()} environment variable), or name another one."
        ) from None


class MigrationQdrantHook(QdrantHook):
    """The Qdrant provider's hook, plus what a migration needs of Qdrant.

    Inherited from ``QdrantHook`` (apache-airflow-providers-qdrant): the connection type
    ``qdrant``, ``qdrant_default``, the connection form's fields and ``test_connection``.
    The connection is read as the provider reads it (host/port or extra ``url``, the API
    key as password, extras ``grpc_port``, ``prefer_gprc`` (sic), ``https``, ``prefix``),
    by :meth:`QdrantSettings.from_connection`, which adds:

    * the **embedded** local-mode store: extra ``path`` (the provider builds server
      clients only). Every opener holds the store's lock (``qdrant.connect``) until its
      client is closed, so parallel tasks take turns instead of crashing;
    * the project's **client settings**: extra ``timeout`` (seconds, default 60; the
      provider's client keeps qdrant-client's default).

    Work goes through :meth:`client`, a client per block, closed after it (releasing an
    embedded store's lock). The provider's ``conn`` (one client cached for the hook's
    life) works too, but holds an embedded store until it is closed: not for tasks.
    """

    hook_name = "Qdrant (server or embedded)"

    @cached_property
    def settings(self) -> QdrantSettings:
        conn = connection(self.conn_id, "Qdrant")
        return QdrantSettings.from_connection(
            host=conn.host, port=conn.port, password=conn.password, extra=conn.extra_dejson
        )

    def get_conn(self) -> QdrantClient:
        """An open client; close it when done (that releases an embedded store's lock)."""
        return connect(self.settings)

    @contextmanager
    def client(self) -> Iterator[QdrantClient]:
        """A client for one block, closed after it."""
        with open_client(self.settings) as client:
            yield client

    def verify_connection(self) -> tuple[bool, str]:
        """What ``test_connection`` answers: where Qdrant is and how many collections it
        has, or why it could not be read (a client opened and closed for the check)."""
        try:
            with self.client() as client:
                count = len(client.get_collections().collections)
        except Exception as error:
            return False, f"{self.settings.describe()}: {type(error).__name__}: {error}"
        return True, f"{self.settings.describe()}: {count} collections"


def provider_credentials(
    conn_id: str, what: str = "the embedding provider's API key"
) -> Credentials:
    """The API key, base URL and extras of a provider's connection, read as its type says.

    * ``openai`` (apache-airflow-providers-openai): the key in the password or in extra
      ``openai_client_kwargs``, the base URL in the host or there too; the SDK client is
      the one ``OpenAIHook`` builds (workload identity included), with this project's
      timeout and without the SDK's own retries (the provider's limiter retries);
    * ``cohere`` (apache-airflow-providers-cohere): the key in the password, the base URL
      in the host, as ``CohereHook`` reads them. Its client is not used: it cannot switch
      the SDK's retries off, which would repeat every retry of the limiter;
    * anything else (``generic``): the key in the password, the base URL in the host or in
      extra ``base_url``.
    """
    conn = connection(conn_id, what)
    extra = dict(conn.extra_dejson)
    if conn.conn_type == "openai":
        from airflow.providers.openai.hooks.openai import OpenAIHook

        kwargs = dict(extra.get("openai_client_kwargs") or {})
        return Credentials(
            conn_id=conn_id,
            api_key=kwargs.get("api_key") or conn.password or None,
            base_url=kwargs.get("base_url") or conn.host or None,
            extra=extra,
            client=OpenAIHook(conn_id=conn_id).get_conn,
        )
    base_url = extra.pop("base_url", None) or conn.host or None
    return Credentials(
        conn_id=conn_id, api_key=conn.password or None, base_url=base_url, extra=extra
    )


def build_provider(spec: MigrationSpec, *, partitions: int = 1) -> EmbeddingProvider:
    """The new model's provider; with ``partitions``, one backfill task's share of the budget."""
    conn_id = spec.provider_conn_id
    return get_provider(
        spec.provider,
        spec.model,
        dimensions=spec.dimensions,
        options=spec.backfill_options(partitions),
        credentials=provider_credentials(conn_id) if conn_id else None,
    )


def build_source_provider(plan: Plan) -> EmbeddingProvider | None:
    """The old model, from the params or the source's lineage; None when unknown."""
    return build_old_provider(plan.spec, plan.source)


def build_old_provider(spec: MigrationSpec, source: SourceInfo) -> EmbeddingProvider | None:
    """The model that made ``source``'s vectors (params first, then lineage); None when
    unknown."""
    old = old_model_of(spec, source)
    if old is None:
        return None
    conn_id = spec.source_provider_conn_id
    if not conn_id and old.provider == spec.provider:  # same provider: same connection
        conn_id = spec.provider_conn_id
    return get_provider(
        old.provider,
        old.model,
        dimensions=source.size if source.lineage.get("dimensions") else None,
        credentials=provider_credentials(conn_id) if conn_id else None,
    )


def build_judge(spec: MigrationSpec) -> Reranker | None:
    """The relevance judge the params name (its key from its connection); None without."""
    judge = spec.judge
    if judge is None:
        return None
    return get_reranker(
        judge.provider,
        judge.model,
        options=judge.options,
        credentials=provider_credentials(judge.conn_id, "the judge's API key"),
    )
