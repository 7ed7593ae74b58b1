"""Structured Net-Trim (method 'nettrim-group'): the exchange, the guarantee, the smaller model."""
import itertools

import numpy as np
import pytest
import torch
from torch import nn

import nettrim
from conftest import batchnorm_cnn
from nettrim.cap import greedy_keep
from solvers.exchange import exchange, solve_blocks, subset_error


def _grouped_data(per_group, n_groups=7, n_samples=150, seed=0):
    rng = np.random.default_rng(seed)
    n_in = per_group * n_groups
    X = rng.standard_normal((n_samples, n_in)) @ rng.standard_normal((n_in, n_in))
    T = X @ rng.standard_normal((4, n_in)).T + 0.5 * rng.standard_normal((n_samples, 4))
    return X, T


def _least_squares_error(X, T, columns):
    design = np.hstack([X[:, columns], np.ones((len(X), 1))])
    residual = T - design @ np.linalg.lstsq(design, T, rcond=None)[0]
    return float(np.sum(residual**2))


@pytest.mark.parametrize("per_group", [1, 3])
def test_solve_blocks_solves_each_block(per_group):
    rng = np.random.default_rng(per_group)
    factors = rng.standard_normal((40, per_group, per_group))
    blocks = factors @ factors.transpose(0, 2, 1) + 0.1 * np.eye(per_group)
    rhs = rng.standard_normal((40, per_group, 6))
    answer = solve_blocks(blocks, rhs)
    np.testing.assert_allclose(blocks @ answer, rhs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(answer, np.linalg.solve(blocks, rhs), rtol=1e-14, atol=0)


@pytest.mark.parametrize("per_group", [1, 3])
def test_subset_error_is_the_least_squares_error(per_group):
    X, T = _grouped_data(per_group)
    keep = np.array([1, 4, 5])
    columns = (keep[:, None] * per_group + np.arange(per_group)).reshape(-1)
    assert subset_error(X, T, keep, per_group, ridge=0.0) == pytest.approx(_least_squares_error(X, T, columns),
                                                                          rel=1e-8)


@pytest.mark.parametrize("per_group", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exchange_ends_where_no_single_swap_helps(per_group, seed):
    X, T = _grouped_data(per_group, seed=seed)
    W = np.linalg.lstsq(np.hstack([X, np.ones((len(X), 1))]), T, rcond=None)[0][:-1].T
    greedy, _, _ = greedy_keep(X, W, None, per_group, 3, ridge=0.0)
    kept, before, after = exchange(X, T, greedy, per_group, sweeps=20, ridge=0.0)
    assert len(kept) == 3 and len(set(kept.tolist())) == 3
    assert before == pytest.approx(subset_error(X, T, greedy, per_group, ridge=0.0), rel=1e-9)
    assert after == pytest.approx(subset_error(X, T, kept, per_group, ridge=0.0), rel=1e-9)
    assert after <= before * (1 + 1e-12)
    # a local optimum: no kept group can be traded for another one for less error
    for out, into in itertools.product(kept, np.setdiff1d(np.arange(7), kept)):
        trial = np.sort(np.append(kept[kept != out], into))
        assert subset_error(X, T, trial, per_group, ridge=0.0) >= after * (1 - 1e-9)


def test_exchange_can_leave_the_greedy_choice():
    """On one of these problems backward elimination is not optimal and the swaps find the best subset."""
    found = False
    for seed in range(10):
        X, T = _grouped_data(3, n_groups=8, seed=seed)
        W = np.linalg.lstsq(np.hstack([X, np.ones((len(X), 1))]), T, rcond=None)[0][:-1].T
        greedy, _, _ = greedy_keep(X, W, None, 3, 3, ridge=0.0)
        kept, before, after = exchange(X, T, greedy, 3, sweeps=20, ridge=0.0)
        best = min(subset_error(X, T, np.array(c), 3, ridge=0.0) for c in itertools.combinations(range(8), 3))
        if after < before * (1 - 1e-6):
            found = True
            assert after >= best * (1 - 1e-9)
    assert found


def test_a_target_removes_the_same_neurons_count_as_cap(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train, method="nettrim-group", sparsity=0.5, progress=False)
    small = result.model
    assert (small[0].out_features, small[2].in_features, small[2].out_features, small[4].in_features) == \
        (16, 16, 12, 12)
    cap = nettrim.prune(digits_model, digits.x_train, method="cap", sparsity=0.5, progress=False)
    assert result.kept == pytest.approx(cap.kept)
    assert result.method == "nettrim-group" and result.mode == "neurons"
    assert result.layers["0"].info["neurons_after"] == 16
    assert result.layers["4"].info["refitted_for"] == "2"
    table = result.summary()
    assert "32x64->16x64" in table and "24x32->12x16" in table and "10x24->10x12" in table
    # the original model is not touched
    assert digits_model[0].out_features == 32
    assert result.output_error < 0.2


def test_swaps_never_raise_the_selection_error(digits, digits_model):
    from nettrim.record import record

    records = record(digits_model, digits.x_train)
    X = records["4"].input.double().numpy()
    weight = records["4"].weight.numpy()
    greedy, _, _ = greedy_keep(X, weight, None, 1, 6)
    kept, before, after = exchange(X, X @ weight.T, greedy, 1)
    assert after <= before


@pytest.mark.parametrize("per_group", [1, 3])
def test_a_centred_input_made_once_serves_the_elimination_and_the_swaps_alike(per_group):
    """``centred=``: the elimination and the swaps on an input centred once by the caller
    give the numbers they give centring it themselves, and leave it as it was."""
    from solvers.exchange import centred

    rng = np.random.default_rng(11)
    X = rng.standard_normal((200, 12)) @ rng.standard_normal((12, 12)) + 3.0
    weight = rng.standard_normal((5, 12))
    moments = centred(X)
    gram = moments.gram.copy()
    alone = greedy_keep(X, weight, None, per_group, 2)
    shared = greedy_keep(X, weight, None, per_group, 2, centred=moments)
    for a, b in zip(alone, shared):
        np.testing.assert_array_equal(a, b)
    start = alone[0]
    swapped = exchange(X, X @ weight.T, start, per_group, sweeps=3, centred=moments)
    assert swapped[0].tolist() == exchange(X, X @ weight.T, start, per_group, sweeps=3)[0].tolist()
    assert swapped[1:] == exchange(X, X @ weight.T, start, per_group, sweeps=3)[1:]
    np.testing.assert_array_equal(moments.gram, gram)  # the ridge went on a copy
    np.testing.assert_allclose(moments.mean, X.mean(axis=0))
    with pytest.raises(ValueError, match="centred: got the moments of an input of shape"):
        greedy_keep(X[:, :9], weight[:, :9], None, per_group, 2, centred=moments)
    with pytest.raises(ValueError, match="centred: got the moments"):
        exchange(X[:100], X[:100] @ weight.T, start, per_group, centred=moments)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_budget_keeps_every_consumer_within_epsilon(digits, digits_model, dtype):
    """epsilon=: the group program on original signals; each consumer's post-ReLU error on
    the original input stays within epsilon ||Y|| after the neurons are removed."""
    model = nettrim.examples.digits_mlp((32, 24))
    model.load_state_dict(digits_model.state_dict())
    model = model.to(dtype)
    x = digits.x_train.to(dtype)
    epsilon = 0.1
    result = nettrim.prune(model, x, method="nettrim-group", epsilon=epsilon, progress=False)
    small = result.model
    assert small[0].out_features < 32 and small[2].out_features < 24  # neurons were removed
    records = nettrim.record(model, x)
    kept = {name: result.layers[name].info["kept_neurons"] for name in ("0", "2")}
    for consumer, producer, relu in (("2", "0", True), ("4", "2", False)):
        rec = records[consumer]
        rows = kept.get(consumer, list(range(rec.weight.shape[0])))
        X = rec.input.double()[:, kept[producer]]
        layer = small.get_submodule(consumer)
        Z = X @ layer.weight.double().T + layer.bias.double()
        Y = rec.pre_activation.clamp(min=0) if relu else rec.pre_activation
        output = Z.clamp(min=0) if relu else Z
        error = torch.linalg.norm(output - Y[:, rows])
        assert error <= epsilon * torch.linalg.norm(Y) * (1 + 2e-3)


def test_cnn_channels_go_and_the_smaller_model_loads_back(tmp_path):
    from nettrim.examples import DigitsCNN

    model, x = batchnorm_cnn()
    result = nettrim.prune(model, x, method="nettrim-group", sparsity=0.5, progress=False)
    small = result.model
    assert (small.conv1.out_channels, small.bn1.num_features, small.conv2.in_channels) == (2, 2, 2)
    assert (small.conv2.out_channels, small.bn2.num_features, small.fc1.in_features) == (3, 3, 48)
    with torch.no_grad():
        assert small(x).shape == (60, 10)
    path = result.save(tmp_path / "small.safetensors")
    again = nettrim.load(path, DigitsCNN(channels=(4, 6), hidden=8))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), small(x))


