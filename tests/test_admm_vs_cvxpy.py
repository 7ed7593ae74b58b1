"""The ADMM against the independent cvxpy reference: objective and feasibility.

l1 solutions need not be unique, so weights are not compared; the objective of the
ADMM's returned (exactly sparse) weights must match cvxpy's within 1e-3 relative, and
their true violation must be at most 1e-3.
"""
import itertools
import functools

import numpy as np
import pytest

from conftest import make_layer
from solvers import solve

GRID = [
    (relu, per_neuron, upper, fit_bias)
    for relu, per_neuron, upper, fit_bias in itertools.product([True, False], [False, True], [False, True], [True, False])
    if relu or not upper  # upper bounds only exist for ReLU layers
]


def grid_id(case):
    relu, per_neuron, upper, fit_bias = case
    return "-".join([
        "relu" if relu else "linear", "neuron" if per_neuron else "layer",
        "upper" if upper else "zero", "bias" if fit_bias else "nobias",
    ])


@functools.lru_cache(maxsize=None)
def reference(case, wide=False):
    relu, per_neuron, upper, fit_bias = case
    shape = dict(n_samples=12, n_in=20) if wide else {}
    problem, original = make_layer(relu=relu, per_neuron=per_neuron, upper=upper, fit_bias=fit_bias,
                                   seed=hash(case) % 1000, **shape)
    return problem, original, solve(problem, method="cvxpy")


@pytest.mark.parametrize("polish", [True, False], ids=["polish", "admm-only"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", GRID, ids=[grid_id(c) for c in GRID])
def test_admm_matches_cvxpy(case, dtype, polish):
    problem, original, ref = reference(case)
    assert ref.status == "optimal" and ref.violation <= 1e-6
    sol = solve(problem, dtype=dtype, polish=polish)
    assert sol.status == "optimal"
    assert sol.weight.dtype == np.dtype(dtype)
    assert abs(sol.objective - ref.objective) <= 1e-3 * ref.objective
    assert sol.violation <= 1e-3
    assert sol.objective <= problem.objective(*original) * (1 + 1e-3)


@pytest.mark.parametrize("case", GRID[:4], ids=[grid_id(c) for c in GRID[:4]])
def test_admm_matches_cvxpy_when_samples_are_fewer_than_inputs(case):
    """n_samples < n_in + 1: the weight step goes through the matrix-inversion lemma."""
    problem, _, ref = reference(case, wide=True)
    sol = solve(problem)
    assert sol.info["factorization"] == "inversion-lemma"
    assert sol.status == "optimal"
    assert abs(sol.objective - ref.objective) <= 1e-3 * ref.objective
    assert sol.violation <= 1e-3


def test_scs_fallback_solves_the_same_program():
    problem, _, ref = reference(GRID[0])
    scs = solve(problem, method="cvxpy", solver="SCS", eps=1e-7)
    assert scs.info["solver"] == "SCS"
    assert abs(scs.objective - ref.objective) <= 1e-3 * ref.objective
    assert scs.violation <= 1e-3


def test_cvxpy_rejects_an_unknown_solver():
    problem, _, _ = reference(GRID[0])
    with pytest.raises(ValueError, match="solver: got 'MOSEK', needs one of"):
        solve(problem, method="cvxpy", solver="MOSEK")
