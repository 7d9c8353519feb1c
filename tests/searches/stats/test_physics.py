"""Physics validation: an injected localized signal is found where it was put."""

import numpy as np

from searches.methods.scan import ScanOptions, scan_result
from searches.stats import lee


def test_injected_signal_ranks_first_and_is_covered():
    """S/√B ≈ 5 in one of six distributions: that one ranks first, its region covers the mass."""
    rng = np.random.default_rng(2024)
    edges = np.linspace(100.0, 1100.0, 26)
    centres = 0.5 * (edges[1:] + edges[:-1])
    options = ScanOptions(pseudo_rounds=500, systematic=0.02, min_region_bins=1)
    results = []
    for distribution in range(6):
        expected = 400.0 * np.exp(-(centres - 100.0) / (150.0 + 20 * distribution))
        sumw2 = 0.01 * expected
        mean = expected.copy()
        if distribution == 3:
            signal = np.exp(-0.5 * ((centres - 500.0) / 40.0) ** 2)
            window = np.abs(centres - 500.0) < 60.0
            background = expected[window].sum()
            signal *= 5.0 * np.sqrt(background) / signal[window].sum()
            mean = mean + signal
        observed = rng.poisson(mean).astype(float)
        results.append(
            scan_result(
                event_class=f"class{distribution}",
                signature_config={},
                observable="minv",
                edges=edges,
                observed=observed,
                expected=expected,
                sumw2=sumw2,
                options=options,
                seed=distribution,
            )
        )
    ranking = sorted(range(6), key=lambda i: (results[i].p_tilde, results[i].p_local))
    assert ranking[0] == 3
    region = results[3].region
    assert region.low <= 500.0 <= region.high
    assert region.high - region.low <= 300.0
    assert results[3].p_tilde < 0.01
    assert results[3].z_local > 3.0
    outcome = lee.global_significance(results, seed=0)
    assert outcome.search == 3
    assert outcome.p_global < 0.05
