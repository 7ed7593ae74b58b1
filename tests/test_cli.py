"""The nettrim command: prune a checkpoint end to end, report, demo, and one-line errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import nettrim
from nettrim.cli import main
from nettrim.examples import digits_mlp

FACTORY = "nettrim.examples:digits_mlp"
KWARGS = '{"hidden": [32, 24]}'


@pytest.fixture
def files(tmp_path, digits, digits_model):
    checkpoint = tmp_path / "model.pt"
    torch.save(digits_model.state_dict(), checkpoint)
    calib_pt = tmp_path / "calib.pt"
    torch.save((digits.x_train, digits.y_train), calib_pt)
    calib_npz = tmp_path / "calib.npz"
    np.savez(calib_npz, x=digits.x_train.numpy())
    return {"checkpoint": str(checkpoint), "pt": str(calib_pt), "npz": str(calib_npz), "dir": tmp_path}


def _prune_args(files, out, calib="pt", *extra):
    return ["prune", "--model", FACTORY, "--model-kwargs", KWARGS, "--checkpoint", files["checkpoint"],
            "--calib", files[calib], "--out", str(out), "--quiet", *extra]


def test_prune_end_to_end_writes_weights_and_report(files, capsys, digits, digits_model):
    out = files["dir"] / "pruned.safetensors"
    assert main(_prune_args(files, out, "pt", "--mode", "parallel", "--epsilon", "0.1")) == 0
    printed = capsys.readouterr().out
    assert "parallel mode, epsilon 0.1" in printed and "weights kept" in printed
    report = json.loads((files["dir"] / "pruned.json").read_text())
    assert report["mode"] == "parallel" and len(report["layers"]) == 3
    # the same as the library on the same inputs
    expected = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.1, progress=False)
    model = nettrim.load(out, digits_mlp((32, 24)))
    for name in expected.layers:
        torch.testing.assert_close(model.get_submodule(name).weight, expected.model.get_submodule(name).weight)

    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    assert "parallel mode" in table and "in the saved file" in table and table.count("linear") == 3
    assert f"file: {os.path.getsize(out) / 1024:.1f} KiB on disk" in table


def test_prune_with_sparsity_from_npz_and_a_report_path(files, capsys):
    out, report = files["dir"] / "s.safetensors", files["dir"] / "report.json"
    assert main(_prune_args(files, out, "npz", "--sparsity", "0.7", "--method", "magnitude",
                            "--report", str(report))) == 0
    data = json.loads(report.read_text())
    assert data["sparsity"] == 0.7 and data["method"] == "magnitude"
    assert all(abs(layer["kept"] - 0.3) < 0.01 for layer in data["layers"])


def test_structured_prune_saves_a_smaller_model_that_loads_back(files, capsys, digits):
    out = files["dir"] / "small.safetensors"
    assert main(_prune_args(files, out, "pt", "--method", "nettrim-group", "--sparsity", "0.5",
                            "--method-options", '{"swaps": 1}')) == 0
    printed = capsys.readouterr().out
    assert "nettrim-group, neurons mode, sparsity 0.5" in printed
    model = nettrim.load(out, digits_mlp((32, 24)))  # built at the original widths, shrunk to the saved ones
    assert (model[0].out_features, model[2].in_features, model[4].in_features) == (16, 16, 12)
    assert nettrim.examples.accuracy(model, digits.x_test, digits.y_test) > 0.8
    dense = nettrim.write.save(digits_mlp((32, 24)), files["dir"] / "dense.safetensors")
    assert os.path.getsize(out) < 0.7 * os.path.getsize(dense)


def test_report_of_a_plain_safetensors_file(tmp_path, capsys, digits_model):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in digits_model.state_dict().items()}, str(path))
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no nettrim report" in out and "0.weight" in out and "100.0%" in out


@pytest.mark.parametrize("change, message", [
    (dict(model="nettrim.examples"), "needs 'package.module:factory'"),
    (dict(model="nettrim.nope:f"), "cannot import 'nettrim.nope'"),
    (dict(model="nettrim.examples:nothing"), "has no attribute 'nothing'"),
    (dict(kwargs='{"hidden": [32, 25]}'), "shape mismatches 2.weight"),
    (dict(kwargs='{"hidden": [32]}'), "unexpected keys"),
    (dict(checkpoint="missing.pt"), "--checkpoint: no file"),
    (dict(calib="missing.npz"), "--calib: no file"),
    (dict(out="/nonexistent/dir/out.safetensors"), "does not exist"),
])
def test_user_errors_end_with_one_line(files, capsys, change, message):
    args = {"model": FACTORY, "kwargs": KWARGS, "checkpoint": files["checkpoint"], "calib": files["pt"],
            "out": str(files["dir"] / "o.safetensors")}
    args.update(change)
    argv = ["prune", "--model", args["model"], "--model-kwargs", args["kwargs"], "--checkpoint", args["checkpoint"],
            "--calib", args["calib"], "--out", args["out"], "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("nettrim prune: error:") and len(err.splitlines()) == 1


def test_a_pickled_checkpoint_is_refused(files, capsys):
    bad = files["dir"] / "pickled.pt"
    torch.save({"model": digits_mlp((32, 24))}, bad)  # a whole module: needs pickle
    argv = _prune_args(files, files["dir"] / "o.safetensors")
    argv[argv.index("--checkpoint") + 1] = str(bad)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\x1b" not in err and len(err.splitlines()) == 1
    assert "holds pickled Python objects (torch.nn.modules.container.Sequential)" in err
    assert err.endswith("only if you trust where it came from)")


def test_a_checkpoint_that_is_not_a_torch_file_is_one_plain_line(files, capsys):
    bad = files["dir"] / "garbage.pt"
    bad.write_bytes(b"\x1b[1mnot a checkpoint\x1b[0m" * 10)
    argv = _prune_args(files, files["dir"] / "o.safetensors")
    argv[argv.index("--checkpoint") + 1] = str(bad)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\x1b" not in err and len(err.splitlines()) == 1
    assert "cannot be read as a plain state_dict with weights_only=True" in err


def test_argument_errors(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--model", FACTORY, "--checkpoint", "c", "--calib", "c", "--out", "o", "--sparsity", "1.5"])
    assert "needs a fraction in (0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", "--model", FACTORY, "--checkpoint", "c", "--calib", "c", "--out", "o", "--sparsity", "0.5",
              "--epsilon", "0.1"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_command_runs_as_a_module_in_a_subprocess(files):
    out = files["dir"] / "sub.safetensors"
    completed = subprocess.run([sys.executable, "-m", "nettrim", *_prune_args(files, out, "pt", "--epsilon", "0.1")],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "cascade mode" in completed.stdout and out.exists()


def test_demo_prints_the_table(capsys):
    assert main(["demo", "--hidden", "16", "--epochs", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    for row in ("dense", "nettrim    cascade", "nettrim    parallel", "lobs", "magnitude", "nettrim    sparsity"):
        assert row in out
    assert main(["demo", "--hidden", "16", "0"]) == 2
    assert "--hidden: got [16, 0]" in capsys.readouterr().err


def test_baselines_and_method_options_from_the_command_line(files, capsys):
    out = files["dir"] / "lobs.safetensors"
    assert main(_prune_args(files, out, "pt", "--method", "lobs", "--sparsity", "0.8",
                            "--method-options", '{"faithful": true}')) == 0
    assert "lobs, cascade mode, sparsity 0.8" in capsys.readouterr().out
    assert main(_prune_args(files, out, "pt", "--method", "lobs", "--sparsity", "0.8",
                            "--method-options", "[1]")) == 2
    assert "--method-options: needs a JSON object" in capsys.readouterr().err
    assert main(_prune_args(files, out, "pt", "--method", "sparsegpt", "--sparsity", "0.8",
                            "--method-options", '{"refit": true}')) == 2
    assert "not options of method 'sparsegpt'" in capsys.readouterr().err


def test_prune_with_split_and_disk_store_matches_the_library(files, digits, digits_model, tmp_path):
    out = files["dir"] / "split.safetensors"
    store_dir = tmp_path / "activations"
    assert main(_prune_args(files, out, "pt", "--mode", "parallel", "--epsilon", "0.1", "--split", "neuron",
                            "--store", "disk", "--memory-budget", "64KiB", "--store-dir", str(store_dir))) == 0
    expected = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.1, split="neuron",
                             progress=False)
    model = nettrim.load(out, digits_mlp((32, 24)))
    for name in expected.layers:
        assert torch.equal(model.get_submodule(name).weight, expected.model.get_submodule(name).weight)
    assert list(store_dir.iterdir()) == []


def test_bad_scale_options_are_one_line(files, capsys):
    out = files["dir"] / "x.safetensors"
    assert main(_prune_args(files, out, "pt", "--executor", "threads")) == 2
    assert "executor: got 'threads'" in capsys.readouterr().err
    assert main(_prune_args(files, out, "pt", "--store", "disk", "--memory-budget", "lots")) == 2
    assert "memory_budget: got 'lots'" in capsys.readouterr().err


def test_prune_command_with_the_relu_refit(tmp_path, digits):
    """``--refit relu`` reaches the config: every layer's report says it was refitted."""
    from nettrim.examples import train

    model = train(digits_mlp((16, 12)), digits.x_train, digits.y_train, epochs=3, seed=0)
    checkpoint, calib, out = tmp_path / "m.pt", tmp_path / "x.pt", tmp_path / "p.safetensors"
    torch.save(model.state_dict(), checkpoint)
    torch.save(digits.x_train[:200], calib)
    code = main(["prune", "--model", "nettrim.examples:digits_mlp", "--model-kwargs", '{"hidden": [16, 12]}',
                 "--checkpoint", str(checkpoint), "--calib", str(calib), "--out", str(out), "--method", "lobs",
                 "--sparsity", "0.6", "--refit", "relu", "-q"])
    assert code == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert [layer["info"]["refit"] for layer in report["layers"]] == ["relu"] * 3
    assert all(layer["certified_error"] >= layer["error_out"] - 1e-9 for layer in report["layers"])


