"""The ADMM's own contract: options, statuses, backends, returned weights."""
import numpy as np
import pytest

from conftest import make_layer
from solvers import LayerProblem, solve


@pytest.mark.parametrize("polish", [True, False])
def test_returned_weight_is_sparse_and_certified(polish):
    problem, _ = make_layer(n_samples=80, n_in=15, n_out=6, epsilon=0.2, seed=1)
    sol = solve(problem, polish=polish)
    assert sol.status == "optimal" and sol.info["polished"] is polish
    assert 0 < sol.nnz < sol.weight.size  # exact zeros
    assert sol.violation == problem.violation(sol.weight, sol.bias)
    assert sol.objective == problem.objective(sol.weight, sol.bias)
    if polish:  # the subgradient condition holds off the support
        assert sol.info["certificate"] <= 1 + 1e-4 and sol.violation <= 1e-9
    else:
        assert sol.primal_residual <= 1e-4 and sol.dual_residual <= 1e-4
    assert sol.weight.shape == (6, 15) and sol.bias.shape == (6,)
    assert sol.solve_time > 0 and sol.info["backend"] == "numba"


def test_polished_answer_is_the_optimum():
    """Polishing returns the exact optimum: cvxpy's objective to 1e-6, feasible to rounding."""
    problem, _ = make_layer(n_samples=120, n_in=20, n_out=6, upper=True, epsilon=0.1, seed=12)
    reference = solve(problem, method="cvxpy")
    sol = solve(problem)
    assert sol.info["polished"]
    assert sol.objective == pytest.approx(reference.objective, rel=1e-6)
    assert sol.violation <= 1e-9


def test_polish_is_not_tried_when_epsilon_is_zero():
    from solvers.examples import planted_problem

    problem, _ = planted_problem(150, 30, 2, density=0.1, epsilon=0.0, seed=3)
    sol = solve(problem, tol=1e-6, max_iter=20000)
    assert sol.status == "optimal" and not sol.info["polished"]


def test_numba_and_numpy_backends_give_the_same_answer():
    problem, _ = make_layer(n_samples=70, n_in=12, n_out=5, upper=True, per_neuron=True, seed=2)
    numba_sol = solve(problem, backend="numba", polish=False)
    numpy_sol = solve(problem, backend="numpy", polish=False)
    assert numba_sol.iterations == numpy_sol.iterations
    np.testing.assert_allclose(numba_sol.weight, numpy_sol.weight, atol=1e-9)
    np.testing.assert_allclose(numba_sol.bias, numpy_sol.bias, atol=1e-9)


def test_the_same_input_gives_bit_identical_weights():
    problem, _ = make_layer(seed=3)
    first, second = solve(problem), solve(problem)
    np.testing.assert_array_equal(first.weight, second.weight)


def test_max_iter_is_reported_not_hidden():
    problem, _ = make_layer(n_samples=80, n_in=15, n_out=6, seed=4)
    sol = solve(problem, max_iter=3, polish=False)
    assert sol.status == "max_iter" and sol.iterations == 3
    assert sol.violation == problem.violation(sol.weight, sol.bias)


def test_warm_start_from_the_original_weights():
    problem, original = make_layer(n_samples=80, n_in=15, n_out=6, seed=5)
    cold, warm = solve(problem, polish=False), solve(problem, warm_start=original, polish=False)
    assert warm.status == "optimal"
    assert warm.objective == pytest.approx(cold.objective, rel=1e-3)
    weight_only = solve(problem, warm_start=original[0])
    assert weight_only.objective == pytest.approx(cold.objective, rel=1e-3)


def test_fixed_rho_converges_too():
    problem, _ = make_layer(seed=6)
    auto, fixed = solve(problem), solve(problem, rho=2.0, max_iter=50_000, polish=False)
    assert fixed.status == "optimal" and fixed.info["rho"] == 2.0
    assert fixed.objective == pytest.approx(auto.objective, rel=1e-3)


