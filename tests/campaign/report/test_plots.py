"""The report's figures carry the numbers they claim to show."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle, StepPatch

from campaign.coverage import ModelCoverage
from campaign.report import plots


def _steps(axes) -> list[np.ndarray]:
    return [np.asarray(p.get_data().values) for p in axes.patches if isinstance(p, StepPatch)]


def _errorbar_y(axes) -> np.ndarray:
    container = next(c for c in axes.containers if isinstance(c, ErrorbarContainer))
    return np.asarray(container.lines[0].get_ydata())


def test_p_tilde_figure_shows_observed_and_expected_counts() -> None:
    distribution = {
        "edges": [0.0, 0.5, 1.0, 1.5],
        "observed": [30, 5, 1],
        "expected": [27.0, 8.5, 0.5],
        "n_searches": 36,
        "n_rounds": 30,
    }
    figure = plots.p_tilde_figure(distribution)
    axes = figure.axes[0]
    np.testing.assert_array_equal(_errorbar_y(axes), [30, 5, 1])
    assert any(np.allclose(values, [27.0, 8.5, 0.5]) for values in _steps(axes))
    assert axes.get_yscale() == "log"


def test_deviation_figure_draws_data_background_band_and_region() -> None:
    deviation = {
        "event_class": "2mu",
        "observable": "minv",
        "edges": [100.0, 200.0, 300.0, 400.0],
        "observed": [120.0, 40.0, 30.0],
        "expected": [118.0, 45.0, 9.0],
        "uncertainty": [10.0, 5.0, 2.0],
        "region": {"low": 300.0, "high": 400.0},
    }
    figure = plots.deviation_figure(deviation)
    axes = figure.axes[0]
    np.testing.assert_allclose(_errorbar_y(axes), [120.0, 40.0, 30.0])
    steps = _steps(axes)
    assert any(np.allclose(values, [118.0, 45.0, 9.0]) for values in steps)
    assert any(np.allclose(values, [128.0, 50.0, 11.0]) for values in steps), "band top"
    (span,) = [p for p in axes.patches if isinstance(p, Rectangle)]
    assert span.get_x() == pytest.approx(300.0)
    assert span.get_x() + span.get_width() == pytest.approx(400.0)
    assert axes.get_title() == "2mu"


def _coverage() -> ModelCoverage:
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 15), np.linspace(0, 1, 15)), -1).reshape(-1, 2)
    p = 1.0 / (1.0 + np.exp((np.hypot(grid[:, 0] - 0.5, grid[:, 1] - 0.5) - 0.3) * 30))
    points = np.array([[0.5, 0.5], [0.9, 0.9], [0.1, 0.8]])
    return ModelCoverage(
        model="toy",
        parameters=("m1", "m2"),
        points=points,
        cls_observed=np.array([0.01, 0.6, 0.3]),
        cls_expected=np.array([0.02, 0.5, 0.04]),
        reference=grid,
        p_excluded_observed=p,
        p_excluded_expected=p,
        threshold=0.05,
        stop_reason="budget",
    )


def test_exclusion_figure_has_both_outputs_and_the_evaluated_points() -> None:
    coverage = _coverage()
    figure = plots.exclusion_figure(coverage)
    panels = [a for a in figure.axes if a.get_title()]
    assert [a.get_title() for a in panels] == ["toy: observed", "toy: expected"]
    for axes, cls in zip(panels, (coverage.cls_observed, coverage.cls_expected), strict=True):
        assert (axes.get_xlabel(), axes.get_ylabel()) == ("m1", "m2")
        scatters = [c for c in axes.collections if isinstance(c, PathCollection)]
        excluded = np.asarray(scatters[0].get_offsets())
        allowed = np.asarray(scatters[1].get_offsets())
        np.testing.assert_allclose(excluded, coverage.points[cls < 0.05])
        np.testing.assert_allclose(allowed, coverage.points[cls >= 0.05])


def test_grid_colours_keep_gaps_and_darken_with_sensitivity() -> None:
    colours = plots.grid_colours([[0.01, None], [1.0, 100.0]])
    assert colours[0][1] is None

    def luminance(hex_colour: str) -> float:
        r, g, b = (int(hex_colour[k : k + 2], 16) for k in (1, 3, 5))
        return 0.299 * r + 0.587 * g + 0.114 * b

    shades = [luminance(colours[0][0][0]), luminance(colours[1][0][0]), luminance(colours[1][1][0])]
    assert shades[0] < shades[1] < shades[2], "smaller limits are darker"
    assert colours[0][0][1] == "#ffffff" and colours[1][1][1] == "#000000"
    assert plots.grid_colours([[None]]) == [[None]]


def test_data_uri_is_an_inline_png() -> None:
    figure = Figure()
    figure.subplots().plot([0, 1], [0, 1])
    uri = plots.data_uri(figure)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_drawing_a_report_leaves_the_callers_pyplot_alone() -> None:
    """A notebook keeps its backend and its figures after importing and using the module, and
    the figure's math labels render in the style's fonts without a font warning.

    Run in a fresh interpreter (the test process has imported the module and matplotlib caches
    font lookups), with a backend other than Agg: ``svg`` stands in for a notebook's inline one.
    """
    script = textwrap.dedent(
        """
        import matplotlib.pyplot as plt
        mine = plt.figure()
        from campaign.report import plots
        figure = plots.p_tilde_figure(
            {"edges": [0, 1, 2], "observed": [3, 1], "expected": [2.5, 1.2], "n_searches": 4}
        )
        plots.data_uri(figure)
        print(plt.get_backend(), plt.get_fignums(), plt.fignum_exists(mine.number))
        """
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "[1]", "True"]
    assert "findfont" not in done.stderr
