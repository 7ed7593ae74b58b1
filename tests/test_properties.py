"""Properties and closed forms of the Net-Trim program, checked on the ADMM."""
import numpy as np
import pytest

from conftest import make_layer
from solvers import LayerProblem, solve


@pytest.mark.parametrize("relu", [True, False])
def test_l1_never_exceeds_the_original_weights(relu):
    for seed in range(4):
        problem, original = make_layer(n_samples=80, n_in=15, n_out=6, relu=relu, epsilon=0.05, seed=seed)
        sol = solve(problem, warm_start=original)
        assert sol.objective <= problem.objective(*original) * (1 + 1e-3)
        assert sol.violation <= 1e-3


@pytest.mark.parametrize("per_neuron", [False, True])
def test_l1_never_grows_as_epsilon_grows(per_neuron):
    base, _ = make_layer(n_samples=80, n_in=15, n_out=6, per_neuron=per_neuron, epsilon=1.0, seed=5)
    objectives = [
        solve(LayerProblem(base.X, base.Y, base.epsilon * fraction), tol=1e-5).objective
        for fraction in (0.0, 0.02, 0.05, 0.1, 0.3)
    ]
    assert all(later <= earlier * (1 + 1e-4) for earlier, later in zip(objectives, objectives[1:]))
    assert objectives[-1] < 0.8 * objectives[0]


@pytest.mark.parametrize("factor", [1e-3, 1e3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_scaling_x_y_epsilon_together_changes_nothing(factor, dtype):
    problem, _ = make_layer(n_samples=80, n_in=12, n_out=5, upper=True, seed=7)
    scaled = LayerProblem(problem.X * factor, problem.Y * factor, problem.epsilon * factor,
                          upper=problem.upper * factor)
    sol, sol_scaled = solve(problem, dtype=dtype), solve(scaled, dtype=dtype)
    assert sol_scaled.objective == pytest.approx(sol.objective, rel=1e-3)
    assert sol_scaled.violation <= 1e-3
    assert sol_scaled.iterations == pytest.approx(sol.iterations, rel=0.2)


def test_per_neuron_budgets_decouple_the_layer():
    problem, _ = make_layer(n_samples=80, n_in=12, n_out=4, per_neuron=True, seed=11)
    joint = solve(problem, tol=1e-5)
    separate = [
        solve(LayerProblem(problem.X, problem.Y[:, [m]], problem.epsilon[m]), tol=1e-5)
        for m in range(problem.n_out)
    ]
    assert joint.objective == pytest.approx(sum(s.objective for s in separate), rel=1e-3)


def test_closed_form_single_input():
    """One input, no bias: ``min |w|`` s.t. ``||x w - y|| <= eps`` shrinks the LS answer."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 1))
    y = 2.0 * x + 0.1 * rng.standard_normal((50, 1))
    w_ls = float(x[:, 0] @ y[:, 0] / (x[:, 0] @ x[:, 0]))
    r_ls = float(np.linalg.norm(x[:, 0] * w_ls - y[:, 0]))
    epsilon = 2.0 * r_ls
    expected = abs(w_ls) - np.sqrt((epsilon**2 - r_ls**2) / (x[:, 0] @ x[:, 0]))
    sol = solve(LayerProblem(x, y, epsilon, relu=False, fit_bias=False), tol=1e-6)
    assert abs(sol.weight[0, 0]) == pytest.approx(expected, rel=1e-4)


def test_closed_form_large_budget_gives_zero_weights():
    """When ``epsilon >= ||Y - mean(Y)||``, the bias alone is feasible: W = 0, b = mean."""
    problem, _ = make_layer(relu=False, seed=4)
    centred = np.linalg.norm(problem.Y - problem.Y.mean(0))
    sol = solve(LayerProblem(problem.X, problem.Y, 1.01 * centred, relu=False))
    assert sol.nnz == 0 and sol.violation <= 1e-3


def test_planted_sparse_neuron_is_recovered_at_epsilon_zero():
    from solvers.examples import planted_problem

    problem, (weight, bias) = planted_problem(200, 40, 3, density=0.1, epsilon=0.0, fit_bias=False, seed=1)
    sol = solve(problem, tol=1e-6, max_iter=20000)
    np.testing.assert_allclose(sol.weight, weight, atol=1e-3 * np.abs(weight).max())
