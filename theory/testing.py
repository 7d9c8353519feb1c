"""Test doubles shipped with the package: a small dijet event class from the built-in
simulator, with an optional X → YZ injection (as BoTorch ships synthetic test functions).

Used by the ML method tests (``searches`` may not import ``theory``, tests and users may). Observed
"data" are drawn without replacement from one half of a weighted QCD Monte Carlo sample with
probability ∝ weight (unit weights), so their count is set by the test, not by the
luminosity; the slice's simulated background is the *other* half, so a model trained on the
data is never evaluated on its own training events when applied to the simulation (the
sculpting check). The injected signal count is chosen from S/√B in a window around the
signal peak.
"""

from __future__ import annotations

from functools import cache

import awkward as ak
import numpy as np

from searches import events as event_model
from searches import observables, signatures
from searches.methods.base import ClassSlice
from theory.models import get_model
from theory.simulate import FastSimulator

EVENT_CLASS = "2j+NJet"
OBSERVABLE = "m_j_j"
MASS_MIN = 1500.0
M_X, M_Y = 2500.0, 400.0
CONFIG = signatures.SignatureConfig()


@cache
def _pools() -> tuple[ak.Array, ak.Array, ak.Array]:
    sim = FastSimulator(processes=("qcd",), tail_boost=3.0)
    bkg = sim.background(n_events=800_000, luminosity_fb=140.0, seed=11)
    sig = sim.signal(
        get_model("x_yz"), {"m_X": M_X, "m_Y": M_Y}, n_events=20_000, luminosity_fb=140.0, seed=12
    )

    def select(events: ak.Array) -> ak.Array:
        mask = signatures.class_mask(events, EVENT_CLASS, config=CONFIG)
        m = observables.compute(events, OBSERVABLE, config=CONFIG)
        return events[mask & (np.nan_to_num(m) > MASS_MIN)]

    bkg = select(bkg)
    return bkg[0::2], bkg[1::2], select(sig)


def signal_window() -> tuple[float, float]:
    """±10 % around the X mass, where S/√B is defined."""
    return 0.9 * M_X, 1.1 * M_X


def dijet_slice(*, n_background: int, s_over_sqrt_b: float, seed: int) -> tuple[ClassSlice, int]:
    """A :class:`ClassSlice` of ``n_background`` data events plus injected signal.

    Returns the slice and the number of injected signal events. The slice's simulated
    background is the weighted Monte Carlo pool, normalised to ``n_background`` events.
    """
    pool, simulation, sig = _pools()
    rng = np.random.default_rng(seed)
    w = ak.to_numpy(pool["weight"])
    pick = rng.choice(len(pool), size=n_background, replace=False, p=w / w.sum())
    data = pool[np.sort(pick)]
    lo, hi = signal_window()
    m_b = observables.compute(data, OBSERVABLE, config=CONFIG)
    b_window = float(np.sum((m_b >= lo) & (m_b < hi)))
    m_s = observables.compute(sig, OBSERVABLE, config=CONFIG)
    in_window = float(np.mean((m_s >= lo) & (m_s < hi)))
    n_signal = round(s_over_sqrt_b * np.sqrt(b_window) / in_window)
    parts = [data]
    if n_signal:
        parts.append(sig[rng.choice(len(sig), size=n_signal, replace=False)])
    observed = event_model.concatenate(parts)
    observed = ak.with_field(observed, np.ones(len(observed)), "weight")
    w_sim = ak.to_numpy(simulation["weight"])
    background = ak.with_field(simulation, w_sim / w_sim.sum() * n_background, "weight")
    return (
        ClassSlice(
            event_class=EVENT_CLASS,
            signatures=CONFIG.model_dump(),
            observed=observed,
            background=background,
            observables=(OBSERVABLE,),
        ),
        n_signal,
    )


def signal_events() -> ak.Array:
    """The X → YZ signal pool of the class (for supervised training)."""
    return _pools()[2]