def test_settings_are_checked(digits, digits_model):
    x = digits.x_train[:50]
    with pytest.raises(ValueError, match="layers= is not supported"):
        nettrim.prune(digits_model, x, method="nettrim-group", sparsity=0.5, layers=["0"], progress=False)
    with pytest.raises(ValueError, match="not a dict"):
        nettrim.prune(digits_model, x, method="nettrim-group", sparsity={"0": 0.5}, progress=False)
    with pytest.raises(ValueError, match="split"):
        nettrim.prune(digits_model, x, method="nettrim-group", split="neuron", progress=False)
    with pytest.raises(ValueError, match="swaps"):
        nettrim.prune(digits_model, x, method="nettrim-group", sparsity=0.5, method_options={"swaps": -1},
                      progress=False)
    with pytest.raises(ValueError, match="no layer feeds exactly one"):
        nettrim.prune(nn.Sequential(nn.Linear(3, 2)), torch.randn(5, 3), method="nettrim-group", sparsity=0.5,
                      progress=False)


def _multiply_adds(model, x):
    total = 0

    def count(module, inputs, output):
        nonlocal total
        total += module.weight[0].numel() * output[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        model.eval()(x[:1])
    for hook in hooks:
        hook.remove()
    return total


@pytest.mark.parametrize("unit", ["weights", "flops"])
def test_a_target_in_weights_or_flops_is_met_to_one_neuron(unit):
    from nettrim.examples import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN(channels=(8, 12), hidden=16).eval()
    x = torch.rand(40, 1, 8, 8)
    result = nettrim.prune(model, x, method="nettrim-group", sparsity=0.6, method_options={"unit": unit},
                           progress=False)
    dense_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    weights = sum(m.weight.numel() for m in result.model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    share = weights / dense_weights if unit == "weights" else _multiply_adds(result.model, x) / _multiply_adds(model, x)
    assert abs(share - 0.4) <= 0.05  # within what one neuron more or less per producer moves
    # 60% of every producer's neurons would have left about 17% of the weights
    neurons = nettrim.prune(model, x, method="nettrim-group", sparsity=0.6, progress=False)
    assert neurons.model.conv1.out_channels == 3 and abs(neurons.kept - 0.4) > 0.2


@pytest.mark.parametrize("sparsity", [0.55, 0.6, 0.65, 0.7])
def test_at_most_keeps_the_nearest_count_at_or_below_the_target(sparsity):
    """Neurons come whole: ``at_most`` takes the largest count of weights at or below
    ``1 - sparsity``, which is the nearest count where that one is at or below it too."""
    from nettrim.examples import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN(channels=(8, 12), hidden=16).eval()
    x = torch.rand(40, 1, 8, 8)
    dense = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))

    def share(at_most):
        result = nettrim.prune(model, x, method="nettrim-group", sparsity=sparsity, progress=False,
                               method_options={"unit": "weights", "at_most": at_most})
        return sum(m.weight.numel() for m in result.model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))) / dense

    nearest, below = share(False), share(True)
    assert below <= 1 - sparsity
    assert below == nearest if nearest <= 1 - sparsity else below < nearest
    assert 1 - sparsity - below <= 0.1  # one neuron less per producer, at most