def test_penalized_bias_is_shrunk():
    problem, _ = make_layer(n_samples=80, n_in=8, n_out=4, relu=False, epsilon=0.3, seed=7)
    free = solve(problem)
    penalized = solve(LayerProblem(problem.X, problem.Y, problem.epsilon, relu=False, penalize_bias=True))
    assert np.abs(penalized.bias).sum() < np.abs(free.bias).sum()
    assert penalized.objective == pytest.approx(np.abs(penalized.weight).sum() + np.abs(penalized.bias).sum())


def test_solve_does_not_modify_the_problem():
    problem, original = make_layer(upper=True, seed=8)
    copies = [a.copy() for a in (problem.X, problem.Y, problem.upper, problem.epsilon)]
    weight0 = original[0].copy()
    solve(problem, warm_start=original)
    for before, after in zip(copies, (problem.X, problem.Y, problem.upper, problem.epsilon)):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(weight0, original[0])


def test_float32_problem_data_are_solved_in_either_precision():
    problem, _ = make_layer(seed=9)
    as32 = LayerProblem(problem.X.astype(np.float32), problem.Y.astype(np.float32), problem.epsilon)
    for dtype in ("float32", "float64"):
        sol = solve(as32, dtype=dtype)
        assert sol.status == "optimal" and sol.weight.dtype == np.dtype(dtype)


BAD_OPTIONS = [
    (dict(tol=0.0), "tol: got 0.0, needs a float in (0, 1)"),
    (dict(max_iter=0), "max_iter: got 0, needs an integer >= 1"),
    (dict(rho=-1.0), "rho: got -1.0, needs 'auto'"),
    (dict(rho="fast"), "rho: got 'fast'"),
    (dict(dtype="float16"), "dtype: got float16, needs float32 or float64"),
    (dict(dtype="banana"), "dtype: got 'banana'"),
    (dict(backend="cuda"), "backend: got 'cuda', needs one of ('numba', 'numpy', 'torch')"),
    (dict(alpha=2.5), "alpha: got 2.5, needs a float in (0, 2)"),
    (dict(check_every=0), "check_every: got 0"),
    (dict(polish="yes"), "polish: got 'yes', needs True, False or None"),
    (dict(warm_start=np.zeros((3, 3))), "weight: got shape (3, 3), needs (n_out, n_in) = (4, 10)"),
    (dict(warm_start=(np.zeros((4, 10)), np.zeros(2))), "bias: got shape (2,), needs (4,)"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD_OPTIONS)])
def test_bad_options_name_the_option(options, message):
    problem, _ = make_layer()
    with pytest.raises(ValueError) as error:
        solve(problem, **options)
    assert message in str(error.value)


