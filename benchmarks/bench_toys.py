"""Benchmark: toy CLs from the batched engine against pyhf's ToyCalculator, and against the
asymptotic formulae where a search's signal meets a few background events.

Speed (default). ``searches.stats.toys.toy_cls`` fits every toy of a workspace in batched
passes of the engine; the baseline is pyhf 0.7.6's ``ToyCalculator`` on MINUIT
(``inference.cls(calctype="toys")``), two fits per toy in a Python loop. Both run side by
side on the same workspaces: a 4-bin low-count search (the one of the tests) and falling
search spectra of 3 and 20 bins (``searches.testing.falling_workspace``). pyhf runs
``--pyhf-toys`` toys (its cost is linear in them), the engine ``--toys``; the table gives
seconds per toy (both ensembles counted) and both CLs with the engine's binomial error.

Limits (``--limits``). Upper limits on μ from toy CLs: the engine's scan
(``searches.stats.toy_limits.toy_upper_limit``, ``--toys`` toys at each μ) against pyhf's
``ToyCalculator`` on MINUIT, ``inference.upper_limit(calctype="toys")`` on its default grid
(15 points up to twice the asymptotic +2σ limit, here the engine's; ``--pyhf-toys`` at each μ,
the same seed at every μ), side by side with the asymptotic limits
and, for the one-bin counting experiment, the Poisson closed form.

Threshold (``--threshold``). Where asymptotic CLs starts to agree with the toys: one bin with
``b`` = 1 … 100 background events, the data at the median count, and a signal sized so that
the asymptotic median expected CLs is 0.05; once a pure Poisson count (where the closed form
``P(N ≤ n | s + b) / P(N ≤ n | b)`` is exact) and once with a 10 % normalisation uncertainty
and 5 % MC statistics, the two modifiers of a campaign search. This is what
``campaign.reinterpret.TOYS_BELOW`` (toys below 10 events) rests on.

Asymptotics (``--store STORE``). For each benchmark point of ``--points`` (Z′ masses at
``g = 0.1``) on a finished campaign, the ``--max-fits`` most sensitive searches with their
sensitivity-weighted background (``campaign.reinterpret.sensitive_background``), asymptotic
CLs from the engine and toy CLs ± error: where the asymptotic verdict at 0.05 and the toys'
disagree is what ``lamppost reinterpret --toys`` changes.

    python benchmarks/bench_toys.py
    python benchmarks/bench_toys.py --limits --toys 4000 --pyhf-toys 200
    python benchmarks/bench_toys.py --threshold --toys 20000
    python benchmarks/bench_toys.py --store STORE --toys 4000
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
from provenance import code_under_test, machine
from rich.console import Console
from rich.table import Table
from scipy import stats

from searches.stats import inference
from searches.stats.batched import compile_stack, evaluate_patches
from searches.stats.limits import upper_limit
from searches.stats.toy_limits import toy_upper_limit
from searches.stats.toys import toy_cls
from searches.stats.workspace import build_workspace, with_signal
from searches.testing import counting_limit, counting_workspace, falling_workspace


def low_count_workspace() -> dict:
    expected = np.array([4.0, 1.5, 0.6, 0.25])
    spec = build_workspace(
        observed=[5.0, 1.0, 0.0, 1.0], expected=expected, sumw2=expected * 0.04, syst=0.15
    )
    return with_signal(
        spec, np.array([0.3, 1.2, 1.6, 0.9]), signal_sumw2=np.array([0.01, 0.05, 0.3, 0.2])
    )


WORKSPACES = {
    "4 bins, 0.25–4 events": low_count_workspace,
    "3 bins, falling (seed 0)": lambda: falling_workspace(3, 0.05, 0),
    "20 bins, falling (seed 0)": lambda: falling_workspace(20, 0.05, 0),
}


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    return table


def speed(console: Console, ntoys: int, pyhf_toys: int) -> None:
    table = _table(
        f"Toy CLs: engine ({ntoys} toys) against pyhf on MINUIT ({pyhf_toys})",
        "workspace",
        "parameters",
        "engine s",
        "engine ms/toy",
        "pyhf s",
        "pyhf ms/toy",
        "speed-up per toy",
        "engine CLs ± error",
        "pyhf CLs",
        "asymptotic CLs",
    )
    for name, make in WORKSPACES.items():
        spec = make()
        parameters = len(compile_stack([spec], ["w"], device="cpu").par_names)
        start = time.perf_counter()
        mine = toy_cls(spec, ntoys=ntoys, seed=1, device="cpu")
        engine_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs = inference.cls(spec, calctype="toys", ntoys=pyhf_toys, seed=1)
        pyhf_s = time.perf_counter() - start
        (asymptotic,) = evaluate_patches(spec, [("w", [])], device="cpu")
        engine_ms, pyhf_ms = 1e3 * engine_s / (2 * ntoys), 1e3 * pyhf_s / (2 * pyhf_toys)
        table.add_row(
            name,
            str(parameters),
            f"{engine_s:.2f}",
            f"{engine_ms:.3f}",
            f"{pyhf_s:.1f}",
            f"{pyhf_ms:.1f}",
            f"{pyhf_ms / engine_ms:.0f}×",
            f"{mine.observed:.4f} ± {mine.observed_error:.4f}",
            f"{theirs.observed:.4f}",
            f"{asymptotic.cls_obs:.4f}",
        )
        console.print(f"done: {name}")
    console.print(table)


LIMIT_WORKSPACES = {
    "1 bin, b = 1, n = 1": lambda: counting_workspace(1.0, 1.0, 1),
    **{name: make for name, make in WORKSPACES.items() if not name.startswith("20 bins")},
}
"""The 20-bin workspace is left out: pyhf's 15 points would take about 25 minutes there."""


