"""ADMM for the Net-Trim layer program, all neurons at once.

With the augmented input ``Xa = [X, 1]`` (the ones column only when the bias is fitted)
and ``Theta = [W, b]^T`` of shape ``(n_in + 1, n_out)``, the program is split as

.. math::

    \\min \\; \\|Q\\|_{1,w} + \\iota_C(A) \\quad \\text{s.t.} \\quad
    A = X_a \\Theta, \\; Q = \\Theta

(``w`` is 0 on the bias row unless it is penalised, ``C`` the constraint set of
:class:`~solvers.LayerProblem`). One iteration with scaled duals ``UA, UQ`` and
over-relaxation ``alpha``:

.. math::

    \\Theta &= (X_a^T X_a + I)^{-1} \\left[X_a^T (A - UA) + (Q - UQ)\\right],
        \\qquad R = X_a \\Theta \\\\
    A &= \\Pi_C(\\alpha R + (1-\\alpha) A + UA), \\qquad
    Q = S_{w/\\rho}(\\alpha \\Theta + (1-\\alpha) Q + UQ) \\\\
    UA &\\mathrel{+}= \\alpha R + (1-\\alpha) A_{old} - A, \\qquad
    UQ \\mathrel{+}= \\alpha \\Theta + (1-\\alpha) Q_{old} - Q

``rho`` appears only in the threshold, so the matrix is factored once per problem
(Cholesky of ``Xa^T Xa + I``, or of ``Xa Xa^T + I`` through the matrix-inversion lemma
when ``n_samples < n_in + 1``) and ``rho`` adapts for free. The two products ``Xa^T B``
and ``Xa Theta`` are the only ``O(n_samples n_in n_out)`` work; the rest is done by the
fused kernels of :mod:`solvers._kernels`. Once the iterate is close, the program
restricted to its support is solved exactly and certified (:mod:`solvers._polish`).

The iteration is written once, in :func:`solve_admm`, against an *engine* that owns the
arrays and does the array work: the factorisation and the two products
(``weight_products``), the two fused elementwise steps (``response_step``,
``weight_step``), the projection of the starting point, the dual residual's product and
the violation check, and the transfers to the host. ``backend="numba"`` and ``"numpy"``
use :class:`_NumpyEngine` (numpy arrays, BLAS products, the kernels of
:mod:`solvers._kernels`); ``backend="torch"`` uses :class:`solvers._torch_kernels.TorchEngine`
(torch tensors on ``cpu`` or ``cuda``, imported only then). Scaling, the rho rule, the
stopping rule, polishing and the returned :class:`~solvers.Solution` are shared.

The data are scaled first (``X, Y, V, epsilon`` divided by one constant, which leaves
``W`` unchanged) so that the largest diagonal entry of ``X^T X`` is ``_GRAM_TARGET``; this
balances the two constraints of the split. With a fitted, free bias the input is also
centred (an exact change of variables); the constant stays that of the uncentred ``X``
(at most ``_OFFSET_SCALE_CAP`` times that of the centred one), which kept the balance the
rho rule was measured with (see :func:`_scaled_input`). The bias column gets the same norm (its
coefficient is the bias in units of ``bias_unit``), so a large or small ``X`` does not
leave the bias column out of balance.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from ._kernels import RESPONSE_STEP, WEIGHT_STEP, project_response
from ._polish import Moments, can_polish, polish as polish_support
from .problem import LayerProblem, relative_excess
from .solution import Solution

__all__ = ["solve_admm", "BACKENDS", "PreparedInput"]

logger = logging.getLogger(__name__)

BACKENDS = ("numba", "numpy", "torch")
_GRAM_TARGET = 1.0 / 0.09  # the authors' 0.3 * sqrt(max(Xa^T Xa)) scaling
_RHO_BOUNDS = (1e-6, 1e6)
_RHO_START_FACTOR = 2.0  # rho starts at this times sqrt(#weights) / ||Theta_0||_F
_RHO_ADAPT_RATIO = 5.0  # adapt rho when sqrt(primal_rel / dual_rel) leaves [1/this, this] (OSQP's 5)
_ABS_TOL_FACTOR = 1e-3  # absolute tolerance = tol * this, in units of the scaled data
_POLISH_START = 3e-2  # try polishing once the relative primal residual is below this
_POLISH_WAIT = 50  # iterations before the first polish, and after a failed one (doubles)
_GRAM_BLOCK_ROWS = 16384  # rows of Xa per float64 product when forming the Gram matrix
_RHO_HOLD = 200  # rho stays where it started for these iterations: early residuals mislead the balancing
_OFFSET_SCALE_CAP = 4.0  # a centred input keeps its uncentred scale, up to this many times the centred one


class _Factor:
    """The weight-step operator ``(Xa^T Xa + I)^{-1}``, factored once per problem.

    ``n_samples >= n_cols``: from the Cholesky factor of the Gram matrix ``Xa^T Xa + I``
    (``n_cols x n_cols``, accumulated in float64 over blocks of ``_GRAM_BLOCK_ROWS`` rows). ``n_samples < n_cols``: from that of ``K = Xa Xa^T + I``
    (``n_samples x n_samples``), with ``(Xa^T Xa + I)^{-1} = I - Xa^T K^{-1} Xa``.
    The inverse is formed once from the Cholesky factor (its condition number is at most
    ``1 + n_cols * _GRAM_TARGET`` after scaling) and applied as one small product per
    iteration: triangular solves would go through scipy's own BLAS, whose thread pool
    competes with numpy's inside the loop.
    """

    def __init__(self, Xa: np.ndarray) -> None:
        self.Xa = Xa
        n_samples, n_cols = Xa.shape
        self.tall = n_samples >= n_cols
        if self.tall:  # accumulated over row blocks: no float64 copy of a long Xa
            gram = np.zeros((n_cols, n_cols))
            for start in range(0, n_samples, _GRAM_BLOCK_ROWS):
                block = Xa[start:start + _GRAM_BLOCK_ROWS].astype(np.float64, copy=False)
                gram += block.T @ block
        else:
            Xa64 = Xa.astype(np.float64, copy=False)
            gram = Xa64 @ Xa64.T
        gram[np.diag_indices_from(gram)] += 1.0
        cholesky = cho_factor(gram, lower=True, overwrite_a=True, check_finite=False)
        inverse = cho_solve(cholesky, np.eye(gram.shape[0]), check_finite=False)
        self.inverse = np.ascontiguousarray((inverse + inverse.T) / 2, dtype=Xa.dtype)

    def ridge(self, Y: np.ndarray) -> np.ndarray:
        """``(Xa^T Xa + I)^{-1} Xa^T Y``: the starting point without a warm start."""
        if self.tall:
            return self.inverse @ (self.Xa.T @ Y)
        return self.Xa.T @ (self.inverse @ Y)

    def weight_step(self, B: np.ndarray, C: np.ndarray, Theta: np.ndarray, R: np.ndarray,
                    work: np.ndarray) -> None:
        """``Theta = (Xa^T Xa + I)^{-1} (Xa^T B + C)`` and ``R = Xa Theta``, in place.

        Tall case: ``work`` has the shape of ``Theta``. Wide case, with
        ``E = K^{-1}(B - Xa C)``: ``Theta = C + Xa^T E`` and ``R = B - E`` (two products
        as well; ``work`` has the shape of ``B``).
        """
        Xa = self.Xa
        if self.tall:
            np.matmul(Xa.T, B, out=work)
            work += C
            np.matmul(self.inverse, work, out=Theta)
            np.matmul(Xa, Theta, out=R)
        else:
            np.matmul(Xa, C, out=work)
            np.subtract(B, work, out=work)
            np.matmul(self.inverse, work, out=R)  # R holds E for a moment
            np.matmul(Xa.T, R, out=Theta)
            Theta += C
            np.subtract(B, R, out=R)


def _scaled_input(X: np.ndarray, fit_bias: bool, dtype: np.dtype,
                  center: bool = False) -> tuple[np.ndarray, float, float, np.ndarray | None]:
    """``Xa = [(X - mean) / scale, c 1]`` with ``scale`` making the largest diagonal entry
    of the Gram matrix of ``X`` (uncentred) ``_GRAM_TARGET`` and ``c`` giving the bias
    column the same norm; returns ``(Xa, scale, bias_unit, mean)`` with
    ``bias_unit = scale * c``.

    ``center=True`` subtracts the column means (computed in float64; ``mean`` is None
    otherwise). With a fitted, unpenalised bias this is an exact change of variables,
    ``X W^T + b = (X - mean) W^T + (b + W mean)``, that leaves ``W`` and the objective
    unchanged and removes the one large eigenvalue that the common mean of non-negative
    (ReLU) inputs puts into ``X^T X``. The scale stays that of the uncentred columns,
    which sets the balance of the split's two constraints as it was without centring:
    the scale of the centred columns alone took 1.1-2.6x more iterations on the digits
    networks' layers (``benchmarks/rho_rule.py``). It is capped at ``_OFFSET_SCALE_CAP``
    times the centred columns' scale, so that a large constant offset in ``X`` cannot
    shrink the centred data without bound.
    """
    n_samples, n_in = X.shape
    Xa = np.empty((n_samples, n_in + fit_bias), dtype=dtype)
    Xa[:, :n_in] = X
    largest_diag = float(np.max(np.einsum("pi,pi->i", Xa[:, :n_in], Xa[:, :n_in], dtype=np.float64)))
    mean = None
    if center:
        mean = np.mean(X, axis=0, dtype=np.float64)
        Xa[:, :n_in] -= mean.astype(dtype)
        centred_diag = float(np.max(np.einsum("pi,pi->i", Xa[:, :n_in], Xa[:, :n_in], dtype=np.float64)))
        largest_diag = min(largest_diag, _OFFSET_SCALE_CAP**2 * centred_diag)
    scale = float(np.sqrt(largest_diag / _GRAM_TARGET)) if largest_diag > 0 else 1.0
    Xa[:, :n_in] /= dtype.type(scale)
    bias_column = np.sqrt(_GRAM_TARGET / n_samples)
    if fit_bias:
        Xa[:, n_in] = bias_column
    return Xa, scale, scale * bias_column, mean


def _centers(fit_bias: bool, penalize_bias: bool) -> bool:
    """Whether the input is centred: only when the bias absorbs the shift at no cost."""
    return fit_bias and not penalize_bias


class PreparedInput:
    """A layer input scaled and factored once, for several programs that share it.

    The programs of blocks of output neurons with per-neuron budgets share ``X``: the
    scaled (and centred) input ``Xa`` and the factored weight-step operator
    ``(Xa^T Xa + I)^{-1}`` depend on ``X`` and on how the bias enters (fitted,
    penalised) only, so they are computed once here and passed to :func:`solve_admm` as
    ``prepared=`` for each block (numba and numpy backends). Picklable, so an executor
    can send it to its workers once.

    Parameters
    ----------
    X : array_like, shape (n_samples, n_in)
    fit_bias : bool, default True
    penalize_bias : bool, default False
        As in the problems it will serve (an unpenalised fitted bias lets ``X`` be centred).
    dtype : float32 or float64, default float64
        The precision of the iterations it will serve.
    """

    def __init__(self, X: Any, *, fit_bias: bool = True, penalize_bias: bool = False,
                 dtype: Any = np.float64) -> None:
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: got {dtype}, needs float32 or float64")
        X = np.asarray(X)
        self.shape, self.fit_bias, self.penalize_bias, self.dtype = X.shape, bool(fit_bias), bool(penalize_bias), dtype
        self.Xa, self.scale, self.bias_unit, self.mean = _scaled_input(
            X, self.fit_bias, dtype, center=_centers(self.fit_bias, self.penalize_bias))
        self.factor = _Factor(self.Xa)

    @property
    def nbytes(self) -> int:
        return int(self.Xa.nbytes + self.factor.inverse.nbytes)

    def check(self, problem: LayerProblem, dtype: np.dtype) -> None:
        """A ValueError unless this input is the problem's, in the precision asked for."""
        if (problem.X.shape != self.shape or problem.fit_bias != self.fit_bias
                or problem.penalize_bias != self.penalize_bias or dtype != self.dtype):
            raise ValueError(f"prepared: built for X of shape {self.shape}, fit_bias={self.fit_bias}, "
                             f"penalize_bias={self.penalize_bias}, {self.dtype}; the problem has {problem.X.shape}, "
                             f"fit_bias={problem.fit_bias}, penalize_bias={problem.penalize_bias}, {dtype}")


