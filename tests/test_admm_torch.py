"""backend='torch': the same ADMM on torch tensors, checked against the numba backend.

CI has no GPU: everything here runs on the CPU except the tests marked ``needs_cuda``.
l1 solutions need not be unique, so the comparison is on the objective (1e-3 relative)
and the true violation of the returned weights (at most 5 tol); in float64 the two
backends also follow the same iterates.
"""
import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from solvers import LayerProblem, solve  # noqa: E402
from solvers.examples import planted_problem  # noqa: E402

TOL = 1e-4
ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SHAPES = {"tall": (150, 24, 6), "wide": (18, 36, 5)}  # n_samples, n_in, n_out
CASES = [  # relu, per_neuron, upper, fit_bias
    (True, False, False, True),
    (True, True, False, True),
    (True, False, True, True),
    (True, True, True, False),
    (False, False, False, True),
    (False, True, False, False),
]


def case_id(case):
    relu, per_neuron, upper, fit_bias = case
    return "-".join(["relu" if relu else "linear", "neuron" if per_neuron else "layer",
                     "upper" if upper else "zero", "bias" if fit_bias else "nobias"])


@functools.lru_cache(maxsize=None)
def planted(case, shape):
    """A planted layer (and its planted weights, which are feasible); with ``upper``, the
    inactive entries are bounded by the planted response plus a positive margin, as the
    cascade mode does."""
    relu, per_neuron, upper, fit_bias = case
    seed = 7 + CASES.index(case) + 10 * list(SHAPES).index(shape)
    problem, (weight, bias) = planted_problem(*SHAPES[shape], density=0.3, epsilon=0.05, relu=relu,
                                              per_neuron=per_neuron, fit_bias=fit_bias, seed=seed)
    if upper:
        rng = np.random.default_rng(seed)
        Z = problem.X @ weight.T + (0.0 if bias is None else bias)
        V = Z + 0.3 * np.abs(rng.standard_normal(Z.shape))
        problem = LayerProblem(problem.X, problem.Y, problem.epsilon, upper=V, fit_bias=fit_bias)
    return problem, (weight, bias)


@functools.lru_cache(maxsize=None)
def numba_answer(case, shape):
    return solve(planted(case, shape)[0], tol=TOL)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_torch_matches_numba(case, shape, dtype):
    problem, planted_weights = planted(case, shape)
    reference = numba_answer(case, shape)
    sol = solve(problem, backend="torch", device="cpu", dtype=dtype, tol=TOL)
    assert reference.status == "optimal" and sol.status == "optimal"
    assert sol.info["backend"] == "torch" and sol.info["device"] == "cpu" and sol.info["dtype"] == dtype
    assert sol.info["factorization"] == ("gram" if shape == "tall" else "inversion-lemma")
    assert sol.weight.dtype == np.dtype(dtype) and isinstance(sol.weight, np.ndarray)
    assert (sol.bias is None) == (not problem.fit_bias)
    assert abs(sol.objective - reference.objective) <= 1e-3 * reference.objective
    assert sol.violation <= 5 * TOL
    assert sol.objective <= problem.objective(*planted_weights) * (1 + 1e-3)
    assert 0 < sol.nnz < sol.weight.size  # exact zeros
    assert sol.objective == problem.objective(sol.weight, sol.bias)
    assert sol.violation == problem.violation(sol.weight, sol.bias)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[5]], ids=case_id)
def test_float64_iterates_follow_numba(case):
    """Without polishing, float64 torch takes the numba backend's path: same iterations, same weights."""
    problem, _ = planted(case, "tall")
    numba_sol = solve(problem, polish=False, tol=TOL)
    torch_sol = solve(problem, backend="torch", device="cpu", polish=False, tol=TOL)
    assert torch_sol.status == numba_sol.status == "optimal"
    assert torch_sol.iterations == numba_sol.iterations
    np.testing.assert_allclose(torch_sol.weight, numba_sol.weight, atol=1e-9)
    assert torch_sol.info["rho"] == pytest.approx(numba_sol.info["rho"])
    assert torch_sol.primal_residual <= TOL and torch_sol.dual_residual <= TOL


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_warm_start_from_the_planted_weights(dtype):
    """The original (planted) weights are feasible; started from them, the answer stays within ε
    and never costs more than they do."""
    problem, original = planted(CASES[2], "tall")
    assert problem.violation(*original) == 0.0
    sol = solve(problem, backend="torch", device="cpu", dtype=dtype, warm_start=original, polish=False, tol=TOL)
    assert sol.status == "optimal" and sol.violation <= 5 * TOL
    assert sol.objective <= problem.objective(*original) * (1 + 1e-3)
    assert abs(sol.objective - numba_answer(CASES[2], "tall").objective) <= 1e-3 * sol.objective