def limits(console: Console, ntoys: int, pyhf_toys: int) -> None:
    table = _table(
        f"Toy upper limits on μ: engine scan ({ntoys} toys a point) against pyhf on MINUIT "
        f"({pyhf_toys} toys a point, 15 points); observed (median expected)",
        "workspace",
        "closed form",
        "asymptotic",
        "engine toys ± error",
        "engine points",
        "engine s",
        "engine ms/toy",
        "pyhf toys",
        "pyhf s",
        "pyhf ms/toy",
        "speed-up per toy",
    )
    for name, make in LIMIT_WORKSPACES.items():
        spec = make()
        asymptotic = upper_limit(spec, device="cpu")
        start = time.perf_counter()
        mine = toy_upper_limit(spec, ntoys=ntoys, seed=1, device="cpu")
        engine_s = time.perf_counter() - start
        engine_ms = 1e3 * engine_s / (2 * ntoys * len(mine.points))
        scan = np.linspace(0.0, 2.0 * asymptotic.expected[4], 16)[1:]
        start = time.perf_counter()
        failure = ""
        try:
            theirs = inference.upper_limit(
                spec, calctype="toys", ntoys=pyhf_toys, seed=1, scan=scan
            )
        except (AttributeError, ValueError) as err:
            theirs, failure = None, f"fails: {str(err).partition(';')[0][:60]}"
        pyhf_s = time.perf_counter() - start
        pyhf_ms = 1e3 * pyhf_s / (2 * pyhf_toys * len(scan))
        error = "" if mine.observed_error is None else f" ± {mine.observed_error:.3f}"
        table.add_row(
            name,
            f"{counting_limit(1, 1.0):.3f}" if name.startswith("1 bin") else "",
            f"{asymptotic.observed:.3f} ({asymptotic.expected[2]:.3f})",
            f"{mine.observed:.3f}{error} ({mine.expected[2]:.3f})"
            if mine.complete
            else mine.reason,
            str(len(mine.points)),
            f"{engine_s:.1f}",
            f"{engine_ms:.3f}",
            failure if theirs is None else f"{theirs.observed:.3f} ({theirs.expected[2]:.3f})",
            f"{pyhf_s:.0f}",
            f"{pyhf_ms:.1f}",
            "—" if theirs is None else f"{pyhf_ms / engine_ms:.0f}×",
        )
        console.print(f"done: {name}")
    console.print(table)


THRESHOLD_BACKGROUNDS = (1.0, 2.5, 5.0, 10.0, 20.0, 50.0, 100.0)


def _threshold_workspace(b: float, n: int, s: float, *, systematics: bool) -> dict:
    if not systematics:
        return counting_workspace(s, b, n)
    spec = build_workspace(observed=[n], expected=[b], sumw2=[(0.05 * b) ** 2], syst=0.1)
    return with_signal(spec, np.array([s]))


