"""The writer: safetensors round trip, the report beside it, masks, CSR sizes, atomic writes."""
import json
import os

import pytest
import torch

import nettrim
from nettrim import write
from nettrim.examples import digits_mlp


@pytest.fixture(scope="module")
def pruned(digits, digits_model):
    return nettrim.prune(digits_model, digits.x_train, mode="cascade", epsilon=0.1, progress=False)


def test_save_and_load_reproduce_the_pruned_outputs_exactly(tmp_path, digits, pruned):
    path = pruned.save(tmp_path / "pruned.safetensors")
    assert path.exists() and (tmp_path / "pruned.json").exists()
    fresh = nettrim.load(path, digits_mlp((32, 24)))
    with torch.no_grad():
        assert torch.equal(fresh(digits.x_test), pruned.model(digits.x_test))
    for name in pruned.layers:
        assert torch.equal(fresh.get_submodule(name).weight == 0, pruned.model.get_submodule(name).weight == 0)


def test_report_is_stored_beside_and_inside_the_weights(tmp_path, pruned):
    path = pruned.save(tmp_path / "model.safetensors")
    beside = json.loads((tmp_path / "model.json").read_text())
    inside = nettrim.read_report(path)
    assert beside == inside
    assert beside["mode"] == "cascade" and beside["nnz_after"] == pruned.nnz_after
    assert [layer["name"] for layer in beside["layers"]] == list(pruned.layers)
    assert beside["layers"][0]["kept"] == pytest.approx(pruned.layers["0"].kept)


def test_masks_keep_the_zeros_through_fine_tuning(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train, epsilon=0.1, progress=False)
    model = result.attach_masks()
    zeros = {name: model.get_submodule(name).weight == 0 for name in result.layers}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(digits.x_train[:64]), digits.y_train[:64])
    loss.backward()
    optimizer.step()
    for name, zero in zeros.items():
        assert torch.all(model.get_submodule(name).weight[zero] == 0)
    # the masked model saves as plain weights, loadable into the bare architecture
    state = write.plain_state_dict(model)
    assert not any(key.endswith(("_orig", "_mask")) for key in state)
    fresh = digits_mlp((32, 24))
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(digits.x_test), model(digits.x_test))


def test_csr_export_and_stored_sizes(pruned):
    matrices = pruned.csr()
    for name, matrix in matrices.items():
        weight = pruned.model.get_submodule(name).weight.detach()
        assert matrix.nnz == pruned.layers[name].nnz_after
        assert (matrix.toarray() == weight.numpy().reshape(weight.shape[0], -1)).all()
    sizes = pruned.sizes()
    assert sizes["dense"] == sum(pruned.model.get_submodule(n).weight.numel() * 4 for n in pruned.layers)
    # one bit per entry + float32 nonzero values, layer by layer
    expected = sum(-(-report.size // 8) + report.nnz_after * 4 for report in pruned.layers.values())
    assert sizes["stored"] == expected < sizes["dense"]


def test_the_saved_file_is_smaller_than_the_dense_model_and_loads_back_the_same(tmp_path, digits, digits_model,
                                                                                pruned):
    from nettrim.storage import stored_nbytes

    def data_bytes(file):  # a safetensors file: 8 bytes of header length, the JSON header, the data
        with open(file, "rb") as handle:
            header = int.from_bytes(handle.read(8), "little")
        return os.path.getsize(file) - 8 - header

    dense_path = write.save(digits_model, tmp_path / "dense.safetensors")
    path = pruned.save(tmp_path / "pruned.safetensors")
    state = pruned.model.state_dict()
    dense_bytes = sum(t.numel() * t.element_size() for t in state.values())
    assert data_bytes(dense_path) == dense_bytes  # the unpruned model is stored densely
    assert data_bytes(path) == sum(stored_nbytes(t) for t in state.values())  # exactly what sizes() counts
    sizes = pruned.sizes()
    assert data_bytes(dense_path) - data_bytes(path) == sizes["dense"] - sizes["stored"] > 0.5 * sizes["dense"]
    state = nettrim.load(path)
    for key, tensor in pruned.model.state_dict().items():
        assert torch.equal(state[key], tensor), key
    assert all("__" not in key for key in state)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_pack_and_unpack_are_inverse_at_every_density(dtype):
    from nettrim.storage import pack, stored_nbytes, unpack

    generator = torch.Generator().manual_seed(0)
    state = {}
    for density in (0.0, 0.01, 0.3, 0.9, 0.97, 1.0):
        tensor = torch.randn(7, 5, 3, generator=generator).to(dtype)
        tensor[torch.rand(tensor.shape, generator=generator) >= density] = 0
        state[f"w{density}"] = tensor
    state["bias"] = torch.zeros(7, dtype=dtype)  # vectors are stored as they are
    state["steps"] = torch.tensor(3)
    stored, packed = pack(state)
    assert set(packed) == {key for key, tensor in state.items()
                           if tensor.dim() >= 2 and stored_nbytes(tensor) < tensor.numel() * tensor.element_size()}
    assert "w0.0" in packed and "w1.0" not in packed
    back = unpack(stored, packed)
    assert back.keys() == state.keys()
    for key, tensor in state.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key


def test_a_damaged_packed_tensor_is_named():
    from nettrim.storage import pack, unpack

    stored, packed = pack({"w": torch.tensor([[0.0, 1.0], [0.0, 0.0]]).repeat(8, 8)})
    values = stored.pop("w.__values__")
    with pytest.raises(ValueError, match="w: the file lists it as packed but lacks 'w.__values__'"):
        unpack(stored, packed)
    stored["w.__values__"] = values[:-1]
    with pytest.raises(ValueError, match="w: its mask has .* nonzeros and .* values; the file is damaged"):
        unpack(stored, packed)


def test_a_model_with_neurons_removed_loads_into_a_freshly_built_architecture(tmp_path, digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train, method="cap", sparsity=0.5, progress=False)
    path = result.save(tmp_path / "cap.safetensors")
    fresh = nettrim.load(path, digits_mlp((32, 24)))
    assert fresh[0].out_features == 16 and fresh[2].in_features == 16
    with torch.no_grad():
        assert torch.equal(fresh(digits.x_test), result.model(digits.x_test))
    with pytest.raises(ValueError, match="the file has layers .* that the model does not"):
        nettrim.load(path, torch.nn.Sequential(torch.nn.Linear(64, 10)))


def test_a_failed_write_leaves_the_earlier_file_intact(tmp_path):
    target = tmp_path / "weights.safetensors"
    target.write_bytes(b"earlier")

    def crash(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write.atomic_write(target, crash)
    assert target.read_bytes() == b"earlier"
    assert os.listdir(tmp_path) == ["weights.safetensors"]


def test_saved_file_gets_normal_permissions(tmp_path, pruned):
    path = pruned.save(tmp_path / "p.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)