def test_solve_rejects_unknown_methods_and_problems():
    problem, _ = make_layer()
    with pytest.raises(ValueError, match="method: got 'lbfgs', needs one of"):
        solve(problem, method="lbfgs")
    with pytest.raises(TypeError, match="problem: got ndarray, needs a solvers.LayerProblem"):
        solve(np.zeros(3))
    with pytest.raises(TypeError, match="unexpected keyword"):
        solve(problem, tolerance=1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prepared_input_serves_blocks_of_neurons(layer, dtype):
    """Blocks of neurons sharing X, solved with one prepared (scaled and factored) input,
    give exactly what each block gives on its own."""
    from solvers import LayerProblem
    from solvers.admm import PreparedInput

    problem, _ = layer(n_samples=80, n_in=12, n_out=6, per_neuron=True, upper=True)
    prepared = PreparedInput(problem.X, fit_bias=True, dtype=dtype)
    assert prepared.nbytes > 0
    for block in (np.arange(0, 3), np.arange(3, 6)):
        sub = LayerProblem(problem.X, problem.Y[:, block], problem.epsilon[block], upper=problem.upper[:, block])
        alone = solve(sub, dtype=dtype)
        shared = solve(sub, dtype=dtype, prepared=prepared)
        np.testing.assert_array_equal(shared.weight, alone.weight)
        assert shared.iterations == alone.iterations
    with pytest.raises(ValueError, match="prepared: built for X of shape"):
        solve(LayerProblem(problem.X[:40], problem.Y[:40], 1.0), prepared=prepared)
    with pytest.raises(ValueError, match="prepared: built for .* float"):
        solve(problem, prepared=prepared, dtype=np.float64 if dtype == np.float32 else np.float32)
    with pytest.raises(ValueError, match="prepared: serves the numba and numpy backends"):
        solve(problem, prepared=prepared, backend="torch")


def test_gram_matrix_by_row_blocks(monkeypatch):
    """The factor's Gram matrix accumulated over row blocks equals the one-shot product."""
    from solvers import _blocks
    from solvers._factor import NUMPY_OPS, Factor

    Xa = np.random.default_rng(3).standard_normal((50, 7)).astype(np.float32)
    whole = Factor(Xa, NUMPY_OPS).inverse
    monkeypatch.setattr(_blocks, "ROWS", 8)
    np.testing.assert_allclose(Factor(Xa, NUMPY_OPS).inverse, whole, rtol=1e-6, atol=1e-7)


def _relu_feature_layer(n_samples=400, n_pixels=12, n_in=48, n_out=6, seed=0):
    """A layer whose input is ReLU features (non-negative, with a large common mean), as
    the hidden layers of a trained network give: the case centring is for."""
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((n_samples, n_pixels)) @ rng.standard_normal((n_pixels, n_in)), 0.0)
    weight = rng.standard_normal((n_out, n_in)) * (rng.random((n_out, n_in)) < 0.2) / np.sqrt(0.2 * n_in)
    bias = 0.1 * rng.standard_normal(n_out)
    Y = np.maximum(X @ weight.T + bias, 0.0)
    return X, Y, (weight, bias)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_centring_is_an_exact_change_of_variables(dtype):
    """Shifting columns of X by constants leaves the program in W unchanged (the free bias
    absorbs it). With shifts that leave the data's scale as it was (the largest column,
    which sets it, is not shifted, and every other column's norm shrinks), the solver
    returns the same weights in the same number of iterations, and the bias moves by
    exactly ``-W shift``; both answers are feasible."""
    X, Y, _ = _relu_feature_layer()
    mean = X.mean(axis=0)
    shift = -np.linspace(0.2, 1.9, X.shape[1]) * mean  # |x - t m| <= |x| for t in [0, 2]
    shift[np.argmax(np.einsum("pi,pi->i", X, X))] = 0.0
    epsilon = 0.05 * np.linalg.norm(Y)
    plain = LayerProblem(X.astype(dtype), Y, epsilon)
    shifted = LayerProblem((X + shift).astype(dtype), Y, epsilon)
    for polish in (False, True):
        a, b = solve(plain, polish=polish), solve(shifted, polish=polish)
        assert a.info["centered"] and b.info["centered"]
        assert a.status == b.status == "optimal" and a.iterations == b.iterations
        atol = 1e-4 if dtype == np.float32 else 1e-8
        np.testing.assert_allclose(a.weight, b.weight, atol=atol * np.abs(a.weight).max())
        np.testing.assert_allclose(b.bias, a.bias - a.weight.astype(np.float64) @ shift,
                                   atol=atol * (1 + np.abs(a.bias).max()) * 10)
        assert a.objective == pytest.approx(b.objective, rel=1e-5 if dtype == np.float32 else 1e-9)
        assert b.violation <= 5e-4 and a.violation <= 5e-4


