"""Sparsity across the network (allocate='error'): one target shared out among the layers by their error curves."""
import numpy as np
import pytest

import nettrim
from nettrim.allocation import GRID, allocate, error_curves
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


def test_error_curves_start_at_zero_and_grow(digits, digits_model):
    curves = error_curves(record(digits_model, digits.x_train[:300]))
    for curve in curves.values():
        assert curve[0] == 0.0 and np.all(np.diff(curve) >= -1e-3) and curve[-1] > curve[1]


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


def test_the_default_net_trim_prune_meets_the_network_target(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train[:300], sparsity=0.8, progress=False)
    assert isinstance(result.sparsity, dict) and set(result.sparsity) == set(result.layers)
    assert 0.18 <= result.kept <= 0.2 + 1e-9
    shares = sorted(result.sparsity.values())
    assert shares[-1] - shares[0] > 0.05  # shared out, not one fraction for every layer
