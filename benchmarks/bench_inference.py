"""Benchmark: CLs and upper limits of search workspaces, pyhf's default optimizer vs inference.

``searches.stats.inference`` fits on MINUIT whatever pyhf's global optimizer is. This compares,
side by side on the same workspaces, plain ``pyhf.infer.hypotest`` on pyhf's default SLSQP (the
baseline: what inference did before) with ``inference.cls``, both against the batched engine's
Newton fits of the same likelihood (``searches.stats.batched``, an independent implementation).
The workspaces are falling spectra (3 or 20 bins) with a signal, Poisson data and relative MC
statistics from 0.3 down to 1e-6 per bin, written by hand so that the MC-statistics floor of
``build_workspace`` does not apply. The second table times 95 % CL upper limits (pyhf's
``toms748_scan``) on both optimizers, the third toy-based CLs (pyhf's ``ToyCalculator``).

    python benchmarks/bench_inference.py               # 6 seeds × 2 sizes × 4 MC levels
    python benchmarks/bench_inference.py --seeds 2
"""

from __future__ import annotations

import argparse
import itertools
import logging
import platform
import time
import warnings

import numpy as np
import pyhf
from provenance import code_under_test
from rich.console import Console
from rich.table import Table

from searches.stats import inference
from searches.stats.batched import evaluate_patches
from searches.stats.robust import PLAIN, FitSettings, build_model, pyhf_cls, use_fit_settings
from searches.stats.workspace import build_workspace, with_signal
from searches.testing import falling_workspace, without_mc_statistics

MC_LEVELS = (0.3, 1e-2, 1e-4, 1e-6)
TOY_WORKSPACES = {
    "1 bin": with_signal(
        build_workspace(observed=[60.0], expected=[50.0], sumw2=[4.0], syst=0.05), [15.0]
    ),
    "4 bins": with_signal(
        build_workspace(
            observed=[12.0, 8.0, 3.0, 0.0],
            expected=[10.0, 7.0, 2.5, 0.0],
            sumw2=[1.0, 0.5, 0.2, 0.0],
            syst=0.1,
        ),
        [0.5, 2.0, 3.0, 0.1],
    ),
}
"""The toy tests' workspaces (``tests/searches/stats/test_workspace.py``)."""
REFERENCE_FITS = FitSettings(optimizer="minuit", tolerance=0.01, strategy=2)
"""Fits of the infinite-MC reference: a well-conditioned model, MINUIT at strategy 2."""
BAD = 1e-3
"""Relative CLs error counted as a wrong answer."""


def batched_or_infinite_mc(spec: dict, relative: float) -> float | None:
    """The batched engine's CLs; where its fits do not converge and the MC statistics are at
    most 1e-4, the CLs of the model without them (plain pyhf on MINUIT, a well-conditioned
    fit), which differs from the exact answer by far less than the 1e-3 counted as wrong."""
    (batched,) = evaluate_patches(spec, [("x", [])], check_bounds=False, pyhf_attempts=0)
    if batched.cls_obs is not None:
        return batched.cls_obs
    if relative > 1e-4:
        return None
    return pyhf_cls(without_mc_statistics(spec), settings=REFERENCE_FITS)[0]


def plain_pyhf(spec: dict) -> float:
    """pyhf's hypotest on its default optimizer (SLSQP): what inference did before."""
    return pyhf_cls(spec, settings=PLAIN)[0]


def upper_limit(spec: dict, name: str) -> tuple[float, float]:
    """Observed and median expected 95 % CL limit: pyhf's own scan on SLSQP, or inference."""
    if name == "inference":
        limit = inference.upper_limit(spec)
        return limit.observed, limit.expected[2]
    use_fit_settings(PLAIN)
    model, data = build_model(spec)
    low, high = model.config.suggested_bounds()[model.config.poi_index]
    observed, expected, _ = pyhf.infer.intervals.upper_limits.toms748_scan(
        data, model, low, high, level=0.05, test_stat="qtilde", from_upper_limit_fn=True
    )
    return float(observed), float(expected[2])


