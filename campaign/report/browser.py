"""Headless Chromium: prints the report to PDF and loads it the way a reviewer's browser does.

The PDF is the HTML page on paper, so both show the same thing. :func:`load_page` returns the
DOM after scripts ran and every console message, which is how the report's own tests check
that the page has no script errors. Chromium is found on ``PATH`` (``chromium``, ``chromium-browser``, ``google-chrome``) or through
``LAMPPOST_CHROMIUM``; it runs with a throw-away profile, no sandbox (batch nodes and containers
run as root) and no network use: the page is self-contained.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 180


class BrowserError(RuntimeError):
    """Chromium is missing, or it failed to print, load or photograph a page."""


_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\)|:\d+)\] (?P<message>.*)$")


@dataclass(frozen=True)
class PageLoad:
    """A page as Chromium rendered it: the DOM after scripts ran, and the console output."""

    dom: str
    console: tuple[str, ...]


def find_chromium() -> str | None:
    """Path of a Chromium-family browser, or None."""
    configured = os.environ.get("LAMPPOST_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else shutil.which(configured)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def headless_command(browser: str, profile: str) -> list[str]:
    """The flags every headless run shares (also used by the report's browser test)."""
    return [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
    ]


def print_pdf(html: Path, pdf: Path, *, browser: str | None = None) -> Path:
    """Print ``html`` to ``pdf`` (A4, backgrounds kept); atomic: no half-written PDF is left."""
    browser = browser or find_chromium()
    if browser is None:
        raise BrowserError(
            "printing the PDF needs Chromium: install it (Debian: apt-get install chromium) "
            "or set LAMPPOST_CHROMIUM to the browser's path"
        )
    temporary = pdf.with_name(pdf.name + ".tmp.pdf")
    flags = ["--no-pdf-header-footer", f"--print-to-pdf={temporary.resolve()}"]
    try:
        run = _run_headless(browser, flags, html)
    except (OSError, subprocess.TimeoutExpired) as err:
        temporary.unlink(missing_ok=True)
        raise BrowserError(f"{browser}: could not print {html}: {err}") from err
    if run.returncode != 0 or not temporary.is_file() or temporary.stat().st_size == 0:
        temporary.unlink(missing_ok=True)
        raise BrowserError(
            f"{browser} exited with {run.returncode} printing {html}: {run.stderr[-500:]}"
        )
    temporary.replace(pdf)
    return pdf


def _run_headless(browser: str, flags: list[str], html: Path) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="lamppost-chromium-") as profile:
        command = [*headless_command(browser, profile), *flags, html.resolve().as_uri()]
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)


def load_page(html: Path, *, browser: str) -> PageLoad:
    """Load ``html`` with scripts enabled; console messages come from Chromium's log."""
    run = _run_headless(browser, ["--enable-logging=stderr", "--v=0", "--dump-dom"], html)
    if run.returncode != 0:
        raise BrowserError(
            f"{browser} exited with {run.returncode} loading {html}: {run.stderr[-500:]}"
        )
    console = tuple(
        match.group("message")
        for line in run.stderr.splitlines()
        if (match := _CONSOLE.search(line)) is not None
    )
    return PageLoad(dom=run.stdout, console=console)


def screenshot(
    html: Path, png: Path, *, browser: str, width: int = 1280, height: int = 4000
) -> Path:
    """A PNG of the top ``height`` pixels of the page."""
    run = _run_headless(
        browser, [f"--screenshot={png.resolve()}", f"--window-size={width},{height}"], html
    )
    if run.returncode != 0 or not png.is_file():
        raise BrowserError(f"{browser} could not take a screenshot of {html}: {run.stderr[-500:]}")
    return png
