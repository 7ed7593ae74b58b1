"""nettrim.prune: modes, methods, sparsity targets, reports, and the model left untouched."""
import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import nettrim
from solvers import LayerProblem, solve


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_original_model_is_untouched(digits, digits_model):
    before = copy.deepcopy(digits_model)
    digits_model.train()
    result = nettrim.prune(digits_model, digits.x_train, progress=False)
    assert digits_model.training  # flag kept
    digits_model.eval()
    assert _same_state(digits_model, before)
    assert result.model is not digits_model
    assert not _same_state(result.model, before)
    assert not torch.nn.utils.prune.is_pruned(digits_model)


@pytest.mark.parametrize("mode", ["parallel", "cascade"])
def test_every_layer_meets_its_program_and_the_report_says_so(digits, digits_model, mode):
    result = nettrim.prune(digits_model, digits.x_train, mode=mode, epsilon=0.1, progress=False)
    assert list(result.layers) == ["0", "2", "4"]
    for name, report in result.layers.items():
        assert report.status == "optimal" and report.violation <= 5e-3
        assert report.nnz_after == int((result.model.get_submodule(name).weight != 0).sum())
        assert report.nnz_after < report.nnz_before
        assert report.shape == tuple(result.model.get_submodule(name).weight.shape)
        if not report.relu:
            # a linear layer's error is the whole ball
            assert report.error_out == pytest.approx(report.error_pre)
            assert report.error_out <= report.epsilon_rel * (1 + 5e-3)
    assert result.layers["0"].epsilon_rel == pytest.approx(0.1)
    if mode == "parallel":
        assert all(r.epsilon_rel == pytest.approx(0.1) for r in result.layers.values())
    assert 0 < result.kept < 1 and result.output_error is not None
    assert result.nnz_after == sum(r.nnz_after for r in result.layers.values())


def test_parallel_mode_solves_each_layer_on_the_original_signals(digits, digits_model):
    records = nettrim.record(digits_model, digits.x_train)
    result = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.1, progress=False,
                           solver_options={"tol": 1e-4, "dtype": np.float64})
    rec = records["2"]
    problem = LayerProblem(rec.input, rec.output, 0.1 * float(torch.linalg.vector_norm(rec.output)))
    direct = solve(problem, warm_start=(rec.weight.numpy(), rec.bias.numpy()))
    layer = result.model.get_submodule("2")
    assert int((layer.weight != 0).sum()) == direct.nnz
    assert problem.objective(layer.weight.detach(), layer.bias.detach()) == pytest.approx(direct.objective, rel=1e-5)


def test_cascade_mode_solves_on_the_pruned_inputs_with_the_cascade_budget(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train, mode="cascade", epsilon=0.1, gamma=1.3, progress=False)
    records = nettrim.record(digits_model, digits.x_train)
    pruned_records = nettrim.record(result.model, digits.x_train)
    # layer "2" sees the pruned layer "0" ...
    x_hat = pruned_records["2"].input
    assert not torch.equal(x_hat, records["2"].input)
    rec = records["2"]
    response = x_hat.double() @ rec.weight.T + rec.bias
    inherited = torch.linalg.vector_norm(torch.where(rec.output > 0, response - rec.output, 0.0))
    # ... and gets epsilon^2 = gamma * (error of the original weights on it)^2
    report = result.layers["2"]
    assert report.epsilon == pytest.approx(math.sqrt(1.3) * float(inherited), rel=1e-9)
    # the returned weights meet that program (inactive entries below V = original response)
    problem = LayerProblem(x_hat, rec.output, report.epsilon, upper=response)
    layer = result.model.get_submodule("2")
    assert problem.violation(layer.weight.detach(), layer.bias.detach()) <= 5e-3
    # the errors in the report are measured on the pruned input
    z_hat = x_hat.double() @ layer.weight.detach().double().T + layer.bias.detach().double()
    rel = float(torch.linalg.vector_norm(z_hat - rec.pre_activation) / torch.linalg.vector_norm(rec.pre_activation))
    assert report.error_pre == pytest.approx(rel, rel=1e-4)


