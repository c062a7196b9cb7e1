"""Move a Qdrant collection to a new embedding model with zero downtime.

Everything here is plain, typed Python that knows nothing of Airflow, except the
:mod:`include.qdrant_migration.airflow` subpackage (hooks, operators, task bodies, assets),
the only code that imports Airflow. docs/development.md says what lives where.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
