"""The report's figures (matplotlib with the mplhep style), drawn from the summary's data.

Every function takes the summary's plain data (or a :class:`~campaign.coverage.ModelCoverage`)
and returns a matplotlib ``Figure``; :func:`png` renders it in the report style and
:func:`data_uri` inlines that PNG so the HTML page needs nothing from outside. Figures are
built as bare ``Figure`` objects, never through pyplot: they render without a display on batch
nodes, and importing or calling this module leaves the caller's pyplot backend and open
figures alone (a notebook that draws a report figure keeps its inline backend).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.style
import mplhep
import numpy as np
from matplotlib.figure import Figure

from campaign.coverage import ModelCoverage

STYLE = mplhep.style.CMS
BAND_LEVELS = (0.16, 0.5, 0.84)
"""P(excluded) contours drawn on exclusion maps: the boundary (0.5) and its 1σ band."""


def png(figure: Figure, *, dpi: int = 90) -> bytes:
    """``figure`` as PNG bytes, rendered in the report style.

    Math text takes its fonts from the rc parameters in force when the figure is *drawn*, not
    when it was built: rendered outside the style, every label with a formula fell back to
    DejaVu Sans and matplotlib warned that the font family 'cursive' was missing.
    """
    buffer = io.BytesIO()
    with matplotlib.style.context(STYLE):
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def data_uri(figure: Figure, *, dpi: int = 90) -> str:
    """:func:`png` of ``figure`` as a ``data:`` URI, for the self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png(figure, dpi=dpi)).decode("ascii")


def p_tilde_figure(distribution: Mapping[str, Any]) -> Figure:
    """Searches per bin of −log10 p̃: observed, and background-only expectation with ±1σ."""
    edges = np.asarray(distribution["edges"])
    observed = np.asarray(distribution["observed"], dtype=float)
    expected = np.asarray(distribution["expected"], dtype=float)
    with matplotlib.style.context(STYLE):
        figure = Figure(figsize=(7, 5))
        axes = figure.subplots()
        band = np.sqrt(expected)
        axes.stairs(
            expected + band,
            edges,
            baseline=np.maximum(expected - band, 1e-3),
            fill=True,
            color="#f2c14e",
            alpha=0.6,
            label="background-only ±1σ",
        )
        axes.stairs(expected, edges, color="#b07d00", label="background-only expectation")
        centres = 0.5 * (edges[1:] + edges[:-1])
        axes.errorbar(
            centres,
            observed,
            yerr=np.sqrt(observed),
            fmt="o",
            color="black",
            label=f"searches ({int(distribution['n_searches'])})",
        )
        axes.set_xlabel(r"$-\log_{10}\,\tilde{p}$")
        axes.set_ylabel("searches")
        axes.set_yscale("log")
        axes.set_ylim(0.1, max(observed.max(initial=1), expected.max(initial=1)) * 5)
        axes.legend(fontsize="small")
    return figure


def deviation_figure(deviation: Mapping[str, Any]) -> Figure:
    """Observed distribution against the background with its uncertainty, region shaded."""
    edges = np.asarray(deviation["edges"])
    observed = np.asarray(deviation["observed"], dtype=float)
    expected = np.asarray(deviation["expected"], dtype=float)
    error = np.asarray(deviation["uncertainty"], dtype=float)
    with matplotlib.style.context(STYLE):
        figure = Figure(figsize=(7, 5))
        axes = figure.subplots()
        region = deviation.get("region")
        if region is not None:
            axes.axvspan(
                region["low"],
                region["high"],
                color="#d62728",
                alpha=0.12,
                label="region of interest",
            )
        axes.stairs(
            expected + error,
            edges,
            baseline=np.maximum(expected - error, 0.0),
            fill=True,
            color="#9ecae1",
            alpha=0.7,
            label="background uncertainty",
        )
        mplhep.histplot(expected, edges, ax=axes, color="#08519c", label="background")
        mplhep.histplot(
            observed,
            edges,
            ax=axes,
            histtype="errorbar",
            yerr=np.sqrt(observed),
            color="black",
            label="data",
        )
        axes.set_yscale("log")
        positive = np.concatenate([observed[observed > 0], expected[expected > 0]])
        low = positive.min() * 0.3 if positive.size else 0.1
        axes.set_ylim(max(low, 1e-3), (positive.max() if positive.size else 1.0) * 20)
        axes.set_xlabel(f"{deviation['observable']} [GeV]")
        axes.set_ylabel("events / bin")
        axes.set_title(deviation["event_class"], fontsize="medium")
        axes.legend(fontsize="small")
    return figure


