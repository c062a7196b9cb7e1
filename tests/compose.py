"""docker-compose.yaml read as Compose reads it, for the tests that need its settings.

Two users: ``tests/test_docker_compose.py`` (static checks of the file, no Docker engine)
and the CeleryExecutor tier (``tests/e2e/celery``), which runs the Airflow services with the
environment of the file's ``x-airflow-common`` anchor. The compose file is the one source
of truth for those settings; the tier only replaces what names a container.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_PATH = ROOT / "docker-compose.yaml"
ENV_EXAMPLE_PATH = ROOT / ".env.example"
#: The anchor every Airflow service merges: image, env_file, environment, volumes.
ANCHOR = "x-airflow-common"

# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err};
# "$$" is a literal "$" (so "$${HOSTNAME}" is left for the shell in the container).
INTERPOLATION_RE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
_SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}


def load_env_example() -> dict[str, str]:
    """KEY=VALUE lines of .env.example, with surrounding quotes removed (as Compose reads .env)."""
    env: dict[str, str] = {}
    for line in ENV_EXAMPLE_PATH.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Resolve ${...} in every string of a parsed compose file, the way Compose does."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        if op in (":-", ":?") and not current:
            current = None
        if current is not None:
            return current
        if op and op.endswith("-"):
            return arg
        raise AssertionError(f"${{{name}}} is required but has no value in .env.example")

    return INTERPOLATION_RE.sub(substitute, value)


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose would see it with ``env`` as its .env (default: a copy
    of .env.example)."""
    raw = yaml.safe_load(COMPOSE_PATH.read_text(encoding="utf-8"))
    resolved = interpolate(raw, load_env_example() if env is None else env)
    assert isinstance(resolved, dict)
    return resolved


def airflow_environment(compose: Mapping[str, Any], dotenv: Mapping[str, str]) -> dict[str, str]:
    """What every Airflow container gets: the lines of .env (the anchor's ``env_file``)
    and the anchor's ``environment``, which wins where both set a key."""
    anchor = compose[ANCHOR]
    assert anchor["env_file"] == [".env"], anchor["env_file"]
    return {**dotenv, **{str(k): str(v) for k, v in anchor["environment"].items()}}


def shell_commands(script: str) -> Iterator[list[str]]:
    """Simple commands of a shell script, split at newlines and at && || ; | &."""
    for line in script.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in lexer:
            if token in _SHELL_OPERATORS:
                if command:
                    yield command
                command = []
            else:
                command.append(token)
        if command:
            yield command


def airflow_argv(command: list[str]) -> list[str] | None:
    """The arguments after `airflow` (also through the image's /entrypoint), else None."""
    if command[:1] == ["/entrypoint"]:
        command = command[1:]
    if command[:1] == ["airflow"]:
        return command[1:]
    return None


def script_invocations(script: str) -> list[list[str]]:
    """The `airflow ...` commands of a shell script, as argv after `airflow`."""
    return [argv for cmd in shell_commands(script) if (argv := airflow_argv(cmd)) is not None]
