"""The ReLU-aware refit (solvers.refit) against cvxpy, its certificate, and the pipeline step."""
import types

import numpy as np
import pytest
import torch

import nettrim
from solvers import LayerProblem, solve
from solvers.refit import ActiveSystems, active_systems, certified_error, refit_objective, relu_refit


def _layer(seed=0, n_samples=150, n_in=10, n_out=4, noise=0.3, density=0.5):
    """A ReLU layer's original output Y, a perturbed input (as the pruned network gives) and supports."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_in))
    weight, bias = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
    Y = np.maximum(X @ weight.T + bias, 0.0)
    support = rng.random((n_out, n_in)) < density
    return X + noise * rng.standard_normal(X.shape), Y, support, (weight, bias)


def _cvxpy_refit(X, Y, support, upper=None, relu=True, fit_bias=True):
    import cvxpy as cp

    values = []
    for m in range(Y.shape[1]):
        columns = np.flatnonzero(support[m])
        w, b = cp.Variable(columns.size), cp.Variable()
        z = X[:, columns] @ w + (b if fit_bias else 0.0)
        if relu:
            active = Y[:, m] > 0
            bound = 0.0 if upper is None else upper[~active, m]
            objective = cp.sum_squares(z[active] - Y[active, m]) + cp.sum_squares(cp.pos(z[~active] - bound))
        else:
            objective = cp.sum_squares(z - Y[:, m])
        problem = cp.Problem(cp.Minimize(objective))
        problem.solve(solver="CLARABEL")
        values.append(problem.value)
    return np.array(values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refit_reaches_the_cvxpy_optimum(seed):
    X, Y, support, _ = _layer(seed)
    fitted = relu_refit(X, Y, support)
    assert fitted.converged
    np.testing.assert_allclose(fitted.objective, _cvxpy_refit(X, Y, support), rtol=1e-7, atol=1e-9)
    assert np.all(fitted.weight[~support] == 0)
    np.testing.assert_allclose(refit_objective(X, Y, fitted.weight, fitted.bias), fitted.objective, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("bound", ["none", "full", "row"])
def test_refit_objective_is_its_definition(dtype, with_bias, bound):
    """f_m entry by entry (a Python loop over the definition), with a bias or not, with the
    inactive bound v given in full, as one row broadcast over the samples, or 0; without
    ReLU the squared error on every entry (the bound ignored)."""
    X, Y, support, (weight, bias) = _layer(4, n_samples=40, n_in=6, n_out=3)
    X, Y = X.astype(dtype), Y.astype(dtype)  # the inputs as given; the objective is computed in float64
    rng = np.random.default_rng(4)
    weight = (weight * support).astype(dtype)
    bias = bias.astype(dtype) if with_bias else None
    upper = {"none": None, "full": rng.standard_normal(Y.shape), "row": rng.standard_normal(Y.shape[1])}[bound]
    Z = X.astype(np.float64) @ weight.astype(np.float64).T + (0.0 if bias is None else bias.astype(np.float64))
    V = np.zeros(Y.shape) if upper is None else np.broadcast_to(upper, Y.shape)
    expected_relu, expected_linear = np.zeros(Y.shape[1]), np.zeros(Y.shape[1])
    for p in range(Y.shape[0]):
        for m in range(Y.shape[1]):
            residual = Z[p, m] - Y[p, m] if Y[p, m] > 0 else max(Z[p, m] - V[p, m], 0.0)
            expected_relu[m] += residual ** 2
            expected_linear[m] += (Z[p, m] - Y[p, m]) ** 2
    np.testing.assert_allclose(refit_objective(X, Y, weight, bias, upper=upper), expected_relu, rtol=1e-12)
    np.testing.assert_allclose(refit_objective(X, Y, weight, bias, relu=False, upper=upper), expected_linear,
                               rtol=1e-12)


def test_refit_objective_refuses_mismatched_shapes():
    """Y or a bias that does not match X W^T is refused, naming them, before the compiled
    pass reads it."""
    X, Y, support, (weight, bias) = _layer(5, n_samples=30, n_in=6, n_out=3)
    for wrong_Y, wrong_bias in ((Y[:-1], bias), (Y[:, :2], bias), (Y, bias[:2]), (Y.T, None)):
        with pytest.raises(ValueError, match=r"Y: got shape .*needs Y \(n_samples, n_out\) and bias \(n_out,\)"):
            refit_objective(X, wrong_Y, weight, wrong_bias)


def test_refit_with_an_inactive_bound_and_without_relu():
    X, Y, support, _ = _layer(3)
    upper = np.abs(np.random.default_rng(3).standard_normal(Y.shape))
    fitted = relu_refit(X, Y, support, upper=upper)
    np.testing.assert_allclose(fitted.objective, _cvxpy_refit(X, Y, support, upper=upper), rtol=1e-7, atol=1e-9)
    linear = relu_refit(X, Y, support, relu=False)
    np.testing.assert_allclose(linear.objective, _cvxpy_refit(X, Y, support, relu=False), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("relu,fit_bias", [(True, True), (True, False), (False, True)])
def test_refits_read_their_equations_off_systems_formed_on_a_wider_support(relu, fit_bias):
    """Normal equations formed once on a wide support give, on supports inside it (the
    allocation's nested path supports, the candidates' within their union), the same
    refit as forming them; a support outside it is refused by name."""
    from solvers.refit import active_systems

    X, Y, wide, _ = _layer(6, n_in=12, n_out=5, density=0.8)
    systems = active_systems(X, Y, wide, relu=relu, fit_bias=fit_bias)
    assert [columns.tolist() for columns in systems.columns] == [np.flatnonzero(row).tolist() for row in wide]
    narrow = wide & (np.random.default_rng(6).random(wide.shape) < 0.6)
    narrow[0] = False  # an empty support too
    for support in (wide, narrow):
        formed = relu_refit(X, Y, support, relu=relu, fit_bias=fit_bias)
        read = relu_refit(X, Y, support, relu=relu, fit_bias=fit_bias, systems=systems)
        np.testing.assert_allclose(read.objective, formed.objective, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(read.weight, formed.weight, rtol=1e-8, atol=1e-10)
    narrowed = systems.narrowed(narrow, fit_bias)  # the equations on the narrower support, read off
    direct = active_systems(X, Y, narrow, relu=relu, fit_bias=fit_bias)
    for m in range(wide.shape[0]):
        np.testing.assert_array_equal(narrowed.columns[m], direct.columns[m])
        np.testing.assert_allclose(narrowed.gram[m], direct.gram[m], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(narrowed.rhs[m], direct.rhs[m], rtol=1e-12, atol=1e-12)
    outside = narrow.copy()
    m = int(np.flatnonzero((~wide).any(axis=1))[0])
    outside[m, np.flatnonzero(~wide[m])[0]] = True
    with pytest.raises(ValueError, match=f"neuron {m}'s support is not inside"):
        relu_refit(X, Y, outside, relu=relu, fit_bias=fit_bias, systems=systems)
    for refit in (relu_refit, active_systems):  # a support of the wrong shape is named
        with pytest.raises(ValueError, match=r"support: got shape \(12, 5\)"):
            refit(X, Y, wide.T, relu=relu, fit_bias=fit_bias)


@pytest.mark.parametrize("relu,fit_bias", [(True, True), (True, False), (False, True)])
def test_neurons_active_on_most_rows_form_their_equations_from_the_layers_gram(monkeypatch, relu, fit_bias):
    """Neurons active on most rows (every neuron without ReLU) take their active rows'
    equations as the layer's Gram matrix less their inactive rows': the same equations as
    gathered from the active rows (to round-off), in active_systems and in the refit; the
    others are formed from their active rows as before."""
    import solvers.refit

    rng = np.random.default_rng(21)
    X = rng.standard_normal((400, 30))
    Y = X @ rng.standard_normal((30, 8)) / 5 + np.linspace(-2.0, 3.0, 8)  # from mostly inactive to mostly active
    Y = np.maximum(Y, 0.0) if relu else Y
    support = rng.random((8, 30)) < 0.9
    found = []
    layer_gram = solvers.refit._layer_gram
    monkeypatch.setattr(solvers.refit, "_layer_gram", lambda *a: found.append(layer_gram(*a)) or found[-1])
    systems = active_systems(X, Y, support, relu=relu, fit_bias=fit_bias)
    uses = found[-1].uses
    active = (Y > 0).sum(axis=0) if relu else np.full(8, 400)
    np.testing.assert_array_equal(uses[active > 300], True)  # active on most rows: the layer's Gram matrix
    np.testing.assert_array_equal(uses[active < 200], False)
    Xa = np.hstack([X, np.ones((400, 1))]) if fit_bias else X
    for m in range(8):
        entries = np.append(np.flatnonzero(support[m]), 30) if fit_bias else np.flatnonzero(support[m])
        rows = Xa[(Y[:, m] > 0) if relu else slice(None)][:, entries]
        np.testing.assert_allclose(systems.gram[m], rows.T @ rows, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(systems.rhs[m], rows.T @ Y[(Y[:, m] > 0) if relu else slice(None), m],
                                   rtol=1e-12, atol=1e-9)
    fitted = relu_refit(X, Y, support, relu=relu, fit_bias=fit_bias)
    assert found[-1] is not None and found[-1].uses.any()
    monkeypatch.setattr(solvers.refit, "_layer_gram", lambda *a: None)
    gathered = relu_refit(X, Y, support, relu=relu, fit_bias=fit_bias)
    np.testing.assert_allclose(fitted.objective, gathered.objective, rtol=1e-9, atol=1e-10)


def test_refit_handles_empty_supports_no_bias_and_collinear_columns():
    X, Y, support, _ = _layer(4)
    X[:, 1] = X[:, 0]  # two identical columns in every support that holds both
    support[0] = False  # a neuron that keeps nothing: only its bias
    support[1, :2] = True
    fitted = relu_refit(X, Y, support, fit_bias=False)
    assert fitted.bias is None and np.all(fitted.weight[0] == 0) and np.isfinite(fitted.weight).all()
    np.testing.assert_allclose(fitted.objective, _cvxpy_refit(X, Y, support, fit_bias=False), rtol=1e-6)
    with_bias = relu_refit(X, Y, support)
    assert np.all(with_bias.objective <= fitted.objective + 1e-9)  # a free bias can only help


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_refit_stops_when_the_objective_only_moves_by_round_off(seed):
    """Exactly representable neurons with a third of their rows on the ReLU's boundary
    (``w . x = 0``): at the optimum ``f`` is ~1e-30 and those rows flip in and out with
    the rounding, each step lowering ``f`` by round-off. The refit stops there in a few
    steps, converged, instead of running to ``max_steps``."""
    rng = np.random.default_rng(seed)
    n_samples, n_in, n_out = 600, 8, 4
    weight = rng.standard_normal((n_out, n_in))
    X = rng.standard_normal((n_samples, n_in))
    for m in range(n_out):
        rows = slice(m * n_samples // (3 * n_out), (m + 1) * n_samples // (3 * n_out))
        X[rows] -= np.outer(X[rows] @ weight[m], weight[m]) / (weight[m] @ weight[m])
    Y = np.maximum(X @ weight.T, 0.0)
    start = weight + 1e-2 * rng.standard_normal(weight.shape)
    fitted = relu_refit(X, Y, np.ones((n_out, n_in), dtype=bool), weight=start, bias=np.zeros(n_out))
    assert fitted.converged and fitted.steps <= 5
    assert np.all(fitted.objective <= 1e-20 * np.sum(Y**2, axis=0))


@pytest.mark.parametrize("seed", range(5))
def test_certificate_bounds_the_post_relu_error(seed):
    """For ANY weights, sqrt(sum f) with v = 0 bounds ||relu(X W^T + b) - Y|| from above."""
    rng = np.random.default_rng(seed)
    X, Y, _, _ = _layer(seed)
    weight, bias = rng.standard_normal((Y.shape[1], X.shape[1])), rng.standard_normal(Y.shape[1])
    actual = np.linalg.norm(np.maximum(X @ weight.T + bias, 0.0) - Y)
    assert actual <= certified_error(X, Y, weight, bias) * (1 + 1e-12)


def test_refit_never_raises_a_nettrim_answers_error_and_keeps_its_guarantee():
    """A Net-Trim answer at epsilon (v = 0) has f <= epsilon^2; started from it the refit
    only lowers f, so ||relu(X W^T + b) - Y|| <= epsilon still holds, on the same support."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((300, 20))
    weight = rng.standard_normal((6, 20)) * (rng.random((6, 20)) < 0.4)
    bias = 0.2 * rng.standard_normal(6)
    Y = np.maximum(X @ weight.T + bias, 0.0)
    epsilon = 0.2 * np.linalg.norm(Y)
    answer = solve(LayerProblem(X, Y, epsilon), tol=1e-6)
    before = certified_error(X, Y, answer.weight, answer.bias)
    assert before <= epsilon * (1 + 1e-4)
    fitted = relu_refit(X, Y, answer.weight != 0, weight=answer.weight, bias=answer.bias)
    after = certified_error(X, Y, fitted.weight, fitted.bias)
    assert after <= before * (1 + 1e-12) and after < 0.5 * before  # the l1 shrinkage is gone
    assert np.linalg.norm(np.maximum(X @ fitted.weight.T + fitted.bias, 0.0) - Y) <= epsilon
    assert set(zip(*np.nonzero(fitted.weight))) <= set(zip(*np.nonzero(answer.weight)))


