"""The demo, as a new user runs it: it migrates, and prints nothing that looks like a problem.

``make demo`` runs ``scripts/demo.py``; this runs the same script on a slice of the corpus
in a throwaway folder (``DEMO_DIR``) and reads everything it printed. A line at warning
level or above, from this project, Airflow or a library it logs through, is a line a new
user would read as something gone wrong.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration

#: How the logging that reaches the demo's output marks a warning or worse: structlog's
#: "[warning  ]", the standard library's "WARNING:"/" WARNING ", Python's "...Warning:".
ALARM = re.compile(
    r"\[(warning|error|critical|exception)\s*\]|\b(WARNING|ERROR|CRITICAL)\b|\w+Warning:",
)


def test_the_demo_migrates_and_prints_no_warning(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "QMM_"))}
    env |= {"DEMO_DIR": str(tmp_path / "demo"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "scripts/demo.py", "--limit", "300"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-4000:]
    assert '"points_to": "articles_v1__multilingual-e5-small__v1"' in printed
    alarms = [line for line in printed.splitlines() if ALARM.search(line)]
    assert alarms == [], "\n".join(alarms[:20])
