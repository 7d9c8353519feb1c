"""Benchmark BSM models: parameters, parametric cross sections and decay signatures.

=============  ============================  ==========================================
name           parameters                    signature
=============  ============================  ==========================================
zprime         mass, g                       Z′ → ee / μμ / ττ / jj / bb
wprime         mass                          W′ → ℓν
qstar          mass                          q* → q γ
leptoquark     mass, beta                    LQ LQ̄ → ℓℓjj / ℓνjj (/ ννjj)
dm_mediator    m_med, m_chi (m_chi<m_med/2)  jet + MET
x_yz           m_X, m_Y                      X → Y Z → two fat jets with substructure
resonance      mass, g, width                X → a b, a, b ∈ {e, mu, tau, gamma, j, b}
=============  ============================  ==========================================

Options go to the constructor through :func:`get_model`, e.g.
``get_model("zprime", channels=("mumu",))``, ``get_model("resonance", a="e", b="mu")``,
``get_model("leptoquark", lepton="e")``, ``get_model("x_yz", m_z=100.0)``.
"""

from __future__ import annotations

from typing import Any

from theory.models.base import Model, Point, log_interp
from theory.models.dark_matter import DarkMatterMediator
from theory.models.lhco import XToYZ
from theory.models.pair import Leptoquark
from theory.models.resonances import ExcitedQuark, Resonance, WPrime, ZPrime

MODELS: dict[str, type[Model]] = {
    "zprime": ZPrime,
    "wprime": WPrime,
    "qstar": ExcitedQuark,
    "leptoquark": Leptoquark,
    "dm_mediator": DarkMatterMediator,
    "x_yz": XToYZ,
    "resonance": Resonance,
}


def get_model(name: str, **options: Any) -> Model:
    """The model registered as ``name``, built with ``options``.

    Raises:
        KeyError: naming the unknown model and listing the allowed names.
        ValueError: for an option value the model does not allow.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}'; allowed: {', '.join(MODELS)}")
    cls = MODELS[name]
    fields = set(getattr(cls, "__dataclass_fields__", {})) - {"name", "signature", "isr_mean"}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TypeError(
            f"model '{name}': unknown options {unknown}; allowed: {', '.join(sorted(fields)) or '(none)'}"
        )
    return cls(**options)


def resonance(a: str, b: str) -> Resonance:
    """The generic narrow resonance X → ``a`` ``b`` (parameters mass, g, width)."""
    return Resonance(a=a, b=b)


__all__ = [
    "MODELS",
    "DarkMatterMediator",
    "ExcitedQuark",
    "Leptoquark",
    "Model",
    "Point",
    "Resonance",
    "WPrime",
    "XToYZ",
    "ZPrime",
    "get_model",
    "log_interp",
    "resonance",
]
