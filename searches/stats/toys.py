"""CLs from pseudo-experiments, with every toy fitted by the batched engine.

Where a search's bins hold a few events the asymptotic formulae behind
:func:`~searches.stats.batched.stack_cls` are poor, and the answer is the distribution of the
test statistic over pseudo-experiments. pyhf's ``ToyCalculator`` fits each toy with two
MINUIT fits in a Python loop (:func:`searches.stats.inference.cls` with ``calctype="toys"``:
minutes for a few thousand toys); here all toys of a workspace are rows of one
:class:`~searches.stats.batched.HistFactoryStack` and are fitted together.

The procedure is pyhf's own (``pyhf.infer.calculators.ToyCalculator``, pyhf 0.7):

- the observed ``qtilde`` at ``mu`` comes from the engine's fits to the data;
- signal-like toys are drawn at the μ-fixed fit to the data, background-like toys at the
  μ = 0 fit (nuisance parameters profiled on the data, the LHC convention); each toy draws
  its main counts from Poisson and its auxiliary data from each constraint (Gaussian, or
  Poisson for ``shapesys``);
- every toy gets its own free and μ-fixed fit; ``qtilde = max(Δ(−2 log L), 0)`` and 0 where
  the free fit's μ̂ exceeds μ;
- ``CLs+b`` and ``CLb`` are the fractions of signal-like and background-like toys with
  ``qtilde`` at least the observed one, ``CLs = CLs+b / CLb``; the expected band is the
  −2σ…+2σ percentiles (linear interpolation) of the CLs each background-like toy would get in
  the place of the data.

Each toy is fitted from the parameters it was drawn at (near its minimum), and again from the
model's suggested init where a fit did not converge; the data's own fits are the engine's
(:func:`~searches.stats.batched.stack_cls`: two starts, mirrored double wells). A toy whose
fits converge from neither start is dropped and counted (:attr:`ToyCLs.dropped`); a result
with dropped toys is not silently the same as one without.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from searches.stats.batched import (
    FIT_NAMES,
    HistFactoryStack,
    asimov_aux,
    compile_stack,
    default_device,
    expected_rates,
    fit_stack,
    stack_cls,
)
from searches.stats.robust import Q_TOLERANCE

NORMAL_PERCENTILES = (2.27501319, 15.86552539, 50.0, 84.13447461, 97.72498681)
"""Percentiles of the standard normal at −2σ … +2σ (pyhf's ``expected_pvalues``)."""

Q_TIE = 1e-6
"""Smallest distance (absolute, and relative above 1) within which two ``qtilde`` are a tie.

With discrete counts many toys repeat the data and have its ``qtilde``; pyhf fits them from
the same start as the data and gets the same number bit for bit, while here the data and the
two toy ensembles start from different points and agree only to the fits' precision. That
precision is round-off in −2 log L, so :func:`toy_cls` widens the window to
:data:`ROUNDOFF_TIE` × |−2 log L| where that is larger: 1e-9 on a few events, but about 1e-6
on a search whose −2 log L is 4e9 (a Z peak of 1e8 events beside the tail the signal sits on;
the same toy fitted from two starts differed by 9.5e-7 there). A tie counts as "at least as
extreme", as in pyhf. The window stays far below the ``qtilde`` of any distinct outcome, so
toys at exactly 0 (an excess, about half of the signal-like ones) join a tie only when the
data's ``qtilde`` is itself 0 to round-off."""

ROUNDOFF_TIE = 1e-14
"""Tie window per unit of |−2 log L| at the data's free fit (see :data:`Q_TIE`)."""

PASS_ELEMENTS = 2**20
"""Largest ``rows × P × max(P, J)`` of one fitting pass (the per-row Jacobians and Hessians of
:func:`~searches.stats.batched.fit_stack`, 8 MiB each in float64); sets the default batch
(two rows per toy). Smaller passes are faster on the CPU, where the per-row tensors then stay
in cache (one-off, 2026-12-07, 2 cores, 1,000 toys of a campaign search with 84 parameters:
67 s at 2**24, i.e. all toys in one pass, 29 s at 250 toys a pass, 25.5 s at 74, this default;
4,000 toys of the 20-bin falling workspace: 5.4 s in one pass, 3.5 s at 1,083 a pass, this
default). Not measured on a GPU: there the earlier :data:`GPU_PASS_ELEMENTS` stays."""

GPU_PASS_ELEMENTS = 2**24
""":data:`PASS_ELEMENTS` on a GPU (128 MiB per tensor), where larger passes may pay."""

MAX_DROPPED = 0.05
"""Fraction of either ensemble's toys whose fits may fail before a toy CLs is not used."""


class ToyFitError(RuntimeError):
    """The fits to the observed data failed (no convergence, or a free fit above the μ-fixed
    one), or no toy of an ensemble converged."""


@dataclass(frozen=True)
class ToyCLs:
    """CLs of ``mu`` from pseudo-experiments: observed, expected band, and what it rests on.

    Attributes:
        observed: ``CLs = CLs+b / CLb``; NaN when no background-like toy reached the observed
            ``qtilde`` (see ``resolution_limited``).
        expected: CLs at −2σ … +2σ of the background-only expectation.
        observed_error: the binomial standard error of ``observed`` from the two fractions
            (NaN where ``observed`` is).
        clsb, clb: the two tail fractions of the observed ``qtilde``.
        q_observed: the observed ``qtilde``.
        ntoys: toys drawn per ensemble (signal-like and background-like each).
        dropped: toys whose fits did not converge, (signal-like, background-like); the
            fractions above are over the toys kept.
        resolution_limited: no background-like toy had a ``qtilde`` as large as the data's,
            so ``CLb`` is 0 to the resolution ``1/ntoys`` and the observed CLs is undefined:
            draw more toys.
    """

    mu: float
    observed: float
    observed_error: float
    expected: tuple[float, float, float, float, float]
    clsb: float
    clb: float
    q_observed: float
    ntoys: int
    seed: int
    dropped: tuple[int, int]
    resolution_limited: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (an undefined CLs and its error are None, not NaN)."""
        return {
            "mu": self.mu,
            "cls_obs": _finite_or_none(self.observed),
            "cls_obs_error": _finite_or_none(self.observed_error),
            "cls_exp": list(self.expected),
            "clsb": self.clsb,
            "clb": self.clb,
            "q_obs": self.q_observed,
            "ntoys": self.ntoys,
            "seed": self.seed,
            "dropped": list(self.dropped),
            "resolution_limited": self.resolution_limited,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToyCLs:
        """The inverse of :meth:`to_dict` (keys it does not write are ignored), so a toy CLs
        kept in a verdict can be reused rather than drawn again."""
        return cls(
            mu=float(data["mu"]),
            observed=math.nan if data["cls_obs"] is None else float(data["cls_obs"]),
            observed_error=(
                math.nan if data["cls_obs_error"] is None else float(data["cls_obs_error"])
            ),
            expected=tuple(float(x) for x in data["cls_exp"]),  # type: ignore[arg-type]
            clsb=float(data["clsb"]),
            clb=float(data["clb"]),
            q_observed=float(data["q_obs"]),
            ntoys=int(data["ntoys"]),
            seed=int(data["seed"]),
            dropped=tuple(int(x) for x in data["dropped"]),  # type: ignore[arg-type]
            resolution_limited=bool(data["resolution_limited"]),
        )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def tail_fraction(
    samples: np.ndarray, value: np.ndarray | float, *, tie: float = Q_TIE
) -> np.ndarray:
    """Fraction of ``samples`` with ``qtilde >= value``, ties within ``tie`` (absolute, and
    relative above 1) counted."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    value = np.asarray(value, dtype=np.float64)
    threshold = value - tie * np.maximum(1.0, np.abs(value))
    below = np.searchsorted(ordered, threshold, side="left")
    return (len(ordered) - below) / len(ordered)


def cls_from_toys(
    q_observed: float, q_signal: np.ndarray, q_background: np.ndarray, *, tie: float = Q_TIE
) -> tuple[float, float, float, tuple[float, ...]]:
    """``(CLs, CLs+b, CLb, expected band)`` from the observed and the toys' ``qtilde``.

    The same arithmetic as pyhf's ``ToyCalculator.pvalues`` and ``expected_pvalues``: each
    background-like toy's own CLs, then the percentiles of :data:`NORMAL_PERCENTILES`.
    """
    clsb = float(tail_fraction(q_signal, q_observed, tie=tie))
    clb = float(tail_fraction(q_background, q_observed, tie=tie))
    observed = clsb / clb if clb > 0 else math.nan
    per_toy = tail_fraction(q_signal, q_background, tie=tie) / tail_fraction(
        q_background, q_background, tie=tie
    )
    band = np.percentile(per_toy, NORMAL_PERCENTILES)
    return observed, clsb, clb, tuple(float(v) for v in band)


def cls_error(*, clsb: float, n_signal: int, clb: float, n_background: int) -> float:
    """Binomial standard error of ``CLs+b / CLb`` from independent ensembles of toys.

    ``σ(CLs)/CLs = sqrt((1 − CLs+b)/(n_s CLs+b) + (1 − CLb)/(n_b CLb))``. Where no signal-like
    toy reached the data (CLs+b = 0, so CLs = 0) that formula gives 0; the scale of one toy,
    ``1/(n_s CLb)``, stands in for it, so a CLs of 0 from too few toys is not taken as sure.
    """
    if clb <= 0:
        return math.nan
    if clsb <= 0:
        return 1.0 / (n_signal * clb)
    relative = (1 - clsb) / (n_signal * clsb) + (1 - clb) / (n_background * clb)
    return clsb / clb * math.sqrt(relative)


def draw_toys(
    stack: HistFactoryStack, theta: torch.Tensor, ntoys: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Main counts [ntoys, G] and auxiliary data [ntoys, C] drawn at ``theta`` [P].

    Drawn with numpy so the same seed gives the same toys on every device.
    """
    point = theta.unsqueeze(0)
    rates = expected_rates(stack, point)[0].cpu().numpy()
    centre = asimov_aux(stack, point)[0].cpu().numpy()
    sigma = stack.sigma[0].cpu().numpy()
    poisson = stack.poisson.cpu().numpy()
    main = rng.poisson(np.clip(rates, 0.0, None), size=(ntoys, rates.size)).astype(np.float64)
    aux = np.where(
        poisson,
        rng.poisson(np.clip(centre, 0.0, None), size=(ntoys, centre.size)),
        rng.normal(centre, sigma, size=(ntoys, centre.size)),
    )
    device, dtype = stack.init.device, stack.init.dtype
    return (
        torch.as_tensor(main, dtype=dtype, device=device),
        torch.as_tensor(aux, dtype=dtype, device=device),
    )


def _free_and_fixed(
    stack: HistFactoryStack, data: torch.Tensor, aux: torch.Tensor, start: torch.Tensor, mu: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """−2 log L of the free and the μ-fixed fit of each toy [2, M] (inf where a fit did not
    converge) and the free fit's μ̂ [M], both fits from ``start`` [P] in one batch."""
    m, poi = data.shape[0], stack.poi
    held = start.expand(m, -1).clone()
    held[:, poi] = mu
    fixed_free = stack.fixed[0].expand(m, -1)
    fixed_held = fixed_free.clone()
    fixed_held[:, poi] = True
    fit = fit_stack(
        stack.take(torch.zeros(2 * m, dtype=torch.long, device=data.device)),
        data.repeat(2, 1),
        aux.repeat(2, 1),
        torch.cat([start.expand(m, -1), held]),
        torch.cat([fixed_free, fixed_held]),
    )
    value = fit.twice_nll.reshape(2, m)
    ok = fit.converged.reshape(2, m) & torch.isfinite(value)
    return torch.where(ok, value, torch.full_like(value, math.inf)), fit.theta[:m, poi]


def toy_qtilde(
    stack: HistFactoryStack,
    data: torch.Tensor,
    aux: torch.Tensor,
    drawn_at: torch.Tensor,
    *,
    mu: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``qtilde`` at ``mu`` of each toy [M] and whether its fits converged [M].

    Each toy's free and μ-fixed fits start from ``drawn_at`` [P], the point it was drawn at
    and so near its minimum. Toys where either fit does not converge, or where the free fit
    ends above the μ-fixed one (it missed its minimum), are fitted again from the suggested
    init, and per fit the lower converged −2 log L is kept.
    """
    nll, mu_hat = _free_and_fixed(stack, data, aux, drawn_at, mu)
    missed = nll[1] < nll[0] - Q_TOLERANCE
    again = ((~torch.isfinite(nll)).any(0) | missed).nonzero().squeeze(1)
    if again.numel():
        retry, retry_mu_hat = _free_and_fixed(stack, data[again], aux[again], stack.init, mu)
        lower_free = retry[0] < nll[0, again]
        mu_hat[again] = torch.where(lower_free, retry_mu_hat, mu_hat[again])
        nll[:, again] = torch.minimum(nll[:, again], retry)
    converged = torch.isfinite(nll).all(0)
    q = torch.where(mu_hat > mu, torch.zeros_like(mu_hat), (nll[1] - nll[0]).clamp(min=0.0))
    return q.cpu().numpy(), converged.cpu().numpy()


def _ensemble(
    stack: HistFactoryStack,
    drawn_at: torch.Tensor,
    *,
    mu: float,
    ntoys: int,
    rng: np.random.Generator,
    batch: int,
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, int]:
    """``qtilde`` of the converged toys of one ensemble, and how many were dropped.

    The whole ensemble is drawn before any fit, so ``batch`` does not change the toys.
    """
    data, aux = draw_toys(stack, drawn_at, ntoys, rng)
    kept, dropped = [], 0
    for start in range(0, ntoys, batch):
        size = min(batch, ntoys - start)
        rows = slice(start, start + size)
        q, converged = toy_qtilde(stack, data[rows], aux[rows], drawn_at, mu=mu)
        kept.append(q[converged])
        dropped += int(size - converged.sum())
        if progress is not None:
            progress(size)
    return np.concatenate(kept), dropped


def toy_cls(
    workspace: Mapping[str, Any],
    *,
    mu: float = 1.0,
    ntoys: int = 2000,
    seed: int,
    device: torch.device | str | None = None,
    batch: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ToyCLs:
    """CLs of ``mu`` for a signal+background pyhf workspace from ``ntoys`` toys per ensemble.

    Args:
        workspace: pyhf workspace specification with its signal sample (modifier types of the
            batched engine, :data:`~searches.stats.batched.SUPPORTED`).
        mu: Signal strength tested.
        ntoys: Toys per ensemble; the CLs resolution is about ``1/ntoys``.
        seed: Seed of the toys (numpy); the same seed gives the same toys on any device and
            with any ``batch``.
        device: Torch device for the fits (default: CUDA when available).
        batch: Toys fitted in one pass (memory grows linearly with it); default from
            :data:`PASS_ELEMENTS` (CPU) or :data:`GPU_PASS_ELEMENTS` and the workspace's size.
        progress: Called with the number of toys just fitted (both ensembles count).

    Raises:
        ValueError: Bad ``ntoys``/``mu``/``batch``, or a workspace the engine cannot stack.
        ToyFitError: The fits to the observed data failed, or no toy converged.
    """
    check_options(ntoys=ntoys, batch=batch)
    stack = toy_stack(workspace, device=device)
    upper = float(stack.upper[stack.poi])
    if not math.isfinite(mu) or not 0 <= mu <= upper:
        raise ValueError(f"mu must be a finite value in the POI's bounds [0, {upper}], got {mu}")
    return stack_toy_cls(stack, mu=mu, ntoys=ntoys, seed=seed, batch=batch, progress=progress)


def check_options(*, ntoys: int, batch: int | None) -> None:
    """Refuse a number of toys or a batch size below 1."""
    if ntoys < 1 or (batch is not None and batch < 1):
        raise ValueError(f"ntoys and batch must be positive, got ntoys={ntoys}, batch={batch}")


def toy_stack(
    workspace: Mapping[str, Any], *, device: torch.device | str | None = None
) -> HistFactoryStack:
    """The workspace as a one-row stack for :func:`stack_toy_cls`.

    Raises:
        ValueError: A workspace the engine cannot stack, or a POI whose lower bound is not 0
            (``qtilde`` assumes μ ≥ 0).
    """
    dev = torch.device(device) if device is not None else default_device()
    stack = compile_stack([workspace], ["toys"], device=dev)
    lower, upper = float(stack.lower[stack.poi]), float(stack.upper[stack.poi])
    if lower != 0.0:
        raise ValueError(f"qtilde needs the POI's lower bound at 0; the POI has [{lower}, {upper}]")
    return stack


def stack_toy_cls(
    stack: HistFactoryStack,
    *,
    mu: float,
    ntoys: int,
    seed: int,
    batch: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ToyCLs:
    """:func:`toy_cls` on a stack from :func:`toy_stack` (``mu`` within its POI bounds), so
    that a scan in μ compiles the workspace once."""
    dev = stack.init.device
    if batch is None:
        width = len(stack.par_names) * max(len(stack.par_names), stack.nominal.shape[1])
        elements = PASS_ELEMENTS if dev.type == "cpu" else GPU_PASS_ELEMENTS
        batch = max(1, elements // (2 * width))
    data_fits = stack_cls(stack, mu=mu)
    converged = dict(zip(FIT_NAMES, data_fits.converged[0].tolist(), strict=True))
    failed = [name for name in ("background_only", "free", "fixed") if not converged[name]]
    if failed:
        raise ToyFitError(f"the fits to the observed data did not converge: {', '.join(failed)}")
    q_raw = float(data_fits.q_obs_raw[0])
    if not math.isfinite(q_raw) or q_raw < -Q_TOLERANCE:
        raise ToyFitError(
            f"the observed qtilde is {q_raw:.3g}: the free fit to the data missed its minimum"
        )
    q_observed = max(q_raw, 0.0)
    tie = max(Q_TIE, ROUNDOFF_TIE * abs(float(data_fits.twice_nll_free[0])))
    theta = torch.as_tensor(data_fits.theta[:, 0], dtype=stack.init.dtype, device=dev)
    at_mu, at_zero = theta[FIT_NAMES.index("fixed")], theta[FIT_NAMES.index("background_only")]
    rng = np.random.default_rng(seed)
    q_signal, dropped_signal = _ensemble(
        stack, at_mu, mu=mu, ntoys=ntoys, rng=rng, batch=batch, progress=progress
    )
    q_background, dropped_background = _ensemble(
        stack, at_zero, mu=mu, ntoys=ntoys, rng=rng, batch=batch, progress=progress
    )
    if q_signal.size == 0 or q_background.size == 0:
        raise ToyFitError(f"no toy of an ensemble converged ({ntoys} drawn each)")
    observed, clsb, clb, band = cls_from_toys(q_observed, q_signal, q_background, tie=tie)
    return ToyCLs(
        mu=float(mu),
        observed=observed,
        observed_error=cls_error(
            clsb=clsb, n_signal=len(q_signal), clb=clb, n_background=len(q_background)
        ),
        expected=band,  # type: ignore[arg-type]
        clsb=clsb,
        clb=clb,
        q_observed=q_observed,
        ntoys=ntoys,
        seed=seed,
        dropped=(dropped_signal, dropped_background),
        resolution_limited=clb == 0.0,
    )
