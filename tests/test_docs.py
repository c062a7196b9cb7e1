"""The docs stay true: the params page matches the schemas, every link resolves, every page is
reachable from the README, every deployment setting the code reads is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts import params_doc

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

#: [text](target) and ![alt](target), with an optional "title"; the text may span lines.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lowercased, punctuation other than '-' and '_'
    removed, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on ``page``; a repeated heading gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The relative link targets of ``page`` (inline code and code blocks left out)."""
    prose = "\n".join(_prose(page.read_text(encoding="utf-8")))
    prose = re.sub(r"`[^`]*`", "", prose)
    targets = [m.group(1) for m in LINK.finditer(prose)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def test_the_params_page_matches_the_schemas() -> None:
    current = params_doc.PAGE.read_text(encoding="utf-8")
    assert current == params_doc.render(), "docs/params.md is out of date: run `make docs`"


def test_the_params_page_has_every_param() -> None:
    page = params_doc.PAGE.read_text(encoding="utf-8")
    for dag_id, schema, _ in params_doc.DAGS:
        section = page.split(f"## {dag_id}\n", 1)[1].split("\n## ", 1)[0]
        missing = [name for name in schema if f"| `{name}` |" not in section]
        assert not missing, f"{dag_id}: {missing} missing from docs/params.md: run `make docs`"


def test_a_note_on_a_param_that_does_not_exist_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    notes = {"qdrant_migration_catch_up": {"no_such_param": "stale"}}
    monkeypatch.setattr(params_doc, "NOTES", notes)
    with pytest.raises(ValueError, match="no_such_param"):
        params_doc.render()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor in {resolved.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"README.md's Documentation list does not link {unlinked}"


def test_every_deployment_setting_is_documented() -> None:
    code = [
        path for folder in ("include", "dags", "plugins") for path in (ROOT / folder).rglob("*.py")
    ]
    settings = {s for path in code for s in re.findall(r"\bQMM_[A-Z0-9_]+", path.read_text())}
    assert settings, "no QMM_ setting found: has the code moved?"
    page = (DOCS / "settings.md").read_text(encoding="utf-8")
    missing = sorted(s for s in settings if f"`{s}`" not in page)
    assert not missing, f"docs/settings.md does not list the settings {missing} (make docs)"


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Live writes: the contract", "live-writes-the-contract"),
        ("In place (Qdrant 1.18+)", "in-place-qdrant-118"),
        (
            "The linear map: `python -m bench.linear_map`",
            "the-linear-map-python--m-benchlinear_map",
        ),
        ("The application's side", "the-applications-side"),
        ("3. Evidence of the reads", "3-evidence-of-the-reads"),
        ("qdrant_model_migration", "qdrant_model_migration"),
    ],
)
def test_anchors_follow_githubs_slugs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
