"""The method protocol and the pipeline's steps, each tested alone.

A method is one object (:class:`nettrim.methods.Method`) that the configuration, the
pipeline and the CLI read; a method registered in :data:`nettrim.registry.METHODS` runs
through ``prune`` and appears among the CLI's choices without any other change.
"""
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import nettrim
from nettrim import pipeline, registry
from nettrim.cli import build_parser
from nettrim.methods import LayerOutcome, LayerSolver, LayerTask, Method
from nettrim.modes import layer_task
from nettrim.record import record
from nettrim.types import LayerReport


def _task(seed=0, n_samples=80, n_in=6, n_out=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_in))
    weight, bias = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
    Y = np.maximum(X @ weight.T + bias, 0.0)
    return LayerTask("layer", X, Y, True, weight, bias, budget=0.1 * np.linalg.norm(Y))


def test_every_method_declares_what_the_pipeline_reads():
    for name, method in registry.METHODS.items():
        assert method.name == name and method.scope in ("layer", "network")
        assert dataclasses.is_dataclass(method.options)
        assert method.parse_options(None) == method.options() == method.parse_options({})
        assert method.resumable == (method.scope == "layer")
    assert [m.name for m in registry.METHODS.values() if m.budget_program] == ["nettrim", "nettrim-group"]
    assert [m.name for m in registry.METHODS.values() if not m.needs_sparsity] == ["nettrim", "cap", "nettrim-group"]
    assert [m.name for m in registry.METHODS.values() if m.shares_sparsity] == ["nettrim"]
    choices = next(a for a in build_parser()._subparsers._group_actions[0].choices["prune"]._actions
                   if a.dest == "method").choices
    assert choices == list(registry.METHODS)
    with pytest.raises(ValueError, match=r"method: got 'obd', needs one of \['cap', 'lobs'"):
        registry.get_method("obd")


@dataclasses.dataclass(frozen=True)
class _HalfOptions:
    keep_sign: int = 1

    def __post_init__(self):
        if self.keep_sign not in (-1, 1):
            raise ValueError(f"keep_sign: got {self.keep_sign!r}, needs 1 or -1")


def _keep_one_sign(task, *, sparsity, keep_sign=1):
    """A toy layer method: zero the weights of the other sign."""
    weight = np.where(np.sign(task.weight) == keep_sign, task.weight, 0.0)
    return LayerOutcome(weight, None if task.bias is None else task.bias.copy(), epsilon=math.nan, status="done")


def test_a_registered_method_runs_through_prune_and_the_cli(monkeypatch, digits, digits_model):
    method = Method("sign", "layer", _keep_one_sign, options=_HalfOptions, needs_sparsity=False)
    monkeypatch.setitem(registry.METHODS, "sign", method)
    result = nettrim.prune(digits_model, digits.x_train[:100], method="sign", method_options={"keep_sign": -1},
                           mode="parallel", progress=False)
    for name, report in result.layers.items():
        weight = result.model.get_submodule(name).weight
        assert (weight <= 0).all() and report.status == "done" and report.method == "sign"
    assert "sign" in next(a for a in build_parser()._subparsers._group_actions[0].choices["prune"]._actions
                          if a.dest == "method").choices
    with pytest.raises(ValueError, match="keep_sign: got 0"):
        nettrim.prune(digits_model, digits.x_train[:100], method="sign", method_options={"keep_sign": 0})


def test_solve_step_skips_a_layer_with_sparsity_zero_and_sets_the_dtype():
    task = _task()
    skipped = pipeline._run_method(registry.get_method("magnitude"), task, 0, LayerSolver(), None)
    assert skipped.status == "skipped" and np.array_equal(skipped.weight, task.weight)
    assert skipped.weight is not task.weight
    as32 = dataclasses.replace(task, X=task.X.astype(np.float32))
    assert LayerSolver().for_task(as32).options["dtype"] == np.float32
    assert LayerSolver(options={"dtype": "float64"}).for_task(as32).options["dtype"] == "float64"
    assert LayerSolver("cvxpy").for_task(as32).options == {}


