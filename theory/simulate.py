"""Simulators: the protocol every event source follows, and the built-in fast simulator.

:class:`FastSimulator` is the embedded default generator: vectorised numpy truth generators
(:mod:`theory.background` for the Standard Model, :mod:`theory.models` for new physics) and a
parametric detector (:mod:`theory.detector`), seeded and deterministic. It produces events in
the schema of :mod:`searches.events` (with the optional ``fatjet`` collection), weighted to
an integrated luminosity: ``weight = σ · L / N`` per process.

SM background cocktail, σ after the generator-level cut (pp at √s = 13 TeV, pb):

==========  ========  =====================================
qcd         1.26e5    leading parton pT > 170 GeV
wjets       6.08e4    W → eν, μν, τν
zee         2.0e3     Z/γ* → ee, m > 50 GeV
zmumu       2.0e3     Z/γ* → μμ, m > 50 GeV
ztautau     2.0e3     Z/γ* → ττ, m > 50 GeV
znunu       4.0e2     Z → νν, pT(Z) > 100 GeV
ttbar       832       inclusive
singletop   300       t-channel + tW + s-channel
gammajets   1.2e3     photon pT > 100 GeV
diboson     182       WW + WZ + ZZ, inclusive
==========  ========  =====================================

Monte Carlo events are shared among processes in proportion to σ with a floor
(``min_fraction`` of the sample per process) so rare processes get events; within a process
the weights sum exactly to σ·L. Signal cross sections are the models' (see
:mod:`theory.models`).

Observed pseudo-data (:func:`pseudo_data`) Poisson-resamples the weighted Monte Carlo: each
event ``i`` appears with integer weight ``k_i ~ Poisson(w_i)`` (events with ``k_i = 0``
dropped). The count in *any* selection is then exactly Poisson with mean equal to the sum of
the background weights in it, which is what the scan compares against, and the sample never
grows beyond the Monte Carlo even when the expectation is 10^10 events. ``unit_weights=True``
instead draws ``N ~ Poisson(Σw)`` events with probability ∝ w, each with weight 1 (only for
expectations small enough to hold in memory).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import awkward as ak
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from searches.progress import progress_bar
from theory.background import PROCESSES, get_process, isr_jets
from theory.detector import DetectorConfig, RecoBlock, reconstruct
from theory.kinematics import Particles
from theory.models.base import Model, Point

PB_PER_FB = 1000.0


@runtime_checkable
class Simulator(Protocol):
    """Anything that turns a model point (and the SM) into events of the Lamppost schema."""

    def signal(
        self, model: Model, point: Point, *, n_events: int, luminosity_fb: float, seed: int
    ) -> ak.Array:
        """``n_events`` signal events at ``point``, weights summing to σ·L."""
        ...

    def background(self, *, n_events: int, luminosity_fb: float, seed: int) -> ak.Array:
        """``n_events`` SM background events, weights summing to Σσ·L."""
        ...


class FastSimulator(BaseModel):
    """The built-in vectorised simulator.

    Attributes:
        detector: the parametric detector.
        processes: background processes to include (default: all of
            :data:`theory.background.PROCESSES`).
        min_fraction: floor on each process's share of the background Monte Carlo.
        tail_boost: importance-sampling exponent for falling pT spectra and the off-shell W
            mass (1 = not reweighted; 2–4 put Monte Carlo events into the TeV tails with
            smaller weights). The Drell-Yan dilepton mass is importance-sampled whatever
            ``tail_boost`` (:class:`theory.background.DrellYanMass`).
        chunk_size: events generated per vectorised batch (bounds memory, not results:
            output depends on the seed and on ``chunk_size``).

    Example:
        >>> sim = FastSimulator()
        >>> bkg = sim.background(n_events=10_000, luminosity_fb=140.0, seed=1)
        >>> len(bkg)
        10000
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    detector: DetectorConfig = DetectorConfig()
    processes: tuple[str, ...] = tuple(PROCESSES)
    min_fraction: float = Field(default=0.02, ge=0.0, le=0.1)
    tail_boost: float = Field(default=1.0, ge=1.0, le=10.0)
    chunk_size: int = Field(default=100_000, ge=1000)

    @field_validator("processes")
    @classmethod
    def _known(cls, processes: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in processes if p not in PROCESSES]
        if unknown or not processes:
            raise ValueError(
                f"processes: unknown {unknown or '(none given)'}; allowed: {', '.join(PROCESSES)}"
            )
        return processes

    # -- background ----------------------------------------------------------------------------

    def cross_sections_pb(self) -> dict[str, float]:
        """σ after the generator-level cut of each included process, pb."""
        return {name: PROCESSES[name].xsec_pb for name in self.processes}

    def allocate(self, n_events: int) -> dict[str, int]:
        """Monte Carlo events per process: ∝ σ with a floor of ``min_fraction`` each.

        Largest-remainder rounding makes the counts add up to ``n_events`` exactly.
        """
        _check_positive("n_events", n_events)
        sigma = np.array(list(self.cross_sections_pb().values()))
        floor = self.min_fraction
        share = floor + (1.0 - floor * len(sigma)) * sigma / sigma.sum()
        exact = n_events * share / share.sum()
        counts = np.floor(exact).astype(np.int64)
        remainder = n_events - counts.sum()
        counts[np.argsort(counts - exact, kind="stable")[:remainder]] += 1
        return dict(zip(self.processes, counts.tolist(), strict=True))

    def process(self, name: str, *, n_events: int, luminosity_fb: float, seed: int) -> ak.Array:
        """``n_events`` events of one background process, weights summing to σ·L."""
        blocks = self._process_blocks(name, n_events, luminosity_fb, seed, progress=None)
        return RecoBlock.concat(blocks).to_events()

    def background_by_process(
        self, *, n_events: int, luminosity_fb: float, seed: int
    ) -> dict[str, ak.Array]:
        """The background sample split by process (same events as :meth:`background`)."""
        blocks = self._background_blocks(n_events, luminosity_fb, seed)
        return {name: RecoBlock.concat(chunks).to_events() for name, chunks in blocks.items()}

    def background(self, *, n_events: int, luminosity_fb: float, seed: int) -> ak.Array:
        """``n_events`` background events over all processes, weights summing to Σσ·L."""
        blocks = self._background_blocks(n_events, luminosity_fb, seed)
        return RecoBlock.concat([c for chunks in blocks.values() for c in chunks]).to_events()

    def _background_blocks(
        self, n_events: int, luminosity_fb: float, seed: int
    ) -> dict[str, list[RecoBlock]]:
        _check_positive("luminosity_fb", luminosity_fb)
        allocation = {k: v for k, v in self.allocate(n_events).items() if v > 0}
        with progress_bar() as progress:
            task = progress.add_task("simulating background", total=n_events)
            return {
                name: self._process_blocks(name, n, luminosity_fb, seed, progress=(progress, task))
                for name, n in allocation.items()
            }

    def _process_blocks(
        self,
        name: str,
        n_events: int,
        luminosity_fb: float,
        seed: int,
        *,
        progress: tuple[object, object] | None,
    ) -> list[RecoBlock]:
        process = get_process(name)
        _check_positive("n_events", n_events)
        stream = list(PROCESSES).index(name)

        def generate(rng: np.random.Generator, n: int) -> tuple[Particles, np.ndarray]:
            return process.generate(rng, n, self.tail_boost)

        return self._run(
            generate, n_events, process.xsec_pb * luminosity_fb * PB_PER_FB, seed, stream, progress
        )

    # -- signal ----------------------------------------------------------------------------

    def signal(
        self, model: Model, point: Point, *, n_events: int, luminosity_fb: float, seed: int
    ) -> ak.Array:
        """``n_events`` events of ``model`` at ``point``, weights summing to σ·L.

        Args:
            model: a model from :func:`theory.models.get_model`.
            point: ``{parameter: value}`` inside ``model.space``.
        """
        _check_positive("n_events", n_events)
        _check_positive("luminosity_fb", luminosity_fb)
        values = model.check_point(point)
        total = model.cross_section_pb(values) * luminosity_fb * PB_PER_FB
        stream = 1000 + zlib.crc32(f"{model.name}:{sorted(values.items())}".encode()) % 100_000

        def generate(rng: np.random.Generator, n: int) -> tuple[Particles, np.ndarray]:
            particles, weight = model.truth(values, n, rng)
            if model.isr_mean > 0:
                particles = Particles.concat([particles, isr_jets(rng, n, model.isr_mean)])
            return particles, weight

        return RecoBlock.concat(
            self._run(generate, n_events, total, seed, stream, None)
        ).to_events()

    def _run(
        self,
        generate: Callable[[np.random.Generator, int], tuple[Particles, np.ndarray]],
        n_events: int,
        total_weight: float,
        seed: int,
        stream: int,
        progress: tuple[object, object] | None,
    ) -> list[RecoBlock]:
        """Generate and reconstruct in chunks; weights of all chunks sum to ``total_weight``."""
        blocks = []
        for chunk, start in enumerate(range(0, n_events, self.chunk_size)):
            n = min(self.chunk_size, n_events - start)
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, chunk)))
            particles, weight = generate(rng, n)
            blocks.append(
                reconstruct(particles, n_events=n, weight=weight, rng=rng, config=self.detector)
            )
            if progress is not None:
                bar, task = progress
                bar.advance(task, n)  # type: ignore[attr-defined]
        scale = total_weight / sum(float(b.weight.sum()) for b in blocks)
        return [b.with_weight(b.weight * scale) for b in blocks]