class _ScaledData:
    """The problem's data as the iterations use them (copies: the problem is never written).

    ``X``, ``Y``, ``V`` and ``epsilon`` are divided by ``scale`` so that the largest
    diagonal entry of ``X^T X`` is ``_GRAM_TARGET``; ``W`` is unchanged by this. With a
    fitted, unpenalised bias ``X`` is centred first (``mean``, else None): the iterations
    then fit ``b + W mean`` in place of ``b``. The bias column of ``Xa`` gets the same
    norm as the others, so one unit of its coefficient is ``bias_unit`` units of bias.
    """

    def __init__(self, problem: LayerProblem, dtype: np.dtype, prepared: "PreparedInput | None" = None) -> None:
        if prepared is None:
            self.Xa, self.scale, self.bias_unit, self.mean = _scaled_input(
                problem.X, problem.fit_bias, dtype, center=_centers(problem.fit_bias, problem.penalize_bias))
        else:
            self.Xa, self.scale, self.bias_unit, self.mean = (prepared.Xa, prepared.scale, prepared.bias_unit,
                                                              prepared.mean)
        self.Y = (problem.Y / self.scale).astype(dtype)
        self.V = None if problem.upper is None else (problem.upper / self.scale).astype(dtype)
        self.epsilon = problem.epsilon / self.scale


