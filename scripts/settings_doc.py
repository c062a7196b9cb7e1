"""Write ``docs/settings.md`` from :class:`include.qdrant_migration.settings.Settings`.

    python -m scripts.settings_doc           # (re)write the page
    python -m scripts.settings_doc --check   # exit 1 if the page is stale

``make settings-doc`` runs the first; ``tests/qdrant_migration/test_settings.py`` fails
when the page and the dataclass disagree, so the deployment docs cannot drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from include.qdrant_migration.settings import Settings  # noqa: E402

PAGE = ROOT / "docs" / "settings.md"

HEADER = """\
# Deployment settings

<!-- Generated from include/qdrant_migration/settings.py by `make settings-doc`: edit the
Settings dataclass there, not this page (tests/qdrant_migration/test_settings.py fails
when the two disagree). -->

Environment variables of the Airflow components, for what cannot be a run param: what
shapes the task graph (a pool, a schedule, how many tasks run at once) or belongs to the
deployment rather than to one migration. Set them the same way on every component
(dag-processor, scheduler, workers, api-server); `docker-compose.yaml` does it in
`x-airflow-common`, from `.env` where it says so (`.env.example`).

They are read once per process through `include.qdrant_migration.settings.settings()`,
never at import time. An unset or empty variable takes its default; a value the setting
cannot take fails with a message naming the variable (in a DAG file's import error, or
in the task's log).

| variable | default | value |
| --- | --- | --- |
"""


def _default(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def render() -> str:
    """The page, as :class:`Settings` documents itself."""
    fields = dataclasses.fields(Settings)
    rows = [
        f"| [`{f.metadata['env']}`](#{f.metadata['env'].lower()}) | `{_default(f.default)}` "
        f"| {f.metadata['kind']} |"
        for f in fields
    ]
    sections = [
        f"## {f.metadata['env']}\n\n"
        f"Default `{_default(f.default)}`; {f.metadata['kind']}. "
        f"`Settings.{f.name}`.\n\n"
        f"{f.metadata['meaning']}\n\n"
        f"**Read:** {f.metadata['read']}\n"
        for f in fields
    ]
    return HEADER + "\n".join(rows) + "\n\n" + "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    page = render()
    current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    if args.check:
        if current != page:
            print(f"{PAGE.relative_to(ROOT)} is stale: run `make settings-doc`.", file=sys.stderr)
            return 1
        return 0
    if current != page:
        PAGE.write_text(page, encoding="utf-8")
        print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
