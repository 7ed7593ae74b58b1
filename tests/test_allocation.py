"""Sparsity across the network (allocate='error'): one target shared out among the layers by their error curves."""
import numpy as np
import pytest

import nettrim
from nettrim.allocation import GRID, ErrorCurves, allocate, share_out
from nettrim.record import record


def test_a_steep_layer_keeps_more_and_the_network_meets_its_target():
    grid = np.array(GRID)
    curves = {"steep": 2.0 * grid, "flat": 0.05 * grid, "small": 5.0 * grid}
    sizes = {"steep": 1000, "flat": 1000, "small": 50}
    shares = allocate(curves, sizes, 0.6)
    kept = sum(sizes[name] * (1 - share) for name, share in shares.items())
    total = sum(sizes.values())
    assert kept <= 0.4 * total + 1e-9 and kept >= 0.4 * total - 0.005 * max(sizes.values())
    assert shares["flat"] > shares["steep"] and shares["small"] <= shares["steep"]
    equal = allocate({"a": grid, "b": grid}, {"a": 100, "b": 100}, 0.7)  # alike layers, alike shares
    assert abs(equal["a"] - equal["b"]) <= 0.1 and (2 - equal["a"] - equal["b"]) * 100 <= 60 + 1e-9
    with pytest.raises(ValueError, match="at most 0.98"):
        allocate(curves, sizes, 0.99)


def test_error_curves_start_at_zero_and_grow_and_the_fit_lowers_them(digits, digits_model):
    curves = ErrorCurves(record(digits_model, digits.x_train[:300]))
    unfitted = curves.curves()
    assert all(np.array_equal(unfitted[name], curves.unfitted[name]) for name in unfitted)  # nothing fitted yet
    curves.fit_all()
    for name, curve in curves.curves().items():
        assert curve[0] == 0.0 and np.all(np.diff(curve) >= -1e-3) and curve[-1] > curve[1]
        assert np.all(curve <= curves.unfitted[name] * (1 + 1e-9))  # the fit starts from the path's weights
        assert curve[1:] == pytest.approx([curves.fitted[name][s] for s in GRID[1:]])


def test_the_curves_path_is_the_released_lobs_ranking_without_greedy_removal(digits, digits_model, monkeypatch):
    """The curves' path removes each row's weights in the order of their costs at the start,
    with the fixed inverse Hessian (``prune_path(order="ranked")``): the weights at every
    point are L-OBS's released answer (``faithful=True``) on the curves' rows, and no greedy
    removal runs."""
    from nettrim.methods import lobs

    def refuse(*args):
        raise AssertionError("greedy removal in the curves")

    monkeypatch.setattr(lobs, "greedy_obs_path", refuse)
    monkeypatch.setattr(lobs, "greedy_forward_path", refuse)
    curves = ErrorCurves(record(digits_model, digits.x_train[:300]))
    for name in curves.unfitted:
        task = curves._task(name)
        for sparsity in GRID[1:]:
            released = lobs.prune_layer(task, sparsity=sparsity, faithful=True)
            weight, bias = curves._paths[name][sparsity]
            np.testing.assert_array_equal(weight, released.weight.astype(np.float32))
            np.testing.assert_array_equal(bias, released.bias.astype(np.float32))


def test_error_curves_read_evenly_spaced_rows(digits, digits_model):
    x = digits.x_train[:300]
    rows = np.unique(np.linspace(0, 299, 120).round().astype(int))
    sampled = ErrorCurves(record(digits_model, x), rows=120, rows_per_input=0)
    alone = ErrorCurves(record(digits_model, x[rows]))  # an MLP's rows are its samples
    name = next(iter(alone.unfitted))
    sampled.fit(name, [0.8])
    alone.fit(name, [0.8])
    for other in alone.unfitted:
        np.testing.assert_allclose(sampled.unfitted[other], alone.unfitted[other], rtol=1e-9)
    assert sampled.fitted[name][0.8] == pytest.approx(alone.fitted[name][0.8], rel=1e-9)
    every = ErrorCurves(record(digits_model, x), rows=None)
    assert not np.allclose(every.unfitted[name], sampled.unfitted[name])  # the rows do matter
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="rows"):
            ErrorCurves(record(digits_model, x), rows=bad)
    with pytest.raises(ValueError, match="rows_per_input"):
        ErrorCurves(record(digits_model, x), rows_per_input=-1)
    with pytest.raises(ValueError, match="max_rows"):
        ErrorCurves(record(digits_model, x), rows=200, max_rows=100)


