"""Property-based checks of the input validation: LayerProblem, the CLI's arguments, and the
checkpoint/calibration/weights loaders on truncated and corrupted files.

Whatever the input, the answer is a result or ONE clear error naming the argument: never a
traceback from deep inside numpy or torch, and the inputs are never modified.
"""
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nettrim.cli import main
from nettrim.inputs import UsageError, load_calibration, load_checkpoint
from nettrim.examples import digits_mlp
from solvers import LayerProblem

FUZZ = settings(derandomize=True, deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ---------------------------------------------------------------------------- LayerProblem
_DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.complex128])


def _arrays(max_dims=3):
    return _DTYPES.flatmap(lambda dtype: hnp.arrays(
        dtype, hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=4),
        elements=None if dtype in (np.bool_, np.complex128) else
        (st.integers(-5, 5) if dtype == np.int64 else
         st.floats(allow_nan=True, allow_infinity=True, width=32 if dtype == np.float32 else 64))))


def _matching(n_samples, n_out):
    """Mostly well-formed problems, so that the checks after the shapes are reached too."""
    floats = st.floats(-3, 3, width=32)
    return hnp.arrays(np.float64, (n_samples, n_out), elements=floats)


_ARGUMENT_NAMES = ("X:", "Y:", "epsilon:", "upper:", "penalize_bias")


def _check_construct(X, Y, epsilon, relu, upper, fit_bias, penalize_bias):
    copies = [np.array(a, copy=True) for a in (X, Y, epsilon) + ((upper,) if upper is not None else ())]
    try:
        problem = LayerProblem(X, Y, epsilon, relu=relu, upper=upper, fit_bias=fit_bias,
                               penalize_bias=penalize_bias)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        assert message.startswith(_ARGUMENT_NAMES), message
        assert "\n" not in message
    else:  # what was accepted is a well-posed program
        assert problem.X.ndim == 2 and problem.Y.shape[0] == problem.n_samples >= 1 and problem.n_in >= 1
        assert np.isfinite(problem.X).all() and np.isfinite(problem.Y).all()
        assert problem.epsilon.shape in ((), (problem.n_out,)) and (problem.epsilon >= 0).all()
        assert not relu or (problem.Y >= 0).all()
        zero = np.zeros((problem.n_out, problem.n_in))
        assert np.isfinite(problem.violation(zero, np.zeros(problem.n_out) if fit_bias else None))
    for before, after in zip(copies, [X, Y, epsilon] + ([upper] if upper is not None else [])):
        np.testing.assert_array_equal(np.asarray(after), before)  # never written to


@FUZZ
@given(X=_arrays(), Y=_arrays(), epsilon=st.one_of(st.floats(allow_nan=True, allow_infinity=True), _arrays(2)),
       relu=st.booleans(), fit_bias=st.booleans(), penalize_bias=st.booleans())
def test_layer_problem_accepts_or_names_the_argument(X, Y, epsilon, relu, fit_bias, penalize_bias):
    _check_construct(X, Y, epsilon, relu, None, fit_bias, penalize_bias)


@FUZZ
@given(data=st.data(), n_samples=st.integers(1, 5), n_in=st.integers(1, 4), n_out=st.integers(1, 3),
       relu=st.booleans(), with_upper=st.booleans())
def test_layer_problem_near_valid_inputs(data, n_samples, n_in, n_out, relu, with_upper):
    X = data.draw(hnp.arrays(np.float64, (n_samples, n_in), elements=st.floats(-3, 3) | st.just(np.nan)))
    Y = data.draw(_matching(n_samples, n_out))
    if relu and data.draw(st.booleans()):
        Y = np.abs(Y)
    epsilon = data.draw(st.one_of(st.floats(-1, 2), hnp.arrays(np.float64, st.integers(0, 4),
                                                                  elements=st.floats(-1, 2))))
    upper = data.draw(_matching(n_samples, n_out)) if with_upper else None
    _check_construct(X, Y, epsilon, relu, upper, True, False)


# ---------------------------------------------------------------------------- the CLI's arguments
@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    torch.save(digits_mlp((6,)).state_dict(), root / "model.pt")
    torch.save(torch.randn(24, 64), root / "calib.pt")
    return root


_NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-3, 3).map(str),
                     st.sampled_from(["", "abc", "1e-3", "0", "-0.5", "0.5", "1", "2", "nan", "inf", "1e400"]))