def test_unit_is_checked(digits, digits_model):
    with pytest.raises(ValueError, match="at_most: got 1"):
        nettrim.prune(digits_model, digits.x_train[:50], method="nettrim-group", sparsity=0.5,
                      method_options={"unit": "weights", "at_most": 1}, progress=False)
    with pytest.raises(ValueError, match="unit: got 'bytes'"):
        nettrim.prune(digits_model, digits.x_train[:50], method="nettrim-group", sparsity=0.5,
                      method_options={"unit": "bytes"}, progress=False)


def test_structured_then_unstructured_in_one_run(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train, method="nettrim-group", sparsity=0.5,
                           method_options={"weight_sparsity": 0.6}, progress=False)
    small = result.model
    assert (small[0].out_features, small[2].out_features) == (16, 12)
    for layer in (small[0], small[2], small[4]):  # every layer lost 60% of what the neurons left
        kept = float((layer.weight != 0).float().mean())
        assert abs(kept - 0.4) <= 0.02
    structured_only = nettrim.prune(digits_model, digits.x_train, method="nettrim-group", sparsity=0.5,
                                    progress=False)
    assert result.kept == pytest.approx(0.4 * structured_only.kept, abs=0.01)
    assert nettrim.examples.accuracy(small, digits.x_test, digits.y_test) > 0.85
    with pytest.raises(ValueError, match="give sparsity= too"):
        nettrim.prune(digits_model, digits.x_train, method="nettrim-group", method_options={"weight_sparsity": 0.5},
                      progress=False)
    with pytest.raises(ValueError, match="weight_sparsity: got 1.5"):
        nettrim.prune(digits_model, digits.x_train, method="nettrim-group", sparsity=0.5,
                      method_options={"weight_sparsity": 1.5}, progress=False)