def test_network_output_error_is_measured_on_the_calibration_data(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.05, progress=False)
    with torch.no_grad():
        ref, out = digits_model(digits.x_train).double(), result.model(digits.x_train).double()
    assert result.output_error == pytest.approx(float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref)),
                                                rel=1e-6)


@pytest.mark.parametrize("mode", ["parallel", "cascade"])
def test_sparsity_target_is_met_within_one_point(digits, digits_model, mode):
    result = nettrim.prune(digits_model, digits.x_train, mode=mode, sparsity=0.8, progress=False, allocate=None,
                           method_options={"support": "l1"})  # the l1 program, epsilon moved along its path
    for report in result.layers.values():
        assert abs((1 - report.kept) - 0.8) <= 0.01 + 1e-12, report
        assert report.violation <= 5e-3
        assert report.info["target_met"] and report.info["path"][-1]["final"]


def test_sparsity_per_layer_and_magnitude(digits, digits_model):
    target = {"0": 0.5, "2": 0.9, "4": 0.0}
    result = nettrim.prune(digits_model, digits.x_train, method="magnitude", sparsity=target, progress=False)
    for name, sparsity in target.items():
        weight = result.model.get_submodule(name).weight
        assert int((weight != 0).sum()) == round((1 - sparsity) * weight.numel())
        kept = digits_model.get_submodule(name).weight.abs()
        # the largest magnitudes are the ones kept
        assert kept[weight != 0].min() >= kept[weight == 0].max() if sparsity else True
    assert result.layers["4"].status == "skipped"
    torch.testing.assert_close(result.model.get_submodule("4").weight, digits_model.get_submodule("4").weight)


def test_only_the_named_layers_are_pruned(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train, layers=["2"], progress=False)
    assert list(result.layers) == ["2"]
    for name in ("0", "4"):
        torch.testing.assert_close(result.model.get_submodule(name).weight, digits_model.get_submodule(name).weight)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="obd"), "method: got 'obd'"),
    (dict(mode="serial"), "mode: got 'serial'"),
    (dict(solver="gurobi"), "solver: got 'gurobi'"),
    (dict(epsilon=-0.1), "epsilon: got -0.1"),
    (dict(gamma=0.9), "gamma: got 0.9"),
    (dict(sparsity=1.0), "sparsity: got 1.0"),
    (dict(sparsity={"0": 1.2}), r"sparsity\['0'\]"),
    (dict(sparsity={"9": 0.5}), r"sparsity: names \['9'\]"),
    (dict(method="magnitude"), "needs sparsity="),
    (dict(solver_options=[1]), "solver_options"),
])
def test_bad_settings_get_clear_errors(digits, digits_model, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        nettrim.prune(digits_model, digits.x_train[:50], progress=False, **kwargs)


def test_l1_path_at_a_target_refuses_the_cvxpy_reference_by_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2))
    with pytest.raises(ValueError, match="layer '0': support='l1' at a target sparsity .* solver='admm'"):
        nettrim.prune(model, torch.randn(40, 5), sparsity=0.5, allocate=None, solver="cvxpy", progress=False,
                      method_options={"support": "l1"})


def test_cvxpy_reference_solver_runs_through_the_pipeline():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.randn(40, 5)
    via_admm = nettrim.prune(model, x, mode="parallel", epsilon=0.1, progress=False, solver_options={"tol": 1e-5})
    via_cvxpy = nettrim.prune(model, x, mode="parallel", epsilon=0.1, solver="cvxpy", progress=False)
    records = nettrim.record(model, x)
    for name, rec in records.items():
        problem = LayerProblem(rec.input, rec.output, via_admm.layers[name].epsilon, relu=rec.relu)
        objective = [problem.objective(r.model.get_submodule(name).weight.detach()) for r in (via_admm, via_cvxpy)]
        assert objective[0] == pytest.approx(objective[1], rel=1e-3)