def test_the_scale_is_the_uncentred_one_up_to_a_cap():
    """A centred input keeps the scale of its uncentred columns (what sets the balance of
    the split), unless a large common offset would make it more than 4 times the centred
    columns' scale; an offset then costs iterations, not accuracy."""
    X, Y, _ = _relu_feature_layer()
    epsilon = 0.05 * np.linalg.norm(Y)
    target = 1.0 / 0.09
    raw = np.sqrt(np.max(np.sum(X**2, axis=0)) / target)
    centred = np.sqrt(np.max(np.sum((X - X.mean(axis=0)) ** 2, axis=0)) / target)
    assert 1.0 < raw / centred < 4.0  # ReLU features: a mean comparable to the spread
    plain = solve(LayerProblem(X, Y, epsilon), polish=False)
    assert plain.info["scale"] == pytest.approx(raw, rel=1e-12)
    offset = solve(LayerProblem(X + 50.0, Y, epsilon), polish=False)
    assert offset.info["scale"] == pytest.approx(4.0 * centred, rel=1e-9)
    assert offset.status == "optimal" and offset.violation <= 5e-4
    assert offset.objective == pytest.approx(plain.objective, rel=1e-3)  # violation: on X + 50, bias included


def test_warm_start_bias_goes_through_the_centring():
    """The original weights, fed as a warm start to a centred solve, come back unchanged
    when one iteration with a negligible threshold (rho huge) is all that runs: the
    bias goes into the centred program (``b + W mean``) and back out exactly."""
    X, Y, original = _relu_feature_layer(seed=3)
    problem = LayerProblem(X, Y, 1e-3 * np.linalg.norm(Y))
    sol = solve(problem, warm_start=original, max_iter=1, polish=False, rho=1e6)
    assert sol.info["centered"]
    np.testing.assert_allclose(sol.weight, original[0], atol=1e-5)
    np.testing.assert_allclose(sol.bias, original[1], atol=1e-5)
    assert sol.violation < 1e-3


def test_no_centring_when_the_bias_is_not_free():
    """A penalised or absent bias cannot absorb the shift: the input is not centred, and
    a prepared input built for one case refuses the other."""
    from solvers.admm import PreparedInput

    X, Y, _ = _relu_feature_layer(n_samples=120, seed=1)
    epsilon = 0.05 * np.linalg.norm(Y)
    assert not solve(LayerProblem(X, Y, epsilon, penalize_bias=True)).info["centered"]
    assert not solve(LayerProblem(X, Y, epsilon, fit_bias=False)).info["centered"]
    prepared = PreparedInput(X, fit_bias=True)
    with pytest.raises(ValueError, match="penalize_bias"):
        solve(LayerProblem(X, Y, epsilon, penalize_bias=True), prepared=prepared)


def test_rho_is_held_then_balanced_without_polishing():
    """Without polishing the ADMM reaches tol 1e-4 on a ReLU-feature layer in a few hundred
    iterations (benchmarks/rho_rule.py: 300 on the same kind of layer at 3000 x 392 x 64),
    and rho moved only after iteration 200."""
    X, Y, _ = _relu_feature_layer(n_samples=1500, n_pixels=40, n_in=160, n_out=24, seed=2)
    problem = LayerProblem(X, Y, 0.05 * np.linalg.norm(Y))
    held = solve(problem, polish=False, max_iter=199, tol=1e-12)
    first = solve(problem, polish=False, max_iter=25, tol=1e-12)
    assert held.info["rho"] == first.info["rho"]
    sol = solve(problem, polish=False)
    assert sol.status == "optimal" and sol.iterations <= 600 and sol.violation <= 5e-4


def test_residuals_met_at_tells_when_the_violation_test_decided():
    """``info['residuals_met_at']`` is the first check where both residuals met tol. On this
    layer the thresholded copy's violation is still above 5 tol then, and the run goes on
    until it is not; a run stopped before the residuals met tol reports None."""
    from solvers.examples import planted_problem

    problem = planted_problem(300, 40, 16, density=0.3, epsilon=0.01, seed=0)[0]
    sol = solve(problem, polish=False, tol=1e-4)
    met = sol.info["residuals_met_at"]
    assert sol.status == "optimal" and sol.violation <= 5e-4
    assert met % 25 == 0 and met < sol.iterations
    at_met = solve(problem, polish=False, tol=1e-4, max_iter=met)
    assert at_met.status == "max_iter" and at_met.violation > 5e-4  # why the run went on
    assert solve(problem, polish=False, tol=1e-4, max_iter=met - 25).info["residuals_met_at"] is None


