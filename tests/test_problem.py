"""LayerProblem: validation, the objective and the violation certificate."""
import numpy as np
import pytest

from conftest import make_layer
from solvers import LayerProblem


def test_sizes_and_active_set():
    problem, _ = make_layer(n_samples=30, n_in=5, n_out=3)
    assert (problem.n_samples, problem.n_in, problem.n_out) == (30, 5, 3)
    np.testing.assert_array_equal(problem.active, problem.Y > 0)
    linear, _ = make_layer(relu=False)
    assert linear.active.all()
    per, _ = make_layer(per_neuron=True, n_out=3)
    assert per.per_neuron and per.epsilon.shape == (3,)
    assert per.budget == pytest.approx(np.sqrt(np.sum(per.epsilon**2)))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("per_neuron", [True, False])
@pytest.mark.parametrize("upper", [True, False])
def test_original_weights_are_feasible(relu, per_neuron, upper):
    problem, (weight, bias) = make_layer(relu=relu, per_neuron=per_neuron, upper=upper)
    assert problem.violation(weight, bias) == 0.0
    assert problem.objective(weight, bias) == pytest.approx(np.abs(weight).sum())


def test_violation_measures_the_relative_excess_of_the_ball():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 3))
    weight = rng.standard_normal((2, 3))
    Y = X @ weight.T
    residual = rng.standard_normal(Y.shape)
    shift = 1.5 * residual / np.linalg.norm(residual)  # ||shift|| = 1.5
    problem = LayerProblem(X, Y - shift, 1.0, relu=False, fit_bias=False)
    assert problem.violation(weight) == pytest.approx(0.5)  # 1.5 against a budget of 1
    assert LayerProblem(X, Y - shift, 2.0, relu=False, fit_bias=False).violation(weight) == 0.0


def test_violation_counts_inactive_entries_above_their_bound():
    X = np.eye(3)
    Y = np.array([[1.0], [0.0], [0.0]])  # entries 2 and 3 inactive
    problem = LayerProblem(X, Y, 0.5, fit_bias=False)
    weight = np.array([[1.0, 2.0, -1.0]])  # response (1, 2, -1): entry 2 is 2 above 0
    assert problem.violation(weight) == pytest.approx(2.0 / 0.5)
    upper = np.array([[0.0], [2.0], [0.0]])
    assert LayerProblem(X, Y, 0.5, upper=upper, fit_bias=False).violation(weight) == 0.0


def test_violation_per_neuron_aggregates_the_excess_of_each_neuron():
    X = np.eye(2)
    Y = np.array([[1.0, 0.0], [0.0, 1.0]])
    weight = np.zeros((2, 2))  # residual norm 1 in each column
    problem = LayerProblem(X, Y, np.array([0.5, 1.0]), relu=False, fit_bias=False)
    assert problem.violation(weight) == pytest.approx(0.5 / np.sqrt(1.25))


def test_violation_is_relative_to_y_when_epsilon_is_zero():
    X = np.eye(2)
    Y = np.array([[3.0], [4.0]])
    problem = LayerProblem(X, Y, 0.0, relu=False, fit_bias=False)
    assert problem.violation(np.zeros((1, 2))) == pytest.approx(1.0)


def test_violation_is_scale_invariant():
    problem, (weight, bias) = make_layer(seed=3)
    off = weight * 0.9
    v = problem.violation(off, bias)
    scaled = LayerProblem(problem.X * 7.0, problem.Y * 7.0, problem.epsilon * 7.0)
    assert v > 0 and scaled.violation(off, bias * 7.0) == pytest.approx(v)


def test_inputs_are_not_copied_nor_modified():
    problem, _ = make_layer()
    X, Y = problem.X.copy(), problem.Y.copy()
    again = LayerProblem(problem.X, problem.Y, 1.0)
    assert again.X is problem.X  # float64 arrays are kept as they are
    np.testing.assert_array_equal(problem.X, X)
    np.testing.assert_array_equal(problem.Y, Y)


