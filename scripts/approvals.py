"""Answer the migration's swap approval from a terminal, over Airflow's REST API.

Airflow's CLI cannot answer a human-in-the-loop task; its REST API can. This lists the
pending approvals of ``qdrant_model_migration`` with the report each one shows, and
approves or rejects one run's approval:

    python scripts/approvals.py list
    python scripts/approvals.py approve RUN_ID
    python scripts/approvals.py reject RUN_ID

Where and who: ``--url`` / ``AIRFLOW_API_URL`` (default http://localhost:8080),
``--user`` / ``AIRFLOW_API_USER`` (default admin), ``--password`` / ``AIRFLOW_API_PASSWORD``
(asked for when missing and the terminal is interactive). Prefer the environment variable
to ``--password``: a flag stays in the shell history and in ``ps``. With Airflow's
SimpleAuthManager the admin password is in
``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``. Credentials are never
printed.

Exit status: 0 done, 1 the API refused or there is nothing to answer, 2 bad usage.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.approvals_client import (  # noqa: E402
    DAG_ID,
    ApprovalClient,
    ApprovalError,
)

DEFAULT_URL = "http://localhost:8080"
ANSWERS = {"approve": "Approve", "reject": "Reject"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="approvals.py",
        description="List and answer the swap approvals of the Qdrant model migration.",
        epilog="Credentials may also come from AIRFLOW_API_URL, AIRFLOW_API_USER and "
        "AIRFLOW_API_PASSWORD.",
    )
    parser.add_argument(
        "--url", default=os.environ.get("AIRFLOW_API_URL", DEFAULT_URL), help="api-server URL"
    )
    parser.add_argument("--user", default=os.environ.get("AIRFLOW_API_USER", "admin"))
    parser.add_argument(
        "--password",
        default=os.environ.get("AIRFLOW_API_PASSWORD"),
        help="prefer AIRFLOW_API_PASSWORD: a flag is visible in ps and the shell history",
    )
    parser.add_argument("--dag-id", default=DAG_ID)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print pending approvals with their run id and report")
    for command, option in ANSWERS.items():
        answer = commands.add_parser(command, help=f"answer {option!r} for one run")
        answer.add_argument("run_id", help="the DAG run id, as `list` prints it")
    return parser.parse_args(argv)


def password_from(args: argparse.Namespace) -> str:
    if args.password:
        return str(args.password)
    if sys.stdin.isatty():
        return getpass.getpass(f"Airflow password for {args.user}: ")
    raise ApprovalError("No password: set AIRFLOW_API_PASSWORD or pass --password.")


def run_id_of(detail: dict[str, Any]) -> str:
    return str(detail.get("task_instance", detail).get("dag_run_id", "?"))


def print_pending(details: list[dict[str, Any]], dag_id: str) -> None:
    if not details:
        print(f"No pending approvals for {dag_id}.")
        return
    for detail in details:
        print("=" * 78)
        print(f"run id:   {run_id_of(detail)}")
        print(f"subject:  {detail.get('subject', '')}")
        print(f"asked at: {detail.get('created_at', '?')}")
        print(f"options:  {', '.join(detail.get('options') or [])}")
        print("-" * 78)
        print(detail.get("body") or "(no report)")
    print("=" * 78)
    print(f"{len(details)} pending. Answer with: approvals.py approve|reject RUN_ID")


def answer(api: ApprovalClient, dag_id: str, run_id: str, option: str) -> None:
    pending = [d for d in api.pending(dag_id) if run_id_of(d) == run_id]
    if not pending:
        raise ApprovalError(
            f"No pending approval for run {run_id!r} of {dag_id}: it was answered already, "
            "the run has not reached approve_swap yet, or the run id is wrong (see `list`)."
        )
    result = api.answer(pending[0], option)
    chosen = ", ".join(result.get("chosen_options") or [option])
    print(f"Answered {chosen!r} for run {run_id} of {dag_id}.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        api = ApprovalClient.from_server(args.url, args.user, password_from(args))
        try:
            if args.command == "list":
                print_pending(api.pending(args.dag_id), args.dag_id)
            else:
                answer(api, args.dag_id, args.run_id, ANSWERS[args.command])
        finally:
            api.close()
    except ApprovalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
