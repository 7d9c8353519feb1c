"""Space-filling designs on a finite candidate set: initial designs and the baselines.

All functions work on unit-cube coordinates and return candidate indices, so the same code
serves the pool learner (published patch points) and the continuous learner (a fresh Sobol'
candidate cloud each step).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import qmc


def latin_hypercube(n: int, d: int, *, seed: int) -> np.ndarray:
    """A Latin hypercube sample of ``n`` points in ``[0, 1]^d``, shape (n, d)."""
    return qmc.LatinHypercube(d=d, seed=np.random.default_rng(seed)).random(n)


def nearest_unique(points: np.ndarray, candidates: np.ndarray, available: np.ndarray) -> np.ndarray:
    """Map design points to distinct available candidates, each to its nearest free one.

    Points are served in order; a point whose nearest candidates are taken gets the next
    nearest, so the result keeps the design's spread on an irregular pool.

    Args:
        points: (k, d) design points.
        candidates: (n, d) candidate points.
        available: (n,) bool, candidates that may be chosen.

    Returns:
        (min(k, available.sum()),) candidate indices, in design order.
    """
    free = np.flatnonzero(available)
    if free.size == 0:
        return np.empty(0, dtype=int)
    tree = cKDTree(candidates[free])
    taken = np.zeros(free.size, dtype=bool)
    chosen: list[int] = []
    k_near = min(free.size, 16)
    for point in points:
        if len(chosen) == free.size:
            break
        _, near = tree.query(point, k=k_near)
        near = np.atleast_1d(near)
        pick = next((j for j in near if not taken[j]), None)
        if pick is None:
            order = np.argsort(np.linalg.norm(candidates[free] - point, axis=1), kind="stable")
            pick = next(j for j in order if not taken[j])
        taken[pick] = True
        chosen.append(int(free[pick]))
    return np.asarray(chosen, dtype=int)


def grid_order(candidates: np.ndarray) -> np.ndarray:
    """Order candidates coarse-to-fine along nested regular grids.

    Level ``L`` is the regular grid with ``2^L + 1`` nodes per axis; each node claims its
    nearest candidate, new claims are appended level by level. Every prefix is therefore close
    to a regular grid scan at its size — the classic "scan the plane" strategy as a baseline.

    Args:
        candidates: (n, d) unit-cube points.

    Returns:
        (n,) a permutation of ``range(n)``.
    """
    n, d = candidates.shape
    tree = cKDTree(candidates)
    seen = np.zeros(n, dtype=bool)
    order: list[int] = []
    _, first = tree.query(np.full(d, 0.5))
    order.append(int(first))
    seen[first] = True
    level = 1
    while (2**level + 1) ** d <= 8 * n:
        axis = np.linspace(0.0, 1.0, 2**level + 1)
        nodes = np.stack(np.meshgrid(*([axis] * d), indexing="ij"), axis=-1).reshape(-1, d)
        _, nearest = tree.query(nodes)
        for j in np.atleast_1d(nearest):
            if not seen[j]:
                seen[j] = True
                order.append(int(j))
        level += 1
    order.extend(int(j) for j in np.flatnonzero(~seen))
    return np.asarray(order, dtype=int)
