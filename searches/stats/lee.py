"""Look-elsewhere corrections: p̃ of one search, and the global p-value of many.

Within a search, ``p̃`` is the probability that a background-only pseudo-experiment, scanned the
same way, has a minimum local p-value as small as the data's:

    p̃ = (k + 1) / (R + 1),   k = #{pseudo minima <= observed minimum},  R rounds.

Counting the data as one more draw makes ``p̃`` a valid p-value (``P(p̃ <= α) <= α`` even with
ties from discrete counts) and never zero; its resolution is ``1/(R+1)``. A tie must count as
one: with small counts many rounds land on exactly the data's region and count, but the data's
minimum is an exact p-value while a round's passes through its significance (``p → Z → p``) and
is stored to 6 significant digits, which moves it by up to 5e-6 relative, either way. Minima
within :data:`TIE_RTOL` of each other are therefore equal in every comparison here.

Across searches, the global p-value is the probability, under background only, that the
smallest ``p̃`` of all searches is at most the observed smallest ``p̃``. It is built from the
searches' own pseudo-experiments: each round's minimum is ranked within its search, among its
other rounds and the data (a pseudo-``p̃`` on the data's own grid), then, round by round, the smallest pseudo-``p̃`` over searches is taken. Rounds of
different searches are paired at random, i.e. the searches are treated as independent. For
several observables of one event class (the same events) that is conservative: positively
correlated searches give fewer effective trials than independent ones. The Šidák form
``1 − (1 − p̃_min)^N`` is the continuous limit of the same assumption (tested to agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from searches.result import SearchResult
from searches.stats.pvalues import significance

TIE_RTOL = 1e-5
"""Relative distance below which two minimum p-values are one tie (module docstring)."""


def _at_most(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """``a <= b`` up to :data:`TIE_RTOL`, elementwise."""
    return np.asarray(a) <= np.asarray(b) * (1.0 + TIE_RTOL)


def p_tilde(observed_min: float, pseudo_min: ArrayLike) -> float:
    """``(k + 1) / (R + 1)`` with ``k`` pseudo minima ``<=`` the observed minimum (ties count)."""
    pseudo = np.asarray(pseudo_min, dtype=np.float64)
    k = int(np.count_nonzero(_at_most(pseudo, observed_min)))
    return (k + 1) / (len(pseudo) + 1)


def pseudo_p_tilde(pseudo_min: ArrayLike, *, observed_min: float | None = None) -> np.ndarray:
    """The ``p̃`` each pseudo-experiment would get in the place of the data.

    Shape ``(R,) -> (R,)``, same order. With ``observed_min`` the data is one more draw of the
    same background-only ensemble (exchangeable with the rounds): round ``i`` is ranked among
    the other ``R − 1`` rounds *and the data*,
    ``(#{j != i: m_j <= m_i} + [m_obs <= m_i] + 1) / (R + 1)`` — the same resolution and floor,
    ``1/(R + 1)``, as the data's own :func:`p_tilde`. Without it, among the other rounds only:
    ``(#{j != i: m_j <= m_i} + 1) / R``.

    The global p-value compares the data's smallest ``p̃`` with these; were their floors
    different (``1/(R+1)`` for the data, ``1/R`` for a round), a search whose data beat every
    round would be beaten by no pseudo-campaign, however many searches there are.
    """
    pseudo = np.asarray(pseudo_min, dtype=np.float64)
    ordered = np.sort(pseudo)
    at_most = np.searchsorted(ordered, pseudo * (1.0 + TIE_RTOL), side="right")
    if observed_min is None:
        return at_most / len(pseudo)
    return (at_most + _at_most(observed_min, pseudo)) / (len(pseudo) + 1)


def joint_p_global(
    observed_min: Sequence[float], pseudo_min: Sequence[ArrayLike]
) -> tuple[int, float]:
    """Global p-value of the smallest ``p̃`` among searches run on the *same* pseudo-experiments.

    Round ``i`` of every search is one background-only dataset, so the searches' correlation is
    kept, unlike :func:`global_significance`, which pairs rounds of independent searches at
    random. Each search is first calibrated on its own (:func:`p_tilde` for the data,
    :func:`pseudo_p_tilde` for every round), then the smallest ``p̃`` of the data is ranked
    among the smallest ``p̃`` of the rounds. Combining calibrated ``p̃`` rather than raw local
    p-values keeps one search's scale from swamping the other's: a search whose statistic is
    degenerate (the same in the data and every round) has ``p̃ = 1`` everywhere and drops out,
    leaving the other search's global p-value.

    Args:
        observed_min: the data's smallest local p of each search, ``(S,)``.
        pseudo_min: per search, the smallest local p of each round, ``(R,)`` each.

    Returns:
        The index of the search with the smallest ``p̃`` (the first on ties) and the global
        p-value ``(k + 1)/(R + 1)``.
    """
    if not len(observed_min) or len(observed_min) != len(pseudo_min):
        raise ValueError("joint_p_global: give one array of pseudo minima per search (>= 1)")
    observed = [p_tilde(o, p) for o, p in zip(observed_min, pseudo_min, strict=True)]
    rounds = np.min(
        [pseudo_p_tilde(p, observed_min=o) for o, p in zip(observed_min, pseudo_min, strict=True)],
        axis=0,
    )
    best = int(np.argmin(observed))
    return best, p_tilde(observed[best], rounds)


def sidak(p_min: float, n_searches: int) -> float:
    """Probability that the smallest of ``n_searches`` independent uniform p-values is ``<= p_min``."""
    if p_min >= 1.0:
        return 1.0
    return float(-np.expm1(n_searches * np.log1p(-p_min)))


@dataclass(frozen=True)
class GlobalSignificance:
    """The look-elsewhere-corrected outcome of a set of searches.

    Attributes:
        p_tilde_min: smallest observed ``p̃``.
        search: index (in the input order) of the search with that ``p̃``.
        p_global: probability under background only of a smallest ``p̃`` at least as small.
        z_global: its one-sided Gaussian significance; finite even when every round beats the
            data (``p_global = 1``, Z = −∞), where the largest p below 1 that the rounds resolve,
            ``R/(R + 1)``, stands in (a bound, so results stay JSON numbers).
        p_sidak: the Šidák cross-check ``1 − (1 − p̃_min)^N``.
        n_searches: searches combined (those with a ``p̃``).
        n_rounds: global pseudo-rounds used.
        resolution_limited: the data beat every pseudo-experiment of that search (``p̃`` at
            its floor ``1/(R+1)``) or every pseudo-campaign (``p_global`` at its floor): the
            true value is smaller, ``p_global`` is an upper bound and ``z_global`` a lower
            bound; more rounds would sharpen both.
    """

    p_tilde_min: float
    search: int
    p_global: float
    z_global: float
    p_sidak: float
    n_searches: int
    n_rounds: int
    resolution_limited: bool = False


DEFAULT_ROUNDS = 10_000
"""Global pseudo-rounds when no search stored pseudo-experiments of its own."""


def global_significance(
    results: Sequence[SearchResult], *, seed: int, rounds: int | None = None
) -> GlobalSignificance:
    """Global p-value of the smallest ``p̃`` among ``results``.

    A pseudo-campaign pairs one background-only round of every search at random (searches
    are treated as independent). A search that stored its pseudo-experiment minima
    (``pseudo_p_min``) contributes the ``p̃`` each of its rounds would get in the place of the
    data; a search that only reports a calibrated ``p̃`` (the machine-learning searches: a
    Šidák bound over their windows and selections, valid but conservative) contributes a
    uniform draw — what a calibrated p-value is under background only (a conservative ``p̃``
    is at least as large, so the global p-value stays conservative).

    Args:
        results: searches; those without ``p_tilde`` are ignored.
        seed: seed of the random pairing of rounds across searches.
        rounds: global pseudo-rounds; default the largest per-search round count
            (:data:`DEFAULT_ROUNDS` when none has rounds). A search with fewer rounds
            contributes its pseudo-``p̃`` values resampled with replacement.

    Returns:
        The global significance.

    Raises:
        ValueError: when no result has a ``p_tilde``.
    """
    usable = [(i, r) for i, r in enumerate(results) if r.p_tilde is not None]
    if not usable:
        raise ValueError("global_significance: no SearchResult has a 'p_tilde'")
    n_rounds = rounds or max((len(r.pseudo_p_min) for _, r in usable), default=0)
    n_rounds = n_rounds or DEFAULT_ROUNDS
    rng = np.random.default_rng(seed)
    smallest = np.ones(n_rounds)
    for _, result in usable:
        if not len(result.pseudo_p_min):
            draws = rng.uniform(size=n_rounds)
        else:
            values = pseudo_p_tilde(result.pseudo_p_min, observed_min=result.p_local)
            if len(values) == n_rounds:
                draws = rng.permutation(values)
            else:
                draws = rng.choice(values, size=n_rounds, replace=True)
        np.minimum(smallest, draws, out=smallest)
    observed = np.array([r.p_tilde for _, r in usable], dtype=np.float64)
    best = int(np.argmin(observed))
    p_min = float(observed[best])
    k = int(np.count_nonzero(smallest <= p_min))
    p_global = (k + 1) / (n_rounds + 1)
    own_rounds = len(usable[best][1].pseudo_p_min)
    return GlobalSignificance(
        p_tilde_min=p_min,
        search=usable[best][0],
        p_global=p_global,
        z_global=float(significance(min(p_global, n_rounds / (n_rounds + 1)))),
        p_sidak=sidak(p_min, len(usable)),
        n_searches=len(usable),
        n_rounds=n_rounds,
        resolution_limited=bool(
            (own_rounds and p_min <= 1.0 / (own_rounds + 1) * (1 + 1e-12)) or k == 0
        ),
    )