@pytest.mark.parametrize("mode", ["cascade", "parallel"])
@pytest.mark.parametrize("method", ["nettrim", "magnitude", "lobs", "sparsegpt"])
def test_every_method_runs_with_and_without_refit(digits, digits_model, method, mode):
    calib = digits.x_train[:300]
    kwargs = dict(method=method, mode=mode, sparsity=0.8, progress=False)
    plain = nettrim.prune(digits_model, calib, **kwargs)
    fitted = nettrim.prune(digits_model, calib, refit="relu", **kwargs)
    same_input = list(fitted.layers) if mode == "parallel" else list(fitted.layers)[:1]
    for name, report in fitted.layers.items():
        assert report.info["refit"] == "relu" and fitted.model.get_submodule(name).weight.dtype == torch.float32
        assert report.certified_error >= report.error_out * (1 - 1e-6)
        if name in same_input:  # the same support, refitted: fewer or as many weights, a lower error
            assert report.nnz_after <= plain.layers[name].nnz_after
            assert report.certified_error <= plain.layers[name].certified_error * (1 + 1e-6)
    if mode == "cascade":  # each layer fitted towards the original output on the pruned input: errors corrected
        if method == "nettrim":  # at a target sparsity Net-Trim's weights are that fit already
            assert fitted.output_error == pytest.approx(plain.output_error, rel=1e-6)
        else:
            assert fitted.output_error < plain.output_error


