"""Net-Trim's default at a high target: the structured answer, when it errs less, in the
original shapes (nettrim.neuron_choice)."""
import copy
import dataclasses

import pytest
import torch
from torch import nn

import nettrim
from conftest import batchnorm_cnn
from nettrim import neuron_choice


def duplicated_mlp():
    """20-60-5 whose 60 hidden neurons are 6 distinct ones, ten copies each (slightly
    rescaled): six neurons carry the whole function, 150 of its 1,500 weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 60), nn.ReLU(), nn.Linear(60, 5))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(6, 20).repeat(10, 1) * (1 + 0.01 * torch.randn(60, 1)))
        model[0].bias.copy_(0.1 * torch.randn(6).repeat(10))
        model[2].weight.normal_()
    return model, torch.randn(400, 20)


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_expand_computes_what_the_smaller_model_computes(digits, digits_model, which):
    model, x = (digits_model, digits.x_train) if which == "mlp" else batchnorm_cnn()
    structured = nettrim.prune(model, x, method="nettrim-group", sparsity=0.5, progress=False)
    before = copy.deepcopy(model.state_dict())
    full = neuron_choice.expand(model, structured)
    assert [p.shape for p in full.parameters()] == [p.shape for p in model.parameters()]
    with torch.no_grad():
        torch.testing.assert_close(full(x), structured.model(x), rtol=1e-5, atol=1e-5)
    first = next(name for name, report in structured.layers.items() if "kept_neurons" in report.info)
    removed = structured.layers[first].info["neurons_before"] - structured.layers[first].info["neurons_after"]
    weight = full.get_submodule(first).weight
    assert int((weight.reshape(weight.shape[0], -1).abs().sum(dim=1) == 0).sum()) >= removed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched


def test_the_default_removes_whole_neurons_where_that_errs_less(tmp_path, monkeypatch):
    model, x = duplicated_mlp()
    before = copy.deepcopy(model.state_dict())
    result = nettrim.prune(model, x, sparsity=0.9, progress=False)
    assert result.mode == "neurons" and result.method == "nettrim" and result.sparsity == 0.9
    assert result.output_error < 1e-3 and result.nnz_after <= 150 * (1 + neuron_choice.WEIGHT_SLACK)
    assert [p.shape for p in result.model.parameters()] == [p.shape for p in model.parameters()]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():  # the report's error is the returned model's
        error = torch.linalg.norm(result.model(x) - model(x)) / torch.linalg.norm(model(x))
    assert float(error) == pytest.approx(result.output_error, rel=1e-3, abs=1e-6)
    assert "whole neurons removed" in result.summary()
    assert {"record", "share_out", "layers", "neurons"} <= set(result.timings)  # the alternative's time counted
    assert result.timings["seconds_supports"] > 0  # the weight-level answer's parts, kept
    assert sum(seconds for name, seconds in result.timings.items() if not name.startswith("seconds_")) \
        <= result.seconds and "whole-neuron alternative" in result.summary()
    assert result.layers["0"].info["neurons_after"] == 6
    again = nettrim.load(result.save(tmp_path / "pruned.safetensors"), duplicated_mlp()[0])
    with torch.no_grad():
        torch.testing.assert_close(again(x), result.model(x))
    monkeypatch.setattr(neuron_choice, "NEURONS_FROM", 2.0)  # the weight-level answer alone
    weights = nettrim.prune(model, x, sparsity=0.9, progress=False)
    assert weights.mode == "cascade" and weights.output_error > 10 * result.output_error
    assert result.layers["0"].info["weight_level_error"] == pytest.approx(weights.output_error)


def test_whole_neurons_that_overshoot_the_count_are_tried_at_the_count_below(monkeypatch):
    """At 90.5% of the duplicated MLP's 1,500 weights (142.5 kept) the nearest count of
    neurons keeps the six distinct ones (150 weights, 5% more than the weight-level
    answer): it errs less but keeps too many, so the next count down (five neurons, 125
    weights) is pruned too; the answer is the lowest error among those within the count."""
    model, x = duplicated_mlp()
    calls, answers = [], []
    real = neuron_choice._structured

    def spy(*args):
        answer = real(*args)
        calls.append(args[5:])
        answers.append(answer)
        return answer

    monkeypatch.setattr(neuron_choice, "_structured", spy)
    result = nettrim.prune(model, x, sparsity=0.905, progress=False)
    weight_level = result.layers["0"].info.get("weight_level_error", result.output_error)
    nearest, fewer = answers[:2]
    assert calls[:2] == [(0.905, None), (0.905, None, True)]
    assert nearest.output_error < weight_level and nearest.nnz_after == 150 > (1 + neuron_choice.WEIGHT_SLACK) * 142
    assert fewer.layers["0"].info["neurons_after"] == 5 and fewer.nnz_after <= 142
    eligible = [a.output_error for a in answers[1:]
                if a.nnz_after <= (1 + neuron_choice.WEIGHT_SLACK) * result.nnz_after] + [weight_level]
    assert result.output_error == pytest.approx(min(eligible), rel=1e-9)


def test_the_weight_level_answer_stays_where_it_errs_less(digits, digits_model, monkeypatch):
    x = digits.x_train[:600]
    result = nettrim.prune(digits_model, x, sparsity=0.9, progress=False)
    structured = nettrim.prune(digits_model, x, method="nettrim-group", sparsity=0.9,
                               method_options={"unit": "weights"}, progress=False)
    monkeypatch.setattr(neuron_choice, "NEURONS_FROM", 2.0)
    weights = nettrim.prune(digits_model, x, sparsity=0.9, progress=False)
    assert structured.output_error > weights.output_error  # on this small MLP
    assert result.mode == "cascade" and result.output_error == weights.output_error
    for name in result.layers:
        torch.testing.assert_close(result.model.get_submodule(name).weight, weights.model.get_submodule(name).weight)


@pytest.mark.parametrize("settings, applies", [
    (dict(sparsity=0.9), True), (dict(sparsity=0.95), True), (dict(sparsity=0.8), False),
    (dict(method="lobs", sparsity=0.9), False), (dict(sparsity=0.9, allocate=None), False),
    (dict(sparsity=0.9, mode="parallel"), False), (dict(sparsity=0.9, refit="relu"), False),
    (dict(sparsity=0.9, layers=["0"]), False), (dict(sparsity=0.9, method_options={"support": "l1"}), False),
    (dict(sparsity=0.9, method_options={"neurons": False}), False), (dict(sparsity=0.9, method_options={"refit": True}), False),
    (dict(sparsity=0.9, method_options={"widen": 4.0}), True),
    (dict(epsilon=0.1), False)])
def test_only_the_default_at_a_high_network_target_tries_it(settings, applies):
    assert neuron_choice.applies(nettrim.PruneConfig(**settings)) is applies


def test_a_model_with_layers_no_neuron_removal_reaches_keeps_the_weight_level_answer(caplog):
    """A residual block's layers feed an addition: the structured answer would leave them
    dense, so it is not computed, and the weight-level answer comes back."""
    from nettrim.examples import digits_resnet

    torch.manual_seed(0)
    model = digits_resnet().eval()
    x = torch.rand(64, 1, 8, 8)
    with caplog.at_level("INFO", logger="nettrim.neuron_choice"):
        result = nettrim.prune(model, x, sparsity=0.9, max_positions=500, progress=False)
    assert result.mode == "cascade"
    assert "no structured answer to compare (conv1" in caplog.text


def test_a_failing_structured_prune_leaves_the_weight_level_answer(monkeypatch, caplog):
    import nettrim.structured

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    model, x = duplicated_mlp()
    monkeypatch.setattr(nettrim.structured, "prune_network", broken)
    with caplog.at_level("WARNING", logger="nettrim.neuron_choice"):
        result = nettrim.prune(model, x, sparsity=0.9, progress=False)
    assert result.mode == "cascade" and "RuntimeError: out of memory" in caplog.text


def test_the_structured_prune_reads_the_signals_the_prune_recorded(monkeypatch):
    """Given the layers as recorded (same rows), the structured prune gives what it gives
    recording them itself; records of other layers are refused; the default at a high
    target records the network once, and computes its outputs once (its structured prune
    reads the prune's records and reference outputs); outputs that cannot be the model's
    on the calibration data are refused."""
    import importlib

    from nettrim import structured
    from nettrim.structured import GroupOptions, prune_network

    record_module = importlib.import_module("nettrim.record")  # the module, not the function nettrim.record

    model, x = duplicated_mlp()
    options = dict(sparsity=0.9, epsilon=float("nan"), options=GroupOptions(unit="weights"), progress=False)
    alone = prune_network(model, x, **options)
    records = nettrim.record(model, x)
    given = prune_network(model, x, records=records, **options)
    assert given.output_error == alone.output_error
    for name in alone.layers:
        assert torch.equal(given.model.get_submodule(name).weight, alone.model.get_submodule(name).weight)
    with pytest.raises(ValueError, match="records: got the layers"):
        prune_network(model, x, records={"0": records["0"]}, **options)
    calls = []
    real = record_module.capture_inputs
    monkeypatch.setattr(record_module, "capture_inputs", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    monkeypatch.setattr(structured, "capture_inputs", record_module.capture_inputs)
    references = []
    real_outputs = structured.network_outputs
    monkeypatch.setattr(structured, "network_outputs", lambda *a: references.append(1) or real_outputs(*a))
    result = nettrim.prune(model, x, sparsity=0.9, progress=False)
    assert result.mode == "neurons" and result.output_error == pytest.approx(alone.output_error, rel=1e-9)
    assert calls.count(2) == 1  # both layers captured at once: the recording, made once
    assert not references  # the original outputs: the prune's own, not computed again
    reference = real_outputs(model, [x])
    given = prune_network(model, x, records=records, reference_outputs=reference, **options)
    assert given.output_error == alone.output_error and len(references) == 0
    prune_network(model, x, records=records, **options)
    assert len(references) == 1
    for wrong in (reference[:-1], reference.numpy(), reference[:, 0]):
        with pytest.raises(ValueError, match=r"reference_outputs: got .*needs the model's outputs on calib"):
            prune_network(model, x, records=records, reference_outputs=wrong, **options)


def _alternatives(model, x, sparsity):
    """Whole neurons alone and the mix at ``sparsity``, each pruned on its own."""
    from nettrim.structured import GroupOptions, prune_network

    kept = (1 - sparsity) ** neuron_choice.MIX_SPLIT
    neurons = prune_network(model, x, sparsity=sparsity, epsilon=float("nan"), options=GroupOptions(unit="weights"),
                            progress=False)
    mix = prune_network(model, x, sparsity=1 - kept, epsilon=float("nan"), progress=False,
                        options=GroupOptions(unit="weights", weight_sparsity=1 - (1 - sparsity) / kept))
    return neurons, mix


def _calls_of_structured(monkeypatch) -> list:
    """The (sparsity, weight_sparsity) of every structured prune the default makes."""
    calls = []
    real = neuron_choice._structured
    monkeypatch.setattr(neuron_choice, "_structured", lambda *a: calls.append(a[5:7]) or real(*a))
    return calls


def test_the_mix_is_tried_where_whole_neurons_err_less_and_the_lowest_answer_kept(monkeypatch):
    """Whole neurons err less than the weight-level answer (the MLP whose hidden neurons are
    copies: six of them carry the function), so with the mix's margin taken away the mix
    (fewer neurons removed, then weights) is tried too; the answer returned is the lower of
    the two structured answers, each computed on its own, and the report says which."""
    model, x = duplicated_mlp()
    monkeypatch.setattr(neuron_choice, "MIX_BAND", float("inf"))
    calls = _calls_of_structured(monkeypatch)
    result = nettrim.prune(model, x, sparsity=0.9, progress=False)
    kept = 0.1 ** neuron_choice.MIX_SPLIT
    assert calls == [(0.9, None), (pytest.approx(1 - kept), pytest.approx(1 - 0.1 / kept))]
    neurons, mix = _alternatives(model, x, 0.9)
    assert neurons.output_error < result.layers["0"].info["weight_level_error"]  # the case this test is about
    best, answer = (mix, "neurons removed, then weights") if mix.output_error < neurons.output_error \
        else (neurons, "neurons removed")
    assert result.mode == "neurons" and result.output_error == pytest.approx(best.output_error, rel=1e-9)
    assert result.nnz_after == best.nnz_after <= (1 + neuron_choice.WEIGHT_SLACK) * 0.1 * result.size
    assert result.layers["0"].info["answer"] == answer
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), best.model(x), rtol=1e-5, atol=1e-5)


def test_the_mix_when_kept_is_written_in_the_original_shapes_and_reported(tmp_path, monkeypatch):
    """Where the mix errs least (made so here by reporting its error as 0, whatever the
    model gives), the answer is the mix's model in the original shapes, its weights
    counted there, the report and summary say so, and it saves and loads."""
    model, x = duplicated_mlp()
    monkeypatch.setattr(neuron_choice, "MIX_BAND", float("inf"))
    real = neuron_choice._structured

    def mix_first(*args):
        answer = real(*args)
        return dataclasses.replace(answer, output_error=0.0) if args[-1] is not None else answer

    monkeypatch.setattr(neuron_choice, "_structured", mix_first)
    result = nettrim.prune(model, x, sparsity=0.9, progress=False)
    _, mix = _alternatives(model, x, 0.9)
    assert result.mode == "neurons" and result.output_error == 0.0
    assert result.nnz_after == mix.nnz_after <= (1 + neuron_choice.WEIGHT_SLACK) * 0.1 * result.size
    assert [p.shape for p in result.model.parameters()] == [p.shape for p in model.parameters()]
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), mix.model(x), rtol=1e-5, atol=1e-5)
    assert result.layers["0"].info["answer"] == "neurons removed, then weights"
    assert "whole neurons removed, then weights within the remaining layers" in result.summary()
    again = nettrim.load(result.save(tmp_path / "pruned.safetensors"), duplicated_mlp()[0])
    with torch.no_grad():
        torch.testing.assert_close(again(x), result.model(x))


def test_the_mix_is_tried_where_whole_neurons_err_a_little_more(digits, digits_model, monkeypatch):
    """On the digits MLP at 90% the weight-level answer errs less than whole neurons: the mix
    is computed where their errors lie within MIX_BAND of each other, above as well as
    below (the band set at the two errors' gap, then just under it), and kept only where it
    errs less than the weight-level answer."""
    calls = _calls_of_structured(monkeypatch)
    errors = []
    real = neuron_choice._structured
    monkeypatch.setattr(neuron_choice, "_structured", lambda *a: errors.append(real(*a)) or errors[-1])
    calib = digits.x_train[:600]
    monkeypatch.setattr(neuron_choice, "MIX_BAND", 0.0)
    result = nettrim.prune(digits_model, calib, sparsity=0.9, progress=False)
    assert result.mode == "cascade" and calls == [(0.9, None)]
    gap = errors[0].output_error / result.output_error - 1.0
    assert gap > 0  # whole neurons err more: the case this test is about
    for band, tried in ((gap * (1 + 1e-6), True), (gap * (1 - 1e-6), False)):
        monkeypatch.setattr(neuron_choice, "MIX_BAND", band)
        calls.clear()
        errors.clear()
        again = nettrim.prune(digits_model, calib, sparsity=0.9, progress=False)
        assert (len(calls) == 2) is tried
        if tried:
            mix = errors[1]
            assert again.output_error == pytest.approx(min(result.output_error, mix.output_error), rel=1e-9)
            assert again.mode == ("neurons" if mix.output_error < result.output_error else "cascade")
        else:
            assert again.output_error == result.output_error and again.mode == "cascade"


def test_the_mix_is_tried_only_where_whole_neurons_err_nearly_as_much(monkeypatch):
    """On the MLP of copies whole neurons err far less than the weight-level answer (by more
    than MIX_BAND of it): the mix is not computed. With the band at the two errors' gap it
    is, and just under that gap it is not."""
    model, x = duplicated_mlp()
    calls = _calls_of_structured(monkeypatch)
    result = nettrim.prune(model, x, sparsity=0.9, progress=False)
    gap = 1.0 - result.output_error / result.layers["0"].info["weight_level_error"]
    assert gap > neuron_choice.MIX_BAND and calls == [(0.9, None)] and result.mode == "neurons"
    for band, tried in ((gap * (1 + 1e-9), True), (gap * (1 - 1e-9), False)):
        monkeypatch.setattr(neuron_choice, "MIX_BAND", band)
        calls.clear()
        again = nettrim.prune(model, x, sparsity=0.9, progress=False)
        assert (len(calls) == 2) is tried
        assert again.output_error <= result.output_error