def test_the_smaller_model_equals_the_masked_model(digits, digits_model):
    """The cut-down network computes what the full-size one computes with the removed
    neurons' rows and columns set to zero (random inputs, not only the calibration data)."""
    result = nettrim.prune(digits_model, digits.x_train, method="nettrim-group", sparsity=0.6, progress=False)
    small = result.model
    kept0 = result.layers["0"].info["kept_neurons"]
    kept2 = result.layers["2"].info["kept_neurons"]
    masked = nettrim.examples.digits_mlp((32, 24))
    with torch.no_grad():
        for layer in masked:
            if isinstance(layer, nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        masked[0].weight[kept0] = small[0].weight
        masked[0].bias[kept0] = small[0].bias
        masked[2].weight[np.ix_(kept2, kept0)] = small[2].weight
        masked[2].bias[kept2] = small[2].bias
        masked[4].weight[:, kept2] = small[4].weight
        masked[4].bias.copy_(small[4].bias)
        x = torch.randn(300, 64, generator=torch.Generator().manual_seed(0)) * 4
        torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)


def test_solver_options_reach_the_group_programs(digits, digits_model, monkeypatch):
    from nettrim import structured
    from solvers import solve

    seen = []

    def recording_solve(problem, **options):
        seen.append(options)
        return solve(problem, **options)

    monkeypatch.setattr(structured, "solve", recording_solve)
    nettrim.prune(digits_model, digits.x_train, method="nettrim-group", epsilon=0.1, progress=False,
                  solver_options={"tol": 1e-3, "max_iter": 3_000})
    assert len(seen) == 2  # one group program per consumer
    assert all(options["tol"] == 1e-3 and options["max_iter"] == 3_000 for options in seen)