def test_settings_object_and_overrides_are_one_way():
    """``solve(problem, settings=AdmmSettings(...))`` and the same fields as keywords give
    the same answer; an override changes only what it names; bad settings name the field."""
    from solvers import AdmmSettings

    problem, _ = make_layer(seed=4)
    by_object = solve(problem, settings=AdmmSettings(tol=1e-3, polish=False))
    by_keywords = solve(problem, tol=1e-3, polish=False)
    np.testing.assert_array_equal(by_object.weight, by_keywords.weight)
    assert by_object.iterations == by_keywords.iterations
    settings = AdmmSettings(rho_hold=0, rho_adapt_ratio=2.0)
    assert settings.replace(tol=1e-3) == AdmmSettings(tol=1e-3, rho_hold=0, rho_adapt_ratio=2.0)
    with pytest.raises(ValueError, match="rho_hold: got -1"):
        AdmmSettings(rho_hold=-1)
    with pytest.raises(ValueError, match="rho_bounds"):
        AdmmSettings(rho_bounds=(1.0, 0.5))
    with pytest.raises(TypeError, match="unexpected keyword.*'rho_hld'"):
        settings.replace(rho_hld=3)


def test_polishing_by_default_everywhere_but_on_a_cuda_device():
    """``polish=None`` (the default) is True for iterations on the host and False on a CUDA
    device, where the polishing (on the host) costs many times the GPU's iterations; an
    explicit value holds on every device. The GPU side runs in tests/test_admm_torch.py."""
    from solvers import AdmmSettings

    assert AdmmSettings().polish is None
    assert AdmmSettings().for_device("cpu").polish is True
    assert AdmmSettings().for_device("cuda:0").polish is False
    assert AdmmSettings(polish=True).for_device("cuda:1").polish is True
    assert AdmmSettings(polish=False).for_device("cpu").polish is False
    problem, _ = make_layer(seed=4)
    assert solve(problem).info["polished"] and solve(problem, backend="torch", device="cpu").info["polished"]
    assert not solve(problem, polish=False).info["polished"]


def test_fixed_rho_rule_never_moves_rho():
    """``rho_adapt=False`` keeps rho at its start value for the whole run; a rule that
    balances from the first check at a tight ratio moves it (the ablations of
    benchmarks/rho_rule.py, made with settings, not by patching)."""
    from solvers.examples import planted_problem

    problem, truth = planted_problem(400, 60, 30, density=0.2, epsilon=0.02, seed=1)[:2]
    # from a point that meets the budget: a cold start's violation would hold rho up
    eager = dict(polish=False, max_iter=600, tol=1e-9, rho_hold=0, rho_adapt_ratio=1.01, warm_start=truth)
    held = solve(problem, rho_adapt=False, **eager)
    moved = solve(problem, **eager)
    start = solve(problem, polish=False, max_iter=1, tol=1e-9, warm_start=truth).info["rho"]
    assert held.info["rho"] == start
    assert moved.info["rho"] != start


