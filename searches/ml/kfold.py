"""Out-of-fold scoring: every event is scored only by models that never saw it.

This is the honesty guarantee of the ML searches. Events are split into ``n_folds`` folds by
a seeded permutation; for each fold a model is fitted on the other folds (which may hold out
part of *their* events again to pick an epoch or stop early — the nested level) and applied to
the fold. A selection threshold is then a quantile of out-of-fold scores, so the counts in any
anomaly-selected region are not inflated by training on those same events.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FitPredict = Callable[[np.ndarray, np.ndarray, int], np.ndarray]
"""``(train_index, test_index, fold) -> scores of test events``."""


def fold_labels(n: int, n_folds: int, seed: int) -> np.ndarray:
    """Balanced fold number ``(n,)`` in ``[0, n_folds)`` from a seeded permutation."""
    if n_folds < 2:
        raise ValueError(f"n_folds = {n_folds}: allowed: n_folds >= 2")
    labels = np.empty(n, dtype=np.int64)
    labels[np.random.default_rng(seed).permutation(n)] = np.arange(n) % n_folds
    return labels


def out_of_fold(
    n: int, fit_predict: FitPredict, *, n_folds: int, seed: int, folds: np.ndarray | None = None
) -> np.ndarray:
    """Scores ``(n,)`` where event ``i`` is scored by a model fitted without fold ``folds[i]``.

    Args:
        n: number of events.
        fit_predict: fits on ``train_index`` and returns scores for ``test_index``.
        folds: precomputed fold labels ``(n,)`` (default :func:`fold_labels`).
    """
    folds = fold_labels(n, n_folds, seed) if folds is None else np.asarray(folds)
    scores = np.full(n, np.nan)
    for fold in range(n_folds):
        test = np.flatnonzero(folds == fold)
        train = np.flatnonzero(folds != fold)
        if len(test):
            scores[test] = fit_predict(train, test, fold)
    return scores


_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def hashed_folds(rows: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number ``(n,)`` in ``[0, n_folds)`` from a seeded hash of each row of ``rows (n, d)``.

    Unlike :func:`fold_labels`, an event's fold depends only on its own values, not on which
    other events are in the sample or in what order. A selection exported from a cross-fitted
    search can therefore score any events later — the search's own events by exactly the
    model that did not train on them, new events by one fold model each — and reproduce the
    search's selection.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds = {n_folds}: allowed: n_folds >= 2")
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    bits = (rows[:, None] if rows.ndim == 1 else rows).view(np.uint64)
    h = np.full(len(bits), np.uint64((seed * _GOLDEN + 1) % 2**64), dtype=np.uint64)
    for j in range(bits.shape[1]):
        h = _splitmix(h ^ bits[:, j])
    return (h % np.uint64(n_folds)).astype(np.int64)
