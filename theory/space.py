"""Theory parameter spaces: named bounded parameters, priors, constraints and the unit cube.

Active learning, coverage and campaign files all talk about points of a model's parameter
space. A :class:`ParameterSpace` is plain, JSON-serialisable data (pydantic, frozen) so that a
campaign can store it next to its results, and it maps points to and from the unit cube
``[0, 1]^d`` in which the Gaussian-process surrogate works: log-scaled parameters are mapped
through their logarithm so that "500 GeV to 5 TeV" is explored evenly in decades.

Points are given either as an array of shape ``(n, d)`` with columns in parameter order, as a
mapping ``name -> array (n,)`` or as one mapping ``name -> float``.

Constraints are strings in a tiny arithmetic language over parameter names (``"m_chi < m_med /
2"``), parsed with :mod:`ast` and evaluated vectorised; only numbers, names, ``+ - * / ** ()``,
comparisons, ``and``/``or``/``not`` and the functions ``log, exp, sqrt, abs, min, max`` are
allowed, so a campaign file cannot run arbitrary code. Python callables can be added through
``checks`` for programmatic use; they are not serialised.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PointLike = np.ndarray | Mapping[str, float] | Mapping[str, np.ndarray] | Sequence[Sequence[float]]
Check = Callable[[Mapping[str, np.ndarray]], np.ndarray]

_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "log": np.log,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "min": np.minimum,
    "max": np.maximum,
}
_BINARY = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}
_COMPARE = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}


class Parameter(BaseModel):
    """One bounded theory parameter.

    Attributes:
        name: identifier used in points, constraints and campaign files.
        low, high: bounds (inclusive), ``low < high``; both > 0 when ``log``.
        log: map to the unit cube through ``log`` (even coverage of decades).
        prior: sampling prior; defaults to ``"log-uniform"`` when ``log`` else ``"uniform"``.
        unit: free-text unit for reports (``"GeV"``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    low: float
    high: float
    log: bool = False
    prior: Literal["uniform", "log-uniform"] | None = None
    unit: str = ""

    @model_validator(mode="after")
    def _check(self) -> Parameter:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(
                f"parameter '{self.name}': bounds must be finite with low < high; "
                f"got low={self.low}, high={self.high}"
            )
        needs_positive = self.log or self.prior == "log-uniform"
        if needs_positive and self.low <= 0:
            raise ValueError(
                f"parameter '{self.name}': log scale or log-uniform prior needs low > 0; "
                f"got low={self.low}"
            )
        if self.prior is None:
            object.__setattr__(self, "prior", "log-uniform" if self.log else "uniform")
        return self

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        """Physical values, any shape, to ``[0, 1]`` (log-mapped when ``log``)."""
        values = np.asarray(values, dtype=np.float64)
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return (np.log(values) - lo) / (hi - lo)
        return (values - self.low) / (self.high - self.low)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_unit`."""
        unit = np.asarray(unit, dtype=np.float64)
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return np.exp(lo + unit * (hi - lo))
        return self.low + unit * (self.high - self.low)

    def sample_prior(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values from the prior, shape ``(n,)``."""
        u = rng.random(n)
        if self.prior == "log-uniform":
            lo, hi = math.log(self.low), math.log(self.high)
            return np.exp(lo + u * (hi - lo))
        return self.low + u * (self.high - self.low)


class ParameterSpace(BaseModel):
    """A box of parameters cut by constraints, with a prior and a unit-cube map.

    Attributes:
        parameters: the parameters, in column order of ``(n, d)`` point arrays.
        constraints: expressions that allowed points satisfy, e.g. ``"m_chi < m_med / 2"``.
        checks: extra Python predicates ``f(columns) -> bool array (n,)``; not serialised.

    Example:
        >>> space = ParameterSpace(
        ...     parameters=[Parameter(name="m_med", low=10, high=3000, log=True),
        ...                 Parameter(name="m_chi", low=1, high=1500, log=True)],
        ...     constraints=["m_chi < m_med / 2"])
        >>> space.sample(4, seed=1).shape
        (4, 2)
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    parameters: tuple[Parameter, ...]
    constraints: tuple[str, ...] = ()
    checks: tuple[Check, ...] = Field(default=(), exclude=True, repr=False)

    @field_validator("parameters")
    @classmethod
    def _unique_names(cls, parameters: tuple[Parameter, ...]) -> tuple[Parameter, ...]:
        if not parameters:
            raise ValueError("parameters: at least one parameter is required")
        names = [p.name for p in parameters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"parameters: duplicate names {duplicates}")
        return parameters

    @model_validator(mode="after")
    def _parse_constraints(self) -> ParameterSpace:
        for text in self.constraints:
            _parse(text, set(self.names))
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def dim(self) -> int:
        return len(self.parameters)

    def __getitem__(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(f"no parameter '{name}'; allowed: {', '.join(self.names)}")

    # -- conversions -------------------------------------------------------------------------

    def as_array(self, points: PointLike) -> np.ndarray:
        """Points in any accepted form to a float array of shape ``(n, d)``."""
        if isinstance(points, Mapping):
            missing = [n for n in self.names if n not in points]
            unknown = [k for k in points if k not in self.names]
            if missing or unknown:
                raise ValueError(
                    f"point: missing {missing} / unknown {unknown}; "
                    f"allowed parameters: {', '.join(self.names)}"
                )
            columns = [np.atleast_1d(np.asarray(points[n], dtype=np.float64)) for n in self.names]
            return np.stack(np.broadcast_arrays(*columns), axis=-1)
        array = np.asarray(points, dtype=np.float64)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(
                f"points: expected shape (n, {self.dim}) with columns {', '.join(self.names)}; "
                f"got {array.shape}"
            )
        return array

    def as_dicts(self, points: PointLike) -> list[dict[str, float]]:
        """Points as a list of ``{name: value}`` dicts (the form models and files use)."""
        array = self.as_array(points)
        return [dict(zip(self.names, map(float, row), strict=True)) for row in array]

    def columns(self, points: PointLike) -> dict[str, np.ndarray]:
        """Points as ``{name: array (n,)}``."""
        array = self.as_array(points)
        return {name: array[:, i] for i, name in enumerate(self.names)}

    def to_unit(self, points: PointLike) -> np.ndarray:
        """Physical points to the unit cube, shape ``(n, d)``."""
        array = self.as_array(points)
        return np.stack([p.to_unit(array[:, i]) for i, p in enumerate(self.parameters)], axis=-1)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Unit-cube points, shape ``(n, d)``, to physical points, shape ``(n, d)``."""
        unit = np.asarray(unit, dtype=np.float64)
        if unit.ndim == 1:
            unit = unit[None, :]
        if unit.ndim != 2 or unit.shape[1] != self.dim:
            raise ValueError(f"unit points: expected shape (n, {self.dim}); got {unit.shape}")
        return np.stack([p.from_unit(unit[:, i]) for i, p in enumerate(self.parameters)], axis=-1)

    # -- membership and sampling -------------------------------------------------------------

    def satisfies_constraints(self, points: PointLike) -> np.ndarray:
        """Whether each point satisfies every constraint and check, bool ``(n,)``."""
        array = self.as_array(points)
        columns = {name: array[:, i] for i, name in enumerate(self.names)}
        ok = np.ones(len(array), dtype=bool)
        for text in self.constraints:
            ok &= np.broadcast_to(_evaluate(_parse(text, set(self.names)), columns), ok.shape)
        for check in self.checks:
            ok &= np.asarray(check(columns), dtype=bool)
        return ok

    def contains(self, points: PointLike) -> np.ndarray:
        """Inside the bounds and satisfying the constraints, bool ``(n,)``."""
        array = self.as_array(points)
        lows = np.array([p.low for p in self.parameters])
        highs = np.array([p.high for p in self.parameters])
        inside = np.all((array >= lows) & (array <= highs), axis=1)
        return inside & self.satisfies_constraints(array)

    def sample(self, n: int, *, seed: int | np.random.Generator) -> np.ndarray:
        """``n`` points from the prior restricted to the constraints, shape ``(n, d)``.

        Rejection sampling from the prior box; raises when the allowed fraction is so small
        (< 1e-4) that the space is almost certainly mis-specified.
        """
        rng = np.random.default_rng(seed)
        accepted: list[np.ndarray] = []
        have, tried = 0, 0
        while have < n:
            batch = max(64, 2 * (n - have))
            draw = np.stack([p.sample_prior(rng, batch) for p in self.parameters], axis=-1)
            keep = draw[self.satisfies_constraints(draw)]
            accepted.append(keep)
            have += len(keep)
            tried += batch
            if tried > 10_000 and have < 1e-4 * tried:
                raise ValueError(
                    f"constraints {list(self.constraints)} leave almost no prior volume "
                    f"({have} of {tried} draws accepted)"
                )
        return np.concatenate(accepted)[:n]

    def allowed_fraction(self, *, n: int = 100_000, seed: int = 0) -> float:
        """Fraction of the prior volume of the box that the constraints allow (Monte Carlo)."""
        rng = np.random.default_rng(seed)
        draw = np.stack([p.sample_prior(rng, n) for p in self.parameters], axis=-1)
        return float(self.satisfies_constraints(draw).mean())

    def volume_fraction(
        self,
        indicator: Callable[[np.ndarray], np.ndarray],
        *,
        n: int = 100_000,
        seed: int = 0,
    ) -> tuple[float, float]:
        """Prior-weighted fraction of the allowed space where ``indicator`` is true.

        This is how coverage says "how much of theory space is excluded": ``indicator``
        maps points ``(n, d)`` to bool ``(n,)`` (e.g. CLs < 0.05 from a surrogate).

        Returns:
            (fraction, binomial standard error of the Monte Carlo estimate).
        """
        points = self.sample(n, seed=seed)
        hits = np.asarray(indicator(points), dtype=bool)
        if hits.shape != (n,):
            raise ValueError(
                f"indicator must return a bool array of shape ({n},); got {hits.shape}"
            )
        fraction = float(hits.mean())
        return fraction, math.sqrt(max(fraction * (1 - fraction), 0.0) / n)

    # -- serialisation -----------------------------------------------------------------------

    def to_json(self) -> str:
        """JSON text of the space (``checks`` are code and are not written)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ParameterSpace:
        return cls.model_validate(json.loads(text))


def _parse(text: str, names: set[str]) -> ast.Expression:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"constraint '{text}': not a valid expression ({err.msg})") from err
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names and node.id not in _FUNCTIONS:
            raise ValueError(
                f"constraint '{text}': unknown name '{node.id}'; allowed: "
                f"{', '.join(sorted(names))} and functions {', '.join(_FUNCTIONS)}"
            )
        allowed = (
            ast.Expression,
            ast.BinOp,
            ast.UnaryOp,
            ast.BoolOp,
            ast.Compare,
            ast.Name,
            ast.Load,
            ast.Constant,
            ast.Call,
            ast.And,
            ast.Or,
            ast.Not,
            ast.USub,
            ast.UAdd,
            *_BINARY,
            *_COMPARE,
        )
        if not isinstance(node, allowed):
            raise ValueError(
                f"constraint '{text}': '{type(node).__name__}' is not allowed; use numbers, "
                "parameter names, + - * / **, comparisons, and/or/not and "
                f"{', '.join(_FUNCTIONS)}"
            )
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords
        ):
            raise ValueError(f"constraint '{text}': only {', '.join(_FUNCTIONS)} may be called")
    return tree


def _evaluate(node: ast.AST, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, columns)
    if isinstance(node, ast.Constant):
        return np.asarray(node.value, dtype=np.float64)
    if isinstance(node, ast.Name):
        return columns[node.id]
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, columns)
        if isinstance(node.op, ast.Not):
            return np.logical_not(value)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, columns), _evaluate(node.right, columns))
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v, columns) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, columns)
        result = np.asarray(True)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(comparator, columns)
            result = np.logical_and(result, _COMPARE[type(op)](left, right))
            left = right
        return result
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _FUNCTIONS[node.func.id](*(_evaluate(a, columns) for a in node.args))
    raise ValueError(f"unsupported expression node {type(node).__name__}")
