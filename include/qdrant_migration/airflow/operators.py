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

#: The XCom key under which the approval's answer is kept.
ANSWER_KEY = "answer"


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
        earlier = self._earlier_answer(context)
        if earlier is not None:
            return self.execute_complete(context, earlier)
        return super().execute(context)

    def _earlier_answer(self, context: Any) -> dict[str, Any] | None:
        """The answer an earlier try of this task received, if any.

        Airflow 3.3's scheduler can retry an approval that was answered within seconds of
        asking (it takes the exit of the worker that parked the task for a task killed
        externally); the retry would ask again, with the answer already spent, and wait
        forever. A retry that finds the answer uses it.
        """
        ti = context["ti"]
        if ti.try_number <= 1:
            return None
        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail

        try:
            found = get_hitl_detail_content_detail(ti.id)
        except Exception:  # no request was written by an earlier try
            return None
        if not found.response_received or not found.chosen_options:
            return None
        self.log.info("Using the answer %s given to an earlier try", found.chosen_options)
        return {
            "chosen_options": found.chosen_options,
            "params_input": found.params_input or {},
            "responded_at": found.responded_at,
            "responded_by_user": (
                found.responded_by_user.model_dump() if found.responded_by_user else None
            ),
        }

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Record the answer as the XCom ``answer`` (Approve or Reject) for the run's last
        task: Airflow 3.3 keeps no return value of a resumed approval."""
        chosen = (event.get("chosen_options") or [None])[0]
        context["ti"].xcom_push(key=ANSWER_KEY, value=chosen)
        return super().execute_complete(context, event)