class _NumpyEngine:
    """The array work of one ADMM solve on numpy arrays (``backend="numba"`` or ``"numpy"``).

    Holds the scaled data and the factored weight-step operator, and gives the shared
    iteration of :func:`solve_admm` the operations it needs; the torch twin is
    :class:`solvers._torch_kernels.TorchEngine` (same methods). Host arrays are used as
    they are: ``asarray`` and ``host`` make no copies.
    """

    device_name = "cpu"

    def __init__(self, Xa: np.ndarray, Y: np.ndarray, V: np.ndarray | None, epsilon: np.ndarray,
                 relu: bool, per_neuron: bool, backend: str, factor: "_Factor | None" = None) -> None:
        self.Xa, self.Y, self.V, self.epsilon = Xa, Y, V, epsilon
        self.relu, self.per_neuron = relu, per_neuron
        self._response_step, self._weight_step = RESPONSE_STEP[backend], WEIGHT_STEP[backend]
        self.factor = _Factor(Xa) if factor is None else factor
        self.tall = self.factor.tall

    def asarray(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array)

    def host(self, array: np.ndarray) -> np.ndarray:
        return array

    def vector(self, values: np.ndarray) -> np.ndarray:
        return values

    def stats(self, stats: np.ndarray) -> np.ndarray:
        return stats

    def sync(self) -> None:
        pass

    def empty_like(self, array: np.ndarray) -> np.ndarray:
        return np.empty_like(array)

    def copy(self, array: np.ndarray) -> np.ndarray:
        return array.copy()

    def ridge(self) -> np.ndarray:
        return np.ascontiguousarray(self.factor.ridge(self.Y), dtype=self.Xa.dtype)

    def response(self, Theta: np.ndarray) -> np.ndarray:
        return self.Xa @ Theta

    def project(self, R: np.ndarray) -> np.ndarray:
        return project_response(R, self.Y, self.V, self.relu, self.epsilon, self.per_neuron)

    def weight_products(self, B, C, Theta, R, work) -> None:
        self.factor.weight_step(B, C, Theta, R, work)

    def response_step(self, R, carry, B, DA, alpha: float, check: bool) -> np.ndarray:
        return self._response_step(R, carry, B, self.Y, self.V, self.relu, self.epsilon, self.per_neuron,
                                   alpha, DA, check)

    def weight_step(self, Theta, Q, carry, C, threshold, alpha: float, DQ, check: bool) -> np.ndarray:
        return self._weight_step(Theta, Q, carry, C, threshold, alpha, DQ, check)

    def dual_norm(self, DA: np.ndarray, DQ: np.ndarray) -> float:
        vector = self.Xa.T @ DA
        vector += DQ
        return float(np.linalg.norm(vector))

    def violation(self, Q: np.ndarray) -> float:
        return relative_excess(self.Xa @ Q, self.Y, self.epsilon, relu=self.relu, upper=self.V)


