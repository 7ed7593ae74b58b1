"""The group program: sum of group norms over blocks of inputs, the same constraints.

Checked against cvxpy (objective and feasibility, not the weights), against properties
(the original weights are feasible; the objective never grows with epsilon; scaling X, Y
and epsilon together changes nothing), and the proximal map against its closed form.
"""
import numpy as np
import pytest

from solvers import LayerProblem, solve
from solvers._kernels import GROUP_WEIGHT_STEP, group_shrink


def _grouped_layer(group_size, *, relu=True, per_neuron=False, upper=False, epsilon=0.1, seed=0,
                   n_samples=150, n_groups=6, n_out=5):
    """A layer whose original weights read only the first half of the input groups."""
    rng = np.random.default_rng(seed)
    n_in = group_size * n_groups
    X = rng.standard_normal((n_samples, n_in))
    weight = rng.standard_normal((n_out, n_in))
    weight[:, n_in // 2:] = 0.0  # the second half of the groups is not read
    bias = 0.2 * rng.standard_normal(n_out)
    Z = X @ weight.T + bias
    Y = np.maximum(Z, 0.0) if relu else Z
    budget = epsilon * (np.linalg.norm(Y, axis=0) if per_neuron else np.linalg.norm(Y))
    V = Z + 0.2 * np.abs(rng.standard_normal(Z.shape)) if (upper and relu) else None
    return LayerProblem(X, Y, budget, relu=relu, upper=V, group_size=group_size), (weight, bias)


@pytest.mark.parametrize("group_size", [1, 4])
@pytest.mark.parametrize("relu, per_neuron, upper", [(True, False, False), (True, True, False),
                                                     (True, False, True), (False, False, False)])
def test_group_program_matches_cvxpy(group_size, relu, per_neuron, upper):
    problem, original = _grouped_layer(group_size, relu=relu, per_neuron=per_neuron, upper=upper)
    reference = solve(problem, method="cvxpy")
    solution = solve(problem, warm_start=original, tol=1e-5, max_iter=20_000)
    assert solution.status == "optimal"
    assert solution.violation <= 5e-5
    assert solution.objective == pytest.approx(reference.objective, rel=1e-3)
    norms = problem.group_norms(solution.weight)
    assert 0 < np.count_nonzero(norms) < len(norms)  # whole groups are dropped, not all of them
    blocks = solution.weight.reshape(problem.n_out, -1, group_size)
    for group, norm in enumerate(norms):  # a group is all zero or not zero at all
        assert (norm == 0) == (not blocks[:, group].any())


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backends_and_precisions_agree(backend, dtype):
    problem, original = _grouped_layer(3)
    numba = solve(problem, warm_start=original, tol=1e-5, dtype=np.float64)
    other = solve(problem, warm_start=original, tol=1e-5, backend=backend, dtype=dtype)
    assert other.status == "optimal"
    assert other.objective == pytest.approx(numba.objective, rel=1e-3 if dtype == np.float32 else 1e-6)
    assert other.violation <= (5e-4 if dtype == np.float32 else 5e-5)


def test_original_weights_are_feasible_and_bound_the_objective():
    problem, original = _grouped_layer(2, upper=True)
    assert problem.violation(*original) == 0
    solution = solve(problem, warm_start=original)
    assert solution.objective <= problem.objective(*original)


def test_objective_never_grows_with_epsilon():
    values = []
    for epsilon in (0.02, 0.05, 0.1, 0.2, 0.4):
        problem, original = _grouped_layer(2, epsilon=epsilon)
        values.append(solve(problem, warm_start=original, tol=1e-5, max_iter=20_000).objective)
    assert all(later <= earlier * (1 + 1e-4) for earlier, later in zip(values, values[1:]))


def test_scaling_data_and_budget_together_changes_nothing():
    problem, original = _grouped_layer(2)
    scaled = LayerProblem(problem.X * 7.0, problem.Y * 7.0, problem.epsilon * 7.0, group_size=2)
    one = solve(problem, warm_start=original, tol=1e-6, max_iter=20_000)
    seven = solve(scaled, warm_start=(original[0], original[1] * 7.0), tol=1e-6, max_iter=20_000)
    assert seven.objective == pytest.approx(one.objective, rel=1e-4)


def test_group_shrink_is_the_closed_form():
    rng = np.random.default_rng(3)
    T = rng.standard_normal((7, 4))  # 3 groups of 2 rows, then a bias row
    threshold = np.array([1.0, 1.0, 10.0, 10.0, 0.5, 0.5, 0.2])
    Q = group_shrink(T, threshold, 2, 6)
    for g, kappa in enumerate((1.0, 10.0, 0.5)):
        block = T[2 * g:2 * g + 2]
        norm = np.linalg.norm(block)
        expected = max(0.0, 1.0 - kappa / norm) * block
        np.testing.assert_allclose(Q[2 * g:2 * g + 2], expected)
    assert not Q[2:4].any()  # the group inside its threshold is exactly zero
    np.testing.assert_allclose(Q[6], np.sign(T[6]) * np.maximum(np.abs(T[6]) - 0.2, 0.0))


@pytest.mark.parametrize("check", [True, False])
def test_numba_and_numpy_group_steps_make_the_same_update(check):
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal((9, 5)) for _ in range(4)]  # Theta, Q, carry, C
    threshold = np.full(9, 0.8)
    threshold[-1] = 0.0
    results = []
    for backend in ("numba", "numpy"):
        Theta, Q, carry, C = (a.copy() for a in arrays)
        DQ = np.zeros_like(Theta)
        stats = GROUP_WEIGHT_STEP[backend](Theta, Q, carry, C, threshold, 4, 8, 1.6, DQ, check)
        results.append((Q, carry, C, DQ, stats))
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_group_size_is_checked():
    X, Y = np.ones((5, 6)), np.ones((5, 2))
    for bad in (0, 4, 2.0, True):
        with pytest.raises(ValueError, match="group_size: got .* divides n_in = 6"):
            LayerProblem(X, Y, 0.1, group_size=bad)
    assert "group_size=3" in repr(LayerProblem(X, Y, 0.1, group_size=3))