def test_refit_settings_are_checked(digits, digits_model):
    with pytest.raises(ValueError, match="refit: got 'ls', needs one of"):
        nettrim.PruneConfig(refit="ls")
    with pytest.raises(ValueError, match="refit: method 'cap' refits the next layer itself"):
        nettrim.PruneConfig(method="cap", sparsity=0.5, refit="relu")


def _task(relu=True, all_active=False, seed=11):
    from nettrim.methods import LayerTask

    rng = np.random.default_rng(seed)
    X = np.abs(rng.standard_normal((400, 12)))
    weight, bias = rng.standard_normal((5, 12)), rng.standard_normal(5) + (20.0 if all_active else 0.0)
    Z = X @ weight.T + bias
    Y = np.maximum(Z, 0.0) if relu else Z
    return LayerTask("layer", X, Y, relu, weight, bias, budget=0.1 * np.linalg.norm(Y))


@pytest.mark.parametrize("sparsity", [0.3, 0.6, 0.9])
def test_obs_candidates_without_relu_are_lobs(sparsity, monkeypatch):
    """Without ReLU every row is active: the Hessians are the shared one, and the only
    candidate is the shared Hessian's pass straight to the target (no first stage to stop
    at): L-OBS's answer itself where the pass removes greedily."""
    from nettrim.methods import lobs
    from nettrim.methods._relu_obs import obs_candidates

    task = _task(relu=False)
    candidates, systems = obs_candidates(task, sparsity, 1e-4)
    assert list(candidates) == ["layer"] and systems is None
    np.testing.assert_array_equal(candidates["layer"][0], lobs.prune_path(task, [sparsity], 1e-4)[0][0])
    monkeypatch.setattr(lobs, "BACKWARD_FLOPS", float("inf"))  # greedy removal forced
    candidates, _ = obs_candidates(task, sparsity, 1e-4)
    expected = lobs.prune_layer(task, sparsity=sparsity, damping=1e-4)
    np.testing.assert_array_equal(candidates["layer"][0], expected.weight)
    np.testing.assert_array_equal(candidates["layer"][1], expected.bias)


