"""Region-of-interest scan of one histogram, for the data and for many pseudo-experiments.

Every contiguous bin range ``[first, stop)`` at least ``min_bins`` wide is a region. Its
background is the sum of the bins' expectations; its uncertainty is

    σ = sqrt(Σ sumw2  +  (systematic · b)²),

MC statistics (independent per bin) in quadrature with a relative systematic that is *fully
correlated* across the bins of the histogram (one nuisance shifts every bin by the same
fraction), so a wide region does not average the systematic away. Regions whose background is
below ``min_expected`` are skipped: there the p-value of a single event is driven by the
background model's tail, not by data, and the MUSiC/ATLAS scans drop them for that reason.

Background-only pseudo-experiments follow the model the p-values assume: per round one
Gaussian systematic shift ``θ`` for the whole histogram and one MC-statistics shift per bin,
drawn from its Gaussian truncated so that the bin's mean stays non-negative (the p-values
truncate the region's Gaussian at zero and renormalise; clipping the mean at zero instead
would pile the negative half onto an empty bin and under-produce excesses in sparse tails),
then Poisson counts. For a one-bin region without systematic the two truncations are the
same; the systematic's ``θ`` itself is not truncated, which matters only for large systematics
(at 30 %, ``θ < −1/0.3`` turns the background negative in 1 round of 2,300; the truncated MC
shifts then keep each bin's mean non-negative). The minimum p-value of each round is exact
(the same :func:`~searches.stats.pvalues.local_pvalue` as the data) at the nodes of a small
table per region and side (excess / deficit) spanning the counts the rounds produced; between
nodes the significance ``Z = Φ⁻¹(1 − p)`` — nearly linear in the count — is interpolated
linearly. A region whose counts span at most ``TABLE_NODES`` integers per side is tabulated at
every integer, so small-count regions (where discreteness matters) are exact; wide ranges come
within |ΔZ| < 1e-2 of the exhaustive evaluation. This costs ``2 · TABLE_NODES`` exact p-values
per region instead of one per region and round. Rounds are processed in chunks so memory stays
bounded (``chunk × regions`` numbers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri
from scipy.stats import norm

from searches.stats.pvalues import local_pvalue, significance

Backend = Literal["numpy", "torch"]
_CHUNK_NUMBERS = 4_000_000


@dataclass(frozen=True)
class RegionSet:
    """The scanned regions of one histogram (shapes ``(R,)``, ordered by width then start)."""

    first: np.ndarray
    stop: np.ndarray
    expected: np.ndarray
    uncertainty: np.ndarray
    n_bins: int

    def __len__(self) -> int:
        return len(self.first)


@dataclass(frozen=True)
class ScanOutcome:
    """The scan of one histogram: the region of interest and every region's p-value."""

    index: int
    p_min: float
    pvalues: np.ndarray
    counts: np.ndarray


