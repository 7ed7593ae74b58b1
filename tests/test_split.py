"""split='neuron': one budget per neuron (the layer guarantee kept), blocks of neurons on workers."""
import numpy as np
import pytest
import torch

import nettrim
from nettrim.record import record
from solvers import LayerProblem, solve

TOL = 1e-3  # the pipeline's ADMM tolerance


def _neuron_errors(rec, weight, bias, X=None):
    X = rec.input.double() if X is None else X
    pre = X @ torch.as_tensor(weight, dtype=torch.float64).T + torch.as_tensor(bias, dtype=torch.float64)
    residual = pre - rec.output
    if rec.relu:
        residual = torch.where(rec.output > 0, residual, torch.zeros_like(residual))
    return torch.linalg.vector_norm(residual, dim=0).numpy()


def test_parallel_split_meets_each_neurons_budget(digits, digits_model):
    epsilon = 0.1
    result = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=epsilon, split="neuron",
                           progress=False)
    records = record(digits_model, digits.x_train)
    for name, report in result.layers.items():
        rec = records[name]
        budgets = epsilon * torch.linalg.vector_norm(rec.output, dim=0).numpy()
        module = result.model.get_submodule(name)
        errors = _neuron_errors(rec, module.weight.detach().double(), module.bias.detach().double())
        assert np.all(errors <= budgets * (1 + 5 * TOL) + 1e-9), name
        assert report.info["per_neuron"] and report.epsilon == pytest.approx(np.linalg.norm(budgets))
        # the same program solved directly
        direct = solve(LayerProblem(rec.input, rec.output, budgets, relu=rec.relu), tol=TOL,
                       warm_start=(rec.weight.numpy(), rec.bias.numpy()))
        objective = float(module.weight.detach().abs().sum())
        assert objective == pytest.approx(direct.objective, rel=2e-2)


def test_cascade_split_budgets_add_up_to_the_layer_budget(digits, digits_model):
    gamma = 1.1
    split = nettrim.prune(digits_model, digits.x_train, epsilon=0.1, gamma=gamma, split="neuron", progress=False)
    layer = nettrim.prune(digits_model, digits.x_train, epsilon=0.1, gamma=gamma, progress=False,
                          layers=["0"])  # the first layer sees the original input in both
    first = split.layers["0"]
    assert first.epsilon == pytest.approx(layer.layers["0"].epsilon, rel=1e-9)  # sum of squares = epsilon^2 ||Y||^2
    for name in list(split.layers)[1:]:
        assert split.layers[name].info["per_neuron"]
        assert split.layers[name].violation <= 5 * TOL
    assert split.output_error < 0.5


def test_split_with_dask_blocks_matches_in_process(digits, digits_model, dask_cluster):
    distributed = pytest.importorskip("distributed")
    expected = nettrim.prune(digits_model, digits.x_train, mode="cascade", epsilon=0.1, split="neuron",
                             progress=False)
    with distributed.Client(dask_cluster) as client:
        result = nettrim.prune(digits_model, digits.x_train, mode="cascade", epsilon=0.1, split="neuron",
                               progress=False, executor=client)
    for name, report in result.layers.items():
        assert report.info["blocks"] == 2 and report.violation <= 5 * TOL
        assert report.info["factored_once"]
        objective = float(result.model.get_submodule(name).weight.detach().abs().sum())
        reference = float(expected.model.get_submodule(name).weight.detach().abs().sum())
        assert objective == pytest.approx(reference, rel=2e-2), name
    assert result.output_error == pytest.approx(expected.output_error, rel=0.1, abs=1e-3)


def test_split_needs_a_budget(digits, digits_model):
    with pytest.raises(ValueError, match="split: got 'rows'"):
        nettrim.prune(digits_model, digits.x_train, split="rows", progress=False)
    with pytest.raises(ValueError, match="split='neuron'.*method='nettrim' and no sparsity="):
        nettrim.prune(digits_model, digits.x_train, split="neuron", sparsity=0.5, progress=False)
    with pytest.raises(ValueError, match="split='neuron'.*method='nettrim'"):
        nettrim.prune(digits_model, digits.x_train, split="neuron", method="magnitude", sparsity=0.5,
                      progress=False)
