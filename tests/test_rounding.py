"""Rounding an answer to a count of weights within the feasibility tolerance
(solvers._rounding), and the path's landing on the target with it (solvers.path._land).
The violation is checked from scratch by LayerProblem.violation, independently of the
rounding's per-column bookkeeping."""
import numpy as np
import pytest

from conftest import make_layer
from solvers import LayerProblem, solve
from solvers._rounding import round_to_count
from solvers.path import _land


def _answer(relu, upper, per_neuron, dtype=np.float64, seed=0):
    problem, original = make_layer(n_samples=150, n_in=24, n_out=6, relu=relu, upper=upper, per_neuron=per_neuron,
                                   epsilon=0.1, density=0.9, seed=seed)
    problem = LayerProblem(problem.X.astype(dtype), problem.Y, problem.epsilon, relu=relu, upper=problem.upper)
    solution = solve(problem, warm_start=original, tol=1e-3, dtype=dtype)
    return problem, solution


@pytest.mark.parametrize("relu, upper, per_neuron", [(True, False, False), (True, True, False),
                                                     (False, False, False), (True, False, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rounding_stays_within_the_slack_and_only_sets_weights_to_zero(relu, upper, per_neuron, dtype):
    problem, solution = _answer(relu, upper, per_neuron, dtype)
    before = solution.weight.copy()
    slack = 2e-2
    weight, removed = round_to_count(problem, solution.weight, solution.bias, solution.nnz // 2, slack)
    assert np.array_equal(solution.weight, before)  # the input is not modified
    assert removed > 0 and np.count_nonzero(weight) == solution.nnz - removed >= solution.nnz // 2
    changed = weight != before
    assert np.all(weight[changed] == 0.0)  # every other weight as it was
    assert problem.violation(weight, solution.bias) <= slack + 1e-12
    assert problem.objective(weight, solution.bias) < solution.objective


def test_rounding_takes_the_weights_that_carry_least_of_the_response_first():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 3)) * np.array([1.0, 10.0, 1.0])  # input 1 is ten times louder
    weight = np.array([[1.0, 0.05, 0.2]])  # its weight is the smallest, yet it carries more than input 2's
    Y = X @ weight.T
    problem = LayerProblem(X, Y, 0.3 * float(np.linalg.norm(Y)), relu=False, fit_bias=False)
    rounded, removed = round_to_count(problem, weight, None, 2, slack=1.0)
    assert removed == 1 and rounded[0, 2] == 0.0 and rounded[0, 1] == 0.05


def test_rounding_stops_where_the_next_weight_would_leave_the_slack():
    problem, solution = _answer(True, False, False)
    weight, removed = round_to_count(problem, solution.weight, solution.bias, 0, slack=5e-3)
    assert 0 < removed < solution.nnz  # not every weight can go within half a per cent
    assert problem.violation(weight, solution.bias) <= 5e-3
    none, zero = round_to_count(problem, solution.weight, solution.bias, 0, slack=0.0)
    assert zero == 0 or problem.violation(none, solution.bias) == 0.0


def test_a_count_already_met_removes_nothing_and_group_programs_are_refused():
    problem, solution = _answer(True, False, False)
    weight, removed = round_to_count(problem, solution.weight, solution.bias, solution.nnz, 5e-3)
    assert removed == 0 and np.array_equal(weight, solution.weight)
    grouped = LayerProblem(problem.X, problem.Y, problem.epsilon, group_size=4)
    with pytest.raises(ValueError, match="group"):
        round_to_count(grouped, solution.weight, solution.bias, 1, 5e-3)


def test_landing_rounds_a_dense_answer_onto_the_target_or_leaves_it():
    problem, solution = _answer(True, False, False)
    size = solution.weight.size
    kept = solution.nnz / size
    target = kept - 0.04  # a few weights fewer than the answer keeps
    original = solution.weight.copy()
    failed = _land(problem, solution, target, size, 0.01, slack=0.0)  # no slack: nothing can go
    assert failed == pytest.approx(kept) and np.array_equal(solution.weight, original)
    assert "rounded" not in solution.info
    landed = _land(problem, solution, target, size, 0.01, slack=5e-3)
    assert abs(landed - target) <= 0.01 and solution.nnz / size == landed
    assert solution.info["rounded"] == np.count_nonzero(original) - solution.nnz
    assert solution.violation == pytest.approx(problem.violation(solution.weight, solution.bias))
    assert solution.violation <= 5e-3
    assert solution.objective == pytest.approx(problem.objective(solution.weight, solution.bias))
    assert solution.weight.dtype == original.dtype