def test_centring_is_a_setting():
    """``center=False`` solves the uncentred program: the same optimum, no centring."""
    problem, _ = make_layer(seed=6)
    centred, plain = solve(problem), solve(problem, center=False)
    assert centred.info["centered"] and not plain.info["centered"]
    assert plain.status == centred.status == "optimal"
    assert plain.objective == pytest.approx(centred.objective, rel=1e-3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rho_grows_while_the_thresholded_weights_are_infeasible(dtype):
    """On a layer with few inputs and many samples (like a first convolution) the residuals
    meet tol at iteration 200 while the thresholded weights still leave their budget. rho
    then grows (``rho_feasibility_step``): the run stops no later, nearer the optimum (cvxpy)
    and deeper inside the budget than with the step off (where only the balancing, which
    also acts while the primal side alone is above tol, moves rho), within 5 tol of it."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 9))
    weight, bias = rng.standard_normal((8, 9)), 0.5 * rng.standard_normal(8)
    Y = np.maximum(X @ weight.T + bias, 0.0)
    problem = LayerProblem(X, Y, 0.05 * np.linalg.norm(Y))
    optimum = solve(problem, method="cvxpy").objective
    # the ADMM's own stop (polishing, which certifies this layer at its first attempt, off)
    off = solve(problem, warm_start=(weight, bias), tol=1e-3, dtype=dtype, rho_feasibility_step=1.0, polish=False)
    grown = solve(problem, warm_start=(weight, bias), tol=1e-3, dtype=dtype, polish=False)
    assert off.info["residuals_met_at"] == grown.info["residuals_met_at"] < off.iterations
    assert grown.info["rho"] > 1.2 * off.info["rho"]
    assert grown.status == "optimal" and grown.iterations <= off.iterations
    assert grown.violation < 0.8 * off.violation <= 5e-3
    assert abs(grown.objective / optimum - 1) < abs(off.objective / optimum - 1)
    held = solve(problem, warm_start=(weight, bias), tol=1e-3, dtype=dtype, rho_adapt=False, max_iter=400,
                 polish=False)
    start = solve(problem, warm_start=(weight, bias), dtype=dtype, max_iter=1, polish=False).info["rho"]
    assert held.info["rho"] == start  # rho_adapt=False: neither rule moves it
    with pytest.raises(ValueError, match="rho_feasibility_step: got 0.5"):
        solve(problem, rho_feasibility_step=0.5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rho_rises_while_only_the_primal_residual_is_above_tol(dtype):
    """From the original weights of a conv-like layer the dual residual meets tol first
    and the primal one hovers above it, their ratio inside ``rho_adapt_ratio``. With the
    feasibility step off, only the balancing can move rho: it rises (it stayed at its
    start value, and the run took 625 iterations instead of 500, before the balancing
    acted on a primal residual left alone above tol)."""
    X, Y, original, size = _conv_like_layer()
    problem = LayerProblem(X, Y, 0.05 * size)
    start = solve(problem, warm_start=original, dtype=dtype, max_iter=1, polish=False).info["rho"]
    balanced = solve(problem, warm_start=original, tol=1e-3, dtype=dtype, rho_feasibility_step=1.0, polish=False)
    assert balanced.status == "optimal" and balanced.violation <= 5e-3
    assert balanced.info["rho"] > 1.5 * start
    wide = solve(problem, warm_start=original, tol=1e-3, dtype=dtype, rho_feasibility_step=1.0, polish=False,
                 rho_adapt_ratio=1e6)  # a band no ratio leaves: the rule alone moves rho
    assert wide.info["rho"] > start


def _conv_like_layer(seed: int = 0):
    """A ReLU layer with few inputs and many samples, its original weights and ``||Y||``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2000, 9))
    weight, bias = rng.standard_normal((8, 9)), 0.5 * rng.standard_normal(8)
    Y = np.maximum(X @ weight.T + bias, 0.0)
    return X, Y, (weight, bias), float(np.linalg.norm(Y))


