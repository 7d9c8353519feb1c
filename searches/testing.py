"""Reference inputs shared by the tests and benchmarks of published likelihoods.

The values are pyhf's own regression values for the ATLAS SUSY-2018-31 sbottom likelihood, as
listed in ``../shared/data/README.md`` (normsys code4, histosys code4p, qtilde, μ = 1): observed
CLs and the expected band from −2σ to +2σ (None where the README gives none).
"""

from __future__ import annotations

SBOTTOM_TARBALL = "likelihoods/atlas-susy-2018-31-sbottom/pyhf-ins1748602-probability-models.tar.gz"
"""The sbottom likelihood, relative to the shared data folder."""

SBOTTOM_REFERENCE: dict[tuple[str, str], tuple[float, tuple[float, ...] | None]] = {
    ("RegionA", "sbottom_1300_205_60"): (
        0.24443627759085326,
        (
            0.09022509053507759,
            0.1937839194960632,
            0.38432344933992,
            0.6557757334303531,
            0.8910420971601081,
        ),
    ),
    ("RegionA", "sbottom_1400_950_60"): (
        0.021373283911064852,
        (
            0.0026445531093281147,
            0.013976126501170727,
            0.06497105816950004,
            0.23644030478043676,
            0.5744785776763938,
        ),
    ),
    ("RegionA", "sbottom_1500_850_60"): (
        0.045367205665400624,
        (
            0.00598431785676406,
            0.026102240062850574,
            0.10093641492218848,
            0.31019245951964736,
            0.6553623337518385,
        ),
    ),
    ("RegionB", "sbottom_1400_550_60"): (
        0.9744675266677597,
        (
            0.9338879894557114,
            0.9569045303300702,
            0.9771296335437559,
            0.9916370124133669,
            0.9983701133999316,
        ),
    ),
    ("RegionC", "sbottom_1600_850_60"): (0.711023707425625, None),
}