def test_layer_solver_warm_starts_and_caps_one_call():
    task = _task(seed=1)
    from solvers import LayerProblem

    problem = LayerProblem(task.X, task.Y, task.budget, relu=True)
    solver = LayerSolver(options={"tol": 1e-3, "polish": False})
    capped = solver.solve(problem, warm_start=(task.weight, task.bias), max_iter=1)
    assert capped.iterations == 1
    np.testing.assert_allclose(capped.weight, task.weight, atol=1.0)  # one step from the warm start
    assert solver.settings().tol == 1e-3 and not solver.settings().polish


def test_accept_step_keeps_the_original_weights_of_a_missed_program():
    task = _task(seed=2)
    config = nettrim.PruneConfig()
    missed = LayerOutcome(np.zeros_like(task.weight), task.bias.copy(), epsilon=1.0, status="max_iter",
                          iterations=7, violation=1.0)
    kept = pipeline.accept(missed, task, None, config)
    assert kept.status == "kept original (max_iter)" and np.array_equal(kept.weight, task.weight)
    assert kept.violation == 0.0 and kept.info["rejected_violation"] == 1.0 and kept.iterations == 7
    assert pipeline.accept(missed, task, None, config.replace(accept_infeasible=True)) is missed
    assert pipeline.accept(missed, task, 0.5, config) is missed  # a target sparsity is met, not a budget
    close = dataclasses.replace(missed, violation=0.5 * 10 * config.layer_solver.tol)
    assert pipeline.accept(close, task, None, config) is close


def test_mode_step_cascade_budget_keeps_the_original_weights_feasible():
    """On a changed input the cascade program's floor is the error of the original
    weights, its budget sqrt(gamma) times that, and the original weights are feasible."""
    from solvers import LayerProblem

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    x = torch.randn(60, 5, dtype=torch.float64)
    rec = record(model, x)["2"]
    X = rec.input + 0.05 * torch.randn_like(rec.input)
    task = layer_task(rec, X, "cascade", epsilon=0.05, gamma=1.21, input_changed=True)
    assert task.budget == pytest.approx(1.1 * task.floor) and task.floor > 0
    problem = LayerProblem(task.X, task.Y, task.budget, relu=task.relu, upper=task.upper)
    assert problem.violation(task.weight, task.bias) == 0.0
    parallel = layer_task(rec, rec.input, "parallel", epsilon=0.05, gamma=1.21, input_changed=False)
    assert parallel.budget == pytest.approx(0.05 * np.linalg.norm(parallel.Y)) and parallel.floor == 0.0
    split = layer_task(rec, X, "cascade", epsilon=0.05, gamma=1.21, input_changed=True, per_neuron=True)
    assert split.layer_budget == pytest.approx(task.budget)


def test_report_step_round_trips_and_restores_the_outcome():
    task = _task(seed=3)
    outcome = LayerOutcome(task.weight * (np.abs(task.weight) > 0.5), task.bias, epsilon=0.3, status="optimal",
                           iterations=42, violation=1e-4, info={"rho": 2.0})
    report = LayerReport.from_outcome(outcome, name="layer", kind="linear", shape=task.weight.shape, relu=True,
                                      n_samples=80, nnz_before=task.weight.size, scale=task.scale,
                                      errors=(0.1, 0.05, 0.06), seconds=0.5, method="nettrim")
    assert report.epsilon_rel == pytest.approx(0.3 / task.scale)
    assert report.nnz_after == int(np.count_nonzero(outcome.weight))
    again = LayerReport.from_dict(report.to_dict())
    assert again == report
    restored = again.outcome(outcome.weight, outcome.bias)
    assert (restored.epsilon, restored.status, restored.iterations, restored.violation) == (0.3, "optimal", 42, 1e-4)


def test_interruption_says_how_many_layers_and_where():
    stopped = pipeline.PruneInterrupted(2, 3, "run.work")
    assert isinstance(stopped, KeyboardInterrupt) and (stopped.finished, stopped.total) == (2, 3)
    assert "2 of 3 layers finished, kept in run.work" in str(stopped) and "resume=True" in str(stopped)
    assert "kept in" not in str(pipeline.PruneInterrupted(0, 3))


def test_only_a_layer_method_shares_its_sparsity_out():
    with pytest.raises(ValueError, match="shares_sparsity: method 'whole' has scope 'network'"):
        Method("whole", "network", lambda *args: None, shares_sparsity=True)
