"""Gradient-boosted trees as plain arrays: export, storage as tensors, exact evaluation.

A fitted sklearn ``HistGradientBoostingClassifier`` can only be persisted by pickling, which
the project never does (results are data; models load with ``torch.load(...,
weights_only=True)``). A binary boosted classifier is a baseline plus a sequence of binary
trees, and each tree is a handful of arrays (split feature, threshold, children, leaf flag,
leaf value). :class:`TreeEnsemble` holds them with every tree's nodes concatenated, and
:meth:`TreeEnsemble.score` adds the leaf values tree by tree in sklearn's order and
precision (float64, then the logistic function), so its scores are bitwise identical to
``predict_proba`` — a selection threshold set on the in-memory model selects exactly the same
events after a save and a reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit

from searches.ml.classifiers import FittedClassifier, quantize

_ARRAYS = ("roots", "feature", "threshold", "left", "right", "is_leaf", "value")


@dataclass(frozen=True)
class TreeEnsemble:
    """One boosted binary classifier as arrays.

    Attributes:
        baseline: initial raw prediction (log-odds).
        roots: ``(n_trees,)`` index of each tree's root node, in boosting order.
        feature: ``(n_nodes,)`` split feature of each node.
        threshold: ``(n_nodes,)`` split value; ``x <= threshold`` goes left.
        left, right: ``(n_nodes,)`` global node indices of the children.
        is_leaf: ``(n_nodes,)`` leaf flag.
        value: ``(n_nodes,)`` leaf value (raw-score contribution).
        bin_edges: per feature, the quantile edges the inputs were quantised with
            (:func:`searches.ml.classifiers.quantize`) before training.
    """

    baseline: float
    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray
    bin_edges: tuple[np.ndarray, ...]

    @classmethod
    def from_fitted(cls, fitted: FittedClassifier) -> TreeEnsemble:
        """Arrays of a fitted ``hgb`` classifier.

        Raises:
            ValueError: for another classifier family or a model with categorical splits.
        """
        if fitted.kind != "hgb" or fitted.edges is None:
            raise ValueError(
                f"TreeEnsemble.from_fitted: classifier kind {fitted.kind!r}; allowed: 'hgb'"
            )
        model = fitted.model
        nodes = [iteration[0].nodes for iteration in model._predictors]  # type: ignore[attr-defined]
        if any(n["is_categorical"].any() for n in nodes):
            raise ValueError("TreeEnsemble.from_fitted: categorical splits are not supported")
        offsets = np.cumsum([0] + [len(n) for n in nodes])[:-1]
        return cls(
            baseline=float(np.ravel(model._baseline_prediction)[0]),  # type: ignore[attr-defined]
            roots=offsets.astype(np.int64),
            feature=np.concatenate([n["feature_idx"] for n in nodes]).astype(np.int64),
            threshold=np.concatenate([n["num_threshold"] for n in nodes]).astype(np.float64),
            left=np.concatenate([n["left"] + o for n, o in zip(nodes, offsets, strict=True)]),
            right=np.concatenate([n["right"] + o for n, o in zip(nodes, offsets, strict=True)]),
            is_leaf=np.concatenate([n["is_leaf"] for n in nodes]).astype(bool),
            value=np.concatenate([n["value"] for n in nodes]).astype(np.float64),
            bin_edges=tuple(np.asarray(e, dtype=np.float64) for e in fitted.edges),
        )

    def raw(self, xq: np.ndarray) -> np.ndarray:
        """Raw scores ``(n,)`` of quantised features ``xq (n, d)``."""
        xq = np.asarray(xq, dtype=np.float64)
        rows = np.arange(len(xq))[:, None]
        node = np.broadcast_to(self.roots, (len(xq), len(self.roots))).copy()
        while True:
            inner = ~self.is_leaf[node]
            if not inner.any():
                break
            go_left = xq[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        raw = np.zeros(len(xq)) + self.baseline
        values = self.value[node]
        for t in range(len(self.roots)):
            raw += values[:, t]
        return raw

    def score(self, x: np.ndarray) -> np.ndarray:
        """Probability ``(n,)`` of class 1 for raw features ``x (n, d)`` (as ``predict_proba``)."""
        if not len(x):
            return np.zeros(0)
        xq = quantize(np.asarray(x, dtype=np.float32), list(self.bin_edges))
        return expit(self.raw(xq))

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors of this ensemble under keys ``<prefix>.<array>``."""
        state = {
            f"{prefix}.{name}": torch.from_numpy(getattr(self, name).copy()) for name in _ARRAYS
        }
        state[f"{prefix}.baseline"] = torch.tensor([self.baseline], dtype=torch.float64)
        for j, edges in enumerate(self.bin_edges):
            state[f"{prefix}.bin_edges.{j}"] = torch.from_numpy(edges.copy())
        return state

    @classmethod
    def from_tensors(cls, state: Mapping[str, torch.Tensor], prefix: str) -> TreeEnsemble:
        """Inverse of :meth:`to_tensors`.

        Raises:
            KeyError: naming the missing key.
        """
        arrays = {}
        for name in (*_ARRAYS, "baseline"):
            key = f"{prefix}.{name}"
            if key not in state:
                raise KeyError(f"tree ensemble state: key '{key}' missing")
            arrays[name] = state[key].numpy()
        n_features = sum(1 for k in state if k.startswith(f"{prefix}.bin_edges."))
        return cls(
            baseline=float(arrays.pop("baseline")[0]),
            bin_edges=tuple(state[f"{prefix}.bin_edges.{j}"].numpy() for j in range(n_features)),
            **arrays,
        )
