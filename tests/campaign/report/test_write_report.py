"""The written report: HTML in a real headless Chromium, the PDF as pages, the JSON summary."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from campaign.report import report_schema, write_report
from campaign.report.browser import find_chromium, load_page, screenshot
from campaign.store import Store
from campaign.testing import lamppost

pytestmark = pytest.mark.slow
SECTIONS = (
    "summary",
    "signature-grid",
    "classes",
    "p-tilde",
    "deviations",
    "theory",
    "reinterpretations",
    "next-searches",
    "failures",
)


@pytest.fixture(scope="module")
def browser() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip("no Chromium on this machine (.ci/test installs Debian's chromium)")
    return found


@pytest.fixture(scope="module")
def written(reviewed_store: Path, browser: str, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("report")
    return write_report(Store(reviewed_store), out_dir=out, pdf=True)


def test_page_loads_without_console_errors_and_shows_every_section(
    written, browser: str, tmp_path: Path
) -> None:
    page = load_page(written.html, browser=browser)
    assert page.console == (), page.console
    for section in SECTIONS:
        assert f'<section id="{section}">' in page.dom, section
    assert page.dom.count('id="plot-p-tilde"') == 1
    summary = json.loads(written.summary.read_text())
    assert page.dom.count('class="plot-deviation"') == len(summary["deviations"]) > 0
    assert page.dom.count('class="plot-exclusion"') == 1
    assert page.dom.count('src="data:image/png;base64,') == len(summary["deviations"]) + 2
    assert 'id="grid"' in page.dom and 'class="gap"' in page.dom
    png = screenshot(written.html, tmp_path / "report.png", browser=browser)
    with Image.open(png) as image:
        assert image.size == (1280, 4000)
        assert len(set(image.convert("L").getdata())) > 50, "the screenshot shows content"


def test_the_console_check_catches_a_broken_page(tmp_path: Path, browser: str) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>missingFunction();</script></body></html>")
    assert any("missingFunction" in line for line in load_page(page, browser=browser).console)


def test_user_text_is_escaped(written) -> None:
    summary = json.loads(written.summary.read_text())
    campaign, model = summary["campaign"]["name"], summary["coverage"][0]["model"]
    assert "<script>" in campaign and "<img" in model, "the fixture's names carry markup"
    html = written.html.read_text()
    assert campaign not in html and "<script>window.hostile" not in html
    assert "&lt;script&gt;window.hostile=1&lt;/script&gt; &amp; &#34;dimuon&#34;" in html
    assert model not in html and "&lt;img src=x onerror=" in html
    assert html.count("<script>") == 1, "only the page's own sorting script"
    assert "http://" not in html and "https://" not in html, "nothing fetched from outside"


def test_pdf_converts_to_pages(written, tmp_path: Path) -> None:
    if shutil.which("pdftoppm") is None:
        pytest.skip("no pdftoppm on this machine (.ci/test installs poppler-utils)")
    assert written.pdf is not None and written.pdf.read_bytes()[:5] == b"%PDF-"
    subprocess.run(
        ["pdftoppm", "-png", "-r", "40", str(written.pdf), str(tmp_path / "page")], check=True
    )
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 3, "grid, class table, plots and tables span several pages"
    with Image.open(pages[0]) as first:
        assert len(set(first.convert("L").getdata())) > 20, "the first page is not blank"


def test_summary_file_follows_the_schema(written) -> None:
    summary = json.loads(written.summary.read_text())
    jsonschema.Draft202012Validator(report_schema()).validate(summary)
    assert summary["campaign"]["name"].startswith("<script>")


def test_cli_writes_the_report_and_prints_the_schema(reviewed_store: Path, tmp_path: Path) -> None:
    done = lamppost("report", str(reviewed_store), "--out", str(tmp_path), "--no-pdf", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    paths = json.loads(done.stdout)
    assert paths["pdf"] is None and paths["pdf_skipped"] == "not asked"
    assert Path(paths["html"]).is_file() and Path(paths["summary"]).is_file()
    schema = lamppost("report", "--schema")
    assert json.loads(schema.stdout) == report_schema()
    missing = lamppost("report", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert "not a campaign store" in missing.stderr
    assert not (tmp_path / "nowhere").exists()


def test_sections_without_inputs_say_so(reference_run: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    Store(store_dir).initialise(
        spec_text=(reference_run / "campaign.yaml").read_text(),
        spec_json=json.loads((reference_run / "spec.json").read_text()),
    )
    files = write_report(Store(store_dir), pdf=False)
    html = files.html.read_text()
    assert "No finished searches." in html
    assert "the active-learning loop has not run" in html
    assert "No benchmark has been reinterpreted" in html
    summary = json.loads(files.summary.read_text())
    jsonschema.Draft202012Validator(report_schema()).validate(summary)
    assert summary["look_elsewhere"] is None and summary["deviations"] == []
