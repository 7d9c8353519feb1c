"""Bayesian active learning of exclusion contours over theory parameters.

Pure functions: points and CLs in, next points out (no Ray, no campaign). The pieces:

* :mod:`~theory.active.transforms` — CLs to a probit/log latent scale;
* :mod:`~theory.active.surrogate` — exact (BoTorch) and sparse variational (gpytorch) GPs;
* :mod:`~theory.active.acquisition` — straddle, misclassification, entropy, integrated gain;
* :mod:`~theory.active.batch` — kriging-believer batches, damped by posterior correlation;
* :mod:`~theory.active.pool` / :mod:`~theory.active.box` — the two learners;
* :mod:`~theory.active.stopping` — expected misclassified volume fraction;
* :mod:`~theory.active.volume` — posterior of the excluded fraction (joint draws);
* :mod:`~theory.active.choose` — which model to simulate next, per unit cost.
"""

from theory.active.acquisition import ACQUISITIONS, BASELINES, INTEGRATED, POINTWISE
from theory.active.box import BoxHistory, BoxStep, learn_box, propose_box
from theory.active.choose import ModelArm, ModelChoice, choose_model
from theory.active.options import ActiveOptions
from theory.active.pool import PoolHistory, PoolStep, learn_pool, pool_to_unit, propose_pool
from theory.active.stopping import expected_misclassified_fraction
from theory.active.surrogate import Surrogate, fit_surrogate
from theory.active.transforms import cls_to_latent, latent_threshold, latent_to_cls
from theory.active.volume import FractionPosterior, excluded_fraction_posterior

__all__ = [
    "ACQUISITIONS",
    "BASELINES",
    "INTEGRATED",
    "POINTWISE",
    "ActiveOptions",
    "BoxHistory",
    "BoxStep",
    "FractionPosterior",
    "ModelArm",
    "ModelChoice",
    "PoolHistory",
    "PoolStep",
    "Surrogate",
    "choose_model",
    "cls_to_latent",
    "excluded_fraction_posterior",
    "expected_misclassified_fraction",
    "fit_surrogate",
    "latent_threshold",
    "latent_to_cls",
    "learn_box",
    "learn_pool",
    "pool_to_unit",
    "propose_box",
    "propose_pool",
]
