"""Batched CLs for many signal hypotheses on one background model (a vectorised HistFactory).

Published likelihoods ship hundreds of signal patches for one background-only workspace. Plain
pyhf builds a model and runs five scipy fits per patch (~0.6-3.4 s each here). The patches of one
region share channels, background samples and parameters and differ in the signal samples'
yields and uncertainties, so they can be stacked: every per-sample tensor below carries a leading
hypothesis dimension ``N`` and all hypotheses are fitted at once with a batched, bounded
Gauss-Newton method in torch (exact gradients by autodiff, float64, CPU or GPU).

What is batched is exactly pyhf's likelihood (normsys code4, histosys code4p, normfactor, lumi,
staterror; Poisson main term, Gaussian constraints), checked against ``pyhf.Model.logpdf`` in the
tests. Each hypothesis needs three fits: the background-only fit (μ = 0) that defines the Asimov
data, the free fit and the μ = 1 fit to data, and the μ = 1 fit to Asimov data; the free fit to
Asimov data is known in closed form (the Asimov parameters themselves). Workspaces with modifier
types outside that list (shapesys, shapefactor), or that cannot be stacked, go through plain
pyhf; every hypothesis whose fits fail a check goes through :mod:`searches.stats.robust`.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jsonpatch
import jsonpointer
import numpy as np
import torch

from searches.stats.robust import (
    CLsResult,
    cls_from_statistics,
    diagnose,
    robust_hypotest,
)

SUPPORTED = frozenset({"normsys", "histosys", "normfactor", "lumi", "staterror", "shapesys"})
Backend = Literal["auto", "torch", "pyhf"]
_CATEGORY = {"normsys": "alpha", "histosys": "alpha"}
"""A normsys and a histosys of the same name share one parameter α (as in pyhf)."""

_CODE4_INVERSE = np.array(
    [
        [15 / 16, -15 / 16, -7 / 16, -7 / 16, 1 / 16, -1 / 16],
        [3 / 2, 3 / 2, -9 / 16, 9 / 16, 1 / 16, 1 / 16],
        [-5 / 8, 5 / 8, 5 / 8, 5 / 8, -1 / 8, 1 / 8],
        [-3 / 2, -3 / 2, 7 / 8, -7 / 8, -1 / 8, -1 / 8],
        [3 / 16, -3 / 16, -3 / 16, -3 / 16, 1 / 16, -1 / 16],
        [1 / 2, 1 / 2, -5 / 16, 5 / 16, 1 / 16, 1 / 16],
    ]
)
"""pyhf's code4 polynomial (α0 = 1): coefficients = A⁻¹ b, see pyhf.interpolators._slow_code4."""


