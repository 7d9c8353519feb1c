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
