"""The "Qdrant migrations" page in Airflow's UI (nav bar, under Browse).

Thin on purpose: the app and the pages live in ``include/qdrant_migration``
(``airflow/ui_app.py``, ``ui/``). The external view embeds the app's list page in the UI
at ``/plugin/qdrant-migrations``; the app itself is served at ``/qdrant-migrations/`` and
requires Airflow's authentication like Airflow's own API.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from include.qdrant_migration.airflow.ui_app import URL_PREFIX, create_app


class QdrantMigrationsPlugin(AirflowPlugin):
    name = "qdrant_migrations"
    fastapi_apps = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Qdrant migrations"},
    ]
    external_views = [
        {
            "name": "Qdrant migrations",
            "href": f"{URL_PREFIX}/",
            "url_route": "qdrant-migrations",
            "destination": "nav",
            "category": "browse",
        },
    ]
