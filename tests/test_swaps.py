"""Single swaps after greedy OBS: the compiled exchange per neuron and Net-Trim's use of it."""
import itertools

import numpy as np
import pytest

from nettrim.methods import LayerSolver, LayerTask
from nettrim.methods import nettrim as nettrim_method
from nettrim.methods._swaps import swap_supports
from solvers.exchange import exchange, exchange_each, subset_error
from solvers.refit import refit_objective, relu_refit


def _regression(seed, n_samples=200, n_in=14):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_in)) @ rng.standard_normal((n_in, n_in))  # correlated columns
    t = X[:, :4] @ rng.standard_normal(4) + 0.5 * rng.standard_normal(n_samples)
    return X, t


def _moments(X, t):
    Xa = np.hstack([X, np.ones((len(X), 1))])
    return Xa.T @ Xa, Xa.T @ t


@pytest.mark.parametrize("seed", range(4))
def test_exchange_each_makes_the_swaps_of_the_group_exchange(seed):
    """One column per group and one output: the compiled per-neuron exchange (the bias a
    fixed column) takes the same swaps as :func:`solvers.exchange.exchange` (centred, no
    ridge), and its error is the least-squares error of the columns it keeps."""
    X, t = _regression(seed)
    start = np.sort(np.random.default_rng(seed).choice(X.shape[1], 5, replace=False))
    C, c = _moments(X, t)
    kept = np.append(start, X.shape[1])
    new, decrease = exchange_each([C], [c], [t @ t], [kept], [np.arange(6) < 5], sweeps=20)
    expected, before, after = exchange(X, t[:, None], start, 1, sweeps=20, ridge=0.0)
    assert new[0][-1] == X.shape[1]  # the bias stays, last
    np.testing.assert_array_equal(np.sort(new[0][:-1]), expected)
    assert decrease[0] == pytest.approx(before - after, rel=1e-6)
    assert subset_error(X, t[:, None], new[0][:-1], ridge=0.0) == pytest.approx(after, rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_no_single_swap_lowers_the_error_after_the_exchange(seed):
    """Where the exchange stops before its sweeps run out, every single swap, tried by least
    squares, leaves the error at least as high; the count of columns is unchanged."""
    X, t = _regression(seed + 10, n_in=10)
    C, c = _moments(X, t)
    start = np.array([7, 8, 9, 10])  # the last three inputs and the bias
    new, _ = exchange_each([C], [c], [t @ t], [start], [np.array([True, True, True, False])], sweeps=50)
    kept = list(new[0][:-1])
    assert len(kept) == 3 and new[0][-1] == 10
    best = subset_error(X, t[:, None], np.array(kept), ridge=0.0)
    for position, column in itertools.product(range(3), range(10)):
        if column in kept:
            continue
        trial = kept.copy()
        trial[position] = column
        assert subset_error(X, t[:, None], np.array(trial), ridge=0.0) >= best * (1 - 1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_the_exchange_stays_exact_over_many_swaps_between_factorisations(seed):
    """Many swaps, the fit updated in place between fresh factorisations (one once as many
    swaps as the support holds columns have been made): the decrease it reports is the
    least-squares error's, to round-off, and no single swap lowers the error further."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((300, 40)) @ (np.eye(40) + 0.5 * rng.standard_normal((40, 40)))
    t = X[:, 20:] @ rng.standard_normal(20) + 0.1 * rng.standard_normal(300)  # the last twenty inputs explain t
    C, c = _moments(X, t)
    start = np.arange(12)  # twelve of the first twenty: each should go
    kept = np.append(start, 40)
    new, decrease = exchange_each([C], [c], [t @ t], [kept], [np.arange(13) < 12], sweeps=60)
    chosen = new[0][:-1]
    assert len(np.setdiff1d(chosen, start)) >= 10  # most of the support swapped, over several passes
    before = subset_error(X, t[:, None], start, ridge=0.0)
    after = subset_error(X, t[:, None], chosen, ridge=0.0)
    assert decrease[0] == pytest.approx(before - after, rel=1e-8)
    for position, column in itertools.product(range(12), range(40)):
        if column in chosen:
            continue
        trial = chosen.copy()
        trial[position] = column
        assert subset_error(X, t[:, None], trial, ridge=0.0) >= after * (1 - 1e-9)


def test_exchange_each_checks_its_arguments():
    C, c = _moments(*_regression(0))
    with pytest.raises(ValueError, match="one entry per neuron"):
        exchange_each([C], [c, c], [1.0], [np.arange(3)], [np.ones(3, bool)])
    with pytest.raises(ValueError, match="sweeps: got -1"):
        exchange_each([C], [c], [1.0], [np.arange(3)], [np.ones(3, bool)], sweeps=-1)
    with pytest.raises(ValueError, match="sweeps: got True"):
        exchange_each([C], [c], [1.0], [np.arange(3)], [np.ones(3, bool)], sweeps=True)


def _task(relu, seed=5, n_samples=300, n_in=16, n_out=6, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = np.abs(rng.standard_normal((n_samples, n_in)) @ rng.standard_normal((n_in, n_in)) / 3)
    weight, bias = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
    Z = X @ weight.T + bias
    Y = np.maximum(Z, 0.0) if relu else Z
    return LayerTask("layer", X.astype(dtype), Y.astype(dtype), relu, weight, bias, budget=0.1 * np.linalg.norm(Y))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_swapped_rows_never_err_more_and_keep_their_counts(relu, dtype):
    """From a poor support (the smallest original weights), the swaps lower the layer's
    fitted objective, no neuron's objective grows, every neuron keeps as many weights,
    and the objectives reported are those of the rows returned."""
    task = _task(relu, dtype=dtype)
    support = np.argsort(np.abs(task.weight), axis=1)[:, :5]  # the five smallest of each row
    mask = np.zeros_like(task.weight, dtype=bool)
    np.put_along_axis(mask, support, True, axis=1)
    fit = relu_refit(task.X, task.Y, mask, relu=relu)
    candidates = np.ones_like(mask)  # a ReLU layer's swaps draw from these
    weight, bias, objective, info = swap_supports(task, fit.weight, fit.bias, fit.objective, candidates)
    assert np.all(objective <= fit.objective * (1 + 1e-12))
    assert objective.sum() < 0.9 * fit.objective.sum() and info["swapped"] > 0
    assert info["swap_decrease"] == pytest.approx(1 - objective.sum() / fit.objective.sum())
    np.testing.assert_array_equal(np.count_nonzero(weight, axis=1), np.count_nonzero(fit.weight, axis=1))
    np.testing.assert_allclose(refit_objective(task.X, task.Y, weight, bias, relu=relu), objective, rtol=1e-6)


def test_swaps_of_a_linear_layer_reach_its_best_support_on_a_small_problem():
    """Without ReLU, every neuron's swapped support is fitted by least squares; on 8 inputs
    and 3 kept, that is the best support of all 56 at most points."""
    task = _task(False, n_in=8, n_out=4, seed=2)
    mask = np.zeros_like(task.weight, dtype=bool)
    mask[:, :3] = True
    fit = relu_refit(task.X, task.Y, mask, relu=False)
    weight, _, objective, _ = swap_supports(task, fit.weight, fit.bias, fit.objective)
    best = [min(subset_error(task.X, task.Y[:, [m]], np.array(columns), ridge=0.0)
                for columns in itertools.combinations(range(8), 3)) for m in range(4)]
    assert np.sum(np.isclose(objective, best, rtol=1e-6)) >= 3
    assert np.all(objective >= np.array(best) * (1 - 1e-9))


def test_nettrim_swaps_lower_the_layers_certified_error_and_can_be_turned_off():
    """The default at a target sparsity with swaps (up to 10 passes) errs no more than without
    (``swaps=0``, the OBS supports as fitted), at the same count of weights."""
    task = _task(True, n_in=20, n_out=8, seed=9)
    plain = nettrim_method.prune_layer(task, sparsity=0.8, solver=LayerSolver(), swaps=0)
    swapped = nettrim_method.prune_layer(task, sparsity=0.8, solver=LayerSolver())
    assert "swapped" not in plain.info and swapped.info["swapped"] >= 0
    assert np.count_nonzero(swapped.weight) == np.count_nonzero(plain.weight)
    errors = [refit_objective(task.X, task.Y, o.weight, o.bias).sum() for o in (plain, swapped)]
    assert errors[1] <= errors[0] * (1 + 1e-12)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="swaps: got"):
            nettrim_method.prune_layer(task, sparsity=0.8, swaps=bad)


def test_a_relu_layer_whose_equations_would_not_fit_keeps_its_rows(monkeypatch):
    """Beyond ``solvers.refit.SYSTEMS_BYTES`` of equations no Gram matrices are formed: the
    rows come back as they were, with nothing swapped."""
    import solvers.refit

    task = _task(True)
    support = np.argsort(np.abs(task.weight), axis=1)[:, :5]
    mask = np.zeros_like(task.weight, dtype=bool)
    np.put_along_axis(mask, support, True, axis=1)
    fit = relu_refit(task.X, task.Y, mask)
    monkeypatch.setattr(solvers.refit, "SYSTEMS_BYTES", 0)
    weight, bias, objective, info = swap_supports(task, fit.weight, fit.bias, fit.objective, np.ones_like(mask))
    assert info == {"swapped": 0, "swap_decrease": 0.0}
    assert weight is fit.weight and objective is fit.objective