def _rescale_duals(carry: np.ndarray, rhs: np.ndarray, alpha: float, factor: float) -> None:
    """Scale the dual ``U`` by ``factor`` (``rho_old / rho_new``) inside ``carry`` and ``rhs``.

    With ``carry = (1 - alpha) A + U`` and ``rhs = A - U``: ``A = (rhs + carry) / (2 - alpha)``.
    Written with operators only, so it serves numpy arrays and torch tensors alike.
    """
    A = (rhs + carry) / (2.0 - alpha)
    U = (A - rhs) * factor
    rhs[...] = A - U
    carry[...] = A * (1.0 - alpha) + U


def _check_options(tol: float, max_iter: int, rho: Any, dtype: Any, backend: str, alpha: float,
                   check_every: int) -> np.dtype | None:
    """Validate the options; returns the dtype, or None when it is left to the backend."""
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"tol: got {tol!r}, needs a float in (0, 1), e.g. 1e-4")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"max_iter: got {max_iter!r}, needs an integer >= 1")
    if not (rho == "auto" or (isinstance(rho, (int, float)) and rho > 0)):
        raise ValueError(f"rho: got {rho!r}, needs 'auto' (adaptive) or a fixed positive float")
    if backend not in BACKENDS:
        raise ValueError(f"backend: got {backend!r}, needs one of {BACKENDS}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 2):
        raise ValueError(f"alpha: got {alpha!r}, needs a float in (0, 2) (over-relaxation)")
    if not (isinstance(check_every, (int, np.integer)) and check_every >= 1):
        raise ValueError(f"check_every: got {check_every!r}, needs an integer >= 1")
    if dtype is None:
        return None
    if type(dtype).__module__ == "torch":  # torch.float32 / torch.float64, read without importing torch
        dtype = str(dtype).replace("torch.", "")
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype: got {dtype!r}, needs float32 or float64") from exc
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype: got {dtype}, needs float32 or float64")
    return dtype


def _warm_theta(problem: LayerProblem, warm_start: Any, dtype: np.dtype) -> np.ndarray:
    """``Theta = [W, b]^T`` from ``warm_start = (weight, bias)`` or a bare weight."""
    if isinstance(warm_start, (tuple, list)):
        if len(warm_start) != 2:
            raise ValueError("warm_start: needs (weight, bias) or a weight array")
        weight, bias = warm_start
    else:
        weight, bias = warm_start, None
    weight, bias = problem._check_answer(weight, bias)
    n_cols = problem.n_in + problem.fit_bias
    Theta = np.zeros((n_cols, problem.n_out), dtype=dtype)
    Theta[: problem.n_in] = weight.T
    if problem.fit_bias and bias is not None:
        Theta[problem.n_in] = bias
    return Theta


def _make_engine(backend: str, device: Any, dtype: np.dtype | None, problem: LayerProblem,
                 prepared: PreparedInput | None = None):
    """The scaled data, the engine that iterates on them, and the dtype in use.

    ``dtype=None`` means float32 for ``backend="torch"`` on a CUDA device and float64
    everywhere else (the prepared input's dtype when one is given).
    """
    if backend != "torch":
        if device is not None:
            raise ValueError(f"device: got {device!r}, but only backend='torch' runs on a device "
                             f"(backend={backend!r} runs on the CPU); pass backend='torch' or leave device out")
        if prepared is not None:
            dtype = prepared.dtype if dtype is None else dtype
            prepared.check(problem, dtype)
        dtype = np.dtype(np.float64) if dtype is None else dtype
        data = _ScaledData(problem, dtype, prepared)
        return data, _NumpyEngine(data.Xa, data.Y, data.V, data.epsilon, problem.relu, problem.per_neuron,
                                  backend, None if prepared is None else prepared.factor), dtype
    if prepared is not None:
        raise ValueError("prepared: serves the numba and numpy backends; the torch backend factors on its device")
    try:
        from . import _torch_kernels
    except ImportError as exc:  # pragma: no cover - torch is a dependency of the package
        raise ImportError(f"backend='torch' needs PyTorch ({exc}); install torch or use backend='numba'") from exc
    torch_device = _torch_kernels.resolve_device(device)
    if dtype is None:
        dtype = np.dtype(np.float32 if torch_device.type == "cuda" else np.float64)
    data = _ScaledData(problem, dtype)
    return data, _torch_kernels.TorchEngine(data.Xa, data.Y, data.V, data.epsilon, problem.relu,
                                            problem.per_neuron, torch_device), dtype


def solve_admm(
    problem: LayerProblem,
    *,
    tol: float = 1e-4,
    max_iter: int = 10_000,
    rho: float | str = "auto",
    warm_start: Any = None,
    dtype: Any = None,
    backend: str = "numba",
    device: Any = None,
    alpha: float = 1.6,
    check_every: int = 25,
    polish: bool = True,
    prepared: PreparedInput | None = None,
) -> Solution:
    """Solve a :class:`~solvers.LayerProblem` by ADMM.

    Parameters
    ----------
    problem : LayerProblem
    tol : float, default 1e-4
        Relative tolerance. The run stops when the primal residual
        ``||(Xa Theta - A, Theta - Q)||`` is below ``tol`` times the larger of the norms
        of its two sides, the dual residual ``rho ||Xa^T dA + dQ||`` below ``tol`` times
        ``||rho UQ||`` (each plus an absolute ``1e-3 tol`` per entry), and the returned
        weight's :meth:`~LayerProblem.violation` is at most ``5 tol``.
    max_iter : int, default 10000
    rho : 'auto' or float, default 'auto'
        ``'auto'`` starts from ``2 sqrt(#weights) / ||Theta_0||_F`` (a threshold
        ``1/rho`` of half the weights' root mean square), holds it for the first 200
        iterations, then adapts by residual balancing (free: rho does not enter the
        factored matrix): at a check where the normalised residuals differ by more than a
        factor 25, rho moves by the square root of their ratio; the wait before the next
        change doubles each time, so rho settles and the usual convergence guarantee
        applies. Balancing from the first check at a factor 4 took 5.8-8.1x more
        iterations (``benchmarks/rho_rule.py``): the early residuals do not predict the rate.
        A float fixes rho.
    warm_start : (weight, bias) or weight, optional
        Starting weights, e.g. the original layer's. Default: the ridge solution
        ``(Xa^T Xa + I)^{-1} Xa^T Y``.
    dtype : float32 or float64, optional
        Precision of the iterations (numpy or torch spelling). Default: float32 for
        ``backend='torch'`` on a CUDA device, float64 otherwise (numba, numpy, and torch on
        the CPU); an explicit dtype is used on every backend and device. Norms are
        accumulated in float64 either way, the weight-step matrix is formed and factored in
        float64, and the reported objective and violation are evaluated in float64 on the
        original data.
    backend : {'numba', 'numpy', 'torch'}, default 'numba'
        Where the iteration runs. ``'numba'``: numpy arrays, fused numba passes for the
        elementwise steps; ``'numpy'``: their numpy twins (same answer). ``'torch'``: the
        same iteration on torch tensors on ``device`` (the factorisation, both products,
        the projections, the threshold, the residuals, the rho rule and the stopping test
        all run there; the host sees a few scalars per check). Same scaling, rules and
        :class:`~solvers.Solution`; answers agree with numba's within the tolerance.
    device : None, str or torch.device, optional
        Only with ``backend='torch'``. None: ``'cuda'`` when ``torch.cuda.is_available()``,
        else ``'cpu'``. A device that is not there (``'cuda'`` on a machine without a GPU)
        is a ValueError.
    alpha : float, default 1.6
        Over-relaxation, in (0, 2).
    check_every : int, default 25
        Iterations between convergence checks. A check costs one extra product
        (``Xa^T dA`` for the dual residual) and, on a GPU, one synchronisation.
    polish : bool, default True
        From iteration 50, at a check where the relative primal residual is below 3e-2,
        solve the program restricted to the ADMM's support and tight inequalities in
        closed form, with active-set corrections (:mod:`solvers._polish`), and stop if
        the result is certified optimal for the full program: signs kept, constraints
        met, stationarity on the support and the subgradient condition off it within
        ``tol``. On failure the ADMM goes on and tries again 50, 100, 200, ...
        iterations later. Not tried when a ball with entries has ``epsilon = 0``.
        Polishing runs on the host in float64 (with ``backend='torch'``, on a copy of
        the iterate).
    prepared : PreparedInput, optional
        The problem's input already scaled and factored (:class:`PreparedInput`), shared
        by the programs of several blocks of neurons; the answer is the same as without.

    Returns
    -------
    Solution
        ``weight`` is the polished answer, or else the soft-thresholded copy ``Q`` (exact
        zeros either way); ``objective`` and ``violation`` are those of the returned
        ``weight`` and ``bias``. ``info`` holds ``polished``, ``certificate`` (largest
        ``|g_j| / w_j`` off the support), ``rho``, ``scale``, ``factor_time``,
        ``polish_time`` (seconds spent polishing, attempts that failed included),
        ``residuals_met_at`` (the first check at which both residuals met ``tol``, None if
        none did: when it is well below ``iterations`` and nothing was polished, the
        violation test decided the stop), ``backend``, ``device`` and ``dtype``.
    """
    dtype = _check_options(tol, max_iter, rho, dtype, backend, alpha, check_every)
    started = time.perf_counter()
    n_in, n_out = problem.n_in, problem.n_out
    n_cols = n_in + problem.fit_bias

    data, engine, dtype = _make_engine(backend, device, dtype, problem, prepared)
    Y, V, epsilon, bias_unit = data.Y, data.V, data.epsilon, data.bias_unit
    engine.sync()
    factor_time = time.perf_counter() - started

    # ---- start: A = Pi_C(Xa Theta), Q = Theta, both duals 0
    if warm_start is not None:
        Theta_host = _warm_theta(problem, warm_start, dtype)
        if data.mean is not None:  # the centred program's bias is b + W mean
            Theta_host[n_in] += (data.mean @ Theta_host[:n_in].astype(np.float64)).astype(dtype)
        if problem.fit_bias:
            Theta_host[n_in] /= dtype.type(bias_unit)
        Theta = engine.asarray(Theta_host)
    else:
        Theta = engine.ridge()
        Theta_host = engine.host(Theta)
    R = engine.response(Theta)
    A = engine.project(R)
    carry_a, B = A * (1.0 - alpha), A  # carry = (1 - alpha) A + U, B = A - U with U = 0
    Q = engine.copy(Theta)
    carry_q, C = Q * (1.0 - alpha), engine.copy(Q)
    DA, DQ = engine.empty_like(R), engine.empty_like(Theta)
    work = engine.empty_like(Theta) if engine.tall else engine.empty_like(R)
    del A

    penalized = np.ones(n_cols)  # l1 weight of each row of Theta
    if problem.fit_bias:
        penalized[n_in] = bias_unit if problem.penalize_bias else 0.0
    adaptive = rho == "auto"
    if rho == "auto":
        norm0 = float(np.linalg.norm(Theta_host[penalized > 0]))
        rho_value = float(np.linalg.norm(penalized)) * np.sqrt(n_out) / norm0 if norm0 > 0 else 1.0
        rho_value = float(np.clip(rho_value * _RHO_START_FACTOR, *_RHO_BOUNDS))
    else:
        rho_value = float(rho)
    del Theta_host

    threshold = engine.vector(penalized / rho_value)  # soft threshold of each row; changes with rho only
    eps_abs = tol * _ABS_TOL_FACTOR
    feasibility_tol = 5.0 * tol
    status = "max_iter"
    last_change, adapt_interval = 0, check_every  # the interval doubles after each change
    polished = None
    next_polish, polish_wait = _POLISH_WAIT, _POLISH_WAIT  # the wait doubles after each failure
    polish = polish and can_polish(problem)

    polish_state: dict = {"seconds": 0.0}

    def try_polish():
        """One polishing attempt on a host copy of the iterate (float64)."""
        attempt_started = time.perf_counter()
        if "moments" not in polish_state:  # float64 data and second moments: once per solve, for every attempt
            polish_state["Xa"] = data.Xa.astype(np.float64, copy=False)
            polish_state["Y"] = Y.astype(np.float64, copy=False)
            polish_state["V"] = None if V is None else V.astype(np.float64, copy=False)
            polish_state["moments"] = Moments(polish_state["Xa"], polish_state["Y"],
                                              (Y > 0) if problem.relu else None)
        Q_host = engine.host(Q)
        tight = None
        if problem.relu:
            dual = (engine.host(carry_a) - (1.0 - alpha) * engine.host(B)) / (2.0 - alpha)  # U = A - B
            dual = np.where(~(Y > 0), dual, 0.0)
            # a positive dual and a response of Q at its bound (within 5% of a typical |Y|)
            near = data.Xa @ Q_host >= (0.0 if V is None else V) - 0.05 * np.linalg.norm(Y) / np.sqrt(Y.size)
            tight = np.where((dual > 1e-9 * max(float(dual.max()), 1e-300)) & near, dual, 0.0)
        attempt = polish_support(polish_state["Xa"], polish_state["Y"], polish_state["V"], epsilon,
                                 problem.relu, Q_host, tight, penalized, tol, moments=polish_state["moments"])
        polish_state["seconds"] += time.perf_counter() - attempt_started
        return attempt

    primal_rel = dual_rel = np.inf
    iteration = 0
    residuals_met_at = None  # the first check where both residuals met tol (the violation test may decide later)
    debug = logger.isEnabledFor(logging.DEBUG)
    n_primal, n_dual = R.shape[0] * R.shape[1] + Theta.shape[0] * Theta.shape[1], Theta.shape[0] * Theta.shape[1]
    for iteration in range(1, max_iter + 1):
        engine.weight_products(B, C, Theta, R, work)
        check = iteration % check_every == 0 or iteration == max_iter
        stats_a = engine.response_step(R, carry_a, B, DA, alpha, check)
        stats_q = engine.weight_step(Theta, Q, carry_q, C, threshold, alpha, DQ, check)
        if not check:
            continue

        stats_a, stats_q = engine.stats(stats_a), engine.stats(stats_q)  # the one sync of a check
        primal = np.sqrt(stats_a[0] + stats_q[0])
        primal_scale = max(np.sqrt(stats_a[2] + stats_q[2]), np.sqrt(stats_a[3] + stats_q[3]))
        dual = rho_value * engine.dual_norm(DA, DQ)
        dual_scale = rho_value * np.sqrt(stats_q[4])
        primal_rel = primal / max(primal_scale, 1e-300)
        dual_rel = dual / max(dual_scale, 1e-300)
        primal_ok = primal <= eps_abs * np.sqrt(n_primal) + tol * primal_scale
        dual_ok = dual <= eps_abs * np.sqrt(n_dual) + tol * dual_scale
        # the violation costs one product: at a check only when the stop needs it or DEBUG logs it
        violation = engine.violation(Q) if (primal_ok and dual_ok) or debug else None
        if debug:
            logger.debug("iter %d rho %.3g primal %.2e dual %.2e violation %.2e", iteration, rho_value,
                         primal_rel, dual_rel, violation)
        if primal_ok and dual_ok:
            if residuals_met_at is None:
                residuals_met_at = iteration
            if violation <= feasibility_tol:
                status = "optimal"
                break
        if polish and primal_rel <= _POLISH_START and iteration >= next_polish:
            attempt = try_polish()
            logger.debug("iter %d polish: %s", iteration, attempt.reason)
            if attempt.Theta is not None:
                polished, status = attempt, "optimal"
                break
            next_polish, polish_wait = iteration + polish_wait, 2 * polish_wait
        if (adaptive and dual_rel > 0 and primal_rel > 0 and iteration >= _RHO_HOLD
                and iteration - last_change >= adapt_interval):
            ratio = np.sqrt(primal_rel / dual_rel)
            if ratio > _RHO_ADAPT_RATIO or ratio < 1.0 / _RHO_ADAPT_RATIO:
                new_rho = float(np.clip(rho_value * ratio, *_RHO_BOUNDS))
                _rescale_duals(carry_a, B, alpha, rho_value / new_rho)
                _rescale_duals(carry_q, C, alpha, rho_value / new_rho)
                rho_value = new_rho
                threshold = engine.vector(penalized / rho_value)
                last_change, adapt_interval = iteration, 2 * adapt_interval

    if status != "optimal" and polish:
        attempt = try_polish()
        if attempt.Theta is not None:
            polished, status = attempt, "optimal"
    Q = polished.Theta.astype(dtype) if polished is not None else engine.host(Q)
    weight = np.ascontiguousarray(Q[:n_in].T)
    bias = Q[n_in] * dtype.type(bias_unit) if problem.fit_bias else None
    if data.mean is not None:  # back from the centred program's bias b + W mean
        bias = (bias.astype(np.float64) - weight.astype(np.float64) @ data.mean).astype(dtype)
    solution = Solution(
        weight=weight,
        bias=bias,
        status=status,
        iterations=iteration,
        objective=problem.objective(weight, bias),
        violation=problem.violation(weight, bias),
        primal_residual=float(primal_rel),
        dual_residual=float(dual_rel),
        solve_time=time.perf_counter() - started,
        method="admm",
        info={"rho": rho_value, "scale": data.scale, "centered": data.mean is not None, "backend": backend,
              "device": engine.device_name, "dtype": dtype.name, "factor_time": factor_time, "prepared": prepared is not None,
              "factorization": "gram" if engine.tall else "inversion-lemma",
              "polished": polished is not None, "polish_time": polish_state["seconds"],
              "residuals_met_at": residuals_met_at,
              "certificate": polished.certificate if polished is not None else None},
    )
    logger.info("admm %s after %d iterations: objective %.6g, violation %.2e, %.3fs",
                status, iteration, solution.objective, solution.violation, solution.solve_time)
    return solution