def test_the_curves_do_not_depend_on_the_threads():
    """The layers are measured on as many threads as BLAS has, each with BLAS on one
    thread: the paths and the errors are the same bits with BLAS on one thread or two (at
    these sizes OpenBLAS's threaded products round differently from its serial ones)."""
    import torch
    from threadpoolctl import threadpool_limits
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(150, 200), nn.ReLU(), nn.Linear(200, 10))
    records = record(model, torch.randn(1200, 150))
    with threadpool_limits(1, user_api="blas"):
        one = ErrorCurves(records)
    with threadpool_limits(2, user_api="blas"):
        two = ErrorCurves(records)
    assert list(two.unfitted) == list(records)  # in the records' order, whichever layer ran first
    for name in records:
        np.testing.assert_array_equal(one.unfitted[name], two.unfitted[name])
        for sparsity in GRID[1:]:
            for a, b in zip(one._paths[name][sparsity], two._paths[name][sparsity]):
                np.testing.assert_array_equal(a, b)


def test_a_wide_layer_is_read_at_rows_in_proportion_to_its_inputs(digits, digits_model):
    """``rows_per_input`` rows per weight of a neuron, within ``[rows, max_rows]``: a fit on
    fewer rows than it has weights would read as exact. The digits MLP's layers have 64,
    32 and 24 inputs."""
    records = record(digits_model, digits.x_train[:600])
    curves = ErrorCurves(records, rows=100, rows_per_input=4)
    for name, rec in records.items():
        expected = min(600, max(100, 4 * (rec.weight.shape[1] + 1)))
        assert curves._task(name).X.shape[0] == expected
    assert {curves._task(name).X.shape[0] for name in records} == {260, 132, 100}
    capped = ErrorCurves(records, rows=100, rows_per_input=4, max_rows=200)  # the widest layer held to 200
    assert {capped._task(name).X.shape[0] for name in records} == {200, 132, 100}


def test_unfitted_points_are_scaled_by_the_ratio_of_the_fitted_ones(digits, digits_model):
    curves = ErrorCurves(record(digits_model, digits.x_train[:300]))
    name = next(iter(curves.unfitted))
    curves.fit(name, [0.7, 0.9])
    curve, unfitted, fitted = curves.curve(name), curves.unfitted[name], curves.fitted[name]
    ratio = {s: fitted[s] / unfitted[GRID.index(s)] for s in (0.7, 0.9)}
    assert curve[GRID.index(0.7)] == fitted[0.7] and curve[GRID.index(0.9)] == fitted[0.9]
    assert curve[GRID.index(0.5)] == pytest.approx(unfitted[GRID.index(0.5)] * ratio[0.7])  # held below
    assert curve[GRID.index(0.98)] == pytest.approx(unfitted[GRID.index(0.98)] * ratio[0.9])  # and above
    between = 0.5 * (ratio[0.7] + ratio[0.9])  # 0.8 is halfway between 0.7 and 0.9
    assert curve[GRID.index(0.8)] == pytest.approx(unfitted[GRID.index(0.8)] * between)
    for grid in ((0.5, 0.9), (0.0, 0.9, 0.8), (0.0, 0.5, 1.0)):
        with pytest.raises(ValueError, match="grid: got"):
            ErrorCurves(record(digits_model, digits.x_train[:300]), grid)
    # fitted for a share: the point at or above it (not 0), and on a point the next one up
    assert curves.bracket(0.85) == (0.9,) and curves.bracket(0.9) == (0.9, 0.95)
    assert curves.bracket(0.2) == (0.5,) and curves.bracket(0.0) == (0.5,) and curves.bracket(0.5) == (0.5, 0.7)
    assert curves.bracket(0.98) == (0.98,) and curves.bracket(0.9 + 1e-12) == (0.9, 0.95)