def test_nettrim_at_a_sparsity_keeps_the_better_fitted_support():
    """Default Net-Trim at a target sparsity: exactly the target, and a certified error no
    larger than either OBS support's fit, hence no larger than L-OBS followed by the refit."""
    from nettrim.methods import LayerSolver, lobs, nettrim as nettrim_method

    task = _task(seed=12)
    outcome = nettrim_method.prune_layer(task, sparsity=0.7, solver=LayerSolver())
    assert round(0.3 * task.weight.size) - task.weight.shape[0] <= int(np.count_nonzero(outcome.weight)) \
        <= round(0.3 * task.weight.size)
    assert outcome.info["support"] == "obs"
    assert sum(outcome.info["neurons_by_hessian"].values()) == task.weight.shape[0]
    certified = certified_error(task.X, task.Y, outcome.weight, outcome.bias)
    assert certified <= min(outcome.info["certified_by_hessian"].values()) * (1 + 1e-9)
    baseline = lobs.prune_layer(task, sparsity=0.7)
    refitted = relu_refit(task.X, task.Y, baseline.weight != 0, weight=baseline.weight, bias=baseline.bias)
    assert certified <= certified_error(task.X, task.Y, refitted.weight, refitted.bias) * (1 + 1e-9)
    assert certified <= certified_error(task.X, task.Y, baseline.weight, baseline.bias)
    with pytest.raises(ValueError, match="support: got 'random'"):
        nettrim_method.prune_layer(task, sparsity=0.7, support="random")


def test_rows_are_chosen_within_the_budget_and_never_worse_than_a_whole_candidate():
    """choose_rows against brute force on small problems: within the budget, no worse than
    any candidate taken whole, and the best mix when every candidate keeps alike counts."""
    import itertools

    from nettrim.methods.nettrim import choose_rows

    rng = np.random.default_rng(3)
    for _ in range(40):
        n_out = int(rng.integers(2, 8))
        objectives = rng.random((2, n_out))
        counts = rng.integers(1, 6, size=(2, n_out))
        budget = int(min(counts.sum(axis=1)))
        chosen = choose_rows(objectives, counts, budget)
        neurons = np.arange(n_out)
        assert counts[chosen, neurons].sum() <= budget
        value = objectives[chosen, neurons].sum()
        assert value <= min(objectives[c].sum() for c in range(2) if counts[c].sum() <= budget) + 1e-12
        best = min(objectives[list(mix), neurons].sum() for mix in itertools.product(range(2), repeat=n_out)
                   if counts[list(mix), neurons].sum() <= budget)
        assert value >= best - 1e-12
    alike = np.full((2, 5), 3)
    objectives = rng.random((2, 5))
    np.testing.assert_array_equal(choose_rows(objectives, alike, 15), np.argmin(objectives, axis=0))


