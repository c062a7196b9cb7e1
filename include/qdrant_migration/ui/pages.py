"""The plugin's HTML: the migrations list and a migration's page, rendered on the server.

Jinja2 with autoescaping renders ``templates/``; the report's markdown goes through
markdown-it with raw HTML off (what the report quotes, e.g. a query, is text, never
markup). The charts are inline SVG built from numbers only. The pages need nothing from
the network: the CSS and the small script that refreshes them and confirms actions are
inline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

from include.qdrant_migration.checks.ranking import BINS
from include.qdrant_migration.checks.traffic import Replay
from include.qdrant_migration.ui.views import (
    MigrationPage,
    MigrationRow,
    duration,
    usd,
)

#: Seconds between refreshes while a migration shown is loading or awaiting approval,
#: and otherwise (new migrations still appear).
REFRESH_ACTIVE_S = 5
REFRESH_IDLE_S = 60
TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Links:
    """Where the pages link to: the plugin's own routes and Airflow's UI."""

    #: The plugin app's mount path as the browser sees it (e.g. ``/qdrant-migrations``).
    base: str
    #: Airflow's UI root (``""`` when Airflow is served at the host's root).
    airflow: str
    dag_id: str

    def migration(self, migration_id: str) -> str:
        return f"{self.base}/migrations/{quote(migration_id, safe='')}"

    def action(self, migration_id: str, action: str) -> str:
        return f"{self.base}/api/migrations/{quote(migration_id, safe='')}/{action}"

    def run(self, run_id: str | None, dag_id: str | None = None) -> str | None:
        if not run_id:
            return None
        dag = quote(dag_id or self.dag_id, safe="")
        return f"{self.airflow}/dags/{dag}/runs/{quote(run_id, safe='')}"


@dataclass(frozen=True)
class Viewer:
    """Who looks, and what the auth manager lets them do (buttons are disabled otherwise)."""

    name: str
    can_answer: bool
    can_trigger: bool


@cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(usd=usd, duration=duration, percent=percent, number=number)
    return env


@cache
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def render_markdown(text: str) -> Markup:
    """The report as HTML; raw HTML in it is shown as text, never run."""
    return Markup(_markdown().render(text))


def percent(fraction: float) -> str:
    return f"{fraction * 100:.0f}%" if fraction < 0.995 or fraction == 1 else "99%"


def number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def list_page(
    rows: Sequence[MigrationRow], links: Links, viewer: Viewer, problem: str | None
) -> str:
    return (
        _environment()
        .get_template("list.html")
        .render(
            rows=rows,
            links=links,
            viewer=viewer,
            problem=problem,
            active=any(r.active for r in rows),
            refresh_s=_refresh(any(r.active for r in rows)),
            now=_now(),
        )
    )


def migration_html(page: MigrationPage, links: Links, viewer: Viewer, problem: str | None) -> str:
    return (
        _environment()
        .get_template("migration.html")
        .render(
            page=page,
            row=page.row,
            links=links,
            viewer=viewer,
            problem=problem,
            active=page.row.active,
            refresh_s=_refresh(page.row.active),
            report=render_markdown(page.report_markdown) if page.report_markdown else None,
            throughput_svg=throughput_chart(page.throughput, page.row.points_total),
            quality_svg=quality_chart(page.quality),
            replay_svg=replay_chart(page.replay),
            now=_now(),
        )
    )


def _refresh(active: bool) -> int:
    return REFRESH_ACTIVE_S if active else REFRESH_IDLE_S


def _now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- charts (inline SVG, numbers only) ---------------------------------------------------

_W, _H, _PAD = 560, 200, 40


def throughput_chart(series: Sequence[tuple[float, int]], total: int) -> Markup | None:
    """Points done over time, against the total."""
    if len(series) < 2:
        return None
    span = max(series[-1][0], 1.0)
    top = max(total, series[-1][1], 1)

    def xy(t: float, done: float) -> str:
        x = _PAD + (_W - 2 * _PAD) * t / span
        y = _H - _PAD - (_H - 2 * _PAD) * done / top
        return f"{x:.1f},{y:.1f}"

    steps = " ".join(xy(t, done) for t, done in series)
    rate = series[-1][1] / span
    return Markup(
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="points done over time">'
        f"{_axes()}"
        f'<line class="goal" x1="{_PAD}" x2="{_W - _PAD}" y1="{_PAD}" y2="{_PAD}"/>'
        f'<text x="{_W - _PAD}" y="{_PAD - 6}" text-anchor="end">{top:,} points</text>'
        f'<polyline class="line" points="{steps}"/>'
        f'<text x="{_PAD}" y="{_H - 10}">0</text>'
        f'<text x="{_W - _PAD}" y="{_H - 10}" text-anchor="end">{duration(span)}</text>'
        f'<text x="{_W / 2}" y="{_H - 10}" text-anchor="middle">'
        f"mean {rate:,.1f} points/s</text></svg>"
    )


def quality_chart(quality: dict[str, tuple[float, float]]) -> Markup | None:
    """Old vs new model, one pair of bars per metric."""
    if not quality:
        return None
    width = (_W - 2 * _PAD) / len(quality)
    parts = [_axes()]
    for i, (metric, (old, new)) in enumerate(sorted(quality.items())):
        x = _PAD + i * width + width * 0.15
        bar = width * 0.3
        for j, (side, value) in enumerate((("old", old), ("new", new))):
            height = (_H - 2 * _PAD) * max(min(value, 1.0), 0.0)
            parts.append(
                f'<rect class="{side}" x="{x + j * bar:.1f}" y="{_H - _PAD - height:.1f}" '
                f'width="{bar - 2:.1f}" height="{height:.1f}"><title>{side} {value:.3f}'
                "</title></rect>"
                f'<text x="{x + j * bar + bar / 2:.1f}" y="{_H - _PAD - height - 4:.1f}" '
                f'text-anchor="middle">{value:.2f}</text>'
            )
        parts.append(
            f'<text x="{x + bar:.1f}" y="{_H - _PAD + 16}" text-anchor="middle">'
            f"{Markup.escape(metric)}</text>"
        )
    parts.append(
        f'<rect class="old" x="{_W - 150}" y="8" width="10" height="10"/>'
        f'<text x="{_W - 136}" y="17">old model</text>'
        f'<rect class="new" x="{_W - 70}" y="8" width="10" height="10"/>'
        f'<text x="{_W - 56}" y="17">new</text>'
    )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="old vs new quality">{"".join(parts)}</svg>'
    )


def replay_chart(replay: Replay | None) -> Markup | None:
    """The replayed queries by overlap@k and by RBO: two histograms, bars side by side."""
    if replay is None or not replay.queries:
        return None
    series = (("overlap", replay.overlap.histogram), ("rbo", replay.rbo.histogram))
    top = max(max(counts, default=0) for _, counts in series) or 1
    width = (_W - 2 * _PAD) / BINS
    bar = width * 0.4
    parts = [_axes()]
    for i in range(BINS):
        x = _PAD + i * width + width * 0.1
        for j, (name, counts) in enumerate(series):
            count = counts[i] if i < len(counts) else 0
            height = (_H - 2 * _PAD) * count / top
            parts.append(
                f'<rect class="{name}" x="{x + j * bar:.1f}" y="{_H - _PAD - height:.1f}" '
                f'width="{bar - 1:.1f}" height="{height:.1f}"><title>{count} queries with '
                f"{name} {i / BINS:.1f} to {(i + 1) / BINS:.1f}</title></rect>"
            )
        parts.append(
            f'<text x="{_PAD + i * width:.1f}" y="{_H - _PAD + 16}" text-anchor="middle">'
            f"{i / BINS:.1f}</text>"
        )
    parts.append(
        f'<text x="{_W - _PAD:.1f}" y="{_H - _PAD + 16}" text-anchor="middle">1.0</text>'
        f'<text x="{_PAD - 4}" y="{_PAD}" text-anchor="end">{top}</text>'
        f'<rect class="overlap" x="{_W - 200}" y="8" width="10" height="10"/>'
        f'<text x="{_W - 186}" y="17">overlap@{replay.k}</text>'
        f'<rect class="rbo" x="{_W - 100}" y="8" width="10" height="10"/>'
        f'<text x="{_W - 86}" y="17">RBO</text>'
        f'<text x="{_W / 2}" y="{_H - 6}" text-anchor="middle">old vs new top {replay.k}, '
        f"{replay.queries} queries</text>"
    )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="replayed queries by overlap and RBO">{"".join(parts)}</svg>'
    )


def _axes() -> str:
    return (
        f'<line class="axis" x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}"/>'
        f'<line class="axis" x1="{_PAD}" y1="{_PAD / 2}" x2="{_PAD}" y2="{_H - _PAD}"/>'
    )
