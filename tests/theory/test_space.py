from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.space import Parameter, ParameterSpace


def dm_space() -> ParameterSpace:
    return ParameterSpace(
        parameters=(
            Parameter(name="m_med", low=10.0, high=3000.0, log=True),
            Parameter(name="m_chi", low=1.0, high=1500.0, log=True),
        ),
        constraints=("m_chi < m_med / 2",),
    )


def box() -> ParameterSpace:
    return ParameterSpace(
        parameters=(
            Parameter(name="x", low=0.0, high=1.0),
            Parameter(name="y", low=0.0, high=1.0),
        ),
        constraints=("y < x / 2",),
    )


@settings(max_examples=50, deadline=None)
@given(u=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2))
def test_unit_round_trip(u: list[float]) -> None:
    space = dm_space()
    physical = space.from_unit(np.array([u]))
    assert np.all(physical >= [10.0, 1.0]) and np.all(
        physical <= np.array([3000.0, 1500.0]) * (1 + 1e-12)
    )
    np.testing.assert_allclose(space.to_unit(physical), [u], atol=1e-12)


def test_log_parameter_maps_decades_evenly() -> None:
    p = Parameter(name="mass", low=10.0, high=1000.0, log=True)
    assert p.prior == "log-uniform"
    assert p.from_unit(0.5) == pytest.approx(100.0)
    assert p.to_unit(1000.0) == pytest.approx(1.0)


def test_point_forms_agree() -> None:
    space = dm_space()
    as_dict = space.to_unit({"m_med": 500.0, "m_chi": 10.0})
    as_columns = space.to_unit({"m_med": np.array([500.0]), "m_chi": np.array([10.0])})
    as_array = space.to_unit(np.array([[500.0, 10.0]]))
    np.testing.assert_array_equal(as_dict, as_array)
    np.testing.assert_array_equal(as_columns, as_array)
    assert space.as_dicts(as_array @ np.zeros((2, 2)) + [[500.0, 10.0]]) == [
        {"m_med": 500.0, "m_chi": 10.0}
    ]


def test_contains_checks_bounds_and_constraints() -> None:
    space = dm_space()
    points = np.array([[1000.0, 100.0], [1000.0, 600.0], [5000.0, 10.0], [100.0, 49.0]])
    np.testing.assert_array_equal(space.contains(points), [True, False, False, True])


def test_sample_respects_constraints_and_seed() -> None:
    space = dm_space()
    a = space.sample(2000, seed=3)
    assert a.shape == (2000, 2)
    assert space.contains(a).all()
    np.testing.assert_array_equal(a, space.sample(2000, seed=3))
    assert not np.array_equal(a, space.sample(2000, seed=4))


def test_log_uniform_prior_median_is_geometric_mean() -> None:
    space = ParameterSpace(parameters=(Parameter(name="m", low=10.0, high=1000.0, log=True),))
    draws = space.sample(20_000, seed=1)[:, 0]
    fraction_below = np.mean(draws < 100.0)
    assert abs(fraction_below - 0.5) < 4 * math.sqrt(0.25 / 20_000)


def test_uniform_prior_on_log_scaled_parameter() -> None:
    p = Parameter(name="m", low=10.0, high=1000.0, log=True, prior="uniform")
    draws = p.sample_prior(np.random.default_rng(0), 20_000)
    assert abs(np.mean(draws < 505.0) - 0.5) < 0.015


def test_allowed_and_volume_fractions_match_closed_form() -> None:
    space = box()
    n = 100_000
    sigma = math.sqrt(0.25 * 0.75 / n)
    assert abs(space.allowed_fraction(n=n, seed=2) - 0.25) < 4 * sigma
    fraction, error = space.volume_fraction(lambda p: p[:, 0] > 0.5, n=n, seed=5)
    # Allowed region y < x/2: area with x > 0.5 is (1 - 1/4) / 4 / 0.25 of it = 0.75.
    assert abs(fraction - 0.75) < 4 * error
    assert error == pytest.approx(math.sqrt(0.75 * 0.25 / n), rel=0.05)


def test_callable_checks_are_applied_but_not_serialised() -> None:
    space = ParameterSpace(
        parameters=(Parameter(name="x", low=0.0, high=1.0),),
        checks=(lambda c: c["x"] > 0.9,),
    )
    assert (space.sample(100, seed=0) > 0.9).all()
    assert "checks" not in space.to_json()


def test_json_round_trip() -> None:
    space = dm_space()
    again = ParameterSpace.from_json(space.to_json())
    assert again == space
    np.testing.assert_array_equal(again.sample(10, seed=1), space.sample(10, seed=1))


def test_constraint_language_supports_functions_and_logic() -> None:
    space = ParameterSpace(
        parameters=(Parameter(name="a", low=0.1, high=10.0), Parameter(name="b", low=0.1, high=10)),
        constraints=("sqrt(a) + log(b) < 3 and not (a > 9 or b > 9)", "1 < a <= 5"),
    )
    points = np.array([[4.0, 1.0], [9.5, 1.0], [0.5, 1.0], [4.0, 9.0]])
    np.testing.assert_array_equal(space.contains(points), [True, False, False, False])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "m", "low": 5.0, "high": 5.0}, "low < high"),
        ({"name": "m", "low": 0.0, "high": 5.0, "log": True}, "low > 0"),
        ({"name": "m", "low": 1.0, "high": float("inf")}, "finite"),
        ({"name": "2m", "low": 1.0, "high": 2.0}, "pattern"),
        ({"name": "m", "low": 1.0, "high": 2.0, "prior": "flat"}, "uniform"),
    ],
)
def test_bad_parameters_name_the_problem(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Parameter(**kwargs)


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ("m_x < 3", "unknown name 'm_x'"),
        ("__import__('os').system('true')", "unknown name|not allowed|may be called"),
        ("m_med.real > 1", "Attribute"),
        ("m_med <", "not a valid expression"),
        ("[m_med]", "List"),
    ],
)
def test_bad_constraints_are_rejected(constraint: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ParameterSpace(
            parameters=(Parameter(name="m_med", low=1.0, high=2.0),), constraints=(constraint,)
        )


def test_bad_points_name_the_parameters() -> None:
    space = dm_space()
    with pytest.raises(ValueError, match="missing \\['m_chi'\\]"):
        space.to_unit({"m_med": 100.0})
    with pytest.raises(ValueError, match="expected shape"):
        space.to_unit(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="duplicate"):
        ParameterSpace(parameters=(Parameter(name="a", low=0, high=1),) * 2)
    with pytest.raises(KeyError, match="allowed: m_med, m_chi"):
        space["mass"]


def test_impossible_constraints_fail_clearly() -> None:
    space = ParameterSpace(
        parameters=(Parameter(name="x", low=0.0, high=1.0),), constraints=("x > 2",)
    )
    with pytest.raises(ValueError, match="almost no prior volume"):
        space.sample(10, seed=0)
