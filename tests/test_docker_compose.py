"""Static checks of docker-compose.yaml, .env.example and the Dockerfile.

No Docker engine runs here, so these tests stand in for `docker compose config`: the file is
validated against the Compose Specification schema (vendored in tests/schemas/, see its README),
and then against what this project needs: the Airflow services share the anchor and mount the
project, every path they name exists, every image is pinned, every long-running service has a
healthcheck, and every `airflow ...` command they run parses with the installed Airflow 3.3 CLI.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.compose import (
    ANCHOR,
    COMPOSE_PATH,
    ENV_EXAMPLE_PATH,
    INTERPOLATION_RE,
    ROOT,
    airflow_argv,
    airflow_environment,
    interpolate,
    load_compose,
    load_env_example,
    script_invocations,
)

SCHEMA_PATH = ROOT / "tests" / "schemas" / "compose_spec.json"
DOCKERFILE_PATH = ROOT / "Dockerfile"
REQUIREMENTS_PATH = ROOT / "requirements.txt"

AIRFLOW_HOME = "/opt/airflow"
PROJECT_MOUNTS = ("dags", "plugins", "include")
AIRFLOW_COMPONENTS = {
    "airflow-apiserver": ["api-server"],
    "airflow-scheduler": ["scheduler"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer"],
    "airflow-worker": ["celery", "worker"],
}
ONE_SHOT_SERVICES = {"airflow-init"}


# --- helpers ----------------------------------------------------------------------------------


def referenced_variables(text: str) -> set[str]:
    """Names used as ${NAME...} outside comments; "$${NAME}" is the container's, not Compose's."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        names.update(m.group("name") for m in INTERPOLATION_RE.finditer(line) if m.group("name"))
    return names


def services_using_anchor(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    anchor = compose[ANCHOR]
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") == anchor["image"] and service.get("build") == anchor["build"]
    }


