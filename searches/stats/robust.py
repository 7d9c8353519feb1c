"""Honest CLs: plain pyhf hypothesis tests with fit diagnostics, automatic retries, and FAILED.

A CLs value is only as good as the four fits behind it (free and fixed-μ fits to the data and
to the background-only Asimov data). On hard likelihoods an optimizer can stop where it started
or run into a bound; pyhf then clips the negative likelihood ratio to zero and reports CLs = 1
("allowed"), or divides by a zero Asimov test statistic and reports NaN. This module re-derives
each test statistic from the fitted parameters, flags such fits, retries with other optimizers
and starting points, cross-checks the survivor with an independent fixed-μ profile scan, and
reports anything still unresolved as ``failed`` with diagnostics — never as allowed or excluded.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar

import numpy as np
import pyhf
import torch
from scipy.special import log_ndtr

SCHEMA_VERSION = 1
P = ParamSpec("P")
R = TypeVar("R")
MODIFIER_SETTINGS = {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}}
"""The published settings: normsys code4, histosys code4p (pyhf's defaults since 0.7)."""
CLS_LEVEL = 0.05
N_SIGMA = (2.0, 1.0, 0.0, -1.0, -2.0)
"""Order of the expected band as pyhf returns it: CLs at −2σ … +2σ of the test statistic."""

Status = Literal["ok", "recovered", "failed"]


@dataclass(frozen=True)
class CLsResult:
    """CLs of one signal hypothesis at μ = 1 (qtilde, asymptotic), with how far to trust it.

    Attributes:
        name: Hypothesis (patch) name.
        parameters: Model parameters of the hypothesis.
        cls_obs: Observed CLs; ``None`` when ``status == 'failed'``.
        cls_exp: Expected CLs at −2σ, −1σ, median, +1σ, +2σ (pyhf's order); ``None`` if failed.
        mu_hat: Best-fit signal strength (bounded below by 0), when known.
        status: ``ok`` (first fits passed all checks), ``recovered`` (checks failed, a retry
            passed them and agrees with an independent profile scan) or ``failed``.
        reason: Why a result is recovered or failed (empty when ``ok``).
        backend: What produced the numbers, e.g. ``batched-torch:cpu`` or ``pyhf-numpy:minuit``.
        region: Region (background workspace) the hypothesis was tested in.
        diagnostics: JSON-safe details (fit status, test statistics, parameters at bounds, ...).
    """

    name: str
    parameters: Mapping[str, float]
    cls_obs: float | None
    cls_exp: tuple[float, float, float, float, float] | None
    mu_hat: float | None
    status: Status
    reason: str
    backend: str
    region: str = ""
    diagnostics: Mapping[str, Any] = field(default_factory=dict)

    @property
    def excluded(self) -> bool | None:
        """CLs_obs < 0.05; ``None`` for a failed result (neither allowed nor excluded)."""
        if self.status == "failed" or self.cls_obs is None:
            return None
        return self.cls_obs < CLS_LEVEL

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (NaN/inf never appear: failed values are ``None``)."""
        out = asdict(self)
        out["parameters"] = dict(self.parameters)
        out["cls_exp"] = list(self.cls_exp) if self.cls_exp is not None else None
        out["diagnostics"] = _json_safe(dict(self.diagnostics))
        out["schema_version"] = SCHEMA_VERSION
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CLsResult:
        """Inverse of :meth:`to_dict`."""
        values = {k: v for k, v in data.items() if k != "schema_version"}
        if values.get("cls_exp") is not None:
            values["cls_exp"] = tuple(values["cls_exp"])
        return cls(**values)


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in list(value)]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def cls_from_statistics(q_obs: float, q_asimov: float) -> tuple[float, tuple[float, ...]]:
    """Asymptotic qtilde CLs (observed and expected band) from the two test statistics.

    Same formulas as ``pyhf.infer.calculators.AsymptoticCalculator`` (arXiv:1007.1727 eq. 65-66),
    vectorised over leading dimensions: ``q_obs``, ``q_asimov`` broadcastable arrays.

    Returns:
        CLs observed, and the expected CLs for N_SIGMA.
    """
    q = np.clip(np.asarray(q_obs, dtype=float), 0.0, None)
    qa = np.clip(np.asarray(q_asimov, dtype=float), 0.0, None)
    sq, sqa = np.sqrt(q), np.sqrt(qa)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sq <= sqa, sq - sqa, (q - qa) / (2.0 * sqa))
        # Ratio of tails in log space: for a tiny q_A, t is large and both tails underflow in
        # linear space (pyhf's 0/0 = NaN); log Φ stays finite.
        cls_obs = np.exp(log_ndtr(-(t + sqa)) - log_ndtr(-t))
        expected = tuple(np.exp(log_ndtr(-(n + sqa)) - log_ndtr(-n)) for n in N_SIGMA)
    return cls_obs, expected


def build_model(spec: Mapping[str, Any]) -> tuple[pyhf.Model, Any]:
    """pyhf model and observed data (aux included) of a signal+background workspace."""
    workspace = pyhf.Workspace(dict(spec))
    model = workspace.model(modifier_settings=MODIFIER_SETTINGS)
    return model, workspace.data(model)


@dataclass(frozen=True)
class FitSettings:
    """How a plain pyhf hypothesis test is run (one attempt of the retry ladder)."""

    optimizer: Literal["scipy", "minuit"] = "scipy"
    init: Literal["default", "background"] = "default"
    tolerance: float | None = None
    strategy: Literal[0, 1, 2] = 1
    """MINUIT's strategy (ignored by scipy)."""

    @property
    def label(self) -> str:
        extra = "" if self.init == "default" else f",init={self.init}"
        tol = "" if self.tolerance is None else f",tol={self.tolerance:g}"
        strategy = "" if self.optimizer != "minuit" or self.strategy == 1 else f",s={self.strategy}"
        return f"{self.optimizer}{extra}{tol}{strategy}"


PLAIN = FitSettings()
RETRIES: tuple[FitSettings, ...] = (
    FitSettings(optimizer="minuit"),
    FitSettings(optimizer="scipy", init="background", tolerance=1e-10),
    FitSettings(optimizer="minuit", init="background", tolerance=1e-4),
)
"""Settings tried, in order, when the plain fit fails a check."""


_PYHF_FIT_LOG = logging.getLogger("pyhf.optimize.mixins")


def restoring_backend(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` and put pyhf's global backend and optimizer back as they were.

    The fits here switch optimizers and tolerances through pyhf's global backend; without this,
    a retry would silently change the settings of every pyhf call after it. Switching to pyhf's
    pytorch backend also sets torch's process-wide default dtype (float64 at 64-bit precision),
    which every torch model built later in the process would inherit; it is put back too. pyhf
    logs every failed minimisation with its full correlation matrix; here a failed fit is
    caught, retried and reported in the diagnostics, so that log is held back while the
    function runs.
    """

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        backend, optimizer = pyhf.get_backend()
        dtype = torch.get_default_dtype()
        level = _PYHF_FIT_LOG.level
        _PYHF_FIT_LOG.setLevel(logging.CRITICAL)
        try:
            return function(*args, **kwargs)
        finally:
            _PYHF_FIT_LOG.setLevel(level)
            pyhf.set_backend(backend, optimizer)
            torch.set_default_dtype(dtype)

    return wrapper


def use_fit_settings(settings: FitSettings) -> None:
    """Make ``settings`` pyhf's global numpy backend and optimizer (callers restore it, see
    :func:`restoring_backend`)."""
    if settings.optimizer == "minuit":
        optimizer = pyhf.optimize.minuit_optimizer(
            tolerance=settings.tolerance if settings.tolerance is not None else 0.1,
            strategy=settings.strategy,
        )
    else:
        kwargs = {} if settings.tolerance is None else {"tolerance": settings.tolerance}
        optimizer = pyhf.optimize.scipy_optimizer(**kwargs)
    pyhf.set_backend("numpy", optimizer)


@dataclass(frozen=True)
class HypotestFits:
    """Everything one asymptotic qtilde test at μ computed, re-derived from fitted parameters.

    ``q_obs_raw``/``q_asimov_raw`` are before pyhf's clipping at 0, so a fixed-μ fit that ended
    below the free fit (impossible at the true minima) is visible as a negative value.
    """

    cls_obs: float
    cls_exp: tuple[float, ...]
    mu_hat: float
    q_obs_raw: float
    q_asimov_raw: float
    pars: Mapping[str, np.ndarray]
    nll: Mapping[str, float]
    seconds: float


def _twice_nll(model: pyhf.Model, pars: np.ndarray, data: Any) -> float:
    return float(-2.0 * model.logpdf(pars, data)[0])


def _background_init(model: pyhf.Model, data: Any) -> np.ndarray:
    """Start at the background-only (μ = 0) fit with μ set back to 1."""
    init = np.asarray(model.config.suggested_init(), dtype=float)
    fixed = model.config.suggested_fixed()
    bkg = pyhf.infer.mle.fixed_poi_fit(
        0.0, data, model, init.tolist(), model.config.suggested_bounds(), fixed
    )
    start = np.asarray(bkg, dtype=float)
    start[model.config.poi_index] = 1.0
    return start


@restoring_backend
def plain_hypotest(
    model: pyhf.Model, data: Any, *, mu: float = 1.0, settings: FitSettings = PLAIN
) -> HypotestFits:
    """pyhf's ``hypotest`` (asymptotics, qtilde, expected set) plus the fit results behind it.

    Returns:
        CLs as pyhf reports them (NaN kept), the raw test statistics and the five fits'
        parameters and twice-NLL values: ``free``, ``fixed``, ``asimov`` (background-only fit that
        defines the Asimov data), ``free_asimov``, ``fixed_asimov``.
    """
    use_fit_settings(settings)
    start = time.process_time()
    init = (
        _background_init(model, data)
        if settings.init == "background"
        else np.asarray(model.config.suggested_init(), dtype=float)
    )
    with np.errstate(all="ignore"):
        cls_obs, cls_exp, calc = pyhf.infer.hypotest(
            mu,
            data,
            model,
            init_pars=init.tolist(),
            test_stat="qtilde",
            calctype="asymptotics",
            return_expected_set=True,
            return_calculator=True,
        )
    fitted = calc.fitted_pars
    asimov = pyhf.infer.calculators.generate_asimov_data(
        0.0,
        data,
        model,
        init.tolist(),
        model.config.suggested_bounds(),
        model.config.suggested_fixed(),
    )
    pars = {
        "free": np.asarray(fitted.free_fit_to_data, dtype=float),
        "fixed": np.asarray(fitted.fixed_poi_fit_to_data, dtype=float),
        "asimov": np.asarray(fitted.asimov_pars, dtype=float),
        "free_asimov": np.asarray(fitted.free_fit_to_asimov, dtype=float),
        "fixed_asimov": np.asarray(fitted.fixed_poi_fit_to_asimov, dtype=float),
    }
    with np.errstate(all="ignore"):
        nll = {
            "free": _twice_nll(model, pars["free"], data),
            "fixed": _twice_nll(model, pars["fixed"], data),
            "free_asimov": _twice_nll(model, pars["free_asimov"], asimov),
            "fixed_asimov": _twice_nll(model, pars["fixed_asimov"], asimov),
        }
    poi = model.config.poi_index
    mu_hat = float(pars["free"][poi])
    q_obs = 0.0 if mu_hat > mu else nll["fixed"] - nll["free"]
    mu_hat_a = float(pars["free_asimov"][poi])
    q_asimov = 0.0 if mu_hat_a > mu else nll["fixed_asimov"] - nll["free_asimov"]
    return HypotestFits(
        cls_obs=float(cls_obs),
        cls_exp=tuple(float(v) for v in cls_exp),
        mu_hat=mu_hat,
        q_obs_raw=float(q_obs),
        q_asimov_raw=float(q_asimov),
        pars=pars,
        nll=nll,
        seconds=time.process_time() - start,
    )


@restoring_backend
def pyhf_cls(
    spec: Mapping[str, Any], *, mu: float = 1.0, settings: FitSettings = PLAIN
) -> tuple[float, tuple[float, ...], float]:
    """Plain pyhf, nothing added: observed CLs, expected band and μ̂ (the baseline and reference).

    Builds the model from the workspace and runs ``pyhf.infer.hypotest`` once with the published
    settings; non-finite values are returned as pyhf gives them.
    """
    use_fit_settings(settings)
    model, data = build_model(spec)
    with np.errstate(all="ignore"):
        cls_obs, cls_exp, calc = pyhf.infer.hypotest(
            mu,
            data,
            model,
            test_stat="qtilde",
            calctype="asymptotics",
            return_expected_set=True,
            return_calculator=True,
        )
    mu_hat = float(calc.fitted_pars.free_fit_to_data[model.config.poi_index])
    return float(cls_obs), tuple(float(v) for v in cls_exp), mu_hat


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

Q_TOLERANCE = 1e-6
"""Largest negative test statistic (twice-NLL units) attributed to rounding, not to a bad fit."""
SCAN_TOLERANCE = 2e-3
"""Agreement required between fitted and scanned twice-NLL differences."""


def diagnose(
    *,
    cls_obs: float,
    cls_exp: Sequence[float],
    q_obs_raw: float,
    q_asimov_raw: float,
    converged: Mapping[str, bool],
    at_bounds: Sequence[str] = (),
    mu_hat: float | None = None,
    mu_start: float | None = None,
    signal_yield: float | None = None,
) -> list[str]:
    """Reasons not to trust one hypothesis test (empty list: trust it).

    Args:
        cls_obs, cls_exp: CLs as computed.
        q_obs_raw, q_asimov_raw: Test statistics before clipping at 0 (twice-NLL differences).
        converged: Fit name → whether the optimizer reported success.
        at_bounds: Nuisance parameters (not the POI) that ended on a bound in some fit.
        mu_hat, mu_start: Best-fit μ and where its fit started: equal means "never moved".
        signal_yield: Nominal signal events; 0 means there is nothing to test.
    """
    problems = []
    if signal_yield is not None and signal_yield <= 0:
        problems.append("no signal: the POI multiplies no events")
    values = [cls_obs, *cls_exp]
    if not all(math.isfinite(v) for v in values):
        problems.append("non-finite CLs")
    for name, ok in converged.items():
        if not ok:
            problems.append(f"fit '{name}' did not converge")
    if not math.isfinite(q_obs_raw) or q_obs_raw < -Q_TOLERANCE:
        problems.append(f"q_obs = {q_obs_raw:.3g} < 0: the μ-fixed fit ended below the free fit")
    if not math.isfinite(q_asimov_raw) or q_asimov_raw < -Q_TOLERANCE:
        problems.append(
            f"q_A = {q_asimov_raw:.3g} < 0: the μ-fixed Asimov fit ended below the free Asimov fit"
        )
    elif q_asimov_raw <= Q_TOLERANCE:
        problems.append(
            f"q_A = {q_asimov_raw:.3g} ≈ 0: no expected sensitivity found, CLs undefined or ≈ 1"
        )
    if at_bounds:
        problems.append(f"parameters at bounds: {', '.join(sorted(at_bounds)[:6])}")
    if (
        mu_hat is not None
        and mu_start is not None
        and mu_start != 0
        and abs(mu_hat - mu_start) < 1e-9
    ):
        problems.append(f"μ̂ = {mu_hat:g} never moved from its start value")
    return problems


def _at_bounds(model: pyhf.Model, pars: Mapping[str, np.ndarray]) -> list[str]:
    bounds = np.asarray(model.config.suggested_bounds(), dtype=float)
    fixed = np.asarray(model.config.suggested_fixed(), dtype=bool)
    names = []
    for name in model.config.par_order:
        if name == model.config.poi_name:
            continue
        sl = model.config.par_slice(name)
        lo, hi = bounds[sl, 0], bounds[sl, 1]
        width = hi - lo
        for values in pars.values():
            v = values[sl]
            hit = (~fixed[sl]) & ((v - lo < 1e-6 * width) | (hi - v < 1e-6 * width))
            if hit.any():
                names.append(name)
                break
    return names


def diagnose_fits(
    model: pyhf.Model,
    fits: HypotestFits,
    *,
    settings: FitSettings = PLAIN,
    check_bounds: bool = True,
) -> list[str]:
    """:func:`diagnose` for a plain-pyhf test (convergence judged by the re-derived statistics).

    ``check_bounds=False`` accepts nuisance parameters on their bounds: in a search workspace
    built from simulation the MC-statistics and normalisation parameters sit on their bounds
    legitimately when a large signal is tested at μ = 1 (the constrained fit is the profile
    likelihood the test needs).
    """
    signal = _signal_yield(model)
    return diagnose(
        cls_obs=fits.cls_obs,
        cls_exp=fits.cls_exp,
        q_obs_raw=fits.q_obs_raw,
        q_asimov_raw=fits.q_asimov_raw,
        converged={name: math.isfinite(v) for name, v in fits.nll.items()},
        at_bounds=_at_bounds(model, fits.pars) if check_bounds else (),
        mu_hat=fits.mu_hat,
        mu_start=1.0 if settings.init == "default" else None,
        signal_yield=signal,
    )


def _signal_yield(model: pyhf.Model) -> float:
    """Signal events at the nominal point: expected data at μ = 1 minus at μ = 0."""
    init = np.asarray(model.config.suggested_init(), dtype=float)
    poi = model.config.poi_index
    on, off = init.copy(), init.copy()
    on[poi], off[poi] = 1.0, 0.0
    return float(np.sum(model.expected_actualdata(on) - model.expected_actualdata(off)))


@restoring_backend
def profile_scan(
    model: pyhf.Model, data: Any, mus: Sequence[float], *, optimizer: Literal["scipy", "minuit"]
) -> np.ndarray:
    """Twice-NLL of fixed-μ fits at each ``mus`` (the profile likelihood), each from two starts.

    The lower of the fit from pyhf's default start and from the background-only fit is kept, so
    one fit that stalls does not fake a profile.
    """
    use_fit_settings(
        FitSettings(optimizer=optimizer, tolerance=1e-6 if optimizer == "minuit" else 1e-10)
    )
    bounds = model.config.suggested_bounds()
    fixed = model.config.suggested_fixed()
    starts = [np.asarray(model.config.suggested_init(), dtype=float)]
    with contextlib.suppress(Exception):  # a failing start is dropped; the default one remains
        starts.append(
            np.asarray(
                pyhf.infer.mle.fixed_poi_fit(0.0, data, model, starts[0].tolist(), bounds, fixed),
                dtype=float,
            )
        )
    out = []
    for mu in mus:
        best = math.inf
        for start in starts:
            init = start.copy()
            init[model.config.poi_index] = mu
            try:
                _, value = pyhf.infer.mle.fixed_poi_fit(
                    mu, data, model, init.tolist(), bounds, fixed, return_fitted_val=True
                )
                value = float(value)
            except Exception:
                value = math.inf
            if math.isfinite(value):
                best = min(best, value)
        out.append(best)
    return np.asarray(out)


def scan_check(
    model: pyhf.Model, data: Any, fits: HypotestFits, *, mu: float = 1.0, optimizer: str = "minuit"
) -> tuple[bool, dict[str, Any]]:
    """Independent confirmation of a hypothesis test by fixed-μ profile scans.

    On the data, the profile over a μ grid must never fall below the free fit (else μ̂ is not the
    minimum) and its value at ``mu`` must reproduce q_obs; on the Asimov data (μ = 0 fit), the
    scan at 0 and ``mu`` must reproduce q_A. Runs with a different optimizer than the result.
    """
    top = max(2.0 * mu, 2.0 * fits.mu_hat if math.isfinite(fits.mu_hat) else 0.0)
    grid = np.unique(np.concatenate([np.linspace(0.0, top, 9), [mu]]))
    with np.errstate(all="ignore"):
        prof = profile_scan(model, data, grid, optimizer=optimizer)  # type: ignore[arg-type]
        asimov = model.expected_data(fits.pars["asimov"])
        prof_a = profile_scan(model, asimov, [0.0, mu], optimizer=optimizer)  # type: ignore[arg-type]
        at_mu = float(prof[np.argmin(np.abs(grid - mu))])
        q_scan = 0.0 if fits.mu_hat > mu else at_mu - min(fits.nll["free"], float(np.min(prof)))
        q_a_scan = float(prof_a[1] - prof_a[0])
    info = {
        "scan_mu": grid.tolist(),
        "scan_twice_nll_minus_free": (prof - fits.nll["free"]).tolist(),
        "q_obs_fit": fits.q_obs_raw,
        "q_obs_scan": q_scan,
        "q_asimov_fit": fits.q_asimov_raw,
        "q_asimov_scan": q_a_scan,
        "scan_optimizer": optimizer,
    }
    tol_q = SCAN_TOLERANCE * max(1.0, abs(fits.q_obs_raw))
    tol_a = SCAN_TOLERANCE * max(1.0, abs(fits.q_asimov_raw))
    ok = (
        bool(np.all(np.isfinite(prof)))
        and float(np.min(prof)) >= fits.nll["free"] - tol_q
        and abs(q_scan - max(fits.q_obs_raw, 0.0)) <= tol_q
        and math.isfinite(q_a_scan)
        and abs(q_a_scan - fits.q_asimov_raw) <= tol_a
    )
    return ok, info


def _failed(
    name: str,
    parameters: Mapping[str, float],
    reason: str,
    *,
    region: str,
    diagnostics: dict[str, Any],
) -> CLsResult:
    """An unresolved hypothesis: no CLs, so it is never read as allowed or excluded."""
    return CLsResult(
        name, parameters, None, None, None, "failed", reason, "pyhf-numpy", region, diagnostics
    )


@restoring_backend
def robust_hypotest(
    spec: Mapping[str, Any],
    *,
    name: str,
    parameters: Mapping[str, float] | None = None,
    region: str = "",
    mu: float = 1.0,
    earlier_problems: Sequence[str] = (),
    earlier_backend: str = "",
    earlier_statistics: Mapping[str, float] | None = None,
    check_bounds: bool = True,
    attempts: int | None = None,
) -> CLsResult:
    """Plain pyhf with checks; on a failed check, retry (:data:`RETRIES`) and confirm by scan.

    Args:
        spec: Signal+background workspace specification.
        name, parameters, region: Identity of the hypothesis, copied to the result.
        mu: Signal strength tested.
        earlier_problems: Checks that an earlier attempt (e.g. the batched engine) failed; the
            result is then at best ``recovered``, and only after a profile-scan confirmation.
        earlier_backend: What produced the earlier attempt, for the diagnostics.
        earlier_statistics: The earlier attempt's raw test statistics (``q_obs_raw``,
            ``q_asimov_raw``), recorded with it so that a caller can tell "no expected
            sensitivity anywhere" from a fit that failed, whatever the number of pyhf attempts.
        check_bounds: Count nuisance parameters on their bounds as a problem
            (see :func:`diagnose_fits`).
        attempts: pyhf attempts at most — the plain fit, then :data:`RETRIES` in order
            (default: all). On a large campaign workspace each costs up to a minute, so a loop
            over many points may cap it; ``0`` leaves the verdict to ``earlier_problems``
            (``failed``).

    Returns:
        ``ok`` (plain pyhf passed every check and nothing failed before), ``recovered`` (a retry
        passed the checks and the scan) or ``failed`` (CLs withheld, diagnostics attached).
    """
    parameters = dict(parameters or {})
    diagnostics: dict[str, Any] = {"attempts": []}
    if earlier_problems:
        diagnostics["attempts"].append(
            {
                "backend": earlier_backend,
                "problems": list(earlier_problems),
                **dict(earlier_statistics or {}),
            }
        )
    try:
        model, data = build_model(spec)
    except Exception as error:
        return _failed(
            name,
            parameters,
            f"model cannot be built: {error}",
            region=region,
            diagnostics=diagnostics,
        )
    first_problems = list(earlier_problems)
    tried = (PLAIN, *RETRIES)[: len(RETRIES) + 1 if attempts is None else max(attempts, 0)]
    for attempt, settings in enumerate(tried):
        label = f"pyhf-numpy:{settings.label}"
        try:
            fits = plain_hypotest(model, data, mu=mu, settings=settings)
        except Exception as error:
            diagnostics["attempts"].append(
                {"backend": label, "problems": [f"exception: {error!r}"]}
            )
            continue
        problems = diagnose_fits(model, fits, settings=settings, check_bounds=check_bounds)
        record = {
            "backend": label,
            "problems": problems,
            "cls_obs": fits.cls_obs,
            "cls_exp": list(fits.cls_exp),
            "mu_hat": fits.mu_hat,
            "q_obs_raw": fits.q_obs_raw,
            "q_asimov_raw": fits.q_asimov_raw,
        }
        diagnostics["attempts"].append(record)
        if "no signal: the POI multiplies no events" in problems:
            first_problems = first_problems or problems
            break
        if problems:
            first_problems = first_problems or problems
            continue
        if attempt == 0 and not first_problems:
            return CLsResult(
                name,
                parameters,
                fits.cls_obs,
                fits.cls_exp,
                fits.mu_hat,
                "ok",
                "",
                label,
                region,
                {},
            )
        confirmed, info = scan_check(
            model,
            data,
            fits,
            mu=mu,
            optimizer="scipy" if settings.optimizer == "minuit" else "minuit",
        )
        record["scan"] = info
        if confirmed:
            reason = (
                f"{'; '.join(first_problems)} — recovered by {label}, confirmed by a fixed-μ "
                "profile scan with another optimizer"
            )
            return CLsResult(
                name,
                parameters,
                fits.cls_obs,
                fits.cls_exp,
                fits.mu_hat,
                "recovered",
                reason,
                label,
                region,
                diagnostics,
            )
        record["problems"].append("profile scan disagrees with the fits")
        first_problems = first_problems or record["problems"]
    reason = "; ".join(dict.fromkeys(first_problems)) or "every attempt failed"
    return _failed(
        name,
        parameters,
        f"{reason} — unresolved after {len(tried)} pyhf attempt{'s' * (len(tried) != 1)}",
        region=region,
        diagnostics=diagnostics,
    )
