"""Benchmark: 95 % CL upper limits from the batched engine against pyhf's root search on MINUIT.

``searches.stats.limits.batched_upper_limit`` brackets the CLs curves on a grid of μ and
shrinks the six brackets (observed, −2σ … +2σ) together, one batched engine pass per step. The
baseline is what ``lamppost reinterpret --limits`` ran before: ``inference.upper_limit``, pyhf
0.7.6's ``toms748_scan`` over hypothesis tests on MINUIT, one point at a time. Both run side by
side on the same workspaces:

- search workspaces: falling spectra (3 and 20 bins, relative MC statistics 0.05, Poisson
  data), with the signal as made, scaled by 0.05 (limits above the POI's bound of 10, where
  pyhf's own scan raises) and by 1000 (limits three decades below 1);
- with ``--published``, per region of the ATLAS SUSY-2018-31 sbottom likelihoods the signal
  point whose CLs is nearest 0.05, where a limit near 1 is what a reinterpretation asks (pyhf's
  scan on MINUIT over the published model: minutes per region).

The difference is the largest relative difference among the six limits.

With ``--all-patches`` the script instead times what ``lamppost reinterpret --patchset
--limits`` computes: ``limits.patch_upper_limits`` on every patch of every region, in
``--workers`` processes of one thread each, and checks it against the CLs table at μ = 1
(``evaluate_patches``): a limit below 1 should go with CLs < 0.05. pyhf's scan is not run on
all 650 patches (minutes each); ``--published`` compares the two on one patch per region.

    python benchmarks/bench_limits.py                  # 5 seeds
    python benchmarks/bench_limits.py --seeds 2 --published
    python benchmarks/bench_limits.py --all-patches --workers 2
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from provenance import code_under_test, machine
from rich.console import Console
from rich.table import Table

from campaign.published import LIMIT_CHUNK
from searches.datapath import missing_reason, shared_data_dir
from searches.likelihoods import PublishedLikelihood, load_likelihoods
from searches.stats import inference, limits
from searches.stats.robust import build_model
from searches.stats.workspace import current_signal, with_signal
from searches.testing import SBOTTOM_TARBALL, falling_workspace

GROUPS: dict[str, tuple[int, float]] = {
    "3 bins": (3, 1.0),
    "20 bins": (20, 1.0),
    "3 bins, signal × 0.05": (3, 0.05),
    "3 bins, signal × 1000": (3, 1000.0),
}
"""Search-workspace groups: bins and the factor on the signal."""


def search_workspace(bins: int, scale: float, seed: int) -> dict:
    spec = falling_workspace(bins, 0.05, seed)
    return spec if scale == 1.0 else with_signal(spec, scale * current_signal(spec))


@inference._on_minuit
def pyhf_minuit(spec: dict) -> list[float]:
    """pyhf's toms748 scan on MINUIT: ``inference.upper_limit``'s algorithm, which needs no
    Lamppost signal sample when called on the model directly."""
    model, data = build_model(spec)
    return inference._asymptotic_limits(model, np.asarray(data), level=0.05)


def engine(spec: dict) -> list[float]:
    limit = limits.batched_upper_limit(spec)
    return [limit.observed, *limit.expected]


def timed(function: Callable[[dict], list[float]], spec: dict) -> tuple[np.ndarray | str, float]:
    start = time.perf_counter()
    try:
        value: np.ndarray | str = np.asarray(function(spec))
    except Exception as problem:
        value = f"{type(problem).__name__}: {limits._first_line(problem)[:60]}"
    return value, time.perf_counter() - start


def compare(spec: dict) -> dict:
    fast, fast_s = timed(engine, spec)
    slow, slow_s = timed(pyhf_minuit, spec)
    both = isinstance(fast, np.ndarray) and isinstance(slow, np.ndarray)
    return {
        "engine": fast,
        "engine_s": fast_s,
        "minuit": slow,
        "minuit_s": slow_s,
        "diff": float(np.max(np.abs(fast / slow - 1))) if both else np.nan,
    }


def spread(values: list[float]) -> str:
    return f"{np.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


@functools.cache
def _regions() -> dict[str, PublishedLikelihood]:
    root = shared_data_dir()
    if root is None:
        raise SystemExit(f"the published likelihoods need the shared data: {missing_reason()}")
    return {item.name: item for item in load_likelihoods(root / SBOTTOM_TARBALL)}


def chunk_limits(region: str, names: list[str]) -> tuple[list[dict], list[float], float]:
    """Worker: the limits of some patches of one region, the seconds each took, and CPU-s."""
    torch.set_num_threads(1)
    item = _regions()[region]
    seconds: list[float] = []
    last = [time.perf_counter()]

    def tick(_: int) -> None:
        now = time.perf_counter()
        seconds.append(now - last[0])
        last[0] = now

    cpu = time.process_time()
    found = limits.patch_upper_limits(
        item.background, [item.patch(n) for n in names], region=region, progress=tick
    )
    return [f.to_dict() for f in found], seconds, time.process_time() - cpu


def all_patches(console: Console, workers: int) -> None:
    """Every patch's limits, against the CLs table at μ = 1."""
    from searches.stats.batched import evaluate_patches

    table = Table(
        title=f"Limits on every published patch (SUSY-2018-31 sbottom), {workers} workers"
    )
    for column in (
        "region",
        "patches",
        "no observed / some expected limit",
        "s per patch, median (min–max)",
        "CPU-s",
        "wall s",
        "CLs table s",
        "obs / exp disagree with CLs",
        "limits > 10",
    ):
        table.add_column(column, justify="right")
    for name, item in _regions().items():
        start = time.perf_counter()
        tested = {t.name: t for t in evaluate_patches(item.background, item.patches)}
        cls_s = time.perf_counter() - start
        names = [p.name for p in item.patches]
        chunks = [names[k : k + LIMIT_CHUNK] for k in range(0, len(names), LIMIT_CHUNK)]
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(chunk_limits, [name] * len(chunks), chunks))
        wall = time.perf_counter() - start
        found = [row for rows, _, _ in done for row in rows]
        seconds = [s for _, each, _ in done for s in each]
        cpu = sum(c for _, _, c in done)
        disagree = {"obs": [], "exp": []}
        for row in found:
            cls = tested[row["name"]]
            if cls.status == "failed":
                continue
            for side, mu, value in (
                ("obs", row["observed"], cls.cls_obs),
                ("exp", row["expected"][2], cls.cls_exp[2]),
            ):
                if mu is not None and (mu < 1) != (value < 0.05):
                    disagree[side].append(f"{row['name']} μ95 {mu:.5g} CLs {value:.5g}")
        missing = [r for r in found if r["reason"]]
        table.add_row(
            name,
            str(len(found)),
            f"{sum(r['observed'] is None for r in found)} / "
            f"{sum(None in r['expected'] for r in found)}",
            spread(seconds),
            f"{cpu:.0f}",
            f"{wall:.0f}",
            f"{cls_s:.0f}",
            f"{len(disagree['obs'])} / {len(disagree['exp'])}",
            str(sum(1 for r in found if r["observed"] is not None and r["observed"] > 10)),
        )
        for line in disagree["obs"] + disagree["exp"]:
            console.print(f"{name}: disagrees with the CLs table: {line}")
        for row in missing:
            console.print(f"{name}/{row['name']}: {row['reason'][:300]}")
        console.print(f"done: {name}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--published", action="store_true")
    parser.add_argument("--all-patches", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger("pyhf").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    console = Console(width=170)
    console.print(code_under_test())
    console.print(machine())
    if args.all_patches:
        all_patches(console, args.workers)
        return

    summary = Table(title=f"95 % CL limits on mu, {args.seeds} seeds per group")
    for column in (
        "workspaces",
        "engine s, median (min–max)",
        "pyhf MINUIT s, median (min–max)",
        "speed-up, median",
        "largest difference",
        "engine failed",
        "MINUIT failed",
    ):
        summary.add_column(column, justify="right")
    reasons: set[str] = set()
    for group, (bins, scale) in GROUPS.items():
        rows = [compare(search_workspace(bins, scale, seed)) for seed in range(args.seeds)]
        diffs = [r["diff"] for r in rows if np.isfinite(r["diff"])]
        failed = {
            name: [r[name] for r in rows if isinstance(r[name], str)]
            for name in ("engine", "minuit")
        }
        both = [r for r in rows if np.isfinite(r["diff"])]
        summary.add_row(
            group,
            spread([r["engine_s"] for r in rows]),
            spread([r["minuit_s"] for r in rows]),
            f"{np.median([r['minuit_s'] / r['engine_s'] for r in both]):.0f}×" if both else "–",
            f"{max(diffs):.1e}" if diffs else "–",
            str(len(failed["engine"])),
            str(len(failed["minuit"])),
        )
        reasons |= {f"{group}: {name} {why}" for name in failed for why in failed[name]}
        console.print(f"done: {group}")
    console.print(summary)
    for reason in sorted(reasons):
        console.print(f"failed, {reason}")

    if args.published:
        from searches.stats.batched import evaluate_patches

        published = Table(
            title="Published likelihoods (SUSY-2018-31 sbottom), the patch nearest CLs = 0.05"
        )
        for column in ("region", "patch", "engine s", "pyhf MINUIT s", "difference", "observed"):
            published.add_column(column, justify="right")
        for region in _regions().values():
            tested = evaluate_patches(region.background, region.patches, pyhf_attempts=0)
            distance = [abs(np.log(t.cls_obs / 0.05)) if t.cls_obs else np.inf for t in tested]
            patch = tested[int(np.argmin(distance))].name
            row = compare(region.workspace(patch))
            published.add_row(
                region.name,
                patch,
                f"{row['engine_s']:.1f}",
                f"{row['minuit_s']:.1f}",
                f"{row['diff']:.1e}" if np.isfinite(row["diff"]) else str(row["minuit"]),
                f"{row['engine'][0]:.4f}" if isinstance(row["engine"], np.ndarray) else "failed",
            )
            console.print(f"done: {region.name}")
        console.print(published)


if __name__ == "__main__":
    main()