def volume_mounts(service: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each volume, short (`src:dst[:mode]`) or long syntax."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            yield source, rest.split(":")[0]
        else:
            yield str(volume.get("source", "")), str(volume["target"])


def is_relative_path(source: str) -> bool:
    return source.startswith(("./", "../")) or source in (".", "..")


def _healthcheck_invocations(test: Any) -> list[list[str]]:
    if not isinstance(test, list) or not test:
        return []
    if test[0] == "CMD-SHELL":
        return script_invocations(str(test[1]))
    argv = airflow_argv([str(t) for t in test[1:]]) if test[0] == "CMD" else None
    return [argv] if argv is not None else []


def _command_invocations(service: Mapping[str, Any]) -> list[list[str]]:
    command = service.get("command")
    if command is None:
        return []
    if "entrypoint" not in service:  # the image's entrypoint runs `airflow <command>`
        argv = command if isinstance(command, list) else shlex.split(command)
        return [[str(a) for a in argv]]
    if isinstance(command, list) and command[:1] == ["-c"]:  # entrypoint: /bin/bash
        return script_invocations(str(command[1]))
    return []


def airflow_invocations(compose: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """Every `airflow ...` command the compose file runs: (where, argv after `airflow`)."""
    found: list[tuple[str, list[str]]] = []
    airflow_services = services_using_anchor(compose)
    for name, service in compose["services"].items():
        if name in airflow_services:
            found += [(f"{name}.command", argv) for argv in _command_invocations(service)]
        test = service.get("healthcheck", {}).get("test")
        found += [(f"{name}.healthcheck", argv) for argv in _healthcheck_invocations(test)]
    return found


def image_is_pinned(image: str) -> bool:
    """A tag (or digest) other than `latest`; `name` alone means latest."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def raw_compose(compose_text: str) -> dict[str, Any]:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return load_env_example()


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """The compose file as Compose would see it after `cp .env.example .env`."""
    resolved = interpolate(raw_compose, env_example)
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    # The schema's "$schema" URL is not one jsonschema knows; it is written for draft 7 rules.
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


# --- schema -----------------------------------------------------------------------------------


def _errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_specification(
    compose_validator: jsonschema.protocols.Validator,
    raw_compose: dict[str, Any],
    compose: dict[str, Any],
) -> None:
    assert _errors(compose_validator, raw_compose) == []
    assert _errors(compose_validator, compose) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "postgres", "healthcheck", "tests"), ["CMD", "true"]),
        (("services", "qdrant", "ports"), "6333:6333"),
        (("services", "airflow-scheduler", "depends_on", "postgres", "condition"), "healthy"),
    ],
)
def test_the_schema_rejects_a_broken_file(
    compose_validator: jsonschema.protocols.Validator,
    raw_compose: dict[str, Any],
    path: tuple[str, ...],
    value: Any,
) -> None:
    broken = copy.deepcopy(raw_compose)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert _errors(compose_validator, broken)


# --- the Airflow services -----------------------------------------------------------------------


def test_anchor_uses_local_executor_postgres_and_project_pythonpath(
    compose: dict[str, Any],
) -> None:
    env = compose[ANCHOR]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["PYTHONPATH"] == AIRFLOW_HOME
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env
    assert compose[ANCHOR]["build"] == "."
    assert compose[ANCHOR]["env_file"] == [".env"]


def test_celery_profile_adds_redis_and_a_worker_that_scales(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    """`AIRFLOW_EXECUTOR=CeleryExecutor` and `COMPOSE_PROFILES=celery` in .env switch to
    Celery, as in Airflow's official file; without them LocalExecutor stays the default."""
    celery = load_compose({**env_example, "AIRFLOW_EXECUTOR": "CeleryExecutor"})
    env = celery[ANCHOR]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:@redis:6379/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert "@postgres/" in env["AIRFLOW__CELERY__RESULT_BACKEND"]
    services = compose["services"]
    assert services["redis"]["profiles"] == ["celery"]
    worker = services["airflow-worker"]
    assert worker["profiles"] == ["celery"]
    assert "airflow-worker" in services_using_anchor(compose)
    # `docker compose up --scale airflow-worker=N` needs no fixed name and no published port.
    assert "container_name" not in worker and "ports" not in worker
    for dependency in ("redis", "qdrant", "postgres"):
        assert worker["depends_on"][dependency]["condition"] == "service_healthy"
    # Without the profile nothing waits for a service only the profile starts.
    profiled = {name for name, service in services.items() if service.get("profiles")}
    for name, service in services.items():
        if not service.get("profiles"):
            assert not set(service.get("depends_on", {})) & profiled, name


def test_the_celery_tier_runs_the_compose_settings() -> None:
    """tests/e2e/celery runs Airflow with the anchor's environment: every setting verbatim
    but those that name a container (each replaced with the local one, for a reason), plus
    settings the compose file does not make. A setting added to either side shows up here."""
    from tests.e2e.celery.stack import (
        LOCAL_EQUIVALENTS,
        PER_WORKER,
        TIER_ONLY,
        Addresses,
        service_env,
        tier_dotenv,
    )

    dotenv = tier_dotenv("http://127.0.0.1:1/v1", "http://127.0.0.1:1")
    at = Addresses(15432, 16379, 18080, 18974, "http://127.0.0.1:16333")
    env = service_env(dotenv, at, Path("/tmp/airflow-home"))
    compose = airflow_environment(load_compose(dotenv), dotenv)
    assert set(LOCAL_EQUIVALENTS) <= set(compose), "a replacement for a setting compose lost"
    assert not (set(TIER_ONLY) | set(PER_WORKER)) & set(compose), "the tier hides a setting"
    changed = {key for key, value in compose.items() if env[key] != value}
    assert changed == set(LOCAL_EQUIVALENTS)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["QMM_BACKFILL_POOL"] == compose["QMM_BACKFILL_POOL"] == "qdrant_backfill"
    for key, value in env.items():
        for container in ("@postgres/", "@redis:", "airflow-apiserver", '"host": "qdrant"'):
            assert container not in value, (key, value)


def test_every_airflow_component_uses_the_anchor(compose: dict[str, Any]) -> None:
    using = services_using_anchor(compose)
    assert set(AIRFLOW_COMPONENTS) | ONE_SHOT_SERVICES <= set(using)
    for name, argv in AIRFLOW_COMPONENTS.items():
        assert compose["services"][name]["command"] in (argv, " ".join(argv))


@pytest.mark.parametrize("directory", PROJECT_MOUNTS)
def test_anchor_services_mount_the_project(compose: dict[str, Any], directory: str) -> None:
    assert (ROOT / directory).is_dir(), f"{directory}/ is mounted but missing from the repo"
    for name, service in services_using_anchor(compose).items():
        mounts = {target: source for source, target in volume_mounts(service)}
        target = f"{AIRFLOW_HOME}/{directory}"
        assert mounts.get(target) == f"./{directory}", f"{name} does not mount ./{directory}"


def test_init_migrates_the_database_and_creates_pools(compose: dict[str, Any]) -> None:
    init = compose["services"]["airflow-init"]
    calls = [
        argv for where, argv in airflow_invocations(compose) if where.startswith("airflow-init")
    ]
    script = str(init["command"][1])
    migrates_explicitly = ["db", "migrate"] in [argv[:2] for argv in calls]
    migrates_via_entrypoint = (
        init["environment"].get("_AIRFLOW_DB_MIGRATE") == "true" and "/entrypoint airflow" in script
    )
    assert migrates_explicitly or migrates_via_entrypoint
    assert any(argv[:2] == ["pools", "set"] for argv in calls)
    for name in AIRFLOW_COMPONENTS:
        depends_on = compose["services"][name]["depends_on"]
        assert depends_on["airflow-init"]["condition"] == "service_completed_successfully"


def test_qdrant_connection_points_at_the_qdrant_service(compose: dict[str, Any]) -> None:
    conn = json.loads(compose[ANCHOR]["environment"]["AIRFLOW_CONN_QDRANT_DEFAULT"])
    assert conn["conn_type"] == "qdrant"
    assert conn["host"] in compose["services"]
    published = {
        str(port).rsplit(":", 1)[-1] for port in compose["services"][conn["host"]]["ports"]
    }
    assert {str(conn["port"]), str(conn["extra"]["grpc_port"])} <= published


def test_depends_on_names_defined_services(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"


# --- paths, variables, images, healthchecks -----------------------------------------------------


def test_relative_paths_exist(compose: dict[str, Any]) -> None:
    services = {ANCHOR: compose[ANCHOR], **compose["services"]}
    checked = 0
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            assert (ROOT / context / (dockerfile or "Dockerfile")).is_file(), name
            checked += 1
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            if env_file == ".env":  # git-ignored: each user makes it from .env.example
                assert ENV_EXAMPLE_PATH.is_file()
            else:
                assert (ROOT / env_file).is_file(), f"{name}: env_file {env_file} is missing"
            checked += 1
        for source, _target in volume_mounts(service):
            if is_relative_path(source):
                assert (ROOT / source).exists(), f"{name}: volume source {source} is missing"
                checked += 1
            elif source and not source.startswith("/"):
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"
    assert checked


def test_dockerfile_copies_only_existing_files() -> None:
    for line in DOCKERFILE_PATH.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"]:
            sources = [p for p in parts[1:-1] if not p.startswith("--")]
            assert sources
            for source in sources:
                assert list(ROOT.glob(source)), f"Dockerfile copies missing {source}"


def test_env_example_lists_every_variable_the_compose_file_uses(
    compose_text: str, env_example: dict[str, str]
) -> None:
    missing = referenced_variables(compose_text) - set(env_example)
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_env_example_holds_placeholders_only(env_example: dict[str, str]) -> None:
    assert ".env" in ROOT.joinpath(".gitignore").read_text(encoding="utf-8").split()
    for key, value in env_example.items():
        assert not re.search(r"sk-[A-Za-z0-9_-]{20,}", value), f"{key} looks like a real key"
        if key.startswith("AIRFLOW_CONN_"):
            conn = json.loads(value)
            assert conn["conn_type"]
            assert "REPLACE-ME" in conn.get("password", "REPLACE-ME")
    assert {"AIRFLOW_CONN_OPENAI_DEFAULT", "AIRFLOW_CONN_COHERE_DEFAULT"} <= set(env_example)


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    images = {name: s["image"] for name, s in compose["services"].items() if "image" in s}
    base_images = [
        line.split()[1]
        for line in DOCKERFILE_PATH.read_text(encoding="utf-8").splitlines()
        if line.startswith("FROM ")
    ]
    assert base_images
    images.update({f"Dockerfile FROM {image}": image for image in base_images})
    unpinned = [
        f"{where}: {image}" for where, image in images.items() if not image_is_pinned(image)
    ]
    assert not unpinned


def test_airflow_versions_agree(compose: dict[str, Any]) -> None:
    pins = re.findall(
        r"^apache-airflow==(\S+)", REQUIREMENTS_PATH.read_text(encoding="utf-8"), re.M
    )
    assert len(pins) == 1
    dockerfile = DOCKERFILE_PATH.read_text(encoding="utf-8")
    assert f"FROM apache/airflow:{pins[0]}-python" in dockerfile
    assert compose[ANCHOR]["image"].endswith(f":{pins[0]}")


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in ONE_SHOT_SERVICES:
            continue
        healthcheck = service.get("healthcheck", {})
        assert healthcheck.get("test"), f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"


def test_apiserver_healthcheck_uses_the_v2_version_endpoint(compose: dict[str, Any]) -> None:
    test = compose["services"]["airflow-apiserver"]["healthcheck"]["test"]
    assert "http://localhost:8080/api/v2/version" in test


# --- airflow CLI --------------------------------------------------------------------------------

_PARSE_SCRIPT = """
import json, sys
from airflow import __version__
from airflow.cli.cli_parser import get_parser
parser = get_parser()
bad = []
for argv in json.load(sys.stdin):
    try:
        parser.parse_args(argv)
    except SystemExit:
        bad.append(argv)
print(json.dumps({"version": __version__, "bad": bad}))
"""


@pytest.mark.skipif(importlib.util.find_spec("airflow") is None, reason="Airflow not installed")
def test_airflow_commands_exist_in_the_airflow_3_3_cli(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    invocations = airflow_invocations(compose)
    argvs = [argv for _where, argv in invocations]
    for argv in AIRFLOW_COMPONENTS.values():
        assert argv in argvs
    # A fresh AIRFLOW_HOME: parsing needs no database, and nothing leaks into the user's home.
    env = {"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", _PARSE_SCRIPT],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["version"].startswith("3.3."), report["version"]
    assert report["bad"] == [], f"not airflow {report['version']} commands: {report['bad']}"
