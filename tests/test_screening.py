"""Screening: inputs whose weights are zero at every optimum are dropped before the ADMM,
and the answer is an answer of the full program (checked against cvxpy)."""
import numpy as np
import pytest

from conftest import make_layer
from solvers import LayerProblem, solve
from solvers._screening import dead_inputs, warm_start_without, with_inputs, without_inputs


def _with_dead_inputs(*, constant=0.0, per_neuron=False, upper=False, fit_bias=True, seed=3):
    """A layer whose input gets a zero column at 2 and a column equal to ``constant`` at 5
    (the original weights on them nonzero, the targets unchanged: still feasible)."""
    problem, (weight, bias) = make_layer(n_samples=90, n_in=10, n_out=4, per_neuron=per_neuron, upper=upper,
                                         fit_bias=fit_bias, seed=seed)
    X = problem.X.copy()
    X[:, 2] = 0.0
    X[:, 5] = constant
    weight = weight.copy()
    weight[:, 2] = 1.0
    Z = X @ weight.T + (bias if fit_bias else 0.0)
    Y = np.maximum(Z, 0.0)
    budget = 0.1 * (np.linalg.norm(Y, axis=0) if per_neuron else np.linalg.norm(Y))
    V = Z + 0.3 if upper else None
    return LayerProblem(X, Y, budget, upper=V, fit_bias=fit_bias), (weight, bias)


def test_dead_inputs_are_zero_columns_and_with_a_free_bias_constant_ones():
    X = np.random.default_rng(0).standard_normal((20, 6))
    X[:, 1] = 0.0
    X[:, 4] = 2.5
    assert np.flatnonzero(dead_inputs(X, True, False, None)).tolist() == [1, 4]
    assert np.flatnonzero(dead_inputs(X, True, True, None)).tolist() == [1]  # a penalised bias pays for it
    assert np.flatnonzero(dead_inputs(X, False, False, None)).tolist() == [1]  # no bias to absorb it
    # the group program drops a group only when all of its inputs are dead
    assert not dead_inputs(X, True, False, 2).any()
    X[:, 0] = 0.0
    assert np.flatnonzero(dead_inputs(X, True, False, 2)).tolist() == [0, 1]


@pytest.mark.parametrize("per_neuron, upper", [(False, False), (True, True)])
@pytest.mark.parametrize("constant", [0.0, 1.7])
def test_the_screened_answer_is_optimal_for_the_full_program(per_neuron, upper, constant):
    problem, original = _with_dead_inputs(constant=constant, per_neuron=per_neuron, upper=upper)
    reference = solve(problem, method="cvxpy")
    screened = solve(problem, warm_start=original, tol=1e-5)
    assert screened.info["screened"] == 2
    assert not screened.weight[:, [2, 5]].any()
    assert screened.violation <= 5e-5
    assert screened.objective == pytest.approx(reference.objective, rel=1e-3)
    full = solve(problem, warm_start=original, tol=1e-5, screen=False)
    assert full.info["screened"] == 0
    assert screened.objective == pytest.approx(full.objective, rel=1e-3)


def test_a_constant_input_of_the_warm_start_moves_into_its_bias():
    """The original weights keep their response (and so stay feasible) without the inputs."""
    problem, (weight, bias) = _with_dead_inputs(constant=1.7)
    dead = dead_inputs(problem.X, True, False, None)
    reduced = without_inputs(problem, dead)
    reduced_weight, reduced_bias = warm_start_without(problem, dead, weight, bias)
    np.testing.assert_allclose(reduced.X @ reduced_weight.T + reduced_bias, problem.X @ weight.T + bias, atol=1e-12)
    assert reduced.violation(reduced_weight, reduced_bias) == problem.violation(weight, bias) == 0.0
    np.testing.assert_array_equal(with_inputs(reduced_weight, dead)[:, ~dead], weight[:, ~dead])


def test_without_a_bias_only_zero_inputs_are_screened():
    problem, original = _with_dead_inputs(constant=1.7, fit_bias=False)
    solution = solve(problem, warm_start=original, tol=1e-5)
    assert solution.info["screened"] == 1
    assert solution.objective == pytest.approx(solve(problem, method="cvxpy").objective, rel=1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_prepared_input_screens_the_same_inputs(dtype):
    from solvers.admm import PreparedInput

    problem, _ = _with_dead_inputs(constant=1.7, per_neuron=True, upper=True)
    prepared = PreparedInput(problem.X, fit_bias=True, dtype=dtype)
    assert np.flatnonzero(prepared.dead).tolist() == [2, 5]
    block = np.arange(2)
    sub = LayerProblem(problem.X, problem.Y[:, block], problem.epsilon[block], upper=problem.upper[:, block])
    alone, shared = solve(sub, dtype=dtype), solve(sub, dtype=dtype, prepared=prepared)
    np.testing.assert_array_equal(shared.weight, alone.weight)
    assert shared.info["screened"] == alone.info["screened"] == 2
    with pytest.raises(ValueError, match="prepared: built with"):
        solve(sub, dtype=dtype, prepared=prepared, screen=False)


def test_every_input_dead_gives_zero_weights():
    rng = np.random.default_rng(1)
    X = np.zeros((30, 4))
    Y = 1.0 + rng.random((30, 2))  # every entry active: the bias alone meets the budget
    problem = LayerProblem(X, Y, 0.5 * np.linalg.norm(Y))
    solution = solve(problem)
    assert solution.info["screened"] == 4
    assert solution.weight.shape == (2, 4) and not solution.weight.any()
    assert solution.objective == 0.0


def test_screening_does_not_modify_the_problem():
    problem, original = _with_dead_inputs(constant=1.7)
    X, weight = problem.X.copy(), original[0].copy()
    solve(problem, warm_start=original)
    np.testing.assert_array_equal(problem.X, X)
    np.testing.assert_array_equal(original[0], weight)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_torch_backend_screens_the_same_inputs(dtype):
    pytest.importorskip("torch")
    problem, original = _with_dead_inputs(constant=1.7, per_neuron=True, upper=True)
    on_torch = solve(problem, warm_start=original, tol=1e-5, backend="torch", device="cpu", dtype=dtype)
    on_numba = solve(problem, warm_start=original, tol=1e-5, dtype=dtype)
    assert on_torch.info["screened"] == on_numba.info["screened"] == 2
    assert not on_torch.weight[:, [2, 5]].any()
    assert on_torch.objective == pytest.approx(on_numba.objective, rel=1e-3)