def test_float64_model_and_batched_calibration():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    x = torch.randn(60, 5, dtype=torch.float64)
    whole = nettrim.prune(model, x, progress=False)
    batched = nettrim.prune(model, torch.utils.data.DataLoader(x, batch_size=16), progress=False)
    assert whole.model[0].weight.dtype == torch.float64
    assert all(r.info["dtype"] == "float64" for r in whole.layers.values())  # iterates in the model's precision
    single = nettrim.prune(model.float(), x.float(), progress=False)
    assert all(r.info["dtype"] == "float32" for r in single.layers.values())
    for name in whole.layers:
        torch.testing.assert_close(whole.model.get_submodule(name).weight, batched.model.get_submodule(name).weight)


def test_cnn_with_batchnorm_is_pruned_conv_layers_included():
    from nettrim.examples import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN(channels=(4, 6), hidden=8).eval()
    for bn in (model.bn1, model.bn2):
        with torch.no_grad():
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
    x = torch.rand(40, 1, 8, 8)
    result = nettrim.prune(model, x, mode="cascade", epsilon=0.1, max_positions=800, progress=False)
    assert list(result.layers) == ["conv1", "conv2", "fc1", "fc2"]
    assert [r.kind for r in result.layers.values()] == ["conv2d", "conv2d", "linear", "linear"]
    assert result.layers["conv1"].n_samples == 800
    for name, report in result.layers.items():
        assert report.status == "optimal" and report.violation <= 5e-3
        assert report.nnz_after == int((result.model.get_submodule(name).weight != 0).sum())
    # the pruned conv layer, BatchNorm unfolded, computes what its program promised
    rec = nettrim.record(model, x)["conv1"]
    pruned_rec = nettrim.record(result.model, x)["conv1"]
    assert pruned_rec.batchnorm == "bn1"
    error = torch.linalg.vector_norm(pruned_rec.output - rec.output) / torch.linalg.vector_norm(rec.output)
    assert float(error) <= 0.1 * 1.01
    assert result.summary().count("conv2d") == 2


def test_summary_lists_every_layer(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train, progress=False)
    text = result.summary()
    assert "cascade mode" in text and "weights kept" in text and "in the saved file" in text
    for name in result.layers:
        assert any(line.startswith(name + " ") for line in text.splitlines())
    assert np.isfinite([r.seconds for r in result.layers.values()]).all()


def test_the_report_says_where_the_time_went(digits, digits_model, tmp_path):
    budget = nettrim.prune(digits_model, digits.x_train, epsilon=0.1, progress=False)
    assert set(budget.timings) == {"record", "layers"}  # nothing shared out, no whole-neuron alternative
    target = nettrim.prune(digits_model, digits.x_train[:600], sparsity=0.8, progress=False)
    assert set(target.timings) == {"record", "share_out", "layers", "seconds_supports", "seconds_fits"}
    for result in (budget, target):
        assert all(seconds > 0 for seconds in result.timings.values())
        phases = [seconds for name, seconds in result.timings.items() if not name.startswith("seconds_")]
        assert sum(phases) <= result.seconds
        assert sum(report.seconds for report in result.layers.values()) <= result.timings["layers"]
    line = target.summary().splitlines()[-1]
    assert line.startswith(f"time: {target.seconds:.2f} s (recording ") and "sharing out" in line
    assert f"layers {target.timings['layers']:.2f} s (supports " in line
    for report in target.layers.values():  # the OBS default's two parts, per layer, and summed
        assert 0 < report.info["seconds_supports"] and 0 < report.info["seconds_fits"]
        assert report.info["seconds_supports"] + report.info["seconds_fits"] <= report.seconds
    for part in ("supports", "fits"):
        assert target.timings[f"seconds_{part}"] == pytest.approx(
            sum(report.info[f"seconds_{part}"] for report in target.layers.values()))
    assert target.timings["seconds_supports"] + target.timings["seconds_fits"] <= target.timings["layers"]
    saved = target.save(tmp_path / "pruned.safetensors")
    assert nettrim.result.summary_from_dict(json.loads(saved.with_suffix(".json").read_text())) == target.summary()
    cap = nettrim.prune(digits_model, digits.x_train[:600], method="cap", sparsity=0.5, progress=False)
    assert cap.timings == {} and cap.summary().splitlines()[-1] == f"time: {cap.seconds:.2f} s"


