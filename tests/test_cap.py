"""Compensation-aware pruning: the compensation, the greedy choice, physical removal."""

import numpy as np
import pytest
import torch
from torch import nn

import nettrim
from conftest import batchnorm_cnn
from nettrim.graph import links
from nettrim.cap import compensate, greedy_keep


def _layer_data(n_samples=200, n_in=6, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((n_samples, n_in)) @ rng.standard_normal((n_in, n_in)) + 0.5, 0)
    return X, rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)


def test_compensation_is_the_least_squares_refit():
    X, W, b = _layer_data()
    keep = np.array([0, 2, 3, 5])
    new_weight, new_bias = compensate(X, W, b, keep, ridge=0.0)
    target = X @ W.T + b
    design = np.hstack([X[:, keep], np.ones((len(X), 1))])
    expected = np.linalg.lstsq(design, target, rcond=None)[0]
    np.testing.assert_allclose(new_weight[:, keep], expected[:-1].T, atol=1e-9)
    np.testing.assert_allclose(new_bias, expected[-1], atol=1e-9)
    assert np.all(new_weight[:, [1, 4]] == 0)


def test_greedy_elimination_matches_trying_every_removal():
    X, W, b = _layer_data(n_in=5)
    kept, new_weight, new_bias = greedy_keep(X, W, b, per_group=1, n_keep=3, ridge=0.0)
    # backward elimination by brute force: at each step drop the column whose removal
    # leaves the smallest least-squares error
    alive = list(range(5))
    target = X @ W.T + b
    def error(columns):
        w, bias = compensate(X, W, b, np.array(columns), ridge=0.0)
        return np.linalg.norm(X @ w.T + bias - target)
    while len(alive) > 3:
        alive.remove(min(alive, key=lambda j: error([c for c in alive if c != j])))
    assert list(kept) == alive
    w, bias = compensate(X, W, b, np.array(alive), ridge=0.0)
    np.testing.assert_allclose(new_weight, w, atol=1e-8)
    np.testing.assert_allclose(new_bias, bias, atol=1e-8)


@pytest.mark.parametrize("per_group", [1, 2])
def test_greedy_elimination_leaves_the_callers_weight_untouched(per_group):
    """The elimination updates its own copy: the caller's weight, in either memory order
    (a column-major float64 one would be read without a copy), keeps its values."""
    X, W, b = _layer_data(n_in=6)
    for weight in (W.copy(), np.asfortranarray(W)):
        before = weight.copy()
        greedy_keep(X, weight, b, per_group=per_group, n_keep=2)
        np.testing.assert_array_equal(weight, before)


def test_a_column_removed_in_place_is_the_rank_one_update_bit_for_bit():
    """The compiled removal of one column (single-column groups) gives the numbers of the
    update through ``1 x 1`` blocks that wider groups take."""
    from nettrim._cap_kernels import _remove_column

    rng = np.random.default_rng(3)
    W = rng.standard_normal((5, 7))
    A = rng.standard_normal((7, 7))
    P = np.linalg.inv(A @ A.T + np.eye(7))
    g = 4
    inverse = np.linalg.inv(P[g:g + 1, g:g + 1])
    expected_W = W - W[:, g:g + 1] @ inverse @ P[g:g + 1, :]
    expected_P = P - P[:, g:g + 1] @ inverse @ P[g:g + 1, :]
    expected_W[:, g] = 0.0
    expected_P[g, :] = expected_P[:, g] = 0.0
    WT, updated = np.ascontiguousarray(W.T), P.copy()
    _remove_column(WT, updated, g, 1.0 / P[g, g])
    np.testing.assert_array_equal(WT.T, expected_W)
    np.testing.assert_array_equal(updated, expected_P)


def test_links_follow_relu_batchnorm_pool_and_flatten():
    from nettrim.examples import DigitsCNN, digits_mlp

    assert {p: l.consumer for p, l in links(digits_mlp((8, 8))).items()} == {"0": "2", "2": "4"}
    cnn = links(DigitsCNN())
    assert {p: (l.consumer, l.batchnorms) for p, l in cnn.items()} == {
        "conv1": ("conv2", ("bn1",)), "conv2": ("fc1", ("bn2",)), "fc1": ("fc2", ())}


