"""Input sanity: a budget that lets a layer lose every weight is refused or named, and a
layer pruned to nothing is flagged."""
import logging

import numpy as np
import pytest
import torch
from torch import nn

import nettrim
from nettrim import PruneConfig
from nettrim.cli import main
from nettrim.sanity import zero_weights_error, zero_weights_feasible
from nettrim.types import LayerTask
from solvers import LayerProblem


def _task(relu, fit_bias, upper, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((50, 6))
    weight = rng.standard_normal((4, 6))
    bias = rng.standard_normal(4) + offset
    Z = X @ weight.T + bias
    Y = np.maximum(Z, 0) if relu else Z
    bound = Z + 0.3 * rng.random(Z.shape) - 0.1 if upper else None  # some inactive bounds below 0
    return LayerTask("fc", X, Y, relu, weight, bias if fit_bias else None, budget=1.0,
                     upper=bound if relu else None)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("fit_bias", [True, False])
@pytest.mark.parametrize("upper", [False, True])
def test_the_best_constant_answer_is_feasible_at_its_error_and_no_constant_does_better(relu, fit_bias, upper):
    task = _task(relu, fit_bias, upper)
    error = zero_weights_error(task)
    if not np.isfinite(error):  # no bias and an inactive bound below 0: W = 0 can never be feasible
        assert relu and upper and not fit_bias
        return
    zeros = np.zeros_like(task.weight)
    rng = np.random.default_rng(1)
    problem = LayerProblem(task.X, task.Y, error * (1 + 1e-9), relu=relu, upper=task.upper, fit_bias=fit_bias)
    if fit_bias:  # the constant of the closed form is feasible at its own error
        best = _constant(task)
        assert problem.violation(zeros, best) == 0
        tighter = LayerProblem(task.X, task.Y, error * (1 - 1e-6), relu=relu, upper=task.upper, fit_bias=True)
        for _ in range(200):  # random constants around it: none meets a slightly smaller budget
            assert tighter.violation(zeros, best + 0.05 * rng.standard_normal(best.shape)) > 0
    else:
        assert problem.violation(zeros, None) == 0


def _constant(task):
    """The closed form written out neuron by neuron with Python loops (the reference)."""
    Y, relu = task.Y, task.relu
    values = []
    for m in range(Y.shape[1]):
        column = Y[:, m]
        if not relu:
            values.append(column.mean())
            continue
        active = column > 0
        ceiling = min([task.upper[i, m] if task.upper is not None else 0.0
                       for i in range(len(column)) if not active[i]], default=np.inf)
        values.append(min(column[active].mean(), ceiling) if active.any() else min(0.0, ceiling))
    return np.array(values)


def test_feasibility_follows_the_budget():
    task = _task(True, True, False)
    error = zero_weights_error(task)
    assert zero_weights_feasible(LayerTask(**{**task.__dict__, "budget": error * 1.01}))
    assert not zero_weights_feasible(LayerTask(**{**task.__dict__, "budget": error * 0.99}))


def test_a_relative_epsilon_of_one_or_more_is_refused_where_it_governs():
    for epsilon in (1.0, 5):
        with pytest.raises(ValueError, match=r"epsilon: got .*at 1 or above the zero weights meet the budget of every layer"):
            PruneConfig(epsilon=epsilon)
    PruneConfig(epsilon=5, sparsity=0.5)  # a sparsity target: epsilon is not used
    PruneConfig(method="magnitude", sparsity=0.5, epsilon=5)


def test_the_cli_refuses_epsilon_five_in_one_line(capsys, tmp_path):
    code = main(["prune", "--model", "nettrim.examples:digits_mlp", "--checkpoint", str(tmp_path / "c.pt"),
                 "--calib", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o.safetensors"), "--epsilon", "5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "epsilon: got 5.0" in err


class _Offset(nn.Module):
    """A second layer whose response is a large constant plus a small varying part."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 8)
        self.fc2 = nn.Linear(8, 3)
        with torch.no_grad():
            self.fc2.weight.mul_(0.01)
            self.fc2.bias.fill_(10.0)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_layer_whose_bias_meets_the_budget_is_named_and_flagged_when_emptied(caplog):
    torch.manual_seed(0)
    model = _Offset().eval()
    x = torch.randn(200, 5)
    with caplog.at_level(logging.WARNING, logger="nettrim"):
        result = nettrim.prune(model, x, epsilon=0.5, mode="parallel", progress=False)
    assert "layer 'fc2': its bias alone meets the budget" in caplog.text
    assert "layer 'fc1'" not in caplog.text
    assert result.layers["fc2"].nnz_after == 0
    assert "layer 'fc2' is pruned to nothing" in caplog.text
    assert "pruned to nothing (every weight zero, the bias alone left): fc2" in result.summary()


def test_convolutions_are_sampled_by_default_and_every_row_gets_a_word(caplog):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)).eval()
    x = torch.randn(800, 1, 8, 8)  # 51,200 rows for the convolution
    with caplog.at_level(logging.WARNING, logger="nettrim"):
        result = nettrim.prune(model, x, method="magnitude", sparsity=0.5, progress=False)
    # 'auto': max(10,000, 16 x 9 inputs) rows of the convolution, every row of the Linear
    assert "max_positions" not in caplog.text and "10,000 of 51,200" in result.summary()
    assert result.layers["3"].n_samples == 800
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nettrim"):
        result = nettrim.prune(model, x, method="magnitude", sparsity=0.5, max_positions=None, progress=False)
    assert caplog.text.count("max_positions='auto'") == 1 and "0 (51,200)" in caplog.text
    assert "51,200" in result.summary()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nettrim"):
        result = nettrim.prune(model, x, method="magnitude", sparsity=0.5, max_positions=5_000, progress=False)
    assert "max_positions" not in caplog.text and "5,000 of 51,200" in result.summary()