def test_dtypes_and_array_likes():
    X32 = np.ones((4, 2), dtype=np.float32)
    assert LayerProblem(X32, np.ones((4, 1)), 0.1).X.dtype == np.float32
    assert LayerProblem([[1, 2], [3, 4]], [[1], [0]], 0.1).X.dtype == np.float64
    torch = pytest.importorskip("torch")
    problem = LayerProblem(torch.ones(4, 2), torch.ones(4, 1), 0.1)
    assert isinstance(problem.X, np.ndarray)


BAD_INPUTS = [
    (dict(X=np.ones(5)), "X: got shape (5,), needs (n_samples, n_in)"),
    (dict(X=np.ones((0, 3)), Y=np.ones((0, 1))), "X: got shape (0, 3)"),
    (dict(X=np.array([[1.0, np.nan]] * 4)), "X: holds 4 NaN or Inf"),
    (dict(X=np.ones((4, 2), dtype=complex)), "X: needs a real numeric array"),
    (dict(Y=np.ones(4)), "Y: got shape (4,), needs (n_samples, n_out)"),
    (dict(Y=np.ones((5, 1))), "Y: got shape (5, 1), needs (4, n_out) to match X"),
    (dict(Y=np.full((4, 1), np.inf)), "Y: holds 4 NaN or Inf"),
    (dict(Y=-np.ones((4, 1))), "Y: has negative entries but relu=True"),
    (dict(epsilon=-1.0), "epsilon: needs finite values >= 0"),
    (dict(epsilon=np.nan), "epsilon: needs finite values >= 0"),
    (dict(epsilon=np.ones(3)), "epsilon: got shape (3,), needs a float"),
    (dict(epsilon=np.ones((1, 1, 1))), "epsilon: got shape"),
    (dict(upper=np.zeros((4, 2))), "upper: got shape (4, 2), needs (4, 1) like Y"),
    (dict(upper=np.zeros((4, 1)), relu=False), "upper: only applies with relu=True"),
    (dict(fit_bias=False, penalize_bias=True), "penalize_bias=True needs fit_bias=True"),
]


@pytest.mark.parametrize("change, message", BAD_INPUTS, ids=[m.split(":")[0] for _, m in BAD_INPUTS])
def test_bad_input_names_the_argument(change, message):
    arguments = dict(X=np.ones((4, 2)), Y=np.ones((4, 1)), epsilon=0.1)
    arguments.update(change)
    keywords = {k: arguments.pop(k) for k in list(arguments) if k not in ("X", "Y", "epsilon")}
    with pytest.raises((ValueError, TypeError)) as error:
        LayerProblem(arguments["X"], arguments["Y"], arguments["epsilon"], **keywords)
    assert message in str(error.value)


def test_certificate_checks_the_shape_of_the_answer():
    problem, (weight, bias) = make_layer(n_in=10, n_out=4)
    with pytest.raises(ValueError, match=r"weight: got shape \(10, 4\), needs \(n_out, n_in\) = \(4, 10\)"):
        problem.violation(weight.T, bias)
    with pytest.raises(ValueError, match=r"bias: got shape \(3,\), needs \(4,\)"):
        problem.objective(weight, bias[:3])


def test_violation_by_row_blocks_equals_the_whole(layer, monkeypatch):
    """The certificate is accumulated over row blocks; the block size changes nothing."""
    import solvers._blocks as blocks
    import solvers.problem as problem_module

    for per_neuron, upper in ((False, False), (True, True)):
        problem, (weight, bias) = layer(n_samples=50, per_neuron=per_neuron, upper=upper)
        shifted = weight + 0.2
        whole = problem.violation(shifted, bias)
        monkeypatch.setattr(blocks, "ROWS", 7)
        assert problem.violation(shifted, bias) == pytest.approx(whole, rel=1e-12)
        assert problem_module.relative_excess(problem.response(shifted, bias), problem.Y, problem.epsilon,
                                              relu=True, upper=problem.upper) == pytest.approx(whole, rel=1e-12)
        monkeypatch.undo()
