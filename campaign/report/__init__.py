"""Coverage reports for collaboration reviews: self-contained HTML, PDF and a JSON summary.

The content is computed once, as data (:func:`campaign.report.summary.build_summary`, following
the published schema ``campaign/schemas/report.schema.json``); the HTML page is rendered from it
with every user-supplied string escaped, figures inlined as PNG, and nothing fetched from
outside; the PDF is that page printed by headless Chromium.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from campaign.coverage import ModelCoverage, load_coverages
from campaign.report import plots
from campaign.report.browser import BrowserError, find_chromium, print_pdf
from campaign.report.summary import REPORT_SCHEMA_VERSION, build_summary
from campaign.store import Store

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "BrowserError",
    "ReportFiles",
    "build_summary",
    "render_html",
    "report_schema",
    "write_report",
]


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote (``pdf`` is None when it was not asked for or possible)."""

    html: Path
    summary: Path
    pdf: Path | None
    pdf_skipped: str = ""


def report_schema() -> dict[str, Any]:
    """The JSON Schema of the summary (draft 2020-12)."""
    text = resources.files("campaign").joinpath("schemas/report.schema.json").read_text()
    return json.loads(text)


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("campaign", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(summary: dict[str, Any], coverages: Sequence[ModelCoverage] = ()) -> str:
    """The report page for ``summary``; ``coverages`` give the exclusion maps, in its order."""
    figures: dict[str, Any] = {
        "p_tilde": None
        if summary["p_tilde_distribution"] is None
        else plots.data_uri(plots.p_tilde_figure(summary["p_tilde_distribution"])),
        "deviations": [plots.data_uri(plots.deviation_figure(d)) for d in summary["deviations"]],
        "exclusions": [plots.data_uri(plots.exclusion_figure(c)) for c in coverages],
    }
    cells = summary["signature_grid"]["cells"]
    limits = [[None if c is None else c["best_limit_fb"] for c in row] for row in cells]
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            s=summary,
            figures=figures,
            grid_colours=plots.grid_colours(limits),
            searched=sum(1 for row in summary["classes"] if row["searched"]),
        )
    )


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def write_report(
    store: Store,
    *,
    out_dir: Path | None = None,
    pdf: bool | None = None,
    top: int | None = None,
) -> ReportFiles:
    """Write ``report.html``, ``report.json`` and ``report.pdf`` for the campaign in ``store``.

    Args:
        store: a campaign store (finished or not: absent sections say so).
        out_dir: where the files go (default: the store's folder).
        pdf: True requires the PDF (error without Chromium), False skips it, None prints it
            when a Chromium is installed and says why not otherwise.
        top: how many deviations get a plot (default: the campaign's ``report.top``).
    """
    folder = out_dir or store.local_path("")
    coverages = load_coverages(store)
    summary = build_summary(store, top=top, coverages=coverages)
    html_path, json_path = folder / "report.html", folder / "report.json"
    _atomic_write(html_path, render_html(summary, coverages))
    _atomic_write(json_path, json.dumps(summary, indent=1, sort_keys=True, allow_nan=False))
    if pdf is False:
        return ReportFiles(html=html_path, summary=json_path, pdf=None, pdf_skipped="not asked")
    if pdf is None and find_chromium() is None:
        reason = "no Chromium found (apt-get install chromium, or set LAMPPOST_CHROMIUM)"
        return ReportFiles(html=html_path, summary=json_path, pdf=None, pdf_skipped=reason)
    try:
        printed = print_pdf(html_path, folder / "report.pdf")
    except BrowserError as problem:
        if pdf:
            raise
        return ReportFiles(html=html_path, summary=json_path, pdf=None, pdf_skipped=str(problem))
    return ReportFiles(html=html_path, summary=json_path, pdf=printed)