def pseudo_data(
    events: ak.Array,
    *,
    seed: int,
    unit_weights: bool = False,
    max_events: int = 20_000_000,
) -> ak.Array:
    """Observed pseudo-data drawn from weighted (background, or background + signal) events.

    Args:
        events: weighted Monte Carlo; weights must be non-negative.
        unit_weights: draw ``N ~ Poisson(Σw)`` unit-weight events with probability ∝ w
            instead of integer-weight Poisson resampling (see the module docstring).
        max_events: refuse ``unit_weights`` samples larger than this.

    Returns:
        Events whose weights are positive integers; the expected total equals ``Σw``.
    """
    if not isinstance(events, ak.Array) or "weight" not in events.fields:
        raise ValueError("pseudo_data: field 'weight' missing; expected events of searches.events")
    weight = ak.to_numpy(events["weight"]).astype(np.float64)
    if not np.isfinite(weight).all():
        raise ValueError("pseudo_data: field 'weight' has NaN/inf values; allowed: finite >= 0")
    if (weight < 0).any():
        raise ValueError(
            "pseudo_data: field 'weight' has negative values; allowed: weights >= 0 "
            "(Poisson resampling needs non-negative expectations)"
        )
    rng = np.random.default_rng(seed)
    if not unit_weights:
        k = rng.poisson(weight)
        keep = k > 0
        return ak.with_field(events[keep], k[keep].astype(np.float64), "weight")
    total = float(weight.sum())
    n = int(rng.poisson(total))
    if n > max_events:
        raise ValueError(
            f"pseudo_data: unit_weights would draw {n} events (expected {total:.3g}); "
            f"allowed: at most max_events={max_events}; use integer-weight resampling"
        )
    index = np.sort(rng.choice(len(weight), size=n, p=weight / total))
    return ak.with_field(events[index], np.ones(n), "weight")


def expected_counts(events: ak.Array, mask: np.ndarray | None = None) -> float:
    """Expected number of events (sum of weights), optionally in a selection ``mask`` (n,)."""
    weight = ak.to_numpy(events["weight"])
    return float(weight.sum() if mask is None else weight[np.asarray(mask)].sum())


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} = {value}: must be > 0")


__all__ = [
    "FastSimulator",
    "Simulator",
    "expected_counts",
    "pseudo_data",
]
