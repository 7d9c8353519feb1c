"""Reference inputs and a converged pyhf reference, shared by tests and benchmarks.

The values are pyhf's own regression values for the ATLAS SUSY-2018-31 sbottom likelihood, as
listed in ``../shared/data/README.md`` (normsys code4, histosys code4p, qtilde, μ = 1): observed
CLs and the expected band from −2σ to +2σ (None where the README gives none).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Literal

import numpy as np
import pyhf

from searches.stats.batched import HistFactoryStack, compile_stack, stack_cls
from searches.stats.robust import restoring_backend
from searches.stats.workspace import build_workspace, with_signal

REFERENCE_TOLERANCE = 1e-10
"""scipy tolerance of the converged pyhf reference."""

SBOTTOM_TARBALL = "likelihoods/atlas-susy-2018-31-sbottom/pyhf-ins1748602-probability-models.tar.gz"
"""The sbottom likelihood, relative to the shared data folder."""

SBOTTOM_REFERENCE: dict[tuple[str, str], tuple[float, tuple[float, ...] | None]] = {
    ("RegionA", "sbottom_1300_205_60"): (
        0.24443627759085326,
        (
            0.09022509053507759,
            0.1937839194960632,
            0.38432344933992,
            0.6557757334303531,
            0.8910420971601081,
        ),
    ),
    ("RegionA", "sbottom_1400_950_60"): (
        0.021373283911064852,
        (
            0.0026445531093281147,
            0.013976126501170727,
            0.06497105816950004,
            0.23644030478043676,
            0.5744785776763938,
        ),
    ),
    ("RegionA", "sbottom_1500_850_60"): (
        0.045367205665400624,
        (
            0.00598431785676406,
            0.026102240062850574,
            0.10093641492218848,
            0.31019245951964736,
            0.6553623337518385,
        ),
    ),
    ("RegionB", "sbottom_1400_550_60"): (
        0.9744675266677597,
        (
            0.9338879894557114,
            0.9569045303300702,
            0.9771296335437559,
            0.9916370124133669,
            0.9983701133999316,
        ),
    ),
    ("RegionC", "sbottom_1600_850_60"): (0.711023707425625, None),
}


def _best_of(fits: Iterable[Callable[[], tuple[Any, Any]]]) -> tuple[np.ndarray, float]:
    """The deepest of several fits; a start whose fit pyhf reports as failed is no candidate.

    With scipy 1.17.1 SLSQP stops some of these fits with "Inequality constraints
    incompatible" (exit mode 4, machine dependent: scipy#10740, pyhf#532) from pyhf's suggested
    init; the same fit from another start converges, and pyhf's likelihood still decides
    between the ones that do.
    """
    done, error = [], None
    for fit in fits:
        try:
            done.append(fit())
        except pyhf.exceptions.FailedMinimization as failure:
            error = failure
    if not done:
        raise error
    pars, twice = min(done, key=lambda f: float(np.ravel(f[1])[0]))
    return np.asarray(pars), float(np.ravel(twice)[0])


@restoring_backend
def reference_cls(
    model: pyhf.Model,
    data: Any,
    *,
    mu: float = 1.0,
    extra_starts: tuple[np.ndarray, ...] = (),
    backend: Literal["numpy", "pytorch"] = "numpy",
) -> dict[str, Any]:
    """Asymptotic qtilde CLs from pyhf alone, converged as far as pyhf can be pushed.

    Three differences from ``pyhf.infer.hypotest`` at its defaults, each removing an
    optimizer artefact rather than changing the statistics: (1) the scipy optimizer at
    tolerance 1e-10; (2) every fit runs from several starts — pyhf's suggested init, the
    background-only fit and ``extra_starts`` — keeping the lowest −2 log L (likelihoods with a
    double-well nuisance parameter have several minima), and the Asimov data are the expected
    data of the deepest background-only fit, as ``pyhf.infer.calculators.generate_asimov_data``
    builds them from its single fit; (3) the free fit to the Asimov data is not fitted: its
    minimum is the Asimov point itself (every Poisson and Gaussian term is maximal there), so
    ``q_A`` is the μ-fixed fit minus pyhf's −2 log L at that point. Test statistics go through
    pyhf's own asymptotic distributions.

    ``extra_starts`` (parameter vectors in pyhf's order, e.g. Lamppost's best fits) are added
    to the starts of every fit: pyhf then decides, with its own likelihood and optimizer,
    whether a minimum found elsewhere is deeper than the ones it finds by itself.

    ``backend="pytorch"`` runs the same fits with exact gradients (double precision) instead of
    the numpy backend's finite differences: on the 86-parameter workspace of the small
    campaign's best search it takes 39 s instead of 83 s and agrees to 3e-7 in CLs. The
    published-likelihood benchmark's recorded references use the numpy default.
    """
    with warnings.catch_warnings():
        # pyhf's shapesys modifier rebuilds its tensors from a list of arrays on the switch.
        warnings.filterwarnings("ignore", "Creating a tensor from a list", UserWarning)
        pyhf.set_backend(
            backend,
            pyhf.optimize.scipy_optimizer(tolerance=REFERENCE_TOLERANCE),
            precision="64b",
        )
    return _reference(model, data, mu=mu, extra_starts=extra_starts)


def _reference(
    model: pyhf.Model, data: Any, *, mu: float, extra_starts: tuple[np.ndarray, ...]
) -> dict[str, Any]:
    init = np.asarray(model.config.suggested_init(), dtype=float)
    bounds, fixed = model.config.suggested_bounds(), model.config.suggested_fixed()
    poi = model.config.poi_index
    extra = [np.asarray(x, dtype=float) for x in extra_starts]

    def at(start: np.ndarray, value: float) -> list[float]:
        out = start.copy()
        out[poi] = value
        return out.tolist()

    def fixed_fits(
        value: float, observations: Any, starts: list[np.ndarray]
    ) -> Iterable[Callable[[], tuple[Any, Any]]]:
        return (
            partial(
                pyhf.infer.mle.fixed_poi_fit,
                value,
                observations,
                model,
                at(s, value),
                bounds,
                fixed,
                return_fitted_val=True,
            )
            for s in starts
        )

    background, _ = _best_of(fixed_fits(0.0, data, [init, *extra]))
    asimov = model.expected_data(background)
    starts = [init, background, *extra]

    free, twice_free = _best_of(
        partial(pyhf.infer.mle.fit, data, model, s.tolist(), bounds, fixed, return_fitted_val=True)
        for s in starts
    )
    _, twice_fixed = _best_of(fixed_fits(mu, data, starts))
    _, twice_asimov_fixed = _best_of(fixed_fits(mu, asimov, starts))
    twice_asimov_min = float(np.ravel(pyhf.infer.mle.twice_nll(background, asimov, model))[0])
    mu_hat = float(free[poi])
    q_obs = 0.0 if mu_hat > mu else max(twice_fixed - twice_free, 0.0)
    q_asimov = max(twice_asimov_fixed - twice_asimov_min, 0.0)
    calculator = pyhf.infer.calculators.AsymptoticCalculator(data, model, test_stat="qtilde")
    calculator.sqrtqmuA_v = math.sqrt(q_asimov)
    sqrt_q, sqrt_qa = math.sqrt(q_obs), math.sqrt(q_asimov)
    teststat = sqrt_q - sqrt_qa if sqrt_q <= sqrt_qa else (q_obs - q_asimov) / (2 * sqrt_qa)
    signal_plus_background, background_only = calculator.distributions(mu)
    _, _, cls_obs = calculator.pvalues(teststat, signal_plus_background, background_only)
    _, _, cls_exp = calculator.expected_pvalues(signal_plus_background, background_only)
    return {
        "cls_obs": float(cls_obs),
        "cls_exp": [float(v) for v in cls_exp],
        "mu_hat": mu_hat,
        "q_obs": q_obs,
        "q_asimov": q_asimov,
    }


def to_pyhf_pars(stack: HistFactoryStack, model: pyhf.Model, theta: np.ndarray) -> np.ndarray:
    """Engine parameter vectors [..., P] in pyhf's order (pyhf's suggested init elsewhere)."""
    theta = np.asarray(theta, dtype=float)
    pars = np.tile(np.asarray(model.config.suggested_init(), dtype=float), (*theta.shape[:-1], 1))
    for column, par in enumerate(stack.par_names):
        base, _, rest = par.partition("[")
        if base not in model.config.par_map:
            raise ValueError(f"parameter {par!r} of the batched stack not in pyhf's model")
        where = model.config.par_slice(base)
        pars[..., where.start + (int(rest[:-1]) if rest else 0)] = theta[..., column]
    return pars


def to_pyhf_data(
    stack: HistFactoryStack, model: pyhf.Model, main: np.ndarray, aux: np.ndarray
) -> np.ndarray:
    """The engine's main [G] and auxiliary data [C] of a one-channel workspace as pyhf's
    data vector (main bins, then the auxiliary data in ``auxdata_order``)."""
    offset, position = {}, 0
    for name in model.config.auxdata_order:
        offset[name] = position
        position += model.config.param_set(name).n_parameters
    ordered = np.empty(position)
    for c, parameter in enumerate(stack.constrained.tolist()):
        base, _, rest = stack.par_names[parameter].partition("[")
        ordered[offset[base] + (int(rest[:-1]) if rest else 0)] = aux[c]
    return np.concatenate([np.asarray(main, dtype=float), ordered])


def lamppost_best_fits(spec: dict, name: str, model: pyhf.Model) -> tuple[np.ndarray, ...]:
    """Lamppost's four best fits of one hypothesis as parameter vectors in pyhf's order."""
    stack = compile_stack([spec], [name], device="cpu")
    return tuple(to_pyhf_pars(stack, model, stack_cls(stack).theta[:, 0, :]))


def without_mc_statistics(spec: dict) -> dict:
    """The workspace with every MC-statistics modifier removed: the limit of infinite MC."""
    stripped = copy.deepcopy(spec)
    for channel in stripped["channels"]:
        for sample in channel["samples"]:
            sample["modifiers"] = [
                m for m in sample["modifiers"] if m["type"] not in ("staterror", "shapesys")
            ]
    return stripped


def with_mc_statistics(spec: dict, relative: float) -> dict:
    """``spec`` with every MC-statistics uncertainty set to ``relative`` of its sample's yield,
    by hand: below the floor that ``build_workspace`` applies, as a workspace built elsewhere
    may have it. A ``shapesys`` keeps its zero bins. ``spec`` itself is left as it is."""
    spec = copy.deepcopy(spec)
    for sample in spec["channels"][0]["samples"]:
        nominal = np.asarray(sample["data"], dtype=float)
        for modifier in sample["modifiers"]:
            if modifier["type"] == "staterror":
                modifier["data"] = (relative * nominal).tolist()
            if modifier["type"] == "shapesys":
                used = np.asarray(modifier["data"]) > 0
                modifier["data"] = np.where(used, relative * nominal, 0.0).tolist()
    return spec


def stiff_workspace(relative: float) -> dict:
    """A 3-bin search workspace whose signal dominates the last bin, with every MC-statistics
    uncertainty set to ``relative`` (:func:`with_mc_statistics`).

    With ``relative`` = 1e-5 pyhf's default SLSQP reports CLs 0.9999 without complaint and
    MINUIT finds no valid minimum; the infinite-MC answer (:func:`without_mc_statistics`) is
    CLs = 0.076.
    """
    b, s = np.array([1000.0, 30.0, 2.0]), np.array([30.0, 8.0, 3.0])
    spec = with_signal(
        build_workspace(observed=[980.0, 40.0, 0.0], expected=b, sumw2=b, syst=0.3),
        s,
        signal_sumw2=s,
    )
    return with_mc_statistics(spec, relative)


def falling_workspace(bins: int, relative: float, seed: int) -> dict:
    """A falling search spectrum (1000 → 1 events, scaled by 0.5–2) with a √b-like signal,
    Poisson data, a 2–30 % systematic and relative MC statistics ``relative`` per bin."""
    rng = np.random.default_rng(seed)
    b = np.geomspace(1000.0, 1.0, bins) * rng.uniform(0.5, 2.0)
    s = rng.uniform(0.1, 0.6) * np.sqrt(b) + 0.5
    spec = with_signal(
        build_workspace(observed=rng.poisson(b), expected=b, sumw2=b, syst=rng.uniform(0.02, 0.3)),
        s,
    )
    return with_mc_statistics(spec, relative)


def counting_workspace(s: float, b: float, n: int, *, bound: float = 10.0) -> dict[str, Any]:
    """One bin of ``b`` background and ``s`` signal events with ``n`` observed and no nuisance
    parameter: ``qtilde`` falls with the count below ``μ s + b`` and is 0 above, so its CLs
    is ``P(N ≤ n | μ s + b) / P(N ≤ n | b)`` in closed form (toys and their limits are tested
    against it)."""
    return {
        "version": "1.0.0",
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [s],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {"name": "background", "data": [b], "modifiers": []},
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [n]}],
        "measurements": [
            {
                "name": "m",
                "config": {"poi": "mu", "parameters": [{"name": "mu", "bounds": [[0.0, bound]]}]},
            }
        ],
    }


def counting_limit(n: int, b: float, *, s: float = 1.0, level: float = 0.05) -> float:
    """The CLs upper limit on μ of :func:`counting_workspace` in closed form: where
    ``P(N ≤ n | μ s + b) / P(N ≤ n | b)`` equals ``level``."""
    from scipy import optimize, stats

    return float(
        optimize.brentq(
            lambda mu: stats.poisson.cdf(n, mu * s + b) / stats.poisson.cdf(n, b) - level,
            1e-9,
            1e3,
        )
    )
