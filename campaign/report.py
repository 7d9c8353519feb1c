"""Reports written from a campaign store (HTML table of classes and their results)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from campaign.status import CampaignStatus


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("campaign", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(status: CampaignStatus) -> str:
    """A self-contained HTML page (inline CSS, nothing fetched); user text is escaped."""
    return _environment().get_template("classes.html.j2").render(status=status)


def write_html(status: CampaignStatus, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(render_html(status))
    temporary.replace(path)
    return path
