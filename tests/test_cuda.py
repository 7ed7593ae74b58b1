"""A model that lives on a CUDA device: recorded, pruned and written back there.

CI has no GPU, so every test here is skipped on it; they run where ``torch.cuda`` finds a
device. Each prunes the same model on the GPU and on the CPU and compares: recording in
float32 on another device changes the signals in their last bits, so the supports may
differ in a few entries, never in the kept fractions or the errors beyond rounding.
"""
import copy

import numpy as np
import pytest
import torch

import nettrim

DEVICE = "cuda"
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _on_device(model: torch.nn.Module) -> bool:
    return all(t.device.type == torch.device(DEVICE).type for t in [*model.parameters(), *model.buffers()])


@pytest.mark.parametrize("method, extra", [("magnitude", {}), ("lobs", {}), ("sparsegpt", {}), ("nettrim", {}),
                                           ("lobs", {"refit": "relu"})])
def test_every_layer_method_prunes_a_gpu_model_as_it_prunes_it_on_the_cpu(digits, digits_model, method, extra):
    x = digits.x_train[:400]
    model = copy.deepcopy(digits_model).to(DEVICE)
    before = copy.deepcopy(model.state_dict())
    settings = dict(method=method, sparsity=0.7, mode="cascade", progress=False, **extra)
    on_gpu = nettrim.prune(model, x.to(DEVICE), **settings)
    on_cpu = nettrim.prune(digits_model, x, **settings)
    assert _on_device(on_gpu.model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input model untouched
    for name, report in on_gpu.layers.items():
        assert abs(report.kept - on_cpu.layers[name].kept) <= 0.01, (name, report.kept, on_cpu.layers[name].kept)
        assert report.nnz_after == int((on_gpu.model.get_submodule(name).weight != 0).sum())
    assert on_gpu.output_error == pytest.approx(on_cpu.output_error, rel=0.05, abs=1e-3)
    with torch.no_grad():
        gpu_labels = on_gpu.model(digits.x_test.to(DEVICE)).argmax(1).cpu()
        cpu_labels = on_cpu.model(digits.x_test).argmax(1)
    assert float((gpu_labels == cpu_labels).float().mean()) >= 0.98  # the same predictions but a few


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_the_budget_program_holds_for_a_gpu_model_whichever_backend_solves_it(digits, digits_model, backend):
    """``backend='torch'`` with no device solves on the GPU in float32; numba on the host."""
    model = copy.deepcopy(digits_model).to(DEVICE)
    result = nettrim.prune(model, digits.x_train.to(DEVICE), mode="cascade", epsilon=0.1, progress=False,
                           solver_options={"backend": backend})
    reference = nettrim.prune(digits_model, digits.x_train, mode="cascade", epsilon=0.1, progress=False)
    assert _on_device(result.model)
    for name, report in result.layers.items():
        assert report.status == "optimal" and report.violation <= 5e-3, (name, report.violation)
        if backend == "torch":
            assert report.info["device"].startswith(DEVICE)
        assert abs(report.kept - reference.layers[name].kept) <= 0.02, (name, report.kept)
    assert result.output_error == pytest.approx(reference.output_error, rel=0.05)


def test_a_gpu_cnn_with_batchnorm_is_pruned_there():
    from conftest import batchnorm_cnn

    model, x = batchnorm_cnn()
    settings = dict(mode="cascade", epsilon=0.1, max_positions=800, progress=False)
    on_gpu = nettrim.prune(copy.deepcopy(model).to(DEVICE), x.to(DEVICE), **settings)
    on_cpu = nettrim.prune(model, x, **settings)
    assert _on_device(on_gpu.model)
    for name, report in on_gpu.layers.items():
        assert report.status == "optimal" and report.violation <= 5e-3, (name, report.violation)
        assert abs(report.kept - on_cpu.layers[name].kept) <= 0.02, (name, report.kept)
    with torch.no_grad():
        np.testing.assert_allclose(on_gpu.model(x.to(DEVICE)).cpu().numpy(), on_cpu.model(x).numpy(), atol=0.05)


@pytest.mark.parametrize("method", ["cap", "nettrim-group"])
def test_neurons_are_removed_from_a_gpu_model_and_it_still_runs(digits, digits_model, method, tmp_path):
    model = copy.deepcopy(digits_model).to(DEVICE)
    on_gpu = nettrim.prune(model, digits.x_train.to(DEVICE), method=method, sparsity=0.5, progress=False)
    on_cpu = nettrim.prune(digits_model, digits.x_train, method=method, sparsity=0.5, progress=False)
    small = on_gpu.model
    assert _on_device(small)
    assert [m.weight.shape for m in small.modules() if isinstance(m, torch.nn.Linear)] == \
        [m.weight.shape for m in on_cpu.model.modules() if isinstance(m, torch.nn.Linear)]
    assert on_gpu.output_error == pytest.approx(on_cpu.output_error, rel=0.05, abs=1e-3)
    path = on_gpu.save(tmp_path / "small.safetensors")
    again = nettrim.load(path, copy.deepcopy(on_cpu.model))
    with torch.no_grad():
        x = digits.x_test[:50]
        torch.testing.assert_close(again(x), small(x.to(DEVICE)).cpu())


def test_whole_neurons_chosen_for_a_gpu_model_come_back_on_it():
    """The default at 90% on a model whose neurons are copies of a few: the structured
    answer, written back into the original shapes on the model's device."""
    from test_neuron_choice import duplicated_mlp

    model, x = duplicated_mlp()
    on_gpu = nettrim.prune(copy.deepcopy(model).to(DEVICE), x.to(DEVICE), sparsity=0.9, progress=False)
    on_cpu = nettrim.prune(model, x, sparsity=0.9, progress=False)
    assert on_gpu.mode == on_cpu.mode == "neurons" and _on_device(on_gpu.model)
    assert on_gpu.output_error == pytest.approx(on_cpu.output_error, rel=0.05, abs=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(on_gpu.model(x.to(DEVICE)).cpu(), on_cpu.model(x), rtol=1e-3, atol=1e-3)