def default_device() -> torch.device:
    """The GPU when torch sees one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------------
# Applying patches cheaply
# --------------------------------------------------------------------------------------------


def patched_spec(background: Mapping[str, Any], operations: Sequence[Mapping[str, Any]]) -> dict:
    """Apply JSON-patch operations without deep-copying the (megabyte-sized) background.

    Only the containers a signal patch normally edits are copied (top level, the channel and
    observation lists, each channel and its sample list); an operation that reaches inside a
    sample or anywhere else triggers a full deep copy, so the background is never mutated.

    Raises:
        ValueError: The patch does not apply (names the failing path).
    """
    shallow = all(
        (parts := op["path"].split("/"))[1:2] == ["channels"]
        and len(parts) <= 5
        and (len(parts) <= 3 or parts[3] == "samples")
        and op.get("op") in {"add", "remove"}
        for op in operations
    )
    if shallow:
        doc = dict(background)
        doc["channels"] = [
            {**channel, "samples": list(channel["samples"])} for channel in background["channels"]
        ]
        doc["observations"] = list(background["observations"])
    else:
        doc = copy.deepcopy(dict(background))
    try:
        return jsonpatch.apply_patch(doc, [dict(op) for op in operations], in_place=True)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
        raise ValueError(
            f"patch does not apply to the background-only workspace: {error}"
        ) from None


# --------------------------------------------------------------------------------------------
# Compiling a stack of workspaces into tensors
# --------------------------------------------------------------------------------------------


def structure_key(spec: Mapping[str, Any]) -> str | None:
    """What must agree for workspaces to be stacked; ``None`` if the batched engine cannot run it.

    Channels and bins, observations, the measurement, and the parameter set (name and type) must
    be identical; samples may differ.
    """
    params: dict[str, str] = {}
    shapesys: set[str] = set()
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            for mod in sample["modifiers"]:
                if mod["type"] not in SUPPORTED:
                    return None
                if mod["type"] == "shapesys":
                    if mod["name"] in shapesys:
                        return None  # pyhf's semantics for a shared shapesys are not replicated
                    shapesys.add(mod["name"])
                category = _CATEGORY.get(mod["type"], mod["type"])
                if params.setdefault(mod["name"], category) != category:
                    return None
    names = {c["name"] for c in spec["channels"]}
    return json.dumps(
        [
            [(c["name"], len(c["samples"][0]["data"])) for c in spec["channels"]],
            sorted((o["name"], o["data"]) for o in spec["observations"] if o["name"] in names),
            spec["measurements"][0]["config"],
            sorted(params.items()),
        ],
        sort_keys=True,
    )


@dataclass(frozen=True)
class HistFactoryStack:
    """N workspaces of identical structure as tensors (leading dimension N = hypotheses).

    Shapes: P parameters, G bins (all channels), J sample-bins (union of samples × bins),
    Eh histosys and En normsys entries (an α acting on a sample-bin in some hypothesis: the
    modifiers are stored sparsely), F multiplicative parameters (normfactor, lumi and one per
    staterror bin), C constrained parameters (Gaussian; Poisson for shapesys bins, with
    auxiliary count τ = (nominal/σ)² as in pyhf).
    """

    names: tuple[str, ...]
    par_names: tuple[str, ...]
    poi: int
    init: torch.Tensor  # [P]
    lower: torch.Tensor  # [P]
    upper: torch.Tensor  # [P]
    fixed: torch.Tensor  # [N, P] bool
    observed: torch.Tensor  # [G]
    aux_init: torch.Tensor  # [N, C] nominal auxiliary data
    constrained: torch.Tensor  # [C] parameter index
    sigma: torch.Tensor  # [N, C] Gaussian width (1 for Poisson entries)
    poisson: torch.Tensor  # [C] bool: Poisson-constrained (shapesys) entry
    tau: torch.Tensor  # [N, C] Poisson rate factor τ (1 for Gaussian entries)
    bin_of: torch.Tensor  # [J] sample-bin → bin
    nominal: torch.Tensor  # [N, J]
    hist_index: torch.Tensor  # [Eh] parameter of each histosys entry (one per α × sample-bin)
    hist_bin: torch.Tensor  # [Eh] sample-bin of each entry
    hist_up: torch.Tensor  # [N, Eh] hi − nominal
    hist_down: torch.Tensor  # [N, Eh] nominal − lo
    norm_index: torch.Tensor  # [En] parameter of each normsys entry
    norm_bin: torch.Tensor  # [En]
    norm_coef: torch.Tensor  # [N, En, 6] code4 polynomial
    norm_up: torch.Tensor  # [N, En]
    norm_down: torch.Tensor  # [N, En]
    factor_index: torch.Tensor  # [F]
    factor_mask: torch.Tensor  # [N, F, J] 1 where the parameter multiplies the sample-bin
    signal_yield: torch.Tensor  # [N] total nominal yield of samples carrying the POI

    @property
    def n_bins(self) -> int:
        return int(self.observed.shape[0])

    def take(self, rows: torch.Tensor) -> HistFactoryStack:
        """The stack restricted/repeated to hypothesis rows ``rows`` [M] (for multi-fit batches)."""
        per_row = {
            "fixed",
            "sigma",
            "aux_init",
            "tau",
            "nominal",
            "hist_up",
            "hist_down",
            "norm_coef",
            "norm_up",
            "norm_down",
            "factor_mask",
            "signal_yield",
        }
        values = {
            name: (
                getattr(self, name).index_select(0, rows)
                if name in per_row
                else getattr(self, name)
            )
            for name in self.__dataclass_fields__
        }
        values["names"] = tuple(self.names[i] for i in rows.tolist())
        return HistFactoryStack(**values)


def _defaults(kind: str) -> tuple[float, tuple[float, float]]:
    if kind == "alpha":
        return 0.0, (-5.0, 5.0)
    if kind in ("staterror", "shapesys"):
        return 1.0, (1e-10, 10.0)
    return 1.0, (0.0, 10.0)


def compile_stack(
    specs: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    *,
    device: torch.device | str | None = None,
) -> HistFactoryStack:
    """Stack workspaces that share one :func:`structure_key` into tensors on ``device``.

    Raises:
        ValueError: The specs differ in structure, or a modifier has the wrong number of bins.
    """
    device = torch.device(device) if device is not None else default_device()
    first = specs[0]
    key = structure_key(first)
    if key is None:
        raise ValueError(f"{names[0]}: unsupported modifier types for the batched engine")
    channels = [(c["name"], len(c["samples"][0]["data"])) for c in first["channels"]]
    offset = dict(
        zip([c for c, _ in channels], np.cumsum([0] + [n for _, n in channels[:-1]]), strict=True)
    )
    nbins = dict(channels)
    observations = {o["name"]: o["data"] for o in first["observations"]}
    observed = np.concatenate([np.asarray(observations[c], dtype=float) for c, _ in channels])
    measurement = first["measurements"][0]["config"]
    overrides = {p["name"]: p for p in measurement.get("parameters", [])}

    kinds: dict[str, str] = {}
    with_hist: set[str] = set()
    with_norm: set[str] = set()
    stat_channel: dict[str, str] = {}
    rows: dict[tuple[str, str], int] = {}
    for spec in specs:
        for channel in spec["channels"]:
            for sample in channel["samples"]:
                rows.setdefault((channel["name"], sample["name"]), len(rows))
                for mod in sample["modifiers"]:
                    kinds[mod["name"]] = _CATEGORY.get(mod["type"], mod["type"])
                    if mod["type"] == "histosys":
                        with_hist.add(mod["name"])
                    elif mod["type"] == "normsys":
                        with_norm.add(mod["name"])
                    if mod["type"] in {"staterror", "shapesys"}:
                        stat_channel[mod["name"]] = channel["name"]
    row_start = {}
    j = 0
    bin_of = []
    for (channel, sample), _ in sorted(rows.items(), key=lambda kv: kv[1]):
        row_start[(channel, sample)] = j
        bin_of.extend(range(offset[channel], offset[channel] + nbins[channel]))
        j += nbins[channel]
    n_j, n = j, len(specs)

    par_names: list[str] = []
    par_kind: list[str] = []
    par_bin: list[int] = []  # global bin for staterror parameters, −1 otherwise
    index: dict[str, int] = {}
    for name in sorted(kinds):
        index[name] = len(par_names)
        if kinds[name] in {"staterror", "shapesys"}:
            ch = stat_channel[name]
            for b in range(nbins[ch]):
                par_names.append(f"{name}[{b}]")
                par_kind.append(kinds[name])
                par_bin.append(int(offset[ch]) + b)
        else:
            par_names.append(name)
            par_kind.append(kinds[name])
            par_bin.append(-1)
    p = len(par_names)
    init = np.zeros(p)
    bounds = np.zeros((p, 2))
    fixed_cfg = np.zeros(p, dtype=bool)
    for i, kind in enumerate(par_kind):
        init[i], bounds[i] = _defaults(kind)
    for name, cfg in overrides.items():
        if name not in index:
            continue
        i = index[name]
        size = nbins[stat_channel[name]] if kinds[name] in {"staterror", "shapesys"} else 1
        if "inits" in cfg:
            init[i : i + size] = cfg["inits"]
        if "bounds" in cfg:
            bounds[i : i + size] = cfg["bounds"]
        if cfg.get("fixed"):
            fixed_cfg[i : i + size] = True
    poi_name = measurement["poi"]
    if poi_name not in index:
        raise ValueError(f"{names[0]}: no sample carries the POI {poi_name!r}")

    hist_pars = [index[name] for name in sorted(with_hist)]
    norm_pars = [index[name] for name in sorted(with_norm)]
    factor_pars = [
        i for i, k in enumerate(par_kind) if k in {"normfactor", "lumi", "staterror", "shapesys"}
    ]
    constrained = [
        i for i, k in enumerate(par_kind) if k in {"alpha", "lumi", "staterror", "shapesys"}
    ]
    hpos = {i: a for a, i in enumerate(hist_pars)}
    npos = {i: a for a, i in enumerate(norm_pars)}
    fpos = {i: a for a, i in enumerate(factor_pars)}
    cpos = {i: a for a, i in enumerate(constrained)}

    nominal = np.zeros((n, n_j))
    hist_up = np.zeros((n, len(hist_pars), n_j))
    hist_down = np.zeros((n, len(hist_pars), n_j))
    norm_up = np.ones((n, len(norm_pars), n_j))
    norm_down = np.ones((n, len(norm_pars), n_j))
    factor_mask = np.zeros((n, len(factor_pars), n_j))
    aux_init = np.array([0.0 if par_kind[i] == "alpha" else 1.0 for i in constrained])
    sigma_base = np.ones(len(constrained))
    if "lumi" in kinds:
        lumi_cfg = overrides.get(next(k for k, v in kinds.items() if v == "lumi"), {})
        li = index[next(k for k, v in kinds.items() if v == "lumi")]
        sigma_base[cpos[li]] = lumi_cfg.get("sigmas", [1.0])[0]
        aux_init[cpos[li]] = lumi_cfg.get("auxdata", [1.0])[0]
    sigma = np.tile(sigma_base, (n, 1))
    aux_init = np.tile(aux_init, (n, 1))
    tau = np.ones((n, len(constrained)))
    poisson = np.array([par_kind[i] == "shapesys" for i in constrained], dtype=bool)
    fixed = np.tile(fixed_cfg, (n, 1))
    signal_yield = np.zeros(n)
    stat_nom = np.zeros((n, len(observed)))
    stat_var = np.zeros((n, len(observed)))

    for h, spec in enumerate(specs):
        if structure_key(spec) != key:
            raise ValueError(f"{names[h]}: structure differs from {names[0]}; cannot be stacked")
        for channel in spec["channels"]:
            cname, nb = channel["name"], nbins[channel["name"]]
            for sample in channel["samples"]:
                start = row_start[(cname, sample["name"])]
                cols = slice(start, start + nb)
                nom = np.asarray(sample["data"], dtype=float)
                nominal[h, cols] = nom
                for mod in sample["modifiers"]:
                    kind, i = mod["type"], index[mod["name"]]
                    data = mod["data"]
                    try:
                        if kind == "histosys":
                            hi = np.asarray(data["hi_data"], dtype=float)
                            lo = np.asarray(data["lo_data"], dtype=float)
                            if hi.shape != nom.shape or lo.shape != nom.shape:
                                raise ValueError("bins")
                            hist_up[h, hpos[i], cols] += hi - nom
                            hist_down[h, hpos[i], cols] += nom - lo
                        elif kind == "normsys":
                            norm_up[h, npos[i], cols] *= float(data["hi"])
                            norm_down[h, npos[i], cols] *= float(data["lo"])
                        elif kind in {"normfactor", "lumi"}:
                            factor_mask[h, fpos[i], cols] = 1.0
                            if kind == "normfactor" and mod["name"] == poi_name:
                                signal_yield[h] += nom.sum()
                        elif kind == "shapesys":
                            unc = np.asarray(data, dtype=float)
                            if unc.shape != nom.shape:
                                raise ValueError("bins")
                            for b in range(nb):
                                factor_mask[h, fpos[i + b], start + b] = 1.0
                                valid = nom[b] > 0 and unc[b] > 0
                                factor = nom[b] ** 2 / unc[b] ** 2 if valid else 1.0
                                tau[h, cpos[i + b]] = aux_init[h, cpos[i + b]] = factor
                                fixed[h, i + b] |= not valid
                        else:
                            unc = np.asarray(data, dtype=float)
                            if unc.shape != nom.shape:
                                raise ValueError("bins")
                            o = int(offset[cname])
                            for b in range(nb):
                                factor_mask[h, fpos[i + b], start + b] = 1.0
                            stat_nom[h, o : o + nb] += nom
                            stat_var[h, o : o + nb] += unc**2
                    except (KeyError, TypeError, ValueError):
                        raise ValueError(
                            f"{names[h]}: modifier {mod['name']!r} ({kind}) of sample "
                            f"{sample['name']!r} in channel {cname!r} has malformed data or "
                            f"a bin count other than {nb}"
                        ) from None
        for i, kind in enumerate(par_kind):
            if kind != "staterror":
                continue
            g = par_bin[i]
            rel = math.sqrt(stat_var[h, g]) / stat_nom[h, g] if stat_nom[h, g] > 0 else 0.0
            if rel == 0.0:
                fixed[h, i] = True
                rel = 1.0
            sigma[h, cpos[i]] = rel

    hist_k, hist_j = np.nonzero(((hist_up != 0) | (hist_down != 0)).any(0))
    hist_up, hist_down = hist_up[:, hist_k, hist_j], hist_down[:, hist_k, hist_j]
    norm_k, norm_j = np.nonzero(((norm_up != 1) | (norm_down != 1)).any(0))
    norm_up, norm_down = norm_up[:, norm_k, norm_j], norm_down[:, norm_k, norm_j]
    b0 = np.log(np.where(norm_up > 0, norm_up, 1.0))
    b1 = np.log(np.where(norm_down > 0, norm_down, 1.0))
    rhs = np.stack(
        [
            norm_up - 1,
            norm_down - 1,
            b0 * norm_up,
            -b1 * norm_down,
            b0**2 * norm_up,
            b1**2 * norm_down,
        ],
        axis=-1,
    )
    norm_coef = rhs @ _CODE4_INVERSE.T

    def t(x: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)

    return HistFactoryStack(
        names=tuple(names),
        par_names=tuple(par_names),
        poi=index[poi_name],
        init=t(init),
        lower=t(bounds[:, 0]),
        upper=t(bounds[:, 1]),
        fixed=t(fixed, torch.bool),
        observed=t(observed),
        aux_init=t(aux_init),
        constrained=t(np.asarray(constrained), torch.long),
        sigma=t(sigma),
        poisson=t(poisson, torch.bool),
        tau=t(tau),
        bin_of=t(np.asarray(bin_of), torch.long),
        nominal=t(nominal),
        hist_index=t(np.asarray(hist_pars, dtype=np.int64)[hist_k], torch.long),
        hist_bin=t(hist_j, torch.long),
        hist_up=t(hist_up),
        hist_down=t(hist_down),
        norm_index=t(np.asarray(norm_pars, dtype=np.int64)[norm_k], torch.long),
        norm_bin=t(norm_j, torch.long),
        norm_coef=t(norm_coef),
        norm_up=t(norm_up),
        norm_down=t(norm_down),
        factor_index=t(np.asarray(factor_pars), torch.long),
        factor_mask=t(factor_mask),
        signal_yield=t(signal_yield),
    )


# --------------------------------------------------------------------------------------------
# The likelihood
# --------------------------------------------------------------------------------------------


def _histosys(stack: HistFactoryStack, theta: torch.Tensor, order: int) -> list[torch.Tensor]:
    """code4p deltas per entry and their first ``order`` α-derivatives, each [N, Eh]."""
    alpha = theta.index_select(1, stack.hist_index)
    up, down = stack.hist_up, stack.hist_down
    s_, a_ = 0.5 * (up + down), 0.0625 * (up - down)
    a2 = alpha * alpha
    inside = alpha.abs() <= 1
    outer = torch.where(alpha > 1, up, down)
    out = [torch.where(inside, alpha * s_ + a_ * a2 * (15 - 10 * a2 + 3 * a2 * a2), outer * alpha)]
    if order >= 1:
        out.append(torch.where(inside, s_ + a_ * alpha * (30 - 40 * a2 + 18 * a2 * a2), outer))
    if order >= 2:
        out.append(
            torch.where(inside, a_ * (30 - 120 * a2 + 90 * a2 * a2), torch.zeros_like(alpha))
        )
    return out


def _normsys(stack: HistFactoryStack, theta: torch.Tensor, order: int) -> list[torch.Tensor]:
    """code4 factors per entry [N, En]; with ``order`` ≥ 1 also c'/c, with 2 also c''/c."""
    beta = theta.index_select(1, stack.norm_index)
    k = stack.norm_coef
    poly = 1 + beta * (
        k[..., 0]
        + beta
        * (
            k[..., 1]
            + beta * (k[..., 2] + beta * (k[..., 3] + beta * (k[..., 4] + beta * k[..., 5])))
        )
    )
    log_up, log_down = torch.log(stack.norm_up), torch.log(stack.norm_down)
    high, low = beta >= 1, beta <= -1
    c = torch.where(
        high, torch.exp(beta * log_up), torch.where(low, torch.exp(-beta * log_down), poly)
    )
    out = [c]
    if order >= 1:
        dpoly = k[..., 0] + beta * (
            2 * k[..., 1]
            + beta
            * (
                3 * k[..., 2]
                + beta * (4 * k[..., 3] + beta * (5 * k[..., 4] + beta * 6 * k[..., 5]))
            )
        )
        out.append(torch.where(high, log_up, torch.where(low, -log_down, dpoly / c)))
    if order >= 2:
        ddpoly = 2 * k[..., 1] + beta * (
            6 * k[..., 2]
            + beta * (12 * k[..., 3] + beta * (20 * k[..., 4] + beta * 30 * k[..., 5]))
        )
        out.append(torch.where(high, log_up**2, torch.where(low, log_down**2, ddpoly / c)))
    return out