def test_physical_removal_equals_the_masked_model(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train, method="cap", sparsity=0.5, progress=False)
    small = result.model
    assert small[0].out_features == 16 and small[2].in_features == 16 and small[2].out_features == 12
    assert small[4].in_features == 12
    # the same network with the removed neurons kept but their outgoing weights zeroed
    masked = nettrim.examples.digits_mlp((32, 24))
    masked.load_state_dict(digits_model.state_dict())
    kept0 = result.layers["0"].info["kept_neurons"]
    kept2 = result.layers["2"].info["kept_neurons"]
    with torch.no_grad():
        masked[0].weight[kept0] = small[0].weight
        masked[0].bias[kept0] = small[0].bias
        masked[2].weight.zero_()
        masked[2].weight[np.ix_(kept2, kept0)] = small[2].weight
        masked[2].bias.zero_()
        masked[2].bias[kept2] = small[2].bias
        masked[4].weight.zero_()
        masked[4].weight[:, kept2] = small[4].weight
        masked[4].bias.copy_(small[4].bias)
        torch.testing.assert_close(small(digits.x_test), masked(digits.x_test), rtol=1e-5, atol=1e-5)
    assert result.layers["0"].info["neurons_after"] == 16
    assert result.layers["2"].info["shape_after"] == "12x16"
    assert result.kept == pytest.approx((16 * 64 + 12 * 16 + 10 * 12) / (32 * 64 + 24 * 32 + 10 * 24))


def test_cnn_channels_are_removed_with_their_batchnorms(tmp_path):
    from nettrim.examples import DigitsCNN

    model, x = batchnorm_cnn()
    result = nettrim.prune(model, x, method="cap", sparsity=0.5, progress=False)
    small = result.model
    assert (small.conv1.out_channels, small.bn1.num_features, small.conv2.in_channels) == (2, 2, 2)
    assert (small.conv2.out_channels, small.bn2.num_features, small.fc1.in_features) == (3, 3, 48)
    assert small.conv2.bias is None  # its correction went into bn2's running mean
    with torch.no_grad():
        assert small(x).shape == (60, 10)
    # the smaller model saves and loads into its own architecture
    path = result.save(tmp_path / "small.safetensors")
    again = nettrim.load(path, DigitsCNN(channels=(2, 3), hidden=4))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), small(x))


def test_accuracy_floor_runs_the_per_layer_search(digits, digits_model):
    validation = (digits.x_test[:200], digits.y_test[:200])
    dense = nettrim.examples.accuracy(digits_model, *validation)
    result = nettrim.prune(digits_model, digits.x_train, method="cap", progress=False,
                           method_options={"accuracy_floor": dense - 0.02, "validation": validation})
    assert nettrim.examples.accuracy(result.model, *validation) >= dense - 0.02
    assert result.layers["0"].info["neurons_after"] < 32


def test_cap_settings_are_checked(digits, digits_model):
    with pytest.raises(ValueError, match="sparsity= .* or"):
        nettrim.prune(digits_model, digits.x_train[:20], method="cap", progress=False)
    with pytest.raises(ValueError, match="layers= is not supported"):
        nettrim.prune(digits_model, digits.x_train[:20], method="cap", sparsity=0.5, layers=["0"], progress=False)
    with pytest.raises(ValueError, match="no layer feeds exactly one"):
        nettrim.prune(nn.Sequential(nn.Linear(3, 2)), torch.randn(5, 3), method="cap", sparsity=0.5, progress=False)


def test_report_says_the_model_is_smaller(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train, method="cap", sparsity=0.5, progress=False)
    sizes = result.sizes()
    assert sizes["original"] == (32 * 64 + 24 * 32 + 10 * 24) * 4 > sizes["dense"]
    text = result.summary()
    assert "(was " in text and "32x64->16x64" in text  # the shape column shows what each layer was cut down to
    assert result.to_dict()["layers"][0]["info"]["shape_after"] == "16x64"