def test_max_iter_is_reported_and_weights_come_back_on_the_host():
    problem, _ = planted(CASES[0], "tall")
    sol = solve(problem, backend="torch", device="cpu", max_iter=3, polish=False)
    assert sol.status == "max_iter" and sol.iterations == 3
    assert isinstance(sol.weight, np.ndarray) and isinstance(sol.bias, np.ndarray)
    assert sol.violation == problem.violation(sol.weight, sol.bias)


def test_fixed_rho_and_penalized_bias():
    problem, _ = planted(CASES[4], "tall")
    penalized = LayerProblem(problem.X, problem.Y, problem.epsilon, relu=False, penalize_bias=True)
    for options in (dict(rho=2.0, max_iter=50_000, polish=False), dict()):
        reference = solve(penalized, **options)
        sol = solve(penalized, backend="torch", device="cpu", **options)
        assert sol.status == "optimal"
        assert abs(sol.objective - reference.objective) <= 1e-3 * reference.objective


@pytest.mark.parametrize("device", ["cpu", "cpu:0", torch.device("cpu"), None],
                         ids=["cpu", "cpu:0", "torch.device", "None"])
def test_device_spellings(device):
    problem, _ = planted(CASES[0], "wide")
    sol = solve(problem, backend="torch", device=device, max_iter=50)
    expected = "cuda:0" if device is None and torch.cuda.is_available() else "cpu"
    assert sol.info["device"] == expected


def test_default_dtype_is_float64_on_the_cpu_and_torch_dtypes_are_read():
    problem, _ = planted(CASES[0], "wide")
    assert solve(problem, backend="torch", device="cpu", max_iter=10).weight.dtype == np.float64
    assert solve(problem, backend="torch", device="cpu", dtype=torch.float32, max_iter=10).info["dtype"] == "float32"


