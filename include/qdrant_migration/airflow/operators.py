"""The swap approval: Airflow's ApprovalOperator, with the response timeout taken from the run.

``ApprovalOperator.response_timeout`` is fixed when the DAG is parsed; users want to set it
per migration from the trigger form. This subclass reads ``approval_timeout_hours`` from the
run's params when the task starts. At the timeout the default answer, Reject, applies, and
a rejection leaves the alias where it is. Two workarounds of Airflow 3.3 apply here
(``workarounds.earlier_answer``, ``workarounds.record_answer``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from include.qdrant_migration.airflow.workarounds import earlier_answer, record_answer


class SwapApprovalOperator(ApprovalOperator):
    """Approve or reject the alias swap; unanswered after the timeout means Reject."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("defaults", ApprovalOperator.REJECT)
        # The approver answers Approve/Reject; the run's params are not a form for them.
        kwargs.setdefault("params", {})
        super().__init__(**kwargs)

    def execute(self, context: Any) -> Any:
        hours = context["params"].get("approval_timeout_hours")
        if hours:
            self.response_timeout = timedelta(hours=float(hours))
        earlier = earlier_answer(context["ti"])
        if earlier is not None:
            return self.execute_complete(context, earlier)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Record the answer (Approve or Reject) for the run's last task, then go on."""
        record_answer(context["ti"], event)
        return super().execute_complete(context, event)