def test_the_curves_fits_take_at_most_fit_steps_newton_steps(digits, digits_model, monkeypatch):
    """A curve's fit stops after ``fit_steps`` Newton steps: its error lies between the
    converged fit's and the path's unfitted one, and more steps never raise it."""
    from solvers import refit

    records = record(digits_model, digits.x_train[:300])
    steps = []
    fit = refit.relu_refit
    monkeypatch.setattr(refit, "relu_refit", lambda *a, **k: steps.append(k["max_steps"]) or fit(*a, **k))
    errors = {}
    for fit_steps in (1, 2, 50):
        curves = ErrorCurves(records, fit_steps=fit_steps)
        curves.fit_all()
        errors[fit_steps] = curves
        assert set(steps) == {fit_steps}
        steps.clear()
    for name in records:
        for index, sparsity in enumerate(GRID[1:], start=1):
            one, two, converged = (errors[k].fitted[name][sparsity] for k in (1, 2, 50))
            assert converged <= two * (1 + 1e-9) and two <= one * (1 + 1e-9)
            assert one <= errors[1].unfitted[name][index] * (1 + 1e-9)
    assert any(errors[50].fitted[name][s] < errors[1].fitted[name][s] * (1 - 1e-6)
               for name in records for s in GRID[1:])
    for wrong in (0, 1.5, True):
        with pytest.raises(ValueError, match="fit_steps"):
            ErrorCurves(records, fit_steps=wrong)


def test_points_fitted_together_match_points_fitted_alone(digits, digits_model, monkeypatch):
    """Fitted together, the points read their equations off those formed once on the
    widest point's support (the path's supports are nested); the errors are those of
    fitting each alone, and over the memory budget nothing is formed ahead."""
    from solvers import refit

    records = record(digits_model, digits.x_train[:300])
    together, alone = ErrorCurves(records), ErrorCurves(records)
    calls = []
    fit = refit.relu_refit
    monkeypatch.setattr(refit, "relu_refit", lambda *a, **k: calls.append(k["systems"] is not None) or fit(*a, **k))
    for name in records:
        together.fit(name, [0.9, 0.5, 0.7])
        for sparsity in (0.5, 0.7, 0.9):
            alone.fit(name, [sparsity])
        assert together.fitted[name] == pytest.approx(alone.fitted[name], rel=1e-9)
    assert calls[:3] == [True, True, True] and not any(calls[3:6])
    monkeypatch.setattr(refit, "SYSTEMS_BYTES", 0)
    calls.clear()
    ErrorCurves(records).fit(next(iter(records)), [0.5, 0.7])
    assert calls == [False, False]


def test_each_neuron_counts_in_its_layer_error_as_much_as_the_next_layer_reads_it(digits, digits_model):
    """With consumer weights ``c`` a layer's error is ``sqrt(sum_m c_m f_m) / ||Y||``,
    before and after the fit; weights of 1 change nothing, and the pipeline passes the
    consumer weights of the model (the hidden layers have them, the last layer does not)."""
    from nettrim.consumers import consumer_importance
    from solvers.refit import refit_objective

    records = record(digits_model, digits.x_train[:300])
    first = next(iter(records))
    n_out = records[first].weight.shape[0]
    weights = np.where(np.arange(n_out) % 2 == 0, 2.0, 0.0)  # even neurons count twice, odd ones not at all
    plain, alike = ErrorCurves(records), ErrorCurves(records, importance={first: np.ones(n_out)})
    weighted = ErrorCurves(records, importance={first: weights})
    assert all(np.array_equal(alike.unfitted[name], plain.unfitted[name]) for name in records)
    task = weighted._task(first)
    weight, bias = weighted._paths[first][0.7]
    objective = refit_objective(task.X, task.Y, weight, bias, relu=task.relu)
    expected = np.sqrt(np.dot(objective, weights)) / task.scale
    assert weighted.unfitted[first][GRID.index(0.7)] == pytest.approx(expected, rel=1e-9)
    for name in records:
        weighted.fit(name, [0.7])
        plain.fit(name, [0.7])
    assert weighted.fitted[first][0.7] != pytest.approx(plain.fitted[first][0.7], rel=1e-6)
    assert all(weighted.fitted[name] == plain.fitted[name] for name in list(records)[1:])  # no weights given there
    importance = consumer_importance(digits_model, records)
    assert set(importance) == set(list(records)[:-1])


