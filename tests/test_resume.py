"""An interrupted run keeps its finished layers in a work directory and resumes to the same weights."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import nettrim
from nettrim import pipeline
from nettrim.examples import digits_mlp, train


def _interrupt_after(monkeypatch, n_layers):
    """Make the n-th layer's solve raise KeyboardInterrupt, as Ctrl-C would."""
    calls = {"n": 0}
    run_method = pipeline._run_method

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_layers:
            raise KeyboardInterrupt
        return run_method(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_run_method", interrupted)


def _same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("mode", ["cascade", "parallel"])
def test_resume_gives_the_uninterrupted_weights(tmp_path, monkeypatch, digits, digits_model, mode):
    settings = dict(mode=mode, epsilon=0.1, progress=False)
    expected = nettrim.prune(digits_model, digits.x_train, **settings)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            nettrim.prune(digits_model, digits.x_train, work_dir=tmp_path / "work", **settings)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["layer-0000.safetensors", "run.json"]

    resumed = nettrim.prune(digits_model, digits.x_train, work_dir=tmp_path / "work", resume=True, **settings)
    _same_weights(resumed.model, expected.model)
    assert list(resumed.layers) == list(expected.layers)
    first = next(iter(resumed.layers.values()))
    assert first.info["resumed"] and first.nnz_after == next(iter(expected.layers.values())).nnz_after
    assert resumed.output_error == pytest.approx(expected.output_error, rel=1e-12)


def test_a_resumed_run_times_only_the_layers_it_solves(tmp_path, monkeypatch, digits, digits_model):
    settings = dict(sparsity=0.8, progress=False, work_dir=tmp_path / "work")
    x = digits.x_train[:600]
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            nettrim.prune(digits_model, x, **settings)
    resumed = nettrim.prune(digits_model, x, resume=True, **settings)
    restored, solved = list(resumed.layers.values())[0], list(resumed.layers.values())[1:]
    assert restored.info["resumed"] and restored.info["seconds_supports"] > 0  # its parts, from the first run
    for part in ("supports", "fits"):  # summed over the layers this run solved
        assert resumed.timings[f"seconds_{part}"] == pytest.approx(sum(r.info[f"seconds_{part}"] for r in solved))
    assert resumed.timings["seconds_supports"] + resumed.timings["seconds_fits"] <= resumed.timings["layers"]


def test_a_finished_work_dir_resumes_without_solving(tmp_path, monkeypatch, digits, digits_model):
    first = nettrim.prune(digits_model, digits.x_train, epsilon=0.1, progress=False, work_dir=tmp_path)
    monkeypatch.setattr(pipeline, "_run_method", lambda *a, **k: pytest.fail("a finished layer was solved again"))
    again = nettrim.prune(digits_model, digits.x_train, epsilon=0.1, progress=False, work_dir=tmp_path, resume=True)
    _same_weights(again.model, first.model)


def test_work_dir_refuses_to_mix_runs(tmp_path, digits, digits_model):
    nettrim.prune(digits_model, digits.x_train, epsilon=0.1, progress=False, work_dir=tmp_path,
                  layers=["0"])
    with pytest.raises(ValueError, match="already holds 1 finished layer.*resume=True"):
        nettrim.prune(digits_model, digits.x_train, epsilon=0.1, progress=False, work_dir=tmp_path, layers=["0"])
    with pytest.raises(ValueError, match=r"differs from this one in epsilon \(0.1 then, 0.2 now\)"):
        nettrim.prune(digits_model, digits.x_train, epsilon=0.2, progress=False, work_dir=tmp_path, layers=["0"],
                      resume=True)
    with pytest.raises(ValueError, match="differs from this one in the calibration data"):
        nettrim.prune(digits_model, digits.x_train[:100], epsilon=0.1, progress=False, work_dir=tmp_path,
                      layers=["0"], resume=True)
    other = digits_mlp((32, 24))
    with pytest.raises(ValueError, match="differs from this one in the model's weights"):
        nettrim.prune(other, digits.x_train, epsilon=0.1, progress=False, work_dir=tmp_path, layers=["0"],
                      resume=True)


def test_work_dir_errors(tmp_path, digits, digits_model):
    with pytest.raises(ValueError, match="resume=True needs work_dir="):
        nettrim.prune(digits_model, digits.x_train, resume=True, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        nettrim.prune(digits_model, digits.x_train, work_dir=tmp_path / "file", progress=False)
    with pytest.raises(ValueError, match="method 'cap'.*cannot be resumed"):
        nettrim.prune(digits_model, digits.x_train, method="cap", sparsity=0.5, work_dir=tmp_path / "w",
                      progress=False)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="is not writable"):
            nettrim.prune(digits_model, digits.x_train, work_dir=locked, progress=False)


def test_a_layer_file_cut_short_is_solved_again(tmp_path, monkeypatch, digits, digits_model):
    settings = dict(epsilon=0.1, progress=False, work_dir=tmp_path)
    expected = nettrim.prune(digits_model, digits.x_train, **settings)
    damaged = tmp_path / "layer-0001.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:50])
    resumed = nettrim.prune(digits_model, digits.x_train, resume=True, **settings)
    _same_weights(resumed.model, expected.model)
    assert [report.info.get("resumed", False) for report in resumed.layers.values()] == [True, False, False]


# ---------------------------------------------------------------------------- a real command, stopped
@pytest.fixture(scope="module")
def command_files(tmp_path_factory, digits):
    """A digits MLP 64-256-256-10 whose hidden layers take long enough to stop a run between them."""
    root = tmp_path_factory.mktemp("cli-resume")
    model = train(digits_mlp((256, 256)), digits.x_train, digits.y_train, epochs=5, seed=0)
    torch.save(model.state_dict(), root / "model.pt")
    torch.save(digits.x_train, root / "calib.pt")
    return root


def _command(root, out, *extra):
    return [sys.executable, "-m", "nettrim", "prune", "--model", "nettrim.examples:digits_mlp",
            "--checkpoint", str(root / "model.pt"), "--calib", str(root / "calib.pt"), "--out", str(out),
            "--epsilon", "0.05", "--quiet", *extra]


def _stop_after_first_layer(command, work_dir, sig):
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first = work_dir / "layer-0000.safetensors"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be stopped: " + process.communicate()[1]
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    return process.returncode, err, sorted(p.name for p in work_dir.glob("layer-*"))


def test_killed_command_resumes_to_the_uninterrupted_result(command_files):
    root = command_files
    work_dir = root / "kill.work"
    returncode, _, finished = _stop_after_first_layer(_command(root, root / "kill.safetensors", "--work-dir",
                                                               str(work_dir)), work_dir, signal.SIGKILL)
    assert returncode == -signal.SIGKILL and 1 <= len(finished) < 3
    assert not (root / "kill.safetensors").exists()

    again = subprocess.run(_command(root, root / "kill.safetensors", "--work-dir", str(work_dir)),
                           capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr and len(again.stderr.strip().splitlines()) == 1

    resumed = subprocess.run(_command(root, root / "kill.safetensors", "--work-dir", str(work_dir), "--resume"),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    plain = subprocess.run(_command(root, root / "plain.safetensors"), capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    assert not (root / "plain.safetensors.work").exists()  # the default work directory is removed on success
    for name, tensor in nettrim.load(root / "plain.safetensors").items():
        assert torch.equal(nettrim.load(root / "kill.safetensors")[name], tensor), name


def test_ctrl_c_exits_with_one_line_saying_how_to_resume(command_files):
    root = command_files
    out = root / "ctrlc.safetensors"
    work_dir = root / "ctrlc.safetensors.work"  # the default
    returncode, err, finished = _stop_after_first_layer(_command(root, out), work_dir, signal.SIGINT)
    assert returncode == 130
    assert err.strip().splitlines() == [
        f"nettrim prune: interrupted: {len(finished)} finished layer(s) kept in {work_dir}; "
        "run the same command with --resume to go on"]
    resumed = subprocess.run(_command(root, out, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert out.exists() and not work_dir.exists()
