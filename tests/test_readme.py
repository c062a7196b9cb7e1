"""The README stays true: its two commands, CI's use of the same test command, its environment.

Every param is documented on docs/params.md, generated from the schemas (tests/test_docs.py)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_first_lines_give_the_demo_and_the_test_command() -> None:
    first = README.splitlines()[:6]
    assert any(line.startswith("make demo") for line in first)
    assert any(line.startswith("make test") for line in first)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "\nmake test\n" in ci


@pytest.mark.integration
def test_the_readme_environment_loads_the_ui_plugin(tmp_path: Path) -> None:
    """``airflow plugins`` in a fresh AIRFLOW_HOME with the README's own exports."""
    block = README.split("## Running it yourself", 1)[1].split("```bash", 1)[1].split("```")[0]
    exports = [line.split("#")[0] for line in block.splitlines() if line.startswith("export ")]
    assert any("AIRFLOW__CORE__PLUGINS_FOLDER" in line for line in exports), block
    script = "\n".join(
        [
            f"cd {shlex.quote(str(ROOT))}",
            f"export AIRFLOW_HOME={shlex.quote(str(tmp_path))}",
            *exports,
            f"{shlex.quote(sys.executable)} -m airflow plugins --output json",
        ]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    listed = json.loads(done.stdout[done.stdout.index("[") :])
    assert "qdrant_migrations" in {plugin["name"] for plugin in listed}, done.stdout
