"""The demo campaign: built-in simulation with an injected Z' -> leptons signal.

Small enough to run in a few minutes on a 2-core laptop, large enough to populate a few dozen
event classes and show the injected signal rising to the top after the look-elsewhere
correction.
"""

from __future__ import annotations

from pathlib import Path

DEMO_CAMPAIGN = """\
# Lamppost demo campaign: the built-in simulator, a Z' injected into pseudo-data.
name: demo
seed: 7
luminosity_fb: 140
data:
  background: {simulator: builtin, events: 400000}
  observed:
    pseudo: true
    inject: {model: zprime, point: {mass: 1200, g: 0.1}, events: 20000}
signatures:
  electron: {pt: 25, abs_eta: 2.47}
  muon: {pt: 25, abs_eta: 2.5}
  tau: {pt: 40, abs_eta: 2.5}
  photon: {pt: 25, abs_eta: 2.37}
  jet: {pt: 50, abs_eta: 2.8}
  bjet: {pt: 50, abs_eta: 2.5}
  met_min: 100
  max_jets: 6
  views: [exclusive, jet_inclusive]
observables: [st, minv, met]
class_selection: {min_expected: 10, min_mc_events: 500}
searches:
  - {method: scan, pseudo_rounds: 1000, bin_width_sigma: 2, bin_min_expected: 1}
landscape: {pseudo_experiments: 200, min_events: 100}
execution: {address: local, num_cpus: 2}
store: {store}
"""


def write_demo(directory: Path) -> Path:
    """Write ``demo.yaml`` (store ``<directory>/store``) and return its path."""
    file = directory / "demo.yaml"
    file.write_text(DEMO_CAMPAIGN.replace("{store}", str((directory / "store").absolute())))
    return file


QUICKSTART_CAMPAIGN = """\
# A campaign small enough for a notebook: 60k simulated events, dileptons and jets.
name: quickstart
seed: 11
luminosity_fb: 140
data:
  background: {simulator: builtin, events: 60000}
  observed:
    pseudo: true
    inject: {model: zprime, point: {mass: 1000, g: 0.3}, events: 5000}
signatures:
  electron: {pt: 25, abs_eta: 2.47}
  muon: {pt: 25, abs_eta: 2.5}
  views: [exclusive, jet_inclusive]
observables: [st, minv]
class_selection: {min_expected: 1.0, min_mc_events: 50}
searches:
  - {method: scan, pseudo_rounds: 300, bin_width_sigma: 2, bin_min_expected: 1}
execution: {address: local, num_cpus: 2}
store: {store}
"""


def write_quickstart(directory: Path) -> Path:
    """Write ``quickstart.yaml`` (store ``<directory>/store``), the notebooks' campaign."""
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / "quickstart.yaml"
    file.write_text(QUICKSTART_CAMPAIGN.replace("{store}", str((directory / "store").absolute())))
    return file
