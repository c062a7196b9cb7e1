"""The swap approval: Airflow's ApprovalOperator, with the response timeout taken from the run.

``ApprovalOperator.response_timeout`` is fixed when the DAG is parsed; users want to set it
per migration from the trigger form. This subclass reads ``approval_timeout_hours`` from the
run's params when the task starts. At the timeout the default answer, Reject, applies, and
a rejection leaves the alias where it is.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator


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
        return super().execute(context)