def _as_histogram(name: str, values: ArrayLike, n_bins: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"'{name}' must be one-dimensional (bins,), got shape {array.shape}")
    if n_bins is not None and len(array) != n_bins:
        raise ValueError(f"'{name}' has {len(array)} bins; expected {n_bins}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"'{name}' must be finite and >= 0 in every bin")
    return array


def enumerate_regions(
    expected: ArrayLike,
    sumw2: ArrayLike,
    *,
    systematic: float = 0.1,
    min_bins: int = 1,
    max_bins: int | None = None,
    min_expected: float = 0.1,
) -> RegionSet:
    """All contiguous bin ranges of a histogram with their background and uncertainty.

    Args:
        expected: background per bin, shape ``(B,)``.
        sumw2: sum of squared MC weights per bin, shape ``(B,)``.
        systematic: relative background systematic, fully correlated across bins.
        min_bins: minimum region width in bins.
        max_bins: maximum region width in bins (``None``: the whole histogram).
        min_expected: regions with less expected background are skipped.

    Returns:
        The regions, possibly empty (when no region passes ``min_expected``).
    """
    b = _as_histogram("expected", expected)
    w2 = _as_histogram("sumw2", sumw2, len(b))
    if min_bins < 1:
        raise ValueError(f"'min_bins' must be >= 1, got {min_bins}")
    if systematic < 0:
        raise ValueError(f"'systematic' must be >= 0, got {systematic}")
    n_bins = len(b)
    widest = n_bins if max_bins is None else min(max_bins, n_bins)
    widths = np.arange(min_bins, widest + 1)
    first = np.concatenate([np.arange(n_bins - w + 1) for w in widths] or [[]]).astype(np.int64)
    stop = np.concatenate([np.arange(w, n_bins + 1) for w in widths] or [[]]).astype(np.int64)
    cb = np.concatenate([[0.0], np.cumsum(b)])
    cw = np.concatenate([[0.0], np.cumsum(w2)])
    region_b = cb[stop] - cb[first]
    region_var = np.maximum(cw[stop] - cw[first], 0.0) + (systematic * region_b) ** 2
    keep = region_b >= max(min_expected, 1e-12)
    return RegionSet(
        first=first[keep],
        stop=stop[keep],
        expected=region_b[keep],
        uncertainty=np.sqrt(region_var[keep]),
        n_bins=n_bins,
    )


def region_sums(counts: ArrayLike, regions: RegionSet) -> np.ndarray:
    """Counts of every region: shape ``(..., B) -> (..., R)``."""
    array = np.asarray(counts)
    cumulative = np.concatenate(
        [np.zeros((*array.shape[:-1], 1), dtype=array.dtype), np.cumsum(array, axis=-1)],
        axis=-1,
    )
    return cumulative[..., regions.stop] - cumulative[..., regions.first]


def scan_histogram(observed: ArrayLike, regions: RegionSet) -> ScanOutcome | None:
    """Local p-value of every region of ``observed`` (shape ``(B,)``) and the smallest one."""
    data = _as_histogram("observed", observed, regions.n_bins)
    if len(regions) == 0:
        return None
    n = region_sums(data, regions)
    pvalues = local_pvalue(n, regions.expected, regions.uncertainty)
    index = int(np.argmin(pvalues))
    return ScanOutcome(index=index, p_min=float(pvalues[index]), pvalues=pvalues, counts=n)


TABLE_NODES = 12
"""Exact p-values per region and side; between nodes ``Z = Φ⁻¹(1 − p)`` is interpolated."""


@dataclass(frozen=True)
class ZTable:
    """Exact significance of every region on a grid of counts, one grid per side of ``b``.

    For region ``r`` and side ``k`` (0: deficit, ``n < b``; 1: excess) the grid is
    ``lo[k, r] + step[k, r] * j`` for ``j = 0 .. TABLE_NODES - 1`` (integer steps, so a range of
    at most ``TABLE_NODES`` counts is tabulated at every integer and looked up exactly).
    ``z`` has shape ``(2, R, TABLE_NODES)``.
    """

    lo: np.ndarray
    step: np.ndarray
    z: np.ndarray


def build_table(regions: RegionSet, n_min: np.ndarray, n_max: np.ndarray) -> ZTable:
    """Tabulate exact significances for region counts in ``[n_min, n_max]`` (shapes ``(R,)``)."""
    b = regions.expected
    deficit_hi = np.ceil(b) - 1.0
    excess_lo = np.ceil(b)
    lo = np.stack([np.maximum(np.minimum(n_min, deficit_hi), 0.0), excess_lo])
    hi = np.stack([np.maximum(deficit_hi, 0.0), np.maximum(n_max, excess_lo)])
    step = np.maximum(np.ceil((hi - lo) / (TABLE_NODES - 1)), 1.0)
    grid = lo[..., None] + step[..., None] * np.arange(TABLE_NODES)
    needed = grid <= hi[..., None] + step[..., None]
    region = np.broadcast_to(np.arange(len(b))[None, :, None], grid.shape)
    z = np.full(grid.shape, np.inf)
    z[needed] = significance(
        local_pvalue(grid[needed], b[region[needed]], regions.uncertainty[region[needed]])
    )
    return ZTable(lo=lo, step=step, z=z)


def interpolate(table: ZTable, region: np.ndarray, n: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Significance of count ``n`` in ``region`` (flat arrays of equal shape) from ``table``."""
    size = len(b)
    side = (n >= b[region]).astype(np.int64)
    position = (n - table.lo[side, region]) / table.step[side, region]
    np.clip(position, 0.0, TABLE_NODES - 1.0, out=position)
    index = np.minimum(position.astype(np.int64), TABLE_NODES - 2)
    position -= index
    index += (side * size + region) * TABLE_NODES
    z = table.z.ravel()
    low = z[index]
    high = z[index + 1]
    high = np.where(np.isfinite(high), high, low)
    return low + (high - low) * position


@dataclass(frozen=True)
class DenseTable:
    """Significance at every integer count of the ``regions`` it covers.

    ``values[n + shift[k]]`` is the significance of count ``n`` in region ``regions[k]``;
    regions whose count range is wider than the number of rounds are left to interpolation
    (expanding them would cost more than interpolating each round's count).
    """

    regions: np.ndarray
    shift: np.ndarray
    values: np.ndarray


def dense_table(
    table: ZTable, b: np.ndarray, n_min: np.ndarray, n_max: np.ndarray, *, rounds: int
) -> DenseTable:
    """Expand ``table`` to every integer in ``[n_min, n_max]`` for the narrow regions."""
    lengths = (n_max - n_min + 1).astype(np.int64)
    covered = np.flatnonzero(lengths <= max(rounds // 2, TABLE_NODES))
    lengths = lengths[covered]
    total = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    local = np.repeat(np.arange(len(covered)), lengths)
    region = covered[local]
    n = n_min[region] + (np.arange(total) - offsets[local])
    return DenseTable(
        regions=covered,
        shift=(offsets - n_min[covered]).astype(np.int64),
        values=interpolate(table, region, n, b),
    )


def _max_significance(n: np.ndarray, table: ZTable, dense: DenseTable, b: np.ndarray) -> np.ndarray:
    """Largest significance over regions: ``n`` shape ``(R, N) -> (N,)``."""
    best = np.full(n.shape[1], -np.inf)
    if len(dense.regions):
        index = n[dense.regions].astype(np.int64) + dense.shift[:, None]
        best = dense.values[index].max(axis=0)
    rest = np.setdiff1d(np.arange(len(b)), dense.regions)
    if len(rest):
        region = np.broadcast_to(rest[:, None], (len(rest), n.shape[1]))
        values = interpolate(table, region.ravel(), n[rest].ravel().astype(np.float64), b)
        best = np.maximum(best, values.reshape(region.shape).max(axis=0))
    return best


def _region_major_sums(counts: np.ndarray, regions: RegionSet) -> np.ndarray:
    """Region counts with regions first: ``(N, B) -> (R, N)`` (contiguous per region)."""
    cumulative = np.zeros((counts.shape[1] + 1, counts.shape[0]), dtype=counts.dtype)
    np.cumsum(counts.T, axis=0, out=cumulative[1:])
    return cumulative[regions.stop] - cumulative[regions.first]


def _tables(
    regions: RegionSet, n_min: np.ndarray, n_max: np.ndarray, rounds: int
) -> tuple[ZTable, DenseTable]:
    n_min = n_min.astype(np.float64)
    n_max = n_max.astype(np.float64)
    table = build_table(regions, n_min, n_max)
    return table, dense_table(table, regions.expected, n_min, n_max, rounds=rounds)


def minimum_pvalues(counts: ArrayLike, regions: RegionSet) -> np.ndarray:
    """Smallest local p-value of each row of integer ``counts`` (shape ``(N, B) -> (N,)``).

    Exact where a region's counts span at most ``TABLE_NODES`` integers per side; elsewhere
    interpolated linearly in Z between exact nodes (|ΔZ| < 1e-2 in the tests against
    :func:`exhaustive_minimum_pvalues`).
    """
    array = np.asarray(counts, dtype=np.float64)
    if len(regions) == 0:
        return np.ones(len(array))
    n = _region_major_sums(array, regions)
    table, dense = _tables(regions, n.min(axis=1), n.max(axis=1), len(array))
    return norm.sf(_max_significance(n, table, dense, regions.expected))


def exhaustive_minimum_pvalues(counts: ArrayLike, regions: RegionSet) -> np.ndarray:
    """Smallest exact local p-value of each row, every region evaluated (slow reference)."""
    array = np.asarray(counts, dtype=np.float64)
    if len(regions) == 0:
        return np.ones(len(array))
    n = region_sums(array, regions)
    return local_pvalue(n, regions.expected, regions.uncertainty).min(axis=1)


def pseudo_counts(
    expected: ArrayLike,
    sumw2: ArrayLike,
    *,
    systematic: float,
    rounds: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Background-only pseudo-data, shape ``(rounds, B)`` (see module docstring for the model)."""
    b = _as_histogram("expected", expected)
    stat = np.sqrt(_as_histogram("sumw2", sumw2, len(b)))
    theta = rng.standard_normal(rounds)
    shifted = b * (1.0 + systematic * theta[:, None])
    delta = _truncated_normal(rng.random((rounds, len(b))), shifted, stat, ndtr, ndtri, np)
    mean = np.maximum(shifted + stat * delta, 0.0)
    return rng.poisson(mean).astype(np.float64)


def _truncated_normal(uniform, shifted, stat, cdf, quantile, lib):  # type: ignore[no-untyped-def]
    """Standard-normal shifts ``δ`` with ``shifted + stat·δ >= 0``, by inverting the truncated
    CDF at ``uniform``; written once for numpy and torch (``cdf``, ``quantile``, ``lib``)."""
    floor = -shifted / lib.where(stat > 0, stat, 1.0)
    low = lib.where(stat > 0, cdf(floor), 0.0 * floor)
    level = lib.clip(low + uniform * (1.0 - low), 1e-300, 1.0 - 1e-16)
    return quantile(level)


def _torch_pseudo_counts(
    b: np.ndarray, sumw2: np.ndarray, *, systematic: float, rounds: int, seed: int, device: str
):  # type: ignore[no-untyped-def]
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    mean_b = torch.as_tensor(b, dtype=torch.float64, device=device)
    stat = torch.as_tensor(np.sqrt(sumw2), dtype=torch.float64, device=device)
    theta = torch.randn(rounds, 1, generator=generator, dtype=torch.float64, device=device)
    uniform = torch.rand(rounds, len(b), generator=generator, dtype=torch.float64, device=device)
    shifted = mean_b * (1.0 + systematic * theta)
    delta = _truncated_normal(
        uniform, shifted, stat, torch.special.ndtr, torch.special.ndtri, torch
    )
    mean = torch.clamp(shifted + stat * delta, min=0.0)
    return torch.poisson(mean, generator=generator)


def torch_device() -> str:
    """``cuda`` when a GPU is visible to torch, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_minimum_pvalues(counts, regions: RegionSet) -> np.ndarray:  # type: ignore[no-untyped-def]
    """:func:`minimum_pvalues` for a torch tensor of counts ``(N, B)`` on any device.

    Region sums and the per-element look-ups run on the tensor's device; the small exact
    tables are built with numpy and copied over.
    """
    import torch

    device = counts.device
    first = torch.as_tensor(regions.first, device=device)
    stop = torch.as_tensor(regions.stop, device=device)
    cumulative = torch.nn.functional.pad(torch.cumsum(counts.long(), dim=1), (1, 0)).T
    chunks = list(_chunks(len(counts), len(regions)))
    n_min = torch.full((len(regions),), torch.iinfo(torch.int64).max, device=device)
    n_max = torch.full((len(regions),), -1, device=device)
    for start, end in chunks:
        n = cumulative[stop, start:end] - cumulative[first, start:end]
        n_min = torch.minimum(n_min, n.min(dim=1).values)
        n_max = torch.maximum(n_max, n.max(dim=1).values)
    table, dense = _tables(regions, n_min.cpu().numpy(), n_max.cpu().numpy(), len(counts))
    best = np.empty(len(counts))
    for start, end in chunks:
        n = cumulative[stop, start:end] - cumulative[first, start:end]
        covered = torch.as_tensor(dense.regions, device=device)
        chunk_best = torch.full((end - start,), -np.inf, dtype=torch.float64, device=device)
        if len(dense.regions):
            values = torch.as_tensor(dense.values, device=device)
            shift = torch.as_tensor(dense.shift, device=device)
            chunk_best = values[n[covered] + shift[:, None]].max(dim=0).values
        rest = np.setdiff1d(np.arange(len(regions)), dense.regions)
        if len(rest):
            empty = DenseTable(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
            other = _max_significance(n.cpu().numpy(), table, empty, regions.expected)
            chunk_best = torch.maximum(chunk_best, torch.as_tensor(other, device=device))
        best[start:end] = chunk_best.cpu().numpy()
    return norm.sf(best)


def _chunks(rounds: int, regions: int) -> Iterator[tuple[int, int]]:
    size = max(1, min(rounds, _CHUNK_NUMBERS // max(regions, 1)))
    for start in range(0, rounds, size):
        yield start, min(start + size, rounds)


def pseudo_minima(
    expected: ArrayLike,
    sumw2: ArrayLike,
    regions: RegionSet,
    *,
    systematic: float,
    rounds: int,
    seed: int,
    backend: Backend = "numpy",
    device: str | None = None,
) -> np.ndarray:
    """Smallest local p-value of each of ``rounds`` background-only pseudo-experiments.

    Args:
        expected, sumw2: the background histogram, shapes ``(B,)``.
        regions: the regions scanned (from :func:`enumerate_regions` with the same inputs).
        systematic: relative systematic (the same as in ``regions``).
        rounds: number of pseudo-experiments.
        seed: seed of the generator (numpy ``default_rng`` or ``torch.Generator``).
        backend: ``numpy``, or ``torch`` (generation, region sums and table look-ups on
            ``device``). Both use the same exact tables; their random streams differ.
        device: torch device; ``None`` picks cuda when available, else cpu.

    Returns:
        Shape ``(rounds,)``, in generation order.
    """
    b = _as_histogram("expected", expected)
    w2 = _as_histogram("sumw2", sumw2, len(b))
    if rounds < 0:
        raise ValueError(f"'rounds' must be >= 0, got {rounds}")
    if backend not in ("numpy", "torch"):
        raise ValueError(f"'backend' must be 'numpy' or 'torch', got {backend!r}")
    if len(regions) == 0 or rounds == 0:
        return np.ones(rounds)
    if backend == "torch":
        counts_t = _torch_pseudo_counts(
            b,
            w2,
            systematic=systematic,
            rounds=rounds,
            seed=seed,
            device=device or torch_device(),
        )
        return torch_minimum_pvalues(counts_t, regions)
    rng = np.random.default_rng(seed)
    counts = pseudo_counts(b, w2, systematic=systematic, rounds=rounds, rng=rng)
    counts = counts.astype(np.int64)
    chunks = list(_chunks(rounds, len(regions)))
    n_min = np.full(len(regions), np.iinfo(np.int64).max)
    n_max = np.full(len(regions), -1)
    for start, end in chunks:
        n = _region_major_sums(counts[start:end], regions)
        n_min = np.minimum(n_min, n.min(axis=1))
        n_max = np.maximum(n_max, n.max(axis=1))
    table, dense = _tables(regions, n_min, n_max, rounds)
    best = np.empty(rounds)
    for start, end in chunks:
        n = n if len(chunks) == 1 else _region_major_sums(counts[start:end], regions)
        best[start:end] = _max_significance(n, table, dense, regions.expected)
    return norm.sf(best)