def test_a_conv1d_network_is_pruned_end_to_end(tmp_path, capsys):
    """The MNIST-1D CNN (three Conv1d and a Linear): every layer pruned, the report counts them all."""
    from nettrim.examples import mnist1d_cnn

    torch.manual_seed(0)
    model = mnist1d_cnn().eval()
    checkpoint, calib, out = tmp_path / "m.pt", tmp_path / "x.pt", tmp_path / "p.safetensors"
    torch.save(model.state_dict(), checkpoint)
    x = torch.randn(120, 40)
    torch.save(x, calib)
    code = main(["prune", "--model", "nettrim.examples:mnist1d_cnn", "--checkpoint", str(checkpoint),
                 "--calib", str(calib), "--out", str(out), "--method", "magnitude", "--sparsity", "0.7", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads(out.with_suffix(".json").read_text())
    assert [(layer["name"], layer["kind"]) for layer in report["layers"]] == [
        ("conv1", "conv1d"), ("conv2", "conv1d"), ("conv3", "conv1d"), ("linear", "linear")]
    assert report["left_dense"] == [] and "left dense" not in printed
    total = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    assert report["size"] == total and abs(report["kept"] - 0.3) < 0.01
    pruned = mnist1d_cnn()
    nettrim.load(out, pruned)
    assert int(torch.count_nonzero(pruned.conv2.weight)) == report["layers"][1]["nnz_after"]


def test_allocate_from_the_command_line(tmp_path):
    from nettrim.cli import build_config, build_parser

    base = ["prune", "--model", "m:f", "--checkpoint", "c", "--calib", "x", "--out", "o", "--sparsity", "0.8"]

    def config(*extra):
        return build_config(build_parser().parse_args(base + list(extra)), tmp_path)

    assert config().allocate == "auto" and config().allocation == "error"  # Net-Trim shares it out
    assert config("--allocate", "none").allocate is None and config("--allocate", "none").allocation is None
    assert config("--method", "lobs").allocation is None  # a baseline, as published
    assert config("--method", "lobs", "--allocate", "error").allocation == "error"


def test_device_and_backend_from_the_command_line(files, capsys, digits, digits_model):
    """``--device`` is where the model runs while recorded, ``--backend torch`` iterates
    there; the answer is the library's with the same solver options."""
    out = files["dir"] / "t.safetensors"
    assert main(_prune_args(files, out, "pt", "--epsilon", "0.1", "--device", "cpu", "--backend", "torch")) == 0
    report = json.loads((files["dir"] / "t.json").read_text())
    assert all(layer["info"]["backend"] == "torch" and layer["info"]["device"] == "cpu" for layer in report["layers"])
    expected = nettrim.prune(digits_model, digits.x_train, epsilon=0.1, progress=False,
                             solver_options={"backend": "torch", "device": "cpu"})
    model = nettrim.load(out, digits_mlp((32, 24)))
    for name in expected.layers:
        torch.testing.assert_close(model.get_submodule(name).weight, expected.model.get_submodule(name).weight)


@pytest.mark.parametrize("device, message", [
    ("banana", "--device: got 'banana', needs None, 'cpu', 'cuda'"),
    ("meta", "--device: got 'meta', needs a 'cpu' or 'cuda' device"),
    pytest.param("cuda", "--device: got 'cuda', but torch.cuda.is_available() is False",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")),
])
def test_a_device_this_machine_lacks_is_one_line(files, capsys, device, message):
    assert main(_prune_args(files, files["dir"] / "d.safetensors", "pt", "--device", device)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