@pytest.mark.parametrize("fit_bias", [True, False])
def test_a_candidate_with_the_first_ones_support_takes_its_fitted_row(fit_bias):
    """Net-Trim fits its OBS candidates on their supports: a neuron whose support is the
    first candidate's takes that fitted row (the fit reaches the same least objective from
    the other start), and the other neurons are fitted from their own start."""
    from nettrim.methods.nettrim import _fitted
    from nettrim.types import LayerTask

    X, Y, first, (weight, bias) = _layer(seed=4, n_samples=200, n_in=10, n_out=6, noise=0.2, density=0.6)
    second = first.copy()
    changed = np.array([1, 4])
    second[changed] = ~first[changed]  # different supports for two neurons
    bias = bias if fit_bias else None
    start = {"first": (weight * first, bias), "second": (0.5 * weight * second, None if bias is None else 0.5 * bias)}
    systems = active_systems(X, Y, first | second, relu=True, fit_bias=fit_bias)
    task = LayerTask("layer", X, Y, True, weight, bias, budget=0.0)
    fits = _fitted(task, start, systems)
    alone = {name: relu_refit(X, Y, w != 0, fit_bias=fit_bias, weight=w, bias=b, systems=systems)
             for name, (w, b) in start.items()}
    np.testing.assert_array_equal(fits["first"].weight, alone["first"].weight)
    same = np.setdiff1d(np.arange(6), changed)
    np.testing.assert_array_equal(fits["second"].weight[same], fits["first"].weight[same])
    np.testing.assert_array_equal(fits["second"].objective[same], fits["first"].objective[same])
    np.testing.assert_allclose(fits["second"].objective[same], alone["second"].objective[same], rtol=1e-9)
    np.testing.assert_allclose(fits["second"].weight[changed], alone["second"].weight[changed], rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(fits["second"].objective, alone["second"].objective, rtol=1e-9)
    assert np.all((fits["second"].weight != 0) <= second)
    if fit_bias:
        np.testing.assert_array_equal(fits["second"].bias[same], fits["first"].bias[same])
        np.testing.assert_allclose(fits["second"].bias[changed], alone["second"].bias[changed], rtol=1e-9)
    else:
        assert fits["second"].bias is None
    alike = _fitted(task, {"first": start["first"], "again": (0.5 * weight * first, bias)}, systems)
    np.testing.assert_array_equal(alike["again"].weight, alike["first"].weight)  # no neuron fitted twice
    assert alike["again"].steps == 0 and alike["again"].converged


def test_neuron_inverse_hessians_match_direct_inverses():
    """Each neuron's H_m^{-1} on the entries it holds (each at its own width), from its
    active rows' equations, against numpy's inverse of the Hessian formed directly (the
    padding is the identity); a singular one is named by its neuron."""
    from nettrim.methods import _relu_obs

    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 6))
    Y = np.maximum(rng.standard_normal((200, 5)), 0.0)
    support = np.zeros((5, 6), dtype=bool)
    for m, held in enumerate([[0, 2, 5], [1], range(6), [3, 4], []]):
        support[m, list(held)] = True
    systems = active_systems(X, Y, support, relu=True, fit_bias=True)
    inverses = _relu_obs.neuron_inverse_hessians(systems, 200, 7, 1e-4, np.arange(5))
    Xa = np.hstack([X, np.ones((200, 1))])
    for m in range(5):
        entries = np.append(np.flatnonzero(support[m]), 6)
        rows = Xa[Y[:, m] > 0][:, entries]
        H = rows.T @ rows / 200
        H += 1e-4 * np.mean(np.diag(H)) * np.eye(entries.size)
        np.testing.assert_allclose(inverses[m, :entries.size, :entries.size], np.linalg.inv(H), rtol=1e-9)
        np.testing.assert_array_equal(inverses[m, entries.size:, entries.size:], np.eye(7 - entries.size))
        assert not inverses[m, :entries.size, entries.size:].any()
    indefinite = ActiveSystems([np.arange(2)] * 8, [np.eye(3)] * 7 + [np.array([[1.0, 2, 0], [2, 1, 0], [0, 0, 1]])],
                               [np.zeros(3)] * 8)
    with pytest.raises(np.linalg.LinAlgError, match="neuron 7 is not positive definite"):
        _relu_obs.neuron_inverse_hessians(indefinite, 10, 3, 0.0, np.array([5, 6, 7]))


def test_the_damping_is_numpys_mean_to_the_last_bit():
    """The per-neuron Hessians' damping adds the diagonal in numpy's pairwise order, so that
    the compiled inverses are those of the Hessians numpy would form, bit for bit."""
    from nettrim.methods._lobs_kernels import _pairwise_sum

    rng = np.random.default_rng(8)
    for size in [1, 7, 8, 9, 127, 128, 129, 136, 257, 1000, 4097]:
        values = rng.standard_normal(size) ** 2 * 10.0 ** rng.uniform(-3, 3, size)
        assert _pairwise_sum(values) == values.sum()
        diagonal = np.einsum("ii->i", np.diag(values))  # the strided view numpy's mean reads
        assert _pairwise_sum(values) / size == diagonal.mean()