def test_the_summary_names_the_layers_whose_answers_are_not_certified(digits, digits_model):
    certified = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.1, progress=False)
    assert all(r.info["polish_outcome"] == "certified" for r in certified.layers.values())
    assert "not certified" not in certified.summary()
    plain = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.1, progress=False,
                          solver_options={"polish": False})
    line = next(line for line in plain.summary().splitlines() if line.startswith("not certified optimal"))
    assert line.endswith(": " + ", ".join(plain.layers))
    assert all(r.info["polish_outcome"] == "off" for r in plain.layers.values())


def test_the_summary_names_the_layers_whose_path_answers_were_rounded_onto_the_target(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train, mode="parallel", sparsity=0.9, allocate=None,
                           method_options={"support": "l1"}, progress=False)
    rounded = [name for name, report in result.layers.items() if report.info.get("rounded")]
    assert rounded  # the two hidden layers' answers keep too much at every budget near the target
    for name in rounded:
        report = result.layers[name]
        assert abs(report.nnz_after / report.nnz_before - 0.1) <= 0.01 + 1e-12
        assert report.info["target_met"] and report.violation <= 5e-3
    line = next(line for line in result.summary().splitlines() if line.startswith("rounded onto the target"))
    assert line.endswith(": " + ", ".join(rounded))


@pytest.mark.parametrize("method", ["nettrim", "lobs"])
def test_same_inputs_give_bit_identical_weights(digits, digits_model, method):
    kwargs = {"sparsity": 0.8} if method == "lobs" else {}
    first = nettrim.prune(digits_model, digits.x_train, method=method, progress=False, **kwargs)
    second = nettrim.prune(digits_model, digits.x_train, method=method, progress=False, **kwargs)
    for name in first.layers:
        assert torch.equal(first.model.get_submodule(name).weight, second.model.get_submodule(name).weight)
        assert torch.equal(first.model.get_submodule(name).bias, second.model.get_submodule(name).bias)


def test_a_layer_whose_solve_fails_keeps_its_original_weights_unless_accepted(digits, digits_model, caplog):
    options = {"max_iter": 2, "polish": False, "tol": 1e-4}
    with caplog.at_level("WARNING", logger="nettrim"):
        result = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.1, solver_options=options,
                               progress=False)
    rejected = [name for name, r in result.layers.items() if r.status.startswith("kept original")]
    assert rejected and "keeps its original weights" in caplog.text
    for name in rejected:
        report = result.layers[name]
        assert report.status == "kept original (max_iter)"
        assert report.info["rejected_violation"] > 1e-3 and report.nnz_after == report.nnz_before
        assert torch.equal(result.model.get_submodule(name).weight, digits_model.get_submodule(name).weight)
    accepted = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.1, solver_options=options,
                             accept_infeasible=True, progress=False)
    assert all(r.status == "max_iter" for name, r in accepted.layers.items() if name in rejected)
    assert any(accepted.layers[name].nnz_after < accepted.layers[name].nnz_before for name in rejected)


@pytest.mark.parametrize("mode", ["cascade", "parallel"])
def test_layer_times_add_up_to_no_more_than_the_run(digits, digits_model, mode):
    result = nettrim.prune(digits_model, digits.x_train, mode=mode, epsilon=0.1, progress=False)
    assert all(report.seconds > 0 for report in result.layers.values())
    assert sum(report.seconds for report in result.layers.values()) <= result.seconds