def test_the_shares_are_chosen_on_fitted_points(digits, digits_model):
    records = record(digits_model, digits.x_train[:300])
    curves = ErrorCurves(records)
    shares = share_out(records, 0.85, curves=curves)
    sizes = {name: rec.weight.numel() for name, rec in records.items()}
    assert shares == allocate(curves.curves(), sizes, 0.85)  # the last allocation, on the curves as they ended
    for name, share in shares.items():  # every share lies between fitted points (or on one)
        assert set(curves.bracket(share)) <= set(curves.fitted[name])
        assert len(curves.fitted[name]) < len(GRID) - 1  # and not every point was fitted


def test_prune_with_a_network_target(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train[:300], method="lobs", sparsity=0.8, allocate="error",
                           refit="relu", progress=False)
    assert isinstance(result.sparsity, dict) and set(result.sparsity) == set(result.layers)
    assert result.kept <= 0.2 + 1e-9 and result.kept >= 0.18
    for name, share in result.sparsity.items():
        assert result.layers[name].kept == pytest.approx(1 - share, abs=0.01)
    with pytest.raises(ValueError, match="allocate='error' shares one network target"):
        nettrim.PruneConfig(method="lobs", sparsity={"0": 0.5}, allocate="error")
    with pytest.raises(ValueError, match="allocate='error' shares one network target"):
        nettrim.PruneConfig(allocate="error")
    with pytest.raises(ValueError, match="up to 0.98; for 0.99 of every layer pass allocate=None"):
        nettrim.PruneConfig(method="lobs", sparsity=0.99, allocate="error")
    with pytest.raises(ValueError, match="allocate='auto' shares a network target out among the layers up to 0.98"):
        nettrim.PruneConfig(sparsity=0.99)
    with pytest.raises(ValueError, match="allocate: got 'global'"):
        nettrim.PruneConfig(method="lobs", sparsity=0.5, allocate="global")


def test_net_trim_shares_a_network_target_out_by_default_and_the_baselines_do_not():
    assert nettrim.PruneConfig(sparsity=0.8).allocation == "error"
    assert nettrim.PruneConfig(sparsity=0.8, allocate=None).allocation is None
    assert nettrim.PruneConfig(sparsity={"0": 0.5}).allocation is None  # one fraction per named layer
    assert nettrim.PruneConfig().allocation is None  # a budget, no target
    assert nettrim.PruneConfig(sparsity=0.99, allocate=None).allocation is None
    for method in ("lobs", "magnitude", "sparsegpt"):
        assert nettrim.PruneConfig(method=method, sparsity=0.8).allocation is None
        assert nettrim.PruneConfig(method=method, sparsity=0.8, allocate="error").allocation == "error"
    assert nettrim.PruneConfig(method="cap", sparsity=0.5).allocation is None


def test_the_default_net_trim_prune_meets_the_network_target(digits, digits_model, monkeypatch):
    from nettrim import allocation

    given = []
    share_out = allocation.share_out
    monkeypatch.setattr(allocation, "share_out", lambda *a, **k: given.append(k["importance"]) or share_out(*a, **k))
    result = nettrim.prune(digits_model, digits.x_train[:300], sparsity=0.8, progress=False)
    assert set(given[0]) == set(list(result.layers)[:-1])  # the curves weigh by the consumer weights
    assert isinstance(result.sparsity, dict) and set(result.sparsity) == set(result.layers)
    assert 0.18 <= result.kept <= 0.2 + 1e-9
    shares = sorted(result.sparsity.values())
    assert shares[-1] - shares[0] > 0.05  # shared out, not one fraction for every layer
