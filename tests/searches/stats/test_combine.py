"""Combining one-channel workspaces: shared signal strength and background normalisation."""

from __future__ import annotations

import pyhf
import pytest

from searches.stats.combine import combine
from searches.stats.inference import cls
from searches.stats.workspace import build_workspace, with_signal


def channel(observed: float, *, background: float, signal: float) -> dict:
    spec = build_workspace(
        observed=[observed], expected=[background], sumw2=[1e-4 * background], syst=0.2
    )
    return with_signal(spec, [signal])


def test_identical_channels_combine_like_their_sum():
    """Four identical channels whose normalisation systematic is one shared nuisance have the
    likelihood of their summed counts (the split of a Poisson total between channels of fixed
    ratios carries no information on mu or the nuisance), so CLs equals the one-bin CLs of the
    sums. Per-channel systematics would average down and exclude (CLs 0.023 here)."""
    channels = [channel(n, background=100.0, signal=25.0) for n in (90.0, 100.0, 110.0, 100.0)]
    combined = combine(channels, names=["a", "b", "c", "d"])
    summed = channel(400.0, background=400.0, signal=100.0)
    together, alone = cls(combined), cls(summed)
    assert together.observed == pytest.approx(alone.observed, rel=1e-3)
    assert together.observed > 0.2
    assert together.expected == pytest.approx(alone.expected, rel=1e-3)
    model = pyhf.Workspace(combined).model()
    assert model.config.par_names.count("background_norm") == 1
    assert len([p for p in model.config.par_names if p.startswith("staterror")]) == 4


def test_channel_names_must_be_distinct():
    one = channel(10.0, background=10.0, signal=2.0)
    with pytest.raises(ValueError, match="distinct"):
        combine([one, one], names=["x", "x"])