@settings(derandomize=True, deadline=None, max_examples=40,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(option=st.sampled_from(["--epsilon", "--gamma", "--sparsity", "--max-positions", "--seed", "--tol",
                               "--max-iter", "--method-options", "--model-kwargs", "--mode", "--method",
                               "--layers"]),
       value=st.one_of(_NUMBERS, st.text(max_size=12), st.sampled_from(['{"refit": 1}', '{"nope": 1}', "[]",
                                                                          '{"hidden": [3]}', "{}", "0", "2"])))
def test_cli_arguments_give_a_result_or_one_line(tiny_files, capsys, option, value):
    out = tiny_files / "out.safetensors"
    argv = ["prune", "--model", "nettrim.examples:digits_mlp", "--model-kwargs", '{"hidden": [6]}',
            "--checkpoint", str(tiny_files / "model.pt"), "--calib", str(tiny_files / "calib.pt"),
            "--out", str(out), "--quiet", "--max-iter", "200", option, value]
    if option in ("--method", "--method-options") and value not in ("nettrim", "{}", '{"refit": 1}'):
        argv += ["--sparsity", "0.5"] if option == "--method" else []
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse: usage line + one error line
        status = exc.code
        event("argparse error")
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and err[-1].startswith("nettrim") and "error:" in err[-1], err
        return
    err = capsys.readouterr().err.strip().splitlines()
    assert status in (0, 2), status
    event(f"exit {status}")
    if status == 2:
        assert len(err) == 1 and err[0].startswith("nettrim prune: error: "), err
    else:
        assert out.exists()


# ---------------------------------------------------------------------------- damaged files
def _checkpoint_bytes():
    buffer = io.BytesIO()
    torch.manual_seed(0)
    torch.save(digits_mlp((6,)).state_dict(), buffer)
    return buffer.getvalue()


_CHECKPOINT = _checkpoint_bytes()


def _damage(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    damaged = bytearray(data[: max(0, len(data) - cut)])
    for position, value in flips:
        if damaged:
            damaged[position % len(damaged)] ^= value
    return bytes(damaged)


_DAMAGE = dict(cut=st.integers(0, len(_CHECKPOINT)),
               flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4))


@FUZZ
@given(**_DAMAGE)
def test_damaged_checkpoint_is_refused_with_one_line(tmp_path, cut, flips):
    path = tmp_path / "damaged.pt"
    path.write_bytes(_damage(_CHECKPOINT, cut, flips))
    model = digits_mlp((6,))
    try:
        load_checkpoint(str(path), model)
    except UsageError as exc:
        assert str(exc).startswith("--checkpoint: ") and "\n" not in str(exc)
    else:  # only damage inside the tensor payload can go unnoticed: the model still got every tensor
        reference = digits_mlp((6,)).state_dict()
        assert {key: value.shape for key, value in model.state_dict().items()} == \
            {key: value.shape for key, value in reference.items()}


def test_truncated_checkpoint_is_always_refused(tmp_path):
    path = tmp_path / "cut.pt"
    for cut in range(1, len(_CHECKPOINT), max(1, len(_CHECKPOINT) // 97)):
        path.write_bytes(_CHECKPOINT[: len(_CHECKPOINT) - cut])
        with pytest.raises(UsageError, match="^--checkpoint: .* cannot be read"):
            load_checkpoint(str(path), digits_mlp((6,)))


@FUZZ
@given(**_DAMAGE, suffix=st.sampled_from([".pt", ".npz", ".npy"]))
def test_damaged_calibration_is_refused_with_one_line(tmp_path, cut, flips, suffix):
    path = tmp_path / f"calib{suffix}"
    x = np.arange(48, dtype=np.float32).reshape(4, 12)
    if suffix == ".pt":
        torch.save(torch.from_numpy(x), path)
    elif suffix == ".npz":
        np.savez(path, x=x)
    else:
        np.save(path, x)
    path.write_bytes(_damage(path.read_bytes(), cut % (path.stat().st_size + 1), flips))
    try:
        data = load_calibration(str(path))
    except UsageError as exc:
        assert str(exc).startswith("--calib: ") and "\n" not in str(exc)
    else:
        assert isinstance(data, torch.Tensor)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    import nettrim

    torch.manual_seed(0)
    result = nettrim.prune(digits_mlp((6,)), torch.randn(20, 64), method="magnitude", sparsity=0.5, progress=False)
    return result.save(tmp_path_factory.mktemp("weights") / "w.safetensors").read_bytes()


@FUZZ
@given(**_DAMAGE)
def test_damaged_weights_file_gives_one_line_in_report(tmp_path, capsys, weights_file, cut, flips):
    path = tmp_path / "w.safetensors"
    data = weights_file
    path.write_bytes(_damage(data, cut % (len(data) + 1), flips))
    status = main(["report", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status in (0, 2)
    if status == 2:
        assert len(err) == 1 and err[0].startswith("nettrim report: error: "), err


def test_a_foreign_report_in_the_metadata_gives_one_line(tmp_path, capsys):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"0.weight": torch.ones(3, 4)}, str(path), metadata={"nettrim_report": json.dumps({"x": 1})})
    assert main(["report", str(path)]) == 2
    assert "its report or tensors cannot be read (KeyError" in capsys.readouterr().err


def test_a_checkpoint_zip_without_its_data_is_refused(tmp_path):
    path = tmp_path / "nodata.pt"
    with zipfile.ZipFile(io.BytesIO(_CHECKPOINT)) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            if "/data/" not in item.filename:
                target.writestr(item, source.read(item))
    with pytest.raises(UsageError, match="^--checkpoint: "):
        load_checkpoint(str(path), digits_mlp((6,)))
