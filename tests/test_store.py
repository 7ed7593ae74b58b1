"""Activations on disk (memory-mapped) give the weights of an in-memory run."""
import os

import pytest
import torch

import nettrim
from nettrim.record import layer_handles, record_layers
from nettrim.store import ActivationStore, parse_size


def test_parse_size():
    assert parse_size(0) == 0 and parse_size(123) == 123
    assert parse_size("4GiB") == 4 * 2**30 and parse_size("500MB") == 500 * 10**6
    assert parse_size("1.5 KiB") == 1536 and parse_size("10b") == 10
    for bad in (-1, "lots", "3 parsecs", True, 1.5):
        with pytest.raises(ValueError, match="memory_budget: got"):
            parse_size(bad)


@pytest.mark.parametrize("mode", ["cascade", "parallel"])
def test_disk_store_gives_the_in_memory_weights(digits, digits_model, tmp_path, mode):
    expected = nettrim.prune(digits_model, digits.x_train, mode=mode, epsilon=0.1, progress=False)
    for budget in (None, "40KiB"):  # all on disk; the first arrays in memory, the rest on disk
        result = nettrim.prune(digits_model, digits.x_train, mode=mode, epsilon=0.1, progress=False,
                               store="disk", memory_budget=budget, store_dir=tmp_path / "act")
        for name in expected.layers:
            assert torch.equal(result.model.get_submodule(name).weight, expected.model.get_submodule(name).weight)
        assert list((tmp_path / "act").iterdir()) == []  # the files are removed at the end


def test_recorded_rows_are_memory_mapped_and_spill_past_the_budget(digits, digits_model, tmp_path):
    batches = list(digits.x_train.split(100))
    found = layer_handles(digits_model)
    in_memory = record_layers(digits_model, batches, found)
    store = ActivationStore("disk", memory_budget=parse_size("100KiB"), directory=tmp_path)
    on_disk = record_layers(digits_model, batches, found, store=store)
    assert 0 < store.in_memory <= 100 * 1024 and store.mapped_bytes > 0
    files = sorted(tmp_path.iterdir())
    assert files and sum(f.stat().st_size for f in files) == store.mapped_bytes
    for name, rec in in_memory.items():
        assert torch.equal(on_disk[name].input, rec.input)
        assert torch.equal(on_disk[name].pre_activation, rec.pre_activation)
    addresses = {mapped.ctypes.data for mapped in store._maps}
    assert any(rec.pre_activation.data_ptr() in addresses for rec in on_disk.values())  # memory maps, not copies
    store.drop_resident()  # pages given back, still readable
    assert torch.equal(on_disk[name].pre_activation, in_memory[name].pre_activation)
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_store_errors(digits, digits_model, tmp_path):
    with pytest.raises(ValueError, match=r"store: got 'ssd', needs one of \('memory', 'disk'\)"):
        nettrim.prune(digits_model, digits.x_train, store="ssd", progress=False)
    with pytest.raises(ValueError, match="apply to store='disk' only"):
        nettrim.prune(digits_model, digits.x_train, memory_budget="1GiB", progress=False)
    with pytest.raises(ValueError, match="store: method 'cap'"):
        nettrim.prune(digits_model, digits.x_train, method="cap", sparsity=0.5, store="disk", progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="store_dir: cannot create"):
        nettrim.prune(digits_model, digits.x_train, store="disk", store_dir=tmp_path / "file" / "sub",
                      progress=False)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="store_dir: .* is not writable"):
            nettrim.prune(digits_model, digits.x_train, store="disk", store_dir=locked, progress=False)
