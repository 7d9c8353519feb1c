"""The signal events of a benchmark to reinterpret: from a file, or simulated at a point."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import awkward as ak

from campaign.plan import derive_seed
from campaign.store import Store
from searches.events import EventValidationError
from theory.models import MODELS, get_model
from theory.simulate import FastSimulator


class BenchmarkError(ValueError):
    """A benchmark that cannot be built (bad file, unknown model, bad point)."""


def signal_events(
    store: Store,
    *,
    events: Path | None = None,
    preset: str | None = None,
    xsec_pb: float | None = None,
    model: str | None = None,
    options: Mapping[str, Any] | None = None,
    point: dict[str, float] | None = None,
    n_events: int = 20000,
    seed: int = 0,
) -> tuple[ak.Array, dict[str, Any]]:
    """Signal events weighted to the campaign's luminosity, and a description of them."""
    spec = store.read_json("spec.json")
    luminosity = float(spec["luminosity_fb"])
    if (events is None) == (model is None):
        raise BenchmarkError("give exactly one of --events FILE or --model NAME --point k=v")
    if events is not None:
        from searches.readers import normalise, read_events

        if not Path(events).is_file():
            raise BenchmarkError(f"--events {events}: does not exist or is not a file")
        try:
            signal = read_events(events, preset=preset)
        except EventValidationError as err:
            raise BenchmarkError(str(err)) from None
        if xsec_pb is not None:
            signal = normalise(
                signal,
                xsec_pb=xsec_pb,
                luminosity_fb=luminosity,
                sum_of_weights=float(ak.sum(signal["weight"])),
            )
        return signal, {"label": Path(events).name, "source": str(events), "xsec_pb": xsec_pb}
    if model not in MODELS:
        raise BenchmarkError(f"--model: unknown model {model!r}; allowed: {', '.join(MODELS)}")
    try:
        theory = get_model(model, **dict(options or {}))
    except (TypeError, ValueError) as err:
        raise BenchmarkError(f"--model {model}: {err}") from None
    try:
        theory.check_point(point or {})
    except (ValueError, KeyError) as err:
        raise BenchmarkError(f"--point: {err}") from None
    signal = FastSimulator().signal(
        theory,
        point or {},
        n_events=n_events,
        luminosity_fb=luminosity,
        seed=derive_seed(seed, model, *(f"{k}={v}" for k, v in sorted((point or {}).items()))),
    )
    label = f"{model}(" + ", ".join(f"{k}={v:g}" for k, v in sorted((point or {}).items())) + ")"
    description = {"label": label, "model": model, "point": point, "n_events": n_events}
    if options:
        description["options"] = dict(options)
    return signal, description
