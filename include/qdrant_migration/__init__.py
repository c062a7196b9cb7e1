"""Move a Qdrant collection to a new embedding model with zero downtime.

Everything here is plain Python that knows nothing of Airflow, except
:mod:`include.qdrant_migration.airflow_support`, the only module that imports Airflow.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
