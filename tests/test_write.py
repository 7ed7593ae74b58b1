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


def test_csr_export_and_sizes(pruned):
    matrices = pruned.csr()
    for name, matrix in matrices.items():
        weight = pruned.model.get_submodule(name).weight.detach()
        assert matrix.nnz == pruned.layers[name].nnz_after
        assert (matrix.toarray() == weight.numpy().reshape(weight.shape[0], -1)).all()
    sizes = pruned.sizes()
    assert sizes["dense"] == sum(pruned.model.get_submodule(n).weight.numel() * 4 for n in pruned.layers)
    # float32 values + int32 column indices + row pointers
    expected = sum(m.nnz * 8 + (m.shape[0] + 1) * 4 for m in matrices.values())
    assert sizes["csr"] == expected < sizes["dense"]


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