def test_a_tight_budget_starts_rho_larger():
    """Below ``rho_budget_ref`` (relative to ``||Y||``) rho='auto' starts larger by the square
    root of how much tighter the budget is; at or above it, and with ``rho_budget_ref=0``,
    at the same value. Scaling ``X``, ``Y`` and the budget together changes nothing."""
    X, Y, original, size = _conv_like_layer()

    def start(relative, scale=1.0, **settings):
        problem = LayerProblem(scale * X, scale * Y, scale * relative * size)
        return solve(problem, warm_start=original, max_iter=1, polish=False, **settings).info["rho"]

    assert start(0.005) == pytest.approx(np.sqrt(10.0) * start(0.05), rel=1e-9)
    assert start(0.2) == pytest.approx(start(0.05), rel=1e-9)
    assert start(0.005, rho_budget_ref=0.0) == pytest.approx(start(0.05), rel=1e-9)
    assert start(0.005, scale=7.0) == pytest.approx(start(0.005), rel=1e-9)
    for bad in (-0.1, float("inf")):
        with pytest.raises(ValueError, match="rho_budget_ref: got"):
            solve(LayerProblem(X, Y, 0.05 * size), rho_budget_ref=bad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_on_a_tight_feasible_budget_rho_follows_the_violation(dtype):
    """From the original weights (which meet any budget) at 0.2% of ``||Y||``, the
    splitting's residuals are small long before the thresholded weights meet the budget.
    Balancing counts that violation as primal residual, so rho does not fall, and the run
    stops on the ADMM's own test within 5 tol of the budget (balancing the residuals
    alone lowered rho, and the run reached 4,000 iterations). The start rule is off
    (``rho_budget_ref=0``) to see this one alone."""
    rng = np.random.default_rng(3)
    X = np.maximum(rng.standard_normal((2000, 9)) @ rng.standard_normal((9, 9)) / 3.0 + 0.3, 0.0)
    weight, bias = rng.standard_normal((8, 9)) / 3.0, 0.1 * rng.standard_normal(8)
    Y = np.maximum(X @ weight.T + bias, 0.0)
    problem = LayerProblem(X, Y, 0.002 * np.linalg.norm(Y))
    options = dict(warm_start=(weight, bias), polish=False, dtype=dtype, rho_budget_ref=0.0)
    start = solve(problem, max_iter=1, **options).info["rho"]
    run = solve(problem, tol=1e-3, max_iter=3000, **options)
    assert run.info["rho"] >= start
    assert run.status == "optimal" and run.violation <= 5e-3


def test_rho_does_not_fall_while_a_budget_not_known_feasible_is_violated():
    """The balancing step itself, at a check after the hold where the dual residual is 1000x
    the primal one: it lowers rho when the returned weights meet their budget; where the
    start did not meet the budget (a cascade budget below what the original weights reach)
    and the weights leave it, rho stays (on an infeasible budget the duals grow, and
    balancing once lowered rho check after check to its floor of 1e-6, the weights a
    thousandfold outside their budget); where the start met it, the violation over
    ``feasibility_factor`` is the primal residual, and a large one raises rho."""
    from solvers._engine import make_engine
    from solvers.admm import AdmmSettings, _adapt, _Residuals, _start

    X, Y, original, size = _conv_like_layer()
    problem, settings = LayerProblem(X, Y, 0.05 * size), AdmmSettings()

    def rho_after(feasible, violation, primal_rel=1e-4, dual_rel=1e-1):
        data, engine, dtype = make_engine("numba", None, np.dtype(np.float64), problem, settings)
        state = _start(problem, data, engine, settings, original, dtype)
        state.feasible, before = feasible, state.rho
        _adapt(engine, state, _Residuals(primal_rel, dual_rel, False, violation), 1000, settings)
        return state.rho / before

    assert rho_after(False, 0.0) == pytest.approx(np.sqrt(1e-3))
    assert rho_after(True, 0.0) == pytest.approx(np.sqrt(1e-3))
    assert rho_after(False, 1.0) == 1.0
    assert rho_after(True, 1.0, dual_rel=1e-3) == pytest.approx(np.sqrt(0.2 / 1e-3))
    assert rho_after(False, 1.0, dual_rel=1e-3) == 1.0  # 1e-4 against 1e-3: within the ratio