def exclusion_figure(coverage: ModelCoverage) -> Figure:
    """P(excluded) over the first two parameters, observed and expected side by side.

    Filled colours are the surrogate's posterior on the reference points; the solid contour is
    the boundary (P = 0.5), dashed ones its band (0.16, 0.84); markers are the evaluated points
    (filled: CLs below threshold). With more than two parameters the map shows the reference
    points projected on the first two.
    """
    outputs = [("observed", coverage.p_excluded_observed, coverage.cls_observed)]
    if coverage.p_excluded_expected is not None:
        outputs.append(("expected", coverage.p_excluded_expected, coverage.cls_expected))
    x_name, y_name = [*coverage.parameters, "-"][:2]
    with matplotlib.style.context(STYLE):
        figure = Figure(figsize=(6.5 * len(outputs), 5.2))
        axes_row = figure.subplots(1, len(outputs), squeeze=False)
        for axes, (label, p, cls) in zip(axes_row[0], outputs, strict=True):
            _exclusion_panel(axes, coverage, p, cls)
            axes.set_title(f"{coverage.model}: {label}", fontsize="medium")
            axes.set_xlabel(x_name)
            axes.set_ylabel(y_name)
    return figure


def _exclusion_panel(axes: Any, coverage: ModelCoverage, p: np.ndarray, cls: Any) -> None:
    reference = coverage.reference
    if reference.shape[1] == 1:
        reference = np.column_stack([reference[:, 0], np.zeros(len(reference))])
    x, y = reference[:, 0], reference[:, 1]
    if coverage.reference.shape[1] == 2:
        filled = axes.tricontourf(x, y, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r")
        axes.tricontour(
            x,
            y,
            p,
            levels=list(BAND_LEVELS),
            colors="black",
            linestyles=["dashed", "solid", "dashed"],
            linewidths=1.2,
        )
    else:
        filled = axes.scatter(x, y, c=p, cmap="RdBu_r", vmin=0, vmax=1, s=6)
    axes.figure.colorbar(filled, ax=axes, label="P(excluded)")
    points = coverage.points
    if cls is not None and len(points):
        px = points[:, 0]
        py = points[:, 1] if points.shape[1] > 1 else np.zeros(len(points))
        excluded = np.asarray(cls) < coverage.threshold
        axes.scatter(
            px[excluded], py[excluded], marker="o", s=18, color="black", label="evaluated: excluded"
        )
        axes.scatter(
            px[~excluded],
            py[~excluded],
            marker="o",
            s=18,
            facecolors="none",
            edgecolors="black",
            label="evaluated: allowed",
        )
        axes.legend(fontsize="x-small", loc="upper right")


def grid_colours(
    values: Sequence[Sequence[float | None]],
) -> list[list[tuple[str, str] | None]]:
    """(background, text) colours for the signature grid: log-scaled limits, best darkest.

    ``None`` stays ``None`` (a gap). Text is white on dark cells and black on light ones.
    """
    finite = [v for row in values for v in row if v is not None and v > 0]
    if not finite:
        return [[None for _ in row] for row in values]
    low, high = np.log10(min(finite)), np.log10(max(finite))
    span = high - low if high > low else 1.0
    colormap = matplotlib.colormaps["viridis_r"]
    out: list[list[tuple[str, str] | None]] = []
    for row in values:
        line: list[tuple[str, str] | None] = []
        for v in row:
            if v is None or v <= 0:
                line.append(None)
                continue
            r, g, b, _ = colormap(0.15 + 0.7 * (1.0 - (np.log10(v) - low) / span))
            text = "#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 0.55 else "#000000"
            line.append((f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}", text))
        out.append(line)
    return out