def threshold(console: Console, ntoys: int) -> None:
    table = _table(
        f"Asymptotic against toy CLs ({ntoys} toys) on one bin, the signal at the asymptotic "
        "median expected limit, the data at the median count",
        "model",
        "b",
        "n",
        "s",
        "closed-form CLs",
        "asymptotic CLs obs (exp. median)",
        "toy CLs obs ± error (exp. median)",
        "asymptotic − toys, in toy errors",
        "asymptotic / toys",
    )
    for systematics in (False, True):
        model = "10 % norm., 5 % MC stat." if systematics else "Poisson count"
        for b in THRESHOLD_BACKGROUNDS:
            n = int(stats.poisson.median(b))
            unit = _threshold_workspace(b, n, 1.0, systematics=systematics)
            s = float(upper_limit(unit, device="cpu").expected[2])
            spec = _threshold_workspace(b, n, s, systematics=systematics)
            (asym,) = evaluate_patches(spec, [("w", [])], device="cpu")
            toys = toy_cls(spec, ntoys=ntoys, seed=1, device="cpu")
            exact = stats.poisson.cdf(n, s + b) / stats.poisson.cdf(n, b)
            table.add_row(
                model,
                f"{b:g}",
                str(n),
                f"{s:.3g}",
                "" if systematics else f"{exact:.4f}",
                f"{asym.cls_obs:.4f} ({asym.cls_exp[2]:.4f})",
                f"{toys.observed:.4f} ± {toys.observed_error:.4f} ({toys.expected[2]:.4f})",
                f"{(asym.cls_obs - toys.observed) / toys.observed_error:+.1f}",
                f"{asym.cls_obs / toys.observed:.2f}",
            )
        console.print(f"done: {model}")
    console.print(table)


def asymptotics(
    console: Console, store_path: str, *, ntoys: int, points: list[float], max_fits: int
) -> None:
    from campaign.benchmark import signal_events
    from campaign.reinterpret import campaign_results, sensitive_background, sensitivity
    from campaign.store import Store

    store = Store(store_path)
    results = campaign_results(store)
    table = _table(
        f"Asymptotic against toy CLs ({ntoys} toys), Z′ at g = 0.1",
        "mass",
        "search",
        "signal",
        "b (sens.-weighted)",
        "asymptotic CLs",
        "toy CLs ± error",
        "toy s",
        "verdicts",
    )
    for mass in points:
        signal, _ = signal_events(
            store, model="zprime", point={"mass": mass, "g": 0.1}, n_events=5000, seed=3
        )
        yields = [r.selection.histogram(signal) for r in results]
        order = sorted(
            (i for i, (y, _) in enumerate(yields) if y.sum() >= 1e-3),
            key=lambda i: -sensitivity(results[i], yields[i][0]),
        )
        for i in order[:max_fits]:
            result, (y, w) = results[i], yields[i]
            spec = with_signal(result.workspace, y, signal_sumw2=w)
            (asym,) = evaluate_patches(spec, [("w", [])], check_bounds=False, pyhf_attempts=0)
            start = time.perf_counter()
            toys = toy_cls(spec, ntoys=ntoys, seed=1)
            seconds = time.perf_counter() - start
            same = (asym.cls_obs < 0.05) == (toys.observed < 0.05)
            table.add_row(
                f"{mass:g}",
                f"{result.event_class}/{result.observable}",
                f"{y.sum():.3g}",
                f"{sensitive_background(result, y):.3g}",
                f"{asym.cls_obs:.4f}",
                f"{toys.observed:.4f} ± {toys.observed_error:.4f}",
                f"{seconds:.1f}",
                "agree" if same else "DIFFER",
            )
        console.print(f"done: {mass:g}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--toys", type=int, default=4000)
    parser.add_argument("--pyhf-toys", type=int, default=200)
    parser.add_argument("--limits", action="store_true")
    parser.add_argument("--threshold", action="store_true")
    parser.add_argument("--store")
    parser.add_argument("--points", default="2000,3000,4000")
    parser.add_argument("--max-fits", type=int, default=4)
    args = parser.parse_args()
    logging.getLogger("pyhf").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    console = Console(width=230)
    console.print(code_under_test())
    console.print(machine())
    if args.store:
        points = [float(p) for p in args.points.split(",")]
        asymptotics(console, args.store, ntoys=args.toys, points=points, max_fits=args.max_fits)
        return
    if args.limits:
        limits(console, args.toys, args.pyhf_toys)
        return
    if args.threshold:
        threshold(console, args.toys)
        return
    speed(console, args.toys, args.pyhf_toys)


if __name__ == "__main__":
    main()