def _scatter_bins(
    stack: HistFactoryStack, index: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """Sum entry values [N, E] into sample-bins [N, J]."""
    out = values.new_zeros(values.shape[0], stack.nominal.shape[1])
    return out.index_add_(1, index, values)


def expected_rates(
    stack: HistFactoryStack, theta: torch.Tensor, layout: SparseLayout | None = None
) -> torch.Tensor:
    """Expected events per bin, ``theta`` [N, P] → [N, G] (pyhf's ``expected_actualdata``).

    With a ``layout`` worth using (:func:`sparse_layout`) the factors multiply only the
    sample-bins they act on, rather than every sample-bin with a mask."""
    (h,) = _histosys(stack, theta, 0)
    (c,) = _normsys(stack, theta, 0)
    add = stack.nominal + _scatter_bins(stack, stack.hist_bin, h)
    norm = torch.exp(_scatter_bins(stack, stack.norm_bin, torch.log(c)))
    if layout is not None and layout.worthwhile:
        factors = _product(layout, _factor_values(stack, layout, theta), *add.shape)
    else:
        gamma = theta.index_select(1, stack.factor_index).unsqueeze(-1)
        factors = (1 + stack.factor_mask * (gamma - 1)).prod(1)
    rates = add * norm * factors
    out = rates.new_zeros(rates.shape[0], stack.n_bins)
    return out.index_add_(1, stack.bin_of, rates)


def twice_nll(
    stack: HistFactoryStack,
    theta: torch.Tensor,
    data: torch.Tensor,
    aux: torch.Tensor,
    *,
    constants: bool = False,
    layout: SparseLayout | None = None,
) -> torch.Tensor:
    """−2 log L per hypothesis: ``theta`` [N, P], ``data`` [N, G], ``aux`` [N, C] → [N].

    With ``constants`` the normalisation terms are included so the value equals
    ``-2 * pyhf.Model.logpdf``; fits do not need them. ``layout`` as for
    :func:`expected_rates`.
    """
    rates = expected_rates(stack, theta, layout)
    main = rates - torch.xlogy(data, rates)
    value, _, _ = _constraint(stack, theta, aux)
    total = 2 * main.sum(1) + value.sum(1)
    if constants:
        total = total + 2 * torch.lgamma(data + 1).sum(1)
        gauss = torch.log(2 * math.pi * stack.sigma**2)
        total = total + torch.where(stack.poisson, 2 * torch.lgamma(aux + 1), gauss).sum(1)
    return total


def _constraint(
    stack: HistFactoryStack, theta: torch.Tensor, aux: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """−2 log of each constraint term (constants dropped), its derivative and second
    derivative in its parameter; each [N, C].

    Gaussian: ((θ − a)/σ)². Poisson (shapesys): 2(τθ − a ln τθ), minimal at θ = a/τ.
    """
    x = theta.index_select(1, stack.constrained)
    inv_var = 1 / stack.sigma**2
    rate = stack.tau * x
    value = torch.where(
        stack.poisson, 2 * (rate - torch.xlogy(aux, rate)), (x - aux) ** 2 * inv_var
    )
    safe = torch.where(stack.poisson, x, torch.ones_like(x))
    grad = torch.where(stack.poisson, 2 * (stack.tau - aux / safe), 2 * (x - aux) * inv_var)
    curv = torch.where(stack.poisson, 2 * aux / safe**2, 2 * inv_var)
    return value, grad, curv


def asimov_aux(stack: HistFactoryStack, theta: torch.Tensor) -> torch.Tensor:
    """Auxiliary data expected at ``theta`` [N, P] → [N, C] (θ, or τθ for Poisson entries)."""
    x = theta.index_select(1, stack.constrained)
    return torch.where(stack.poisson, stack.tau * x, x)


# --------------------------------------------------------------------------------------------
# Batched bounded Gauss-Newton fits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchFit:
    """Result of :func:`fit_stack` for N rows: parameters [N, P], −2 log L [N], status [N]."""

    theta: torch.Tensor
    twice_nll: torch.Tensor
    converged: torch.Tensor
    gradient: torch.Tensor  # [N] largest free-parameter gradient of −2 log L at the end
    iterations: int


SPARSE_GAIN = 16
"""How many times fewer products the slots of :class:`SparseLayout` must need than the dense
parameter × sample-bin products before :func:`_derivatives` uses them: scattered sums run far
slower per product than matrix products. Measured (RESULTS, "Derivatives in slots"): toys of
campaign searches, which need 590–2,600× fewer, ran 1.8–2.5× faster; the published sbottom
regions need 1.6–1.7× fewer, and there the slots ran 2–12× slower."""


@dataclass(frozen=True)
class SparseLayout:
    """Which parameters touch which sample-bins and bins, for :func:`_derivatives`.

    Almost every parameter of a search touches one bin (a staterror or shapesys γ), so
    derivatives kept per sample-bin (K slots: the distinct parameters acting on it) and per bin
    (Kg slots) cost ``J·K²`` a row instead of the ``P²·J`` of dense parameter × sample-bin
    products (on an 84-parameter search K = 2 and Kg = 4). Slots past a sample-bin's own
    parameters point at parameter 0 and carry zeros.
    """

    slot_param: torch.Tensor  # [J, K] parameter of each sample-bin slot
    norm_slot: torch.Tensor  # [En] flat slot (j·K + k) of each normsys entry
    hist_slot: torch.Tensor  # [Eh] flat slot of each histosys entry
    factor: torch.Tensor  # [M] factor f of each (factor, sample-bin) pair any row uses
    factor_bin: torch.Tensor  # [M] sample-bin of each pair
    factor_slot: torch.Tensor  # [M] flat slot of each pair
    factor_cell: torch.Tensor  # [M] j·Kf + rank of each pair among the sample-bin's factors
    factor_width: int  # Kf: most factors on one sample-bin
    bin_slot: torch.Tensor  # [J·K] flat bin slot (g·Kg + k) of each sample-bin slot
    bin_param: torch.Tensor  # [G, Kg] parameter of each bin slot
    worthwhile: bool  # the slots need SPARSE_GAIN× fewer products than dense matrices


def sparse_layout(stack: HistFactoryStack) -> SparseLayout:
    """The slots of ``stack`` (the union over its rows, so it serves any ``stack.take``)."""
    n_par, n_sb = len(stack.par_names), stack.nominal.shape[1]
    bin_of = stack.bin_of.cpu().numpy()
    used = stack.factor_mask.ne(0).any(0).nonzero().cpu().numpy()  # [M, 2]: (f, j)
    factor, factor_bin = used[:, 0], used[:, 1]
    factor_rank = _rank_within(factor_bin, n_sb)
    factor_width = max(1, int(factor_rank.max(initial=0)) + 1)
    factor_par = stack.factor_index.cpu().numpy()[factor]
    norm_par, norm_bin = stack.norm_index.cpu().numpy(), stack.norm_bin.cpu().numpy()
    hist_par, hist_bin = stack.hist_index.cpu().numpy(), stack.hist_bin.cpu().numpy()
    keys = np.concatenate(
        [norm_bin * n_par + norm_par, hist_bin * n_par + hist_par, factor_bin * n_par + factor_par]
    )
    pairs, slot_of_key = np.unique(keys, return_inverse=True)
    pair_bin, pair_par = pairs // n_par, pairs % n_par
    rank = _rank_within(pair_bin, n_sb)
    k = max(1, int(rank.max(initial=0)) + 1)
    slot_param = np.zeros((n_sb, k), dtype=np.int64)
    slot_param[pair_bin, rank] = pair_par
    flat = pair_bin * k + rank
    norm_slot, hist_slot, factor_slot = np.split(
        flat[slot_of_key], [len(norm_par), len(norm_par) + len(hist_par)]
    )
    bin_keys, bin_rank_of = np.unique(bin_of[pair_bin] * n_par + pair_par, return_inverse=True)
    key_bin, key_par = bin_keys // n_par, bin_keys % n_par
    bin_rank = _rank_within(key_bin, stack.n_bins)
    kg = max(1, int(bin_rank.max(initial=0)) + 1)
    bin_param = np.zeros((stack.n_bins, kg), dtype=np.int64)
    bin_param[key_bin, bin_rank] = key_par
    bin_slot = np.repeat(bin_of * kg, k)  # padding slots: the bin's first slot, with zeros
    bin_slot[flat] = (key_bin * kg + bin_rank)[bin_rank_of]
    device = stack.init.device

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.long, device=device)

    return SparseLayout(
        slot_param=tensor(slot_param),
        norm_slot=tensor(norm_slot),
        hist_slot=tensor(hist_slot),
        factor=tensor(factor),
        factor_bin=tensor(factor_bin),
        factor_slot=tensor(factor_slot),
        factor_cell=tensor(factor_bin * factor_width + factor_rank),
        factor_width=factor_width,
        bin_slot=tensor(bin_slot),
        bin_param=tensor(bin_param),
        worthwhile=n_par * n_par * n_sb >= SPARSE_GAIN * (n_sb * k * k + stack.n_bins * kg * kg),
    )


def _rank_within(group: np.ndarray, groups: int) -> np.ndarray:
    """Each element's position among the elements of its group (in their order)."""
    order = np.argsort(group, kind="stable")
    first = np.searchsorted(group[order], np.arange(groups))
    rank = np.empty_like(group)
    rank[order] = np.arange(len(group)) - first[group[order]]
    return rank


def _product(layout: SparseLayout, values: torch.Tensor, n: int, j: int) -> torch.Tensor:
    """The product [N, J] of each sample-bin's factor values [N, M] (1 where it has none)."""
    cells = values.new_ones(n, j * layout.factor_width)
    cells[:, layout.factor_cell] = values
    return cells.view(n, j, layout.factor_width).prod(2)


Terms = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""The main term's −2 log L [N], gradient [N, P], Gauss-Newton Hessian [N, P, P], and the
second-order part of the exact Hessian [N, P, P] except each parameter's own curvature
(normsys c″/c − (c′/c)², histosys h″, constraints: :func:`_derivatives` adds those), with
``M_j`` and ``∂(−2 log L)/∂ν`` per sample-bin [N, J] for them."""


def _derivatives(
    stack: HistFactoryStack,
    theta: torch.Tensor,
    data: torch.Tensor,
    aux: torch.Tensor,
    layout: SparseLayout | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """−2 log L [N], gradient [N, P], exact Hessian and Gauss-Newton Hessian [N, P, P].

    Analytic, from the factorised rate of each sample-bin j: ``rate_j = A_j · M_j`` with
    ``A_j = nominal + Σ histosys deltas`` (additive in α) and ``M_j = Π normsys · Π factors``
    (multiplicative). No autodiff graph is built, which keeps one Newton iteration for hundreds
    of hypotheses at a few batched products: dense parameter × sample-bin matrix products
    (:func:`_dense_terms`), or, where most parameters touch one bin (``layout.worthwhile``,
    :func:`sparse_layout`, built here when not given), products kept in each sample-bin's few
    parameter slots (:func:`_sparse_terms`).
    """
    layout = sparse_layout(stack) if layout is None else layout
    n, p = theta.shape
    zeros = theta.new_zeros
    h, h1, h2 = _histosys(stack, theta, 2)
    c, ell, curv = _normsys(stack, theta, 2)
    add = stack.nominal + _scatter_bins(stack, stack.hist_bin, h)  # A_j [N, J]
    norm = torch.exp(_scatter_bins(stack, stack.norm_bin, torch.log(c)))
    value, grad, gn, second, mult, r_j = (
        _sparse_terms(stack, layout, theta, data, add, norm, ell, h1)
        if layout.worthwhile
        else _dense_terms(stack, theta, data, add, norm, ell, h1)
    )
    u = r_j * add
    norm_diag = zeros(n, p).index_add_(
        1, stack.norm_index, (curv - ell * ell) * (u * mult).index_select(1, stack.norm_bin)
    )
    hist_diag = zeros(n, p).index_add_(
        1, stack.hist_index, h2 * (r_j * mult).index_select(1, stack.hist_bin)
    )
    c_value, c_grad, c_curv = _constraint(stack, theta, aux)
    value = value + c_value.sum(1)
    grad = grad.index_add(1, stack.constrained, c_grad)
    constraint = zeros(n, p).index_add_(1, stack.constrained, c_curv)
    exact = gn + second
    exact.diagonal(dim1=1, dim2=2).add_(norm_diag + hist_diag + constraint)
    gn.diagonal(dim1=1, dim2=2).add_(constraint)
    return value, grad, exact, gn


def _main_term(
    rates: torch.Tensor, data: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Poisson main term's −2 log L [N], its derivative in each bin's rate ν and the
    Gauss-Newton weight of each bin [N, G]."""
    pos = data > 0
    ratio = torch.where(pos, data / rates, torch.zeros_like(rates))
    value = 2 * (rates - torch.xlogy(data, rates)).sum(1)
    resid = 2 * (1 - ratio)
    weight = 2 * torch.where(pos, data / rates**2, torch.zeros_like(rates))
    return value, resid, weight


def _dense_terms(
    stack: HistFactoryStack,
    theta: torch.Tensor,
    data: torch.Tensor,
    add: torch.Tensor,
    norm: torch.Tensor,
    ell: torch.Tensor,
    h1: torch.Tensor,
) -> Terms:
    """:data:`Terms` from [N, P, J] derivative matrices and their products."""
    n, p = theta.shape
    j = stack.nominal.shape[1]
    zeros = theta.new_zeros
    gamma = theta.index_select(1, stack.factor_index).unsqueeze(-1)
    mask = stack.factor_mask
    v = 1 + mask * (gamma - 1)
    v_safe = v.clamp(min=1e-12)
    mult = norm * v.prod(1)  # M_j
    mult_safe = norm * v_safe.prod(1)
    rates_j = add * mult

    def entries_to_p(index: torch.Tensor, bins: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        flat = zeros(n, p * j).index_add_(1, index * j + bins, values)
        return flat.view(n, p, j)

    big_l = entries_to_p(stack.norm_index, stack.norm_bin, ell)  # ∂log M/∂α (normsys) [N, P, J]
    big_w = zeros(n, p, j).index_add_(1, stack.factor_index, mask / v_safe)  # ∂log M/∂θ_f
    d_mult = mult_safe.unsqueeze(1) * big_w + mult.unsqueeze(1) * big_l  # ∂M_j/∂θ [N, P, J]
    d_add = entries_to_p(stack.hist_index, stack.hist_bin, h1)  # ∂A_j/∂θ
    d_rates_j = add.unsqueeze(1) * d_mult + mult.unsqueeze(1) * d_add

    onehot = torch.nn.functional.one_hot(stack.bin_of, stack.n_bins).to(theta.dtype)  # [J, G]
    rates = rates_j @ onehot  # [N, G]
    jac = d_rates_j @ onehot  # [N, P, G]
    value, resid, weight = _main_term(rates, data)
    grad = (jac * resid.unsqueeze(1)).sum(2)
    gn = (jac * weight.unsqueeze(1)) @ jac.transpose(1, 2)

    r_j = resid @ onehot.T  # [N, J]
    u = r_j * add
    g_fac = mult_safe.unsqueeze(1) * big_w
    second = (big_l * (u * mult).unsqueeze(1)) @ big_l.transpose(1, 2)
    cross = (big_l * u.unsqueeze(1)) @ g_fac.transpose(1, 2)
    second = second + cross + cross.transpose(1, 2)
    ww = (big_w * (u * mult_safe).unsqueeze(1)) @ big_w.transpose(1, 2)
    second = second + ww - torch.diag_embed(ww.diagonal(dim1=1, dim2=2))
    ad = (d_add * r_j.unsqueeze(1)) @ d_mult.transpose(1, 2)
    return value, grad, gn, second + ad + ad.transpose(1, 2), mult, r_j


def _sparse_terms(
    stack: HistFactoryStack,
    layout: SparseLayout,
    theta: torch.Tensor,
    data: torch.Tensor,
    add: torch.Tensor,
    norm: torch.Tensor,
    ell: torch.Tensor,
    h1: torch.Tensor,
) -> Terms:
    """:data:`Terms` from derivatives kept in the slots of ``layout``, scattered into the
    parameter × parameter matrices at the end."""
    n, p = theta.shape
    j, k = layout.slot_param.shape
    g_bins, kg = layout.bin_param.shape
    zeros = theta.new_zeros
    mask = stack.factor_mask[:, layout.factor, layout.factor_bin]  # [N, M]
    v = _factor_values(stack, layout, theta, mask)
    v_safe = v.clamp(min=1e-12)
    mult = norm * _product(layout, v, n, j)  # M_j
    mult_safe = norm * _product(layout, v_safe, n, j)
    rates_j = add * mult

    def slots(index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return zeros(n, j * k).index_add_(1, index, values).view(n, j, k)

    big_l = slots(layout.norm_slot, ell)  # ∂log M_j/∂θ (normsys) [N, J, K]
    big_w = slots(layout.factor_slot, mask / v_safe)  # ∂log M_j/∂θ_f
    d_add = slots(layout.hist_slot, h1)  # ∂A_j/∂θ
    d_mult = mult_safe.unsqueeze(2) * big_w + mult.unsqueeze(2) * big_l  # ∂M_j/∂θ
    d_rates_j = add.unsqueeze(2) * d_mult + mult.unsqueeze(2) * d_add

    rates = zeros(n, g_bins).index_add_(1, stack.bin_of, rates_j)  # [N, G]
    jac = zeros(n, g_bins * kg).index_add_(1, layout.bin_slot, d_rates_j.reshape(n, -1))
    jac = jac.view(n, g_bins, kg)  # ∂rate_g/∂θ in the bin's slots
    value, resid, weight = _main_term(rates, data)
    grad = zeros(n, p).index_add_(
        1, layout.bin_param.view(-1), (jac * resid.unsqueeze(2)).view(n, -1)
    )
    outer = jac.unsqueeze(3) * jac.unsqueeze(2) * weight.view(n, g_bins, 1, 1)
    gn = _scatter_pairs(layout.bin_param, outer, p)

    r_j = resid.index_select(1, stack.bin_of)  # [N, J]
    u = r_j * add
    g_fac = mult_safe.unsqueeze(2) * big_w

    def pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a.unsqueeze(3) * b.unsqueeze(2)  # [N, J, K, K]

    cross = pairs(big_l * u.unsqueeze(2), g_fac)
    ww = pairs(big_w * (u * mult_safe).unsqueeze(2), big_w)
    ww = ww * (1 - torch.eye(k, dtype=ww.dtype, device=ww.device))  # no γ² term
    ad = pairs(d_add * r_j.unsqueeze(2), d_mult)
    per_bin = pairs(big_l * (u * mult).unsqueeze(2), big_l) + cross + ww + ad
    per_bin = per_bin + (cross + ad).transpose(2, 3)
    return value, grad, gn, _scatter_pairs(layout.slot_param, per_bin, p), mult, r_j


def _factor_values(
    stack: HistFactoryStack,
    layout: SparseLayout,
    theta: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each (factor, sample-bin) pair's multiplier ``1 + mask · (γ − 1)`` [N, M]."""
    if mask is None:
        mask = stack.factor_mask[:, layout.factor, layout.factor_bin]
    gamma = theta.index_select(1, stack.factor_index.index_select(0, layout.factor))
    return 1 + mask * (gamma - 1)


def _scatter_pairs(params: torch.Tensor, values: torch.Tensor, p: int) -> torch.Tensor:
    """Sum slot-pair values [N, R, K, K] into [N, P, P] at the slots' parameters [R, K]."""
    n = values.shape[0]
    index = (params.unsqueeze(2) * p + params.unsqueeze(1)).view(-1)
    out = values.new_zeros(n, p * p).index_add_(1, index, values.reshape(n, -1))
    return out.view(n, p, p)


ROUNDOFF = 1e-13
"""Relative size of −2 log L changes below float64 round-off of its sum over bins."""

BOUND_SNAP = 1e-8
"""Distance from a bound, as a fraction of the parameter's range, that counts as on it."""


def _pending_nll(
    stack: HistFactoryStack,
    theta: torch.Tensor,
    data: torch.Tensor,
    aux: torch.Tensor,
    *,
    pending: torch.Tensor,
    layout: SparseLayout,
) -> torch.Tensor:
    """:func:`twice_nll` of the ``pending`` rows [N] (bool), ``inf`` elsewhere: a backtracking
    step re-evaluates only the rows that have not accepted a step yet (in a pass of toys a few
    rows backtrack many times while the others took the full step)."""
    if bool(pending.all()):
        return twice_nll(stack, theta, data, aux, layout=layout)
    rows = pending.nonzero().squeeze(1)
    out = torch.full((theta.shape[0],), math.inf, dtype=theta.dtype, device=theta.device)
    if rows.numel():
        out[rows] = twice_nll(stack.take(rows), theta[rows], data[rows], aux[rows], layout=layout)
    return out


def fit_stack(
    stack: HistFactoryStack,
    data: torch.Tensor,
    aux: torch.Tensor,
    init: torch.Tensor,
    fixed: torch.Tensor,
    *,
    max_iter: int = 100,
    gtol: float = 1e-5,
    decrement_tol: float = 1e-10,
) -> BatchFit:
    """Minimise −2 log L for every row at once within the parameter bounds.

    Projected Gauss-Newton with an active set: a parameter at a bound whose gradient points
    outwards is held for that iteration; steps are backtracked until −2 log L decreases
    (Armijo). The decrease asked for is measured along the step actually taken after
    clipping at the bounds: measured along the unclipped step, a huge step into a bound (μ
    with no events, where −2 log L is linear) asked for a decrease of ~1e13 and was rejected
    at every length. Rows stop when the free gradient is below ``gtol`` or no step helps.

    A parameter closer to a bound than :data:`BOUND_SNAP` of its range, with the gradient
    pointing outwards, is moved onto the bound and held too. A backtracked step can leave a
    parameter a hair inside its bound; counted as free, the Newton step of the coupled
    parameters pushes it out again, the projection clips that part at every step length, and
    the projected direction need not descend. A campaign's dimuon S_T background-only fit
    stopped that way at |∇| ≈ 8e4 with ``background_norm`` 4e-10 below its upper bound.

    Args:
        data: Observed counts [N, G]; aux: auxiliary data [N, C]; init: start [N, P];
            fixed: parameters held at their start [N, P] (bool).
    """
    lower, upper = stack.lower, stack.upper
    snap = BOUND_SNAP * (upper - lower)
    theta = torch.minimum(torch.maximum(init.clone(), lower), upper)
    active = torch.ones(theta.shape[0], dtype=torch.bool, device=theta.device)
    converged = torch.zeros_like(active)
    value = torch.full((theta.shape[0],), math.inf, dtype=theta.dtype, device=theta.device)
    gmax = torch.full_like(value, math.inf)
    iterations = 0
    eye = torch.eye(theta.shape[1], dtype=theta.dtype, device=theta.device)
    layout = sparse_layout(stack)
    for iterations in range(1, max_iter + 1):  # noqa: B007
        rows = active.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        sub = stack.take(rows) if rows.numel() != theta.shape[0] else stack
        th, d, a, fx = theta[rows], data[rows], aux[rows], fixed[rows]
        val, grad, hess_exact, hess_gn = _derivatives(sub, th, d, a, layout)
        at_lower = (th <= lower + snap) & (grad > 0) & ~fx
        at_upper = (th >= upper - snap) & (grad < 0) & ~fx
        onto = (at_lower & (th > lower)) | (at_upper & (th < upper))
        if bool(onto.any()):
            th = torch.where(at_lower, lower, torch.where(at_upper, upper, th))
            val = twice_nll(sub, th, d, a, layout=layout)
        free = ~(fx | at_lower | at_upper)
        g = torch.where(free, grad, torch.zeros_like(grad))
        gm = g.abs().amax(1)
        value[rows], gmax[rows] = val, gm
        mask = free.unsqueeze(1) & free.unsqueeze(2)
        pad = eye.expand_as(hess_gn) * (~free).unsqueeze(1)
        h_exact = torch.where(mask, hess_exact, pad)
        chol, info = torch.linalg.cholesky_ex(h_exact)
        bad = info != 0
        if bool(bad.any()):
            # Not positive definite (away from the minimum): shift the exact Hessian just past
            # its most negative eigenvalue (Levenberg-Marquardt); GN only if that still fails.
            hb = h_exact[bad]
            lam = (-torch.linalg.eigvalsh(hb)[:, 0]).clamp(min=0) * 1.5 + 1e-8 * hb.diagonal(
                dim1=1, dim2=2
            ).abs().mean(1)
            shifted, info_b = torch.linalg.cholesky_ex(hb + lam.view(-1, 1, 1) * eye)
            h_gn = torch.where(mask[bad], hess_gn[bad], pad[bad])
            h_gn = h_gn + eye * (1e-9 * h_gn.diagonal(dim1=1, dim2=2).abs() + 1e-12).unsqueeze(1)
            chol_gn, _ = torch.linalg.cholesky_ex(h_gn)
            chol[bad] = torch.where((info_b == 0).view(-1, 1, 1), shifted, chol_gn)
        step = -torch.cholesky_solve(g.unsqueeze(-1), chol).squeeze(-1)
        slope = (g * step).sum(1)
        small = (gm < gtol) & (-slope < decrement_tol)
        done = small | ~torch.isfinite(val)
        converged[rows] = small
        roundoff = (-slope < 1e3 * decrement_tol) & ~done
        t = torch.ones_like(val)
        accepted = done.clone()
        new_theta = th.clone()
        for _ in range(30):
            trial = torch.minimum(torch.maximum(th + t.unsqueeze(1) * step, lower), upper)
            trial = torch.where(fx, th, trial)
            tv = _pending_nll(sub, trial, d, a, pending=~accepted, layout=layout)
            taken = (g * (trial - th)).sum(1)
            decrease = torch.where(taken < 0, torch.maximum(t * slope, taken), t * slope)
            armijo = tv <= val + 1e-4 * decrease.clamp(max=0)
            level = roundoff & (t == 1) & (tv <= val + ROUNDOFF * val.abs().clamp(min=1.0))
            ok = ~accepted & torch.isfinite(tv) & (armijo | level)
            new_theta[ok] = trial[ok]
            value[rows[ok]] = tv[ok]
            accepted |= ok
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t * 0.5)
        stuck = ~accepted
        converged[rows[stuck & (gm < 1e3 * gtol)]] = True
        theta[rows] = new_theta
        finished = done | stuck
        active[rows[finished]] = False
    return BatchFit(
        theta=theta, twice_nll=value, converged=converged, gradient=gmax, iterations=iterations
    )


# --------------------------------------------------------------------------------------------
# CLs for a stack
# --------------------------------------------------------------------------------------------

FIT_NAMES = ("background_only", "free", "fixed", "fixed_asimov")


@dataclass(frozen=True)
class StackCLs:
    """CLs and fit diagnostics for every hypothesis of a stack (numpy arrays, leading N)."""

    cls_obs: np.ndarray  # [N]
    cls_exp: np.ndarray  # [N, 5]
    mu_hat: np.ndarray  # [N]
    q_obs_raw: np.ndarray  # [N]
    q_asimov_raw: np.ndarray  # [N]
    converged: np.ndarray  # [N, 4] bool, in FIT_NAMES order
    at_bounds: tuple[tuple[str, ...], ...]  # per hypothesis: nuisance parameters on a bound
    signal_yield: np.ndarray  # [N]
    iterations: int
    twice_nll_free: np.ndarray  # [N]
    theta: np.ndarray  # [4, N, P] best-fit parameters of the fits, in FIT_NAMES order
    scan_ok: np.ndarray  # [N] bool: profile-scan confirmation (only computed where requested)
    scan: tuple[Mapping[str, Any], ...]  # per hypothesis: scan details ({} where not scanned)


SCAN_POINTS = (0.0, 0.5, 1.0, 2.0)


def _profile_scan(
    stack: HistFactoryStack,
    rows: torch.Tensor,
    theta0: torch.Tensor,
    asimov: torch.Tensor,
    asimov_aux: torch.Tensor,
    nll_free: torch.Tensor,
    q_asimov: torch.Tensor,
    mu: torch.Tensor,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Confirm tiny-q_A results by fixed-μ profile scans started from pyhf's default start.

    For a weak signal the Asimov statistic is quadratic, q_A(kμ) = k² q_A(μ); the data profile
    must nowhere fall below the free fit. Both are checked with fits independent of the ones
    that produced the result (other start, other μ). ``mu`` holds each hypothesis' tested μ.
    """
    m = rows.numel()
    sub = stack.take(rows.repeat(2 * len(SCAN_POINTS)))
    start = stack.init.expand(sub.nominal.shape[0], -1).clone()
    points = torch.tensor(SCAN_POINTS, dtype=start.dtype, device=start.device)
    mu_col = (points.unsqueeze(1) * mu[rows]).reshape(-1).repeat(2)
    start[:, stack.poi] = mu_col
    fixed = sub.fixed.clone()
    fixed[:, stack.poi] = True
    k = len(SCAN_POINTS)
    data = torch.cat([stack.observed.expand(m * k, -1), asimov[rows].repeat(k, 1)])
    aux = torch.cat([stack.aux_init[rows].repeat(k, 1), asimov_aux[rows].repeat(k, 1)])
    fit = fit_stack(sub, data, aux, start, fixed)
    prof = fit.twice_nll.reshape(2, k, m)
    data_prof = (prof[0] - nll_free[rows]).cpu().numpy()  # [k, m]
    asimov_prof = (prof[1] - prof[1][0]).cpu().numpy()
    qa = q_asimov[rows].cpu().numpy()
    ok = np.zeros(m, dtype=bool)
    info = []
    for i in range(m):
        expected = np.asarray(SCAN_POINTS) ** 2 * qa[i]
        quadratic = np.allclose(asimov_prof[:, i], expected, rtol=0.1, atol=1e-9)
        minimum = bool(data_prof[:, i].min() >= -1e-8)
        converged = bool(fit.converged.reshape(2, k, m)[:, :, i].all())
        ok[i] = quadratic and minimum and converged
        info.append(
            {
                "scan_mu": [float(x * mu[rows[i]]) for x in SCAN_POINTS],
                "data_twice_nll_minus_free": data_prof[:, i].tolist(),
                "asimov_q": asimov_prof[:, i].tolist(),
                "asimov_q_expected_quadratic": expected.tolist(),
                "scan_converged": converged,
            }
        )
    return ok, info


STARTS = ("background_fit", "suggested_init")
"""Starts of every fit to data and of the μ-fixed fit to Asimov data; the lower −2 log L wins.

Published likelihoods can have several minima (SUSY-2018-31 region A: a jet-energy-resolution
nuisance parameter with near-symmetric variations has wells at ±0.71), and which one a fit
finds depends on where it starts. Starting from both the background-only fit and the model's
suggested init finds the deeper well in both places pyhf's own fits would start."""


FLIP_PULL = 0.4
"""Constrained parameters fitted further than this (in σ) from their centre are tried mirrored."""
MAX_FLIPS = 16
"""At most this many mirrored parameters (the largest pulls) are tried per fit."""


def _flip_polish(
    stack: HistFactoryStack,
    fit: BatchFit,
    data: torch.Tensor,
    aux: torch.Tensor,
    fixed: torch.Tensor,
    rows: torch.Tensor,
) -> BatchFit:
    """Refit from each large pull mirrored through its constraint centre; keep what is lower.

    Nuisance parameters with near-symmetric up/down variations have two wells at ±α (region A
    of SUSY-2018-31 has three such jet-energy-resolution parameters near ±0.7–0.8), and a
    local fit keeps whichever it fell into. Reflecting one pulled parameter at a time (the
    others stay) and refitting reaches the other well of each in one batched pass. Only the
    interpolated parameters (normsys, histosys) can make such wells; the γ factors of
    staterror, shapesys and lumi enter a convex likelihood and are not tried.

    Args:
        fit: fits of ``len(rows)`` rows; rows index hypotheses of ``stack``; ``data``, ``aux``,
            ``fixed`` are the fits' inputs, one row each.
    """
    index = stack.constrained
    centre = stack.aux_init.index_select(0, rows)
    sigma = stack.sigma.index_select(0, rows)
    pull = ((fit.theta[:, index] - centre) / sigma).abs()
    interpolated = torch.zeros(stack.lower.shape[0], dtype=torch.bool, device=index.device)
    interpolated[stack.hist_index] = True
    interpolated[stack.norm_index] = True
    free = ~fixed[:, index] & interpolated[index]
    pull = torch.where(free & fit.converged.unsqueeze(1), pull, torch.zeros_like(pull))
    k = min(MAX_FLIPS, pull.shape[1])
    if k == 0:
        return fit
    top, which = pull.topk(k, dim=1)
    origin, slot = (top > FLIP_PULL).nonzero(as_tuple=True)
    if origin.numel() == 0:
        return fit
    parameter = index[which[origin, slot]]
    start = fit.theta[origin].clone()
    position = torch.arange(origin.numel(), device=start.device)
    start[position, parameter] = (
        2 * centre[origin, which[origin, slot]] - start[position, parameter]
    )
    start = torch.minimum(torch.maximum(start, stack.lower), stack.upper)
    flipped = fit_stack(stack.take(rows[origin]), data[origin], aux[origin], start, fixed[origin])
    score = torch.where(
        flipped.converged & torch.isfinite(flipped.twice_nll),
        flipped.twice_nll,
        torch.full_like(flipped.twice_nll, math.inf),
    )
    best = fit.twice_nll.clone()
    best_flip = torch.full_like(best, -1, dtype=torch.long)
    for i in torch.argsort(score).tolist():
        r = int(origin[i])
        if score[i] < best[r] - 1e-9 and best_flip[r] < 0:
            best[r], best_flip[r] = score[i], i
    take = best_flip >= 0
    theta, value = fit.theta.clone(), fit.twice_nll.clone()
    converged, gradient = fit.converged.clone(), fit.gradient.clone()
    chosen = best_flip[take]
    theta[take], value[take] = flipped.theta[chosen], flipped.twice_nll[chosen]
    converged[take], gradient[take] = flipped.converged[chosen], flipped.gradient[chosen]
    return BatchFit(
        theta=theta,
        twice_nll=value,
        converged=converged,
        gradient=gradient,
        iterations=fit.iterations + flipped.iterations,
    )


def _lowest_of_starts(fit: BatchFit, n_starts: int) -> BatchFit:
    """Per row, the converged start with the lowest −2 log L (rows are start-major)."""
    value = fit.twice_nll.reshape(n_starts, -1)
    converged = fit.converged.reshape(n_starts, -1)
    score = torch.where(converged & torch.isfinite(value), value, torch.full_like(value, math.inf))
    first_ok = converged[0] & torch.isfinite(value[0])
    best = torch.where(
        torch.isfinite(score).any(0), score.argmin(0), torch.zeros_like(first_ok, dtype=torch.long)
    )
    best = torch.where(first_ok & (score[0] <= score.min(0).values), torch.zeros_like(best), best)
    pick = best * value.shape[1] + torch.arange(value.shape[1], device=value.device)
    return BatchFit(
        theta=fit.theta[pick],
        twice_nll=fit.twice_nll[pick],
        converged=fit.converged[pick],
        gradient=fit.gradient[pick],
        iterations=fit.iterations,
    )


def stack_cls(
    stack: HistFactoryStack, *, mu: float | Sequence[float] = 1.0, scan_below: float = 1e-6
) -> StackCLs:
    """Asymptotic qtilde CLs at ``mu`` for all hypotheses of ``stack`` with three batched fits.

    ``mu`` is one signal strength for every hypothesis or one per hypothesis: a stack of one
    workspace repeated then gives its CLs curve in one pass (:mod:`searches.stats.limits`).

    The background-only fit (μ = 0) gives the Asimov data and the start of every other fit;
    the free and μ-fixed fits to data and the μ-fixed fit to Asimov data then run as one batch
    of 3N rows. The free fit to Asimov data is the Asimov point itself (every Poisson and
    Gaussian term is at its maximum there), so it needs no fit.
    """
    n, device = len(stack.names), stack.init.device
    poi = stack.poi
    tested = torch.as_tensor(mu, dtype=stack.init.dtype, device=device)
    if tested.dim() > 1 or (tested.dim() == 1 and tested.numel() != n):
        raise ValueError(
            f"mu: one value or one per hypothesis ({n}); got shape {tuple(tested.shape)}"
        )
    tested = tested.expand(n).clone()
    data = stack.observed.expand(n, -1)
    aux = stack.aux_init
    start = stack.init.expand(n, -1).clone()
    start[:, poi] = 0.0
    poi_fixed = stack.fixed.clone()
    poi_fixed[:, poi] = True
    background = fit_stack(stack, data, aux, start, poi_fixed)
    background = _flip_polish(
        stack, background, data, aux, poi_fixed, torch.arange(n, device=device)
    )
    theta0 = background.theta
    with torch.no_grad():
        asimov = expected_rates(stack, theta0)
        aux_asimov = asimov_aux(stack, theta0)
        free_asimov = twice_nll(stack, theta0, asimov, aux_asimov)

    rows = torch.arange(n, device=device).repeat(3 * len(STARTS))
    big = stack.take(rows)
    starts = []
    origins = {"background_fit": theta0, "suggested_init": stack.init.expand(n, -1)}
    for origin in STARTS:
        init = origins[origin].repeat(3, 1)
        init[n:, poi] = tested.repeat(2)
        starts.append(init)
    fixed = torch.cat([stack.fixed, poi_fixed, poi_fixed])
    fit_data = torch.cat([data, data, asimov])
    fit_aux = torch.cat([aux, aux, aux_asimov])
    fits = _lowest_of_starts(
        fit_stack(
            big,
            fit_data.repeat(len(STARTS), 1),
            fit_aux.repeat(len(STARTS), 1),
            torch.cat(starts),
            fixed.repeat(len(STARTS), 1),
        ),
        len(STARTS),
    )
    fits = _flip_polish(stack, fits, fit_data, fit_aux, fixed, rows[: 3 * n])
    nll = fits.twice_nll.reshape(3, n)
    mu_hat = fits.theta[:n, poi]
    q_obs = torch.where(mu_hat > tested, torch.zeros_like(mu_hat), nll[1] - nll[0])
    q_asimov = nll[2] - free_asimov
    q_obs_np = q_obs.cpu().numpy()
    q_asimov_np = q_asimov.cpu().numpy()
    with np.errstate(all="ignore"):
        cls_obs, cls_exp = cls_from_statistics(q_obs_np, q_asimov_np)
    converged = (
        torch.stack([background.converged, *fits.converged.reshape(3, n)], dim=1).cpu().numpy()
    )

    width = stack.upper - stack.lower
    thetas = torch.stack([theta0, *fits.theta.reshape(3, n, -1)])  # [4, N, P]
    free = ~stack.fixed
    free[:, poi] = False
    hit = (((thetas - stack.lower) < 1e-6 * width) | ((stack.upper - thetas) < 1e-6 * width)).any(
        0
    ) & free
    at_bounds = tuple(
        tuple(stack.par_names[i] for i in row.nonzero().squeeze(1).tolist()) for row in hit.cpu()
    )
    scan_ok = np.zeros(n, dtype=bool)
    scan_info: list[Mapping[str, Any]] = [{} for _ in range(n)]
    weak = ((q_asimov <= scan_below) & (q_asimov > 0)).nonzero().squeeze(1)
    if weak.numel():
        ok, info = _profile_scan(stack, weak, theta0, asimov, aux_asimov, nll[0], q_asimov, tested)
        for r, good, item in zip(weak.tolist(), ok, info, strict=True):
            scan_ok[r], scan_info[r] = good, item
    return StackCLs(
        twice_nll_free=nll[0].cpu().numpy(),
        theta=thetas.cpu().numpy(),
        scan_ok=scan_ok,
        scan=tuple(scan_info),
        cls_obs=np.asarray(cls_obs, dtype=float),
        cls_exp=np.stack(cls_exp, axis=1).astype(float),
        mu_hat=mu_hat.cpu().numpy(),
        q_obs_raw=q_obs_np,
        q_asimov_raw=q_asimov_np,
        converged=converged,
        at_bounds=at_bounds,
        signal_yield=stack.signal_yield.cpu().numpy(),
        iterations=background.iterations + fits.iterations,
    )


def row_problems(out: StackCLs, row: int) -> list[str]:
    """:func:`~searches.stats.robust.diagnose` for one hypothesis of :func:`stack_cls`."""
    converged = dict(zip(FIT_NAMES, (bool(v) for v in out.converged[row]), strict=True))
    return diagnose(
        cls_obs=float(out.cls_obs[row]),
        cls_exp=[float(v) for v in out.cls_exp[row]],
        q_obs_raw=float(out.q_obs_raw[row]),
        q_asimov_raw=float(out.q_asimov_raw[row]),
        converged=converged,
        # A converged fit on a bound satisfies the bound's optimality condition (the gradient
        # points outwards): a physical boundary, recorded but not a failure.
        at_bounds=() if all(converged.values()) else out.at_bounds[row],
        signal_yield=float(out.signal_yield[row]),
    )


def confirmed_weak(out: StackCLs, row: int, problems: Sequence[str]) -> bool:
    """Whether the only problem is a q_A ≈ 0 that the profile scan confirmed (CLs finite)."""
    weak = len(problems) == 1 and problems[0].startswith("q_A = ") and "≈ 0" in problems[0]
    return weak and bool(out.scan_ok[row]) and bool(np.isfinite(out.cls_obs[row]))


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _as_patch(item: Any) -> tuple[str, dict[str, float], list[dict[str, Any]]]:
    """(name, parameters, operations) from a SignalPatch, a mapping or a (name, ops) pair."""
    if hasattr(item, "operations"):
        return item.name, dict(item.parameters), [dict(op) for op in item.operations]
    if isinstance(item, Mapping):
        return str(item["name"]), dict(item.get("parameters", {})), list(item["operations"])
    name, ops = item
    return str(name), {}, list(ops)


def patched_specs(
    background: Mapping[str, Any], patches: Sequence[Any], *, region: str = ""
) -> tuple[list[tuple[str, dict[str, float], list[dict[str, Any]]]], list[dict]]:
    """Each patch as (name, parameters, operations) and the workspace it makes.

    Raises:
        ValueError: A patch that does not apply, named with its region.
    """
    items = [_as_patch(p) for p in patches]
    specs = []
    for name, _, ops in items:
        try:
            specs.append(patched_spec(background, ops))
        except ValueError as error:
            raise ValueError(f"{region + '/' if region else ''}{name}: {error}") from None
    return items, specs


BATCH_SIZE = 8
"""Hypotheses per stacked fit. The batched Newton iterations run until the slowest member of a
stack has converged, so one hard hypothesis makes its whole stack iterate: on the 650 sbottom
patches (one core) a whole region per stack costs 233 CPU-s, stacks of 40 21 CPU-s and stacks of
5–10 about 10 CPU-s (benchmarks/RESULTS.md)."""


def evaluate_patches(
    bkg_workspace: Mapping[str, Any],
    patches: Sequence[Any],
    *,
    backend: Backend = "auto",
    device: torch.device | str | None = None,
    mu: float = 1.0,
    region: str = "",
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
    check_bounds: bool = True,
    pyhf_attempts: int | None = None,
) -> list[CLsResult]:
    """CLs (observed and expected band) at ``mu`` for every signal patch of one background.

    Pure function of its inputs, so a Ray task can call it on a chunk of patches.

    Args:
        bkg_workspace: Background-only pyhf workspace specification.
        patches: :class:`~searches.likelihoods.SignalPatch` objects, mappings with ``name``,
            ``operations`` (and optionally ``parameters``), or ``(name, operations)`` pairs.
        backend: ``torch`` (batched engine; structures it cannot stack fall back to pyhf),
            ``pyhf`` (plain pyhf per patch, with the same checks and retries), or ``auto``
            (= ``torch``).
        device: Torch device for the batched engine; default: CUDA when available, else CPU.
        mu: Signal strength tested.
        region: Copied into each result.
        progress: Called with the number of patches just finished.
        batch_size: Hypotheses fitted together in one stack (see :data:`BATCH_SIZE`).
        check_bounds, pyhf_attempts: Passed to :func:`~searches.stats.robust.robust_hypotest`
            (as ``check_bounds`` and ``attempts``) for the hypotheses that fall back to plain
            pyhf.

    Returns:
        One :class:`~searches.stats.robust.CLsResult` per patch, in input order. Hypotheses whose
        fits fail a check are re-run through :func:`~searches.stats.robust.robust_hypotest` and
        come back ``recovered`` or ``failed``, never silently allowed or excluded.

    Raises:
        ValueError: Unknown backend, or a patch that does not apply to the background.
    """
    if backend not in ("auto", "torch", "pyhf"):
        raise ValueError(f"backend must be one of 'auto', 'torch', 'pyhf', got {backend!r}")
    dev = torch.device(device) if device is not None else default_device()
    items, specs = patched_specs(bkg_workspace, patches, region=region)
    results: list[CLsResult | None] = [None] * len(items)
    groups: dict[str | None, list[int]] = {}
    for i, spec in enumerate(specs):
        key = structure_key(spec) if backend != "pyhf" else None
        groups.setdefault(key, []).append(i)
    stacks: list[tuple[str | None, list[int]]] = []
    for key, members in groups.items():
        step = len(members) if key is None else max(1, batch_size)
        stacks += [(key, members[k : k + step]) for k in range(0, len(members), step)]

    def report(i: int, result: CLsResult) -> None:
        results[i] = result
        if progress is not None:
            progress(1)

    def plain_pyhf(i: int, **earlier: Any) -> None:
        name, params, _ = items[i]
        report(
            i,
            robust_hypotest(
                specs[i],
                name=name,
                parameters=params,
                region=region,
                mu=mu,
                check_bounds=check_bounds,
                attempts=pyhf_attempts,
                **earlier,
            ),
        )

    for key, members in stacks:
        if key is None:
            for i in members:
                plain_pyhf(i)
            continue
        try:
            stack = compile_stack(
                [specs[i] for i in members], [items[i][0] for i in members], device=dev
            )
        except ValueError:
            for i in members:
                plain_pyhf(i)
            continue
        label = f"batched-torch:{dev.type}"
        out = stack_cls(stack, mu=mu)
        for row, i in enumerate(members):
            name, params, _ = items[i]
            problems = row_problems(out, row)
            diagnostics: dict[str, Any] = {
                "q_obs": float(out.q_obs_raw[row]),
                "q_asimov": float(out.q_asimov_raw[row]),
                "signal_yield": float(out.signal_yield[row]),
            }
            if out.at_bounds[row]:
                diagnostics["at_bounds_kkt_satisfied"] = list(out.at_bounds[row])
            if confirmed_weak(out, row, problems):
                diagnostics["scan"] = out.scan[row]
                report(
                    i,
                    CLsResult(
                        name=name,
                        parameters=params,
                        cls_obs=float(out.cls_obs[row]),
                        cls_exp=tuple(float(v) for v in out.cls_exp[row]),
                        mu_hat=float(out.mu_hat[row]),
                        status="recovered",
                        reason=(
                            f"{problems[0]} ({out.signal_yield[row]:.3g} signal events): with "
                            "pyhf's scipy tolerance such a q_A comes out ≤ 0 and CLs is NaN or "
                            "exactly 1; recovered by converged Newton fits (|∇| < 1e-5) and "
                            "log-space CLs tails, confirmed by a fixed-μ profile scan "
                            "(q_A ∝ μ², no point below the free fit)"
                        ),
                        backend=label,
                        region=region,
                        diagnostics=diagnostics,
                    ),
                )
                continue
            if problems:
                plain_pyhf(
                    i,
                    earlier_problems=problems,
                    earlier_backend=label,
                    earlier_statistics={
                        "q_obs_raw": float(out.q_obs_raw[row]),
                        "q_asimov_raw": float(out.q_asimov_raw[row]),
                    },
                )
                continue
            report(
                i,
                CLsResult(
                    name=name,
                    parameters=params,
                    cls_obs=float(out.cls_obs[row]),
                    cls_exp=tuple(float(v) for v in out.cls_exp[row]),
                    mu_hat=float(out.mu_hat[row]),
                    status="ok",
                    reason="",
                    backend=label,
                    region=region,
                    diagnostics=diagnostics,
                ),
            )
    return [r for r in results if r is not None]
