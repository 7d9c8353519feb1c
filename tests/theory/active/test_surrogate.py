"""Tests of theory.active.surrogate: the exact GP's kernel and its fallback."""

from __future__ import annotations

import gpytorch
import numpy as np
import pytest
from botorch.exceptions.errors import ModelFittingError

import theory.active.surrogate as surrogate_module
from theory.active import fit_surrogate


def _data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).random((n, 2))
    return x, np.sin(3.0 * x[:, 0]) + x[:, 1] ** 2


def _kernel(fitted: surrogate_module.Surrogate) -> gpytorch.kernels.Kernel:
    return fitted.outputs[0].model.covar_module


def test_exact_surrogate_is_a_matern_gp_that_interpolates() -> None:
    x, y = _data()
    fitted = fit_surrogate(x, y, seed=0, backend="exact")
    kernel = _kernel(fitted)
    assert isinstance(kernel, gpytorch.kernels.ScaleKernel)
    assert isinstance(kernel.base_kernel, gpytorch.kernels.MaternKernel)
    assert kernel.base_kernel.nu == 2.5
    assert fitted.kernels == (surrogate_module.MATERN,)
    test_x, test_y = _data(200, seed=1)
    mean, var = fitted.predict(test_x)
    assert np.sqrt(np.mean((mean[:, 0] - test_y) ** 2)) < 0.05
    assert (var > 0).all()


def test_a_failed_matern_fit_falls_back_to_botorchs_default_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = surrogate_module.fit_gpytorch_mll
    calls = []

    def first_fails(mll, **kwargs):
        calls.append(type(mll.model.covar_module).__name__)
        if len(calls) == 1:
            raise ModelFittingError("All attempts to fit the model have failed.")
        return real(mll, **kwargs)

    monkeypatch.setattr(surrogate_module, "fit_gpytorch_mll", first_fails)
    x, y = _data()
    with caplog.at_level("WARNING", logger=surrogate_module.__name__):
        fitted = fit_surrogate(x, y, seed=0, backend="exact")
    assert calls == ["ScaleKernel", "RBFKernel"]
    assert isinstance(_kernel(fitted), gpytorch.kernels.RBFKernel)
    assert fitted.kernels == (surrogate_module.FALLBACK,)
    assert "All attempts to fit the model have failed" in fitted.outputs[0].fallback_reason
    assert "fitting BoTorch's default kernel instead" in caplog.text
    mean, _ = fitted.predict(x)
    assert np.sqrt(np.mean((mean[:, 0] - y) ** 2)) < 0.05


@pytest.mark.parametrize("backend", ["exact", "sparse"])
def test_fit_does_not_depend_on_the_process_default_dtype(backend: str) -> None:
    """Same data, same seed, same GP, whether the process default is torch's float32 or the
    float64 that BoTorch users set (gpytorch builds its constraint bounds in the default)."""
    import torch

    x, y = _data()
    test_x, _ = _data(50, seed=2)
    options = {"seed": 0, "backend": backend, "iterations": 20}
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float32)
        reference = fit_surrogate(x, y, **options).predict(test_x)
        torch.set_default_dtype(torch.float64)
        fitted = fit_surrogate(x, y, **options)
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(previous)
    for got, expected in zip(fitted.predict(test_x), reference, strict=True):
        assert np.array_equal(got, expected)