def test_invert_spd_inverts_the_leading_block_in_place_exactly_symmetric():
    """The kernel behind the per-neuron inverses: the leading block of each matrix inverted
    (against numpy), exactly symmetric, the padding as it was; an indefinite block is
    reported and a matrix that is not C-contiguous refused."""
    from solvers._lapack import invert_spd

    rng = np.random.default_rng(11)
    matrices = rng.standard_normal((3, 9, 9))  # the padding: noise the kernel must leave alone
    for k, size in enumerate([9, 4, 0]):
        A = rng.standard_normal((size, 2 * size + 1))
        matrices[k, :size, :size] = A @ A.T
    before = matrices.copy()
    for k, size in enumerate([9, 4, 0]):
        assert invert_spd(matrices[k], size)
        block = matrices[k, :size, :size]
        np.testing.assert_allclose(block, np.linalg.inv(before[k, :size, :size]), rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(block, block.T)
        untouched = np.ones((9, 9), dtype=bool)
        untouched[:size, :size] = False
        np.testing.assert_array_equal(matrices[k][untouched], before[k][untouched])
    assert not invert_spd(np.diag([1.0, -1.0, 1.0]), 3)
    with pytest.raises(ValueError, match="C-contiguous"):
        invert_spd(np.asfortranarray(before[1]), 4)


def test_solve_spd_solves_in_place_and_reports_an_indefinite_matrix():
    """The kernel behind the fits' Newton points: the solution of each system (against
    numpy) in the right-hand side's memory; an indefinite matrix is reported with the
    right-hand side untouched; arrays that are not C-contiguous are refused."""
    from solvers._lapack import solve_spd

    rng = np.random.default_rng(12)
    for size in (1, 7, 40, 0):
        A = rng.standard_normal((size, 2 * size + 1))
        matrix, rhs = A @ A.T, rng.standard_normal(size)
        factor, solution = matrix.copy(), rhs.copy()
        assert solve_spd(factor, solution)
        if size:
            np.testing.assert_allclose(solution, np.linalg.solve(matrix, rhs), rtol=1e-8, atol=1e-10)
    rhs = np.array([1.0, 2.0, 3.0])
    assert not solve_spd(np.diag([1.0, -1.0, 1.0]), rhs)
    np.testing.assert_array_equal(rhs, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="C-contiguous"):
        solve_spd(np.asfortranarray(rng.standard_normal((4, 4))), np.ones(4))


def test_the_newton_points_are_the_ridged_systems_solutions_and_fall_back_where_indefinite():
    """Each padded system ridged (relative ridge on its valid entries, 1 on the padding,
    whose coefficients come out 0) and solved, against numpy's solve of the same systems;
    a system that round-off leaves indefinite (here made so) is solved by LU instead, and
    the gram matrices are left as they were."""
    from solvers._refit_kernels import _ridged_solve
    from solvers.refit import _RIDGE, _Chunk

    rng = np.random.default_rng(14)
    n_systems, width = 5, 6
    valid = np.ones((n_systems, width), dtype=bool)
    valid[1, 4:] = valid[3, 2:] = False
    gram = np.zeros((n_systems, width, width))
    for c in range(n_systems):
        B = rng.standard_normal((int(valid[c].sum()), 20))
        gram[c][np.ix_(valid[c], valid[c])] = B @ B.T
    rhs = rng.standard_normal((n_systems, width))
    before = gram.copy()
    theta, solved = _ridged_solve(gram, rhs, valid, _RIDGE)
    assert solved.all()
    np.testing.assert_array_equal(gram, before)
    for c in range(n_systems):
        mean = max(np.diag(gram[c])[valid[c]].mean(), 1.0)
        ridged = gram[c] + np.diag(np.where(valid[c], _RIDGE * mean, 1.0))
        np.testing.assert_allclose(theta[c], np.linalg.solve(ridged, np.where(valid[c], rhs[c], 0.0)),
                                   rtol=1e-9, atol=1e-12)
        assert np.all(theta[c][~valid[c]] == 0.0)
    gram[2, 0, 0] = -10.0  # indefinite, whatever the ridge: Cholesky fails, LU solves it
    theta, solved = _ridged_solve(gram, rhs, valid, _RIDGE)
    assert solved.tolist() == [True, True, False, True, True] and np.all(theta[2] == 0.0)

    chunk = types.SimpleNamespace(  # what newton_point reads of a chunk: every row active, none added
        neurons=np.arange(n_systems), valid=valid, XT=np.zeros((width, 3)), width=width, fit_bias=False,
        padded=np.zeros((n_systems, width), dtype=np.int64), sizes=valid.sum(axis=1),
        active=np.ones((n_systems, 3), dtype=bool), v=np.zeros((n_systems, 3)), _active_system=lambda: (gram, rhs))
    point = _Chunk.newton_point(chunk, np.ones((n_systems, 3), dtype=bool))
    ridged = gram[2] + np.diag(np.where(valid[2], _RIDGE * max(np.diag(gram[2]).mean(), 1.0), 1.0))
    np.testing.assert_allclose(point[2], np.linalg.solve(ridged, rhs[2]), rtol=1e-9)
    np.testing.assert_array_equal(point[[0, 1, 3, 4]], theta[[0, 1, 3, 4]])


@pytest.mark.parametrize("whole_systems", [True, False])
def test_relu_obs_in_chunks_of_neurons_gives_the_same_weights(monkeypatch, whole_systems):
    """Beyond the memory budget the inverse Hessians are formed a chunk of neurons at a
    time (twice), from the equations formed for the whole layer or, where those would not
    fit either, a chunk's at a time; the weights are those of one pass: the same support,
    the values to round-off (a chunk's equations may be formed by the other way of
    solvers.refit._layer_gram, which counts the whole layer's neurons)."""
    import solvers.refit

    from nettrim.methods import _relu_obs

    task = _task(seed=13)
    whole, systems = _relu_obs.obs_candidates(task, 0.6, 1e-4)
    assert systems is not None
    monkeypatch.setattr(_relu_obs, "_INVERSE_BYTES", 1)  # a chunk per neuron
    if not whole_systems:
        monkeypatch.setattr(solvers.refit, "SYSTEMS_BYTES", 1)
    formed = []
    inverses = _relu_obs.neuron_inverse_hessians
    monkeypatch.setattr(_relu_obs, "neuron_inverse_hessians",
                        lambda *args: formed.append(args[-1].size) or inverses(*args))
    chunked, chunked_systems = _relu_obs.obs_candidates(task, 0.6, 1e-4)
    assert (chunked_systems is not None) == whole_systems
    assert formed == [1] * (2 * task.weight.shape[0])
    np.testing.assert_array_equal(chunked["neuron"][0] != 0, whole["neuron"][0] != 0)
    np.testing.assert_allclose(chunked["neuron"][0], whole["neuron"][0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chunked["neuron"][1], whole["neuron"][1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("relu", [True, False])
def test_refit_reads_x_in_either_layout_and_narrow_supports_by_their_columns(monkeypatch, relu):
    """An ``X`` in float64 column-major order (read without a copy) gives the refit of the
    same ``X`` in row-major float32 or float64, bit for bit; responses summed over the
    support columns (narrow supports) give the refit of dense products."""
    import solvers.refit

    X, Y, support, _ = _layer(8, n_in=40, n_out=6, density=0.1)
    X32 = X.astype(np.float32)
    X = X32.astype(np.float64)
    results = [relu_refit(data, Y, support, relu=relu) for data in (X32, X, np.asfortranarray(X))]
    for other in results[1:]:
        np.testing.assert_array_equal(other.weight, results[0].weight)
        np.testing.assert_array_equal(other.objective, results[0].objective)
    monkeypatch.setattr(solvers.refit, "_NARROW", 10**9)  # dense products always
    dense = relu_refit(X, Y, support, relu=relu)
    monkeypatch.setattr(solvers.refit, "_NARROW", 1)  # column sums always
    summed = relu_refit(X, Y, support, relu=relu)
    np.testing.assert_allclose(summed.objective, dense.objective, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(summed.weight, dense.weight, rtol=1e-7, atol=1e-9)


def test_the_refit_kernels_match_their_numpy_forms():
    """``_objectives`` is the refit's ``f`` at a point or along a step, ``_advance`` takes a
    step and reads the rows there, ``_add_rows`` adds the
    normal equations of a neuron's inactive rows among its Newton rows into its padded
    system (towards their bound; the bias last),
    ``_support_response`` sums a neuron's support columns, ``_dense_rows`` scatters its
    coefficients onto them, ``_equations`` forms its normal equations on its active rows
    (or from the layer's, less its inactive rows'), ``_padded_supports`` lists a chunk's
    supports."""
    from solvers._refit_kernels import (_add_rows, _advance, _dense_rows, _equations, _objectives, _padded_supports,
                                        _support_response)

    rng = np.random.default_rng(4)
    n_samples, n_in, c = 50, 7, 3
    z, dz = rng.standard_normal((c, n_samples)), rng.standard_normal((2, n_samples))
    y, v = np.maximum(rng.standard_normal((c, n_samples)), 0.0), rng.standard_normal((c, n_samples))
    active = y > 0

    def f(point, m):
        residual = np.where(active[m], point - y[m], np.maximum(point - v[m], 0.0))
        return residual @ residual

    index, length = np.array([2, 0]), np.array([0.5, 1.0])
    assert np.allclose(_objectives(z, index, np.zeros((0, 0)), np.zeros(0), y, v, active), [f(z[2], 2), f(z[0], 0)])
    stepped = _objectives(z, index, dz, length, y, v, active)
    assert np.allclose(stepped, [f(z[2] + 0.5 * dz[0], 2), f(z[0] + dz[1], 0)])
    moved, rows = z.copy(), active[index] | (z[index] > v[index])
    same = _advance(moved, index, np.array([0.5, 0.0]), dz, active, v, rows)  # neuron 0 does not move
    expected = z.copy()
    expected[2] += 0.5 * dz[0]
    np.testing.assert_array_equal(moved, expected)
    np.testing.assert_array_equal(rows, active[index] | (expected[index] > v[index]))
    np.testing.assert_array_equal(same, [np.array_equal(rows[0], active[2] | (z[2] > v[2])), True])

    X = rng.standard_normal((n_samples, n_in))
    columns = np.array([[1, 4, 6], [0, 2, 0], [3, 0, 0]])
    sizes = np.array([3, 2, 1])
    newton_rows = rng.random((2, n_samples)) < 0.6
    width = 3
    gram, rhs = np.zeros((2, width + 1, width + 1)), np.zeros((2, width + 1))
    _add_rows(np.ascontiguousarray(X.T), np.array([1, 0]), columns, sizes, newton_rows, active, v, gram, rhs, width,
              True)
    for i, m in enumerate([1, 0]):
        extra = newton_rows[i] & ~active[m]  # the inactive rows among the Newton rows, towards their bound
        B = np.column_stack([X[np.ix_(extra, columns[m, :sizes[m]])], np.ones(extra.sum())])
        slots = np.r_[np.arange(sizes[m]), width]
        assert np.allclose(gram[i][np.ix_(slots, slots)], B.T @ B)
        assert np.allclose(rhs[i][slots], B.T @ v[m, extra])
        unused = np.setdiff1d(np.arange(width + 1), slots)
        assert not gram[i][unused].any() and not rhs[i][unused].any()
    Xa = np.column_stack([X, np.ones(n_samples)])
    layer_gram, layer_rhs = Xa.T @ Xa, Xa.T @ y.T
    for m in range(3):
        for fit_bias in (True, False):
            entries = np.append(columns[m, :sizes[m]], n_in) if fit_bias else columns[m, :sizes[m]]
            B = Xa[np.ix_(active[m], entries)]
            for complement in (False, True):  # from the active rows, or the layer's less the inactive ones
                gram, rhs = _equations(np.ascontiguousarray(X.T), y[m], active[m], columns[m, :sizes[m]].copy(),
                                       fit_bias, complement, layer_gram, layer_rhs, m)
                np.testing.assert_allclose(gram, B.T @ B, rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(rhs, B.T @ y[m, active[m]], rtol=1e-12, atol=1e-12)
                assert np.array_equal(gram, gram.T)
    never = np.zeros(n_samples, dtype=bool)  # a neuron never active: no rows, zero equations
    gram, rhs = _equations(np.ascontiguousarray(X.T), y[0], never, columns[0], True, False, layer_gram, layer_rhs, 0)
    assert gram.shape == (4, 4) and not gram.any() and not rhs.any()
    support = rng.random((4, n_in)) < 0.5
    support[2] = False  # an empty support: one column of padding
    padded, held = _padded_supports(support, np.array([3, 2, 0]))
    assert padded.shape == (3, max(1, held.max()))
    for k, m in enumerate([3, 2, 0]):
        np.testing.assert_array_equal(padded[k, :held[k]], np.flatnonzero(support[m]))
        assert not padded[k, held[k]:].any()
    theta = rng.standard_normal((2, width + 1))
    dense = _dense_rows(theta, np.array([2, 0]), columns, sizes, n_in)
    expected = np.zeros((2, n_in))
    expected[0, 3], expected[1, [1, 4, 6]] = theta[0, 0], theta[1, :3]
    np.testing.assert_array_equal(dense, expected)
    for fit_bias in (True, False):
        z = _support_response(np.ascontiguousarray(X.T), np.array([2, 0]), columns, sizes, theta, width, fit_bias)
        for i, m in enumerate([2, 0]):
            expected = X[:, columns[m, :sizes[m]]] @ theta[i, :sizes[m]] + (theta[i, width] if fit_bias else 0.0)
            np.testing.assert_allclose(z[i], expected, rtol=1e-12, atol=1e-12)


def test_support_response_sums_in_column_order_across_sample_tiles():
    """The narrow-support response is taken a tile of samples at a time and four columns
    at a time; every entry is still the bias plus each column's term in support order, to
    the last bit, on more samples than a tile and widths on either side of four."""
    from solvers._refit_kernels import _SAMPLE_TILE, _support_response

    rng = np.random.default_rng(11)
    n_samples, n_in = 2 * _SAMPLE_TILE + 37, 30
    XT = rng.standard_normal((n_in, n_samples))
    sizes = np.array([9, 0, 4, 3, 7])
    width = int(sizes.max())
    columns = np.zeros((sizes.size, width), dtype=np.int64)
    for m, size in enumerate(sizes):
        columns[m, :size] = np.sort(rng.choice(n_in, size, replace=False))
    index = np.array([4, 0, 2, 1, 3])
    theta = rng.standard_normal((index.size, width + 1))
    for fit_bias in (True, False):
        z = _support_response(XT, index, columns, sizes, theta, width, fit_bias)
        for i, m in enumerate(index):
            expected = np.full(n_samples, theta[i, width] if fit_bias else 0.0)
            for j in range(sizes[m]):
                expected = expected + theta[i, j] * XT[columns[m, j]]
            np.testing.assert_array_equal(z[i], expected)


def test_the_objectives_carry_a_nan_on_an_inactive_row():
    """A NaN response on an inactive row makes the neuron's objective NaN (as
    ``max(z - v, 0)^2`` does), in the Newton loop's kernel and in ``refit_objective``:
    a certified error never hides a non-finite output."""
    from solvers._refit_kernels import _objectives

    y = np.array([[1.0, 0.0, 0.5]])
    z = np.array([[0.5, np.nan, 0.5]])
    active = y > 0
    values = _objectives(z, np.array([0]), np.zeros((0, 0)), np.zeros(0), y, np.zeros_like(y), active)
    assert np.isnan(values[0])
    X = np.array([[1.0], [np.nan], [1.0]])
    objective = refit_objective(X, y.T, np.array([[0.5]]), np.array([0.0]))
    assert np.isnan(objective[0])
    finite = refit_objective(np.array([[1.0], [-1.0], [1.0]]), y.T, np.array([[0.5]]), np.array([0.0]))
    assert np.isfinite(finite[0]) and finite[0] == pytest.approx(0.25)
