import numpy as np
import pyhf
import pytest

from searches.stats import counting


def shapesys_model(b: float, sigma: float, s: float, mu_max: float) -> pyhf.pdf.Model:
    """Exactly the model of the fast path: normfactor signal, shapesys background."""
    spec = {
        "channels": [
            {
                "name": "counting",
                "samples": [
                    {
                        "name": "signal",
                        "data": [s],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [b],
                        "modifiers": [{"name": "bkg_unc", "type": "shapesys", "data": [sigma]}],
                    },
                ],
            }
        ],
        "parameters": [{"name": "mu", "bounds": [[0.0, mu_max]]}],
    }
    return pyhf.Model(spec, poi_name="mu")


def random_setups(count: int, seed: int) -> list[tuple[float, float, float, float]]:
    rng = np.random.default_rng(seed)
    setups = []
    for _ in range(count):
        b = 10 ** rng.uniform(0.0, 3.0)
        sigma = b * rng.uniform(0.05, 0.5)
        s = 10 ** rng.uniform(0.0, 2.0) * np.sqrt(b) / 3.0
        n = float(rng.poisson(b + rng.uniform(0, 1) * s))
        setups.append((n, b, sigma, s))
    return setups


@pytest.mark.slow
def test_agrees_with_pyhf_on_random_setups(precise_pyhf):
    setups = random_setups(110, seed=7)
    n, b, sigma, s = (np.array(column) for column in zip(*setups, strict=True))
    fast_cls = counting.cls(n, b, sigma, s, mu_max=100.0)
    fast_p0 = counting.discovery_p0(n, b, sigma, s, mu_max=100.0)
    for i, (ni, bi, si, sig) in enumerate(setups):
        model = shapesys_model(bi, si, sig, 100.0)
        data = [ni, *model.config.auxdata]
        observed, band = pyhf.infer.hypotest(
            1.0, data, model, test_stat="qtilde", return_expected_set=True
        )
        p0, p0_expected = pyhf.infer.hypotest(
            0.0, data, model, test_stat="q0", return_expected=True
        )
        assert fast_cls.observed[i] == pytest.approx(float(observed), rel=1e-3)
        assert np.allclose(fast_cls.expected[:, i], np.asarray(band, dtype=float), rtol=1e-3)
        assert fast_p0.p0[i] == pytest.approx(float(p0), rel=1e-3, abs=1e-12)
        assert fast_p0.p0_expected[i] == pytest.approx(float(p0_expected), rel=1e-3)


@pytest.mark.slow
def test_upper_limits_agree_with_pyhf(precise_pyhf):
    setups = random_setups(6, seed=11)
    n, b, sigma, s = (np.array(column) for column in zip(*setups, strict=True))
    limits = counting.upper_limit(n, b, sigma, s, mu_max=100.0)
    assert limits.observed.shape == (6,)
    assert limits.expected.shape == (5, 6)
    for i, (ni, bi, si, sig) in enumerate(setups):
        model = shapesys_model(bi, si, sig, 100.0)
        observed, expected = pyhf.infer.intervals.upper_limits.upper_limit(
            [ni, *model.config.auxdata], model, level=0.05
        )
        assert limits.observed[i] == pytest.approx(float(observed), rel=2e-3)
        assert np.allclose(limits.expected[:, i], np.asarray(expected, dtype=float), rtol=2e-3)


def test_cls_at_the_limit_is_the_level():
    limits = counting.upper_limit([5.0, 30.0], [4.0, 25.0], [1.0, 5.0], [3.0, 10.0])
    at_limit = counting.cls([5.0, 30.0], [4.0, 25.0], [1.0, 5.0], [3.0, 10.0], mu=limits.observed)
    assert np.allclose(at_limit.observed, 0.05, rtol=1e-6)


def test_broadcasting_and_errors():
    result = counting.cls(np.arange(10.0)[:, None], 5.0, 1.0, np.array([1.0, 2.0, 4.0]))
    assert result.observed.shape == (10, 3)
    assert result.expected.shape == (5, 10, 3)
    with pytest.raises(ValueError, match="'sigma' must be finite and > 0"):
        counting.cls(3.0, 5.0, 0.0, 1.0)