def test_the_problem_is_not_modified():
    problem, original = planted(CASES[2], "tall")
    copies = [a.copy() for a in (problem.X, problem.Y, problem.upper, problem.epsilon)]
    solve(problem, backend="torch", device="cpu", warm_start=original, max_iter=100)
    for before, after in zip(copies, (problem.X, problem.Y, problem.upper, problem.epsilon)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_says_what_to_do():
    problem, _ = planted(CASES[0], "wide")
    with pytest.raises(ValueError) as error:
        solve(problem, backend="torch", device="cuda")
    message = str(error.value)
    assert message.startswith("device: got 'cuda'") and "torch.cuda.is_available() is False" in message
    assert "device='cpu'" in message and "device=None" in message


BAD_DEVICES = [
    (dict(backend="torch", device="banana"), "device: got 'banana', needs None, 'cpu', 'cuda'"),
    (dict(backend="torch", device="meta"), "device: got 'meta', needs a 'cpu' or 'cuda' device"),
    (dict(backend="torch", device=3.5), "device: got 3.5"),
    (dict(device="cpu"), "device: got 'cpu', but only backend='torch' runs on a device"),
    (dict(backend="numpy", device="cuda"), "device: got 'cuda', but only backend='torch'"),
    (dict(backend="torch", dtype="float16"), "dtype: got float16, needs float32 or float64"),
    (dict(backend="jax"), "backend: got 'jax', needs one of ('numba', 'numpy', 'torch')"),
]


@pytest.mark.parametrize("options, message", BAD_DEVICES, ids=[str(i) for i in range(len(BAD_DEVICES))])
def test_bad_device_options_name_the_option(options, message):
    problem, _ = planted(CASES[0], "wide")
    with pytest.raises(ValueError) as error:
        solve(problem, **options)
    assert message in str(error.value)


def test_import_solvers_does_not_import_torch():
    code = ("import sys, solvers, solvers.admm, solvers.examples, solvers.problem, solvers._kernels, "
            "solvers._polish\n"
            "from solvers.examples import planted_problem\n"
            "problem, _ = planted_problem(60, 6, 3)\n"
            "solvers.solve(problem, max_iter=30)\n"
            "solvers.solve(problem, backend='numpy', max_iter=30)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "solvers.solve(problem, backend='torch', device='cpu', max_iter=30)\n"
            "assert 'torch' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_transfer_to_the_host_between_checks(monkeypatch):
    """Between checks the loop only launches work: no tensor is read back (no device sync)."""
    from solvers import _torch_kernels

    state = {"between_checks": False, "reads": 0, "steps": 0}

    def watch(name):
        original = getattr(torch.Tensor, name)

        def guarded(self, *args, **kwargs):
            if state["between_checks"]:
                raise AssertionError(f"Tensor.{name} called between checks")
            state["reads"] += 1
            return original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, guarded)

    for name in ("cpu", "numpy", "item", "tolist", "__float__", "__bool__", "__array__"):
        watch(name)

    def quiet(method):
        def step(self, *args):
            check = args[-1]
            state["between_checks"], state["steps"] = not check, state["steps"] + (not check)
            try:
                return method(self, *args)
            finally:
                state["between_checks"] = False
        return step

    engine = _torch_kernels.TorchEngine
    monkeypatch.setattr(engine, "response_step", quiet(engine.response_step))
    monkeypatch.setattr(engine, "weight_step", quiet(engine.weight_step))
    original_products = engine.weight_products

    def products(self, *args):
        state["between_checks"] = True
        try:
            return original_products(self, *args)
        finally:
            state["between_checks"] = False
    monkeypatch.setattr(engine, "weight_products", products)
    problem, _ = planted(CASES[2], "tall")
    sol = solve(problem, backend="torch", device="cpu", max_iter=60, check_every=20, polish=False)
    assert sol.iterations == 60 and state["steps"] == 2 * 57 and state["reads"] > 0


@needs_cuda
@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[4]], ids=case_id)
def test_cuda_matches_numba(case):
    problem, _ = planted(case, "tall")
    reference = numba_answer(case, "tall")
    sol = solve(problem, backend="torch", tol=TOL)  # device None: cuda here, float32, no polishing by default
    assert sol.info["device"].startswith("cuda") and sol.info["dtype"] == "float32"
    assert sol.status == "optimal" and sol.violation <= 5 * TOL and not sol.info["polished"]
    assert abs(sol.objective - reference.objective) <= 1e-3 * reference.objective
    polished = solve(problem, backend="torch", polish=True, tol=TOL)  # polishing asked for: it runs
    assert polished.status == "optimal" and polished.violation <= 5 * TOL
    assert abs(polished.objective - reference.objective) <= 1e-3 * reference.objective
    if problem.relu:  # the linear case converges at iteration 50, before its first attempt
        assert polished.info["polish_time"] > 0
    float64 = solve(problem, backend="torch", device="cuda", dtype="float64", polish=False, tol=TOL)
    assert float64.status == "optimal" and float64.violation <= 5 * TOL
    assert abs(float64.objective - reference.objective) <= 1e-3 * reference.objective


@pytest.mark.parametrize("shape", [(60, 9), (9, 60)], ids=["tall", "wide"])
def test_one_factorisation_for_numpy_and_torch(shape):
    """The weight-step operator is one algorithm over two array namespaces: the torch
    tensors give the numpy arrays' operator, and one weight step, in float64."""
    from solvers._factor import NUMPY_OPS, Factor
    from solvers._torch_kernels import TORCH_OPS

    rng = np.random.default_rng(5)
    Xa = rng.standard_normal(shape)
    on_numpy, on_torch = Factor(Xa, NUMPY_OPS), Factor(torch.from_numpy(Xa.copy()), TORCH_OPS)
    assert on_numpy.tall == on_torch.tall == (shape[0] >= shape[1])
    np.testing.assert_allclose(on_torch.inverse.numpy(), on_numpy.inverse, rtol=1e-10, atol=1e-12)
    B, C = rng.standard_normal((shape[0], 3)), rng.standard_normal((shape[1], 3))
    outputs = []
    for factor, wrap in ((on_numpy, np.array), (on_torch, lambda a: torch.from_numpy(a.copy()))):
        Theta, R = wrap(np.empty((shape[1], 3))), wrap(np.empty((shape[0], 3)))
        work = wrap(np.empty((shape[1], 3)) if factor.tall else np.empty((shape[0], 3)))
        factor.weight_step(wrap(B), wrap(C), Theta, R, work)
        outputs.append((np.asarray(Theta), np.asarray(R)))
    for got, expected in zip(outputs[1], outputs[0]):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-10)
    # tall: the inverse of Xa^T Xa + I; wide: of K = Xa Xa^T + I (the matrix-inversion lemma's)
    gram = Xa.T @ Xa if on_numpy.tall else Xa @ Xa.T
    np.testing.assert_allclose(on_numpy.inverse @ (gram + np.eye(len(gram))), np.eye(len(gram)), atol=1e-9)