def timed(function, *args) -> tuple[float | None, float]:
    start = time.perf_counter()
    try:
        value = function(*args)
    except (pyhf.exceptions.FailedMinimization, ValueError):
        value = None
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=6)
    args = parser.parse_args()
    logging.getLogger("pyhf").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    console = Console()
    console.print(code_under_test())
    console.print(f"{platform.processor() or platform.machine()}, {platform.python_version()}")

    rows: dict[str, dict[str, list]] = {
        name: {"err": [], "seconds": [], "failed": []} for name in ("pyhf SLSQP", "inference")
    }
    skipped = 0
    for seed in range(args.seeds):
        for bins in (3, 20):
            for relative in MC_LEVELS:
                spec = falling_workspace(bins, relative, seed)
                reference = batched_or_infinite_mc(spec, relative)
                if reference is None:
                    skipped += 1
                    continue
                for name, function in (
                    ("pyhf SLSQP", plain_pyhf),
                    ("inference", lambda w: inference.cls(w).observed),
                ):
                    value, seconds = timed(function, spec)
                    rows[name]["seconds"].append((seconds, relative))
                    rows[name]["failed"].append(value is None)
                    if value is None:
                        err = np.nan
                    elif not np.isfinite(value):
                        err = np.inf
                    else:
                        err = abs(value - reference) / reference
                    rows[name]["err"].append((err, relative))

    table = Table(title="CLs at mu = 1 against the batched engine (relative error)")
    columns = (
        "fits",
        "workspaces",
        "raised",
        "NaN",
        f"wrong (>{BAD:g}, NaN incl.)",
        "worst finite",
        "median finite",
    )
    for column in (*columns, "s/CLs, MC ≥ 1e-2", "s/CLs, MC ≤ 1e-4"):
        table.add_column(column, justify="right")
    for name, row in rows.items():
        errors = np.array([e for e, _ in row["err"]])
        wrong = [rel for e, rel in row["err"] if e > BAD]
        finite = errors[np.isfinite(errors)]
        table.add_row(
            name,
            str(len(errors)),
            str(sum(row["failed"])),
            str(int(np.sum(np.isinf(errors)))),
            f"{len(wrong)}"
            + (f" (MC {', '.join(f'{r:g}' for r in sorted(set(wrong)))})" if wrong else ""),
            f"{np.max(finite):.1e}",
            f"{np.median(finite):.1e}",
            f"{np.mean([t for t, rel in row['seconds'] if rel >= 1e-2]):.2f}",
            f"{np.mean([t for t, rel in row['seconds'] if rel <= 1e-4]):.2f}",
        )
    console.print(table)
    if skipped:
        console.print(f"{skipped} workspaces skipped: no reference (batched fits did not converge)")

    limits = Table(title="95 % CL upper limit on mu (20 bins, relative MC statistics 0.05)")
    for column in ("seed", "fits", "observed", "expected median", "seconds"):
        limits.add_column(column, justify="right")
    for seed, name in itertools.product(range(3), ("pyhf SLSQP", "inference")):
        spec = falling_workspace(20, 0.05, seed)
        start = time.perf_counter()
        try:
            observed, expected = upper_limit(spec, name)
        except (ValueError, pyhf.exceptions.FailedMinimization) as problem:
            limits.add_row(
                str(seed), name, f"raised: {problem}", "", f"{time.perf_counter() - start:.1f}"
            )
            continue
        limits.add_row(
            str(seed),
            name,
            f"{observed:.5f}",
            f"{expected:.5f}",
            f"{time.perf_counter() - start:.1f}",
        )
    console.print(limits)

    toys = Table(title="Toy CLs at mu = 1 (300 toys, same seed)")
    for column in ("workspace", "fits", "CLs observed", "CLs expected median", "seconds"):
        toys.add_column(column, justify="right")
    for label, spec in TOY_WORKSPACES.items():
        model, data = inference.model_and_data(spec)
        for name in ("pyhf SLSQP", "inference"):
            if name == "pyhf SLSQP":
                use_fit_settings(PLAIN)
            else:
                use_fit_settings(inference.FITS)
            np.random.seed(0)
            start = time.perf_counter()
            observed, band = inference._toy_test(1.0, data, model, test_stat="qtilde", ntoys=300)
            toys.add_row(
                label,
                name,
                f"{observed:.4f}",
                f"{band[2]:.4f}",
                f"{time.perf_counter() - start:.1f}",
            )
    console.print(toys)


if __name__ == "__main__":
    main()
