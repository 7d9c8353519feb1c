from __future__ import annotations

import numpy as np
import torch

from searches.ml.flows import ConditionalFlow, FlowOptions


def test_flow_is_float32_and_seeded_whatever_the_default_dtype():
    """The CATHODE background model gives the same template from the same seed when the
    process default dtype is float64 (BoTorch users set it; pyhf's pytorch backend sets it)."""
    rng = np.random.default_rng(0)
    m = rng.uniform(1.0, 2.0, size=600)
    x = np.column_stack([m + rng.normal(size=600), rng.normal(size=600)])
    options = FlowOptions(transforms=1, hidden=(8,), epochs=2, device="cpu")
    reference = ConditionalFlow(x, m, options=options, seed=3)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        flow = ConditionalFlow(x, m, options=options, seed=3)
        samples = flow.sample(m[:50], seed=1)
        log_prob = flow.log_prob(x[:50], m[:50])
    finally:
        torch.set_default_dtype(previous)
    assert {p.dtype for p in flow.flow.parameters()} == {torch.float32}
    assert np.array_equal(samples, reference.sample(m[:50], seed=1))
    assert np.array_equal(log_prob, reference.log_prob(x[:50], m[:50]))
