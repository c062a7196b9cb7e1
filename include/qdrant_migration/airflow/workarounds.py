"""Code that works around Airflow 3.3 behaviour, fenced in one place.

Each workaround says what it works around, where that behaviour lives in Airflow (version,
file and function, an upstream issue or pull request where one was found), and the
condition for removing it. Call sites use these functions and say nothing of the why, so
that an Airflow upgrade is checked here, against this list, and nowhere else.

Measured against apache-airflow 3.3.2 (task-sdk 1.3.2) and
apache-airflow-providers-standard 1.21.0. Paths are relative to the installed
``airflow`` package.

1. :func:`seconds_to_settle`: wait before answering an approval that just appeared.
2. :func:`earlier_answer`: a retried approval reuses the answer an earlier try received.
3. :func:`record_answer`: the approval's answer pushed as its own XCom.
4. :func:`mapped_results`: a mapped task's results read by index, not iterated.
5. :func:`tasks_share_this_process`: whether the run's tasks run in this one process.
6. :func:`quiet_upstream_deprecations`: a deprecation warning of the standard provider.

Importing this module imports nothing of Airflow (the terminal approvals client uses it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# -- 1. The approval "settle" wait --------------------------------------------------------

#: Seconds an approval must have been waiting before it is answered (see
#: :func:`seconds_to_settle`). 5 s was not always enough on a busy 2-core machine.
APPROVAL_SETTLE_S = 15.0


def seconds_to_settle(detail: dict[str, Any], settle_s: float = APPROVAL_SETTLE_S) -> float:
    """How long to wait before answering ``detail``, a pending approval from
    ``GET .../hitlDetails`` (its ``created_at``), so that it is at least ``settle_s`` old.

    **Works around:** Airflow 3.3 can lose an answer given within seconds of the approval
    appearing. The worker that parked the task in ``awaiting_input`` exits, and the
    scheduler learns of that exit later, from the executor's events. An answer given in
    between resumes the task at once (``PATCH .../hitlDetails``:
    ``api_fastapi/core_api/routes/public/hitl.py``, ``update_hitl_detail`` ->
    ``handle_event_submit``, state ``scheduled`` then ``queued``). When the scheduler then
    processes the parking worker's exit for the same try
    (``jobs/scheduler_job_runner.py``, ``SchedulerJobRunner._process_executor_events``),
    it can find the task queued or running again, outside what its resume-after-defer
    exemption (``ti_requeued``: a task still ``scheduled``) covers. It then takes the
    exit for a task "killed externally" and retries the task, and the retry asks again
    with the answer already spent (seen under the LocalExecutor on a 2-core machine).
    The ``awaiting_input`` state came with apache/airflow#68028; no upstream issue about
    this race was found.

    A person never answers that fast; scripts and tests do. The terminal client
    (``scripts/approvals_client.py``) and the UI plugin (``ui_app.py``) both wait here;
    ``dag.test()`` runs the task in-process, with no scheduler, and passes ``settle_s=0``.

    **Remove when** ``_process_executor_events`` no longer fails (or retries) an
    ``awaiting_input`` task that an answer has re-queued: check by answering with
    ``settle_s=0`` in the end-to-end tests (``tests/e2e``), against real services, and
    seeing ``approve_swap`` finish in its first try. :func:`earlier_answer` can then go too.
    """
    created = detail.get("created_at")
    if not created or not settle_s:
        return 0.0
    age = (datetime.now(tz=UTC) - datetime.fromisoformat(str(created))).total_seconds()
    return max(settle_s - age, 0.0)


# -- 2. A retried approval reuses the answer ----------------------------------------------


def earlier_answer(ti: Any) -> dict[str, Any] | None:
    """The answer an earlier try of the approval task ``ti`` received, as the event
    ``execute_complete`` takes, or None (the first try, or no answer was given).

    **Works around:** the same race as :func:`seconds_to_settle`, when the wait was not
    enough (an answer given sooner than it, or a scheduler slower than it): the retry
    would ask again, with the answer already spent, and wait until the response timeout
    rejects the swap. The answer is kept in Airflow's HITL detail of the task instance
    (``sdk/execution_time/hitl.py``, ``get_hitl_detail_content_detail``), which a retry
    reads here.

    **Remove when** :func:`seconds_to_settle` goes (the same check).
    """
    if ti.try_number <= 1:
        return None
    from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail

    try:
        found = get_hitl_detail_content_detail(ti.id)
    except Exception:  # no request was written by an earlier try
        return None
    if not found.response_received or not found.chosen_options:
        return None
    log.info("Using the answer %s given to an earlier try", found.chosen_options)
    return {
        "chosen_options": found.chosen_options,
        "params_input": found.params_input or {},
        "responded_at": found.responded_at,
        "responded_by_user": (
            found.responded_by_user.model_dump() if found.responded_by_user else None
        ),
    }


# -- 3. The answer as its own XCom --------------------------------------------------------

#: The XCom key under which the approval task keeps its answer (Approve or Reject).
ANSWER_KEY = "answer"


def record_answer(ti: Any, event: dict[str, Any]) -> None:
    """Push the chosen option of ``event`` as the XCom :data:`ANSWER_KEY` of ``ti``.

    **Works around:** a rejected approval keeps no return value. On Reject,
    ``ApprovalOperator.execute_complete`` (``providers/standard/operators/hitl.py``)
    skips the downstream tasks with ``self.skip()``, which raises
    ``DownstreamTasksSkipped``; the task runner (``sdk/execution_time/task_runner.py``,
    ``run``) handles that exception without reaching ``_push_xcom_if_needed``, so the
    payload ``execute_complete`` returns is never pushed. The run's last task
    (``finish_migration``) must still tell "rejected" from "failed before the approval".

    **Remove when** a rejected ``ApprovalOperator`` pushes its return value (the runner
    pushes it before skipping downstream): ``finish_migration`` can then read the
    ``return_value`` XCom's ``chosen_options``.
    """
    chosen = (event.get("chosen_options") or [None])[0]
    ti.xcom_push(key=ANSWER_KEY, value=chosen)


# -- 4. Mapped results read by index ------------------------------------------------------


def mapped_results(results: Sequence[T]) -> list[T]:
    """Every result of a mapped task (a ``LazyXComSequence`` inside a task), as a list.

    **Works around:** iterating the lazy sequence reads one item past its end and logs an
    error for it. ``LazyXComIterator.__next__`` (``sdk/execution_time/lazy_sequence.py``)
    stops only at the ``IndexError`` of a request for index ``len(results)``, which the
    Execution API answers 404 (``api_fastapi/execution_api/routes/xcoms.py``,
    ``get_mapped_xcom_by_index``: "XCom ... not found"), an error in the task's log that
    reports nothing wrong. Reading by index up to ``len()`` (one count request) never
    asks past the end. No upstream issue about this was found.

    **Remove when** iterating a ``LazyXComSequence`` stops at its length (or its past-the-
    end read logs nothing): ``list(results)`` then does the same.
    """
    return [results[i] for i in range(len(results))]


# -- 5. Whether the run's tasks share this process ----------------------------------------


def tasks_share_this_process() -> bool:
    """True under ``dag.test()``: every task of the run runs in this process, so a model
    loaded once stays loaded and no task pays a new interpreter's start-up.

    The Task SDK has no public way to say how tasks run. This reads its internals:
    ``dag.test()`` runs each task through ``run_task_in_process``
    (``sdk/execution_time/supervisor.py``), which sets ``task_runner.SUPERVISOR_COMMS`` to
    an ``InProcessSupervisorComms``; a worker's task talks to its supervisor through a
    socket instead. Only the dry run's duration estimate depends on it. Remove when the
    Task SDK exposes how the task runs (or the estimate stops caring); if the internals
    move, this answers False (each task its own process), the safe side.
    """
    try:
        from airflow.sdk.execution_time import supervisor, task_runner
    except ImportError:  # pragma: no cover - an Airflow without the Task SDK
        return False
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    in_process = getattr(supervisor, "InProcessSupervisorComms", None)
    return in_process is not None and isinstance(comms, in_process)


# -- 6. A deprecation warning of the standard provider ------------------------------------

#: What providers-standard 1.21.0 prints when ``@task.sensor`` is used.
_SENSOR_DEPRECATION = (
    r"The `airflow\.utils\.operator_helpers\.determine_kwargs` attribute is deprecated"
)


def quiet_upstream_deprecations() -> None:
    """Silence one warning that says nothing about this project and that nobody here can act
    on: ``providers/standard/sensors/python.py`` (providers-standard 1.21.0, line 24, the
    newest release) imports ``airflow.utils.operator_helpers.determine_kwargs``, which
    Airflow 3.3 deprecated, so every parse of a DAG with ``@task.sensor`` (``recall_check``)
    prints a warning. Only that message is filtered. Remove when the provider imports it
    from ``airflow.sdk``.
    """
    import warnings

    warnings.filterwarnings("ignore", message=_SENSOR_DEPRECATION)
