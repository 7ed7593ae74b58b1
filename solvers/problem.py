"""The Net-Trim layer program: data, validation and the certificate of any answer.

For one layer with input ``X`` (``n_samples x n_in``) and target output ``Y``
(``n_samples x n_out``), Net-Trim looks for the sparsest weight ``W`` (``n_out x n_in``)
and bias ``b`` that keep the layer's response ``R = X W^T + b``:

.. math::

    \\min_{W, b} \\; \\|W\\|_1 \\;(+\\, \\|b\\|_1)
    \\quad \\text{s.t.} \\quad
    \\|(R - Y)_\\Omega\\|_F \\le \\varepsilon, \\qquad R_{\\Omega^c} \\le V_{\\Omega^c}

where ``Omega = {(p, m): Y[p, m] > 0}`` for a ReLU layer (``relu=True``) and every entry
for a linear one (``relu=False``, no inequality). ``epsilon`` is one ball over the whole
of ``Omega`` (a float) or one ball per output neuron (an array ``(n_out,)``).

With ``group_size=k`` the objective is the group norm over blocks of ``k`` consecutive
inputs, ``sum_g ||W[:, g k : (g + 1) k]||_F``: a group is everything that reads one input
neuron (``k = 1``), one input channel of a convolution (``k = kh kw``), or one channel of a
flattened feature map (``k = H W``). Its solutions drop whole groups, which removes the
neurons or channels that produce them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._blocks import row_blocks

__all__ = ["LayerProblem", "relative_excess"]


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """Turn an array-like (numpy, list, CPU torch tensor) into a numpy array without copying."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name}: cannot be read as an array ({exc})") from exc
    if array.dtype.kind not in "fiu":
        raise TypeError(
            f"{name}: needs a real numeric array (float32 or float64), got dtype {array.dtype}"
        )
    if array.dtype.kind != "f" or array.dtype.itemsize < 4:
        array = array.astype(np.float64)
    return array


def _check_finite(array: np.ndarray, name: str) -> None:
    if not np.isfinite(array).all():
        n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name}: holds {n_bad} NaN or Inf value(s); all entries must be finite")


def _check_matrix(array: np.ndarray, name: str, shape: tuple[int | None, int | None], need: str) -> None:
    if array.ndim != 2 or any(s is not None and s != got for s, got in zip(shape, array.shape)):
        raise ValueError(f"{name}: got shape {array.shape}, needs {need}")


class LayerProblem:
    """One layer's sparse reconstruction program.

    Parameters
    ----------
    X : array_like, shape (n_samples, n_in)
        Layer input, one sample per row (samples first, as in PyTorch).
    Y : array_like, shape (n_samples, n_out)
        Target output. With ``relu=True`` it is the ReLU output of the original layer
        (non-negative); its positive entries form the active set ``Omega``.
    epsilon : float or array_like, shape (n_out,)
        Absolute reconstruction budget: a float for one Frobenius ball over all active
        entries, or one budget per output neuron (the layer then splits into ``n_out``
        independent programs; ``sum(epsilon**2)`` is the layer-level budget squared).
    relu : bool, default True
        Whether a ReLU follows the layer. ``False`` gives the plain program
        ``||X W^T + b - Y||_F <= epsilon`` with no inequality.
    upper : array_like, shape (n_samples, n_out), optional
        Upper bound ``V`` on the response at inactive entries (default 0). The cascade mode
        passes the original weights' response on the pruned input, which keeps the
        original weights feasible. Only with ``relu=True``.
    fit_bias : bool, default True
        Whether the program has a bias ``b``. ``False`` fixes ``b = 0``.
    penalize_bias : bool, default False
        Whether ``||b||_1`` is added to the objective.
    group_size : int, optional
        The group program: ``sum_g ||W[:, g k:(g + 1) k]||_F`` over blocks of ``k``
        consecutive inputs instead of ``||W||_1`` (``k`` divides ``n_in``).

    Notes
    -----
    The arrays are kept as given (float32 and float64 stay as they are, integers become
    float64) and are never written to. A CPU ``torch.Tensor`` is accepted and read as numpy.
    """

    def __init__(
        self,
        X: Any,
        Y: Any,
        epsilon: float | Any,
        *,
        relu: bool = True,
        upper: Any | None = None,
        fit_bias: bool = True,
        penalize_bias: bool = False,
        group_size: int | None = None,
    ) -> None:
        X = _to_numpy(X, "X")
        _check_matrix(X, "X", (None, None), "(n_samples, n_in)")
        n_samples, n_in = X.shape
        if n_samples == 0 or n_in == 0:
            raise ValueError(f"X: got shape {X.shape}, needs at least one sample and one input")
        _check_finite(X, "X")

        Y = _to_numpy(Y, "Y")
        if Y.ndim == 1:
            raise ValueError(
                f"Y: got shape {Y.shape}, needs (n_samples, n_out) = ({n_samples}, n_out); "
                "reshape a single neuron's output to (n_samples, 1)"
            )
        _check_matrix(Y, "Y", (n_samples, None), f"({n_samples}, n_out) to match X")
        if Y.shape[1] == 0:
            raise ValueError(f"Y: got shape {Y.shape}, needs at least one output column")
        _check_finite(Y, "Y")
        n_out = Y.shape[1]
        if relu and (Y < 0).any():
            raise ValueError(
                "Y: has negative entries but relu=True; pass the ReLU output of the layer "
                "(relu(X W^T + b)), or relu=False for a layer without a ReLU"
            )

        eps = _to_numpy(epsilon, "epsilon").astype(np.float64)
        if eps.ndim == 1 and eps.shape[0] == 1 and n_out != 1:
            eps = eps.reshape(())
        if eps.ndim not in (0, 1) or (eps.ndim == 1 and eps.shape[0] != n_out):
            raise ValueError(
                f"epsilon: got shape {eps.shape}, needs a float (one layer budget) "
                f"or shape ({n_out},) (one budget per output neuron)"
            )
        if not np.isfinite(eps).all() or (eps < 0).any():
            raise ValueError("epsilon: needs finite values >= 0 (absolute budgets)")

        if upper is not None:
            if not relu:
                raise ValueError("upper: only applies with relu=True (it bounds inactive entries)")
            upper = _to_numpy(upper, "upper")
            _check_matrix(upper, "upper", (n_samples, n_out), f"({n_samples}, {n_out}) like Y")
            _check_finite(upper, "upper")
        if penalize_bias and not fit_bias:
            raise ValueError("penalize_bias=True needs fit_bias=True (there is no bias to penalise)")
        if group_size is not None:
            if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1 \
                    or n_in % group_size:
                raise ValueError(f"group_size: got {group_size!r}, needs a positive integer that divides "
                                 f"n_in = {n_in} (the inputs of one group)")
            group_size = int(group_size)

        self.X = X
        self.Y = Y
        self.epsilon = eps
        self.relu = bool(relu)
        self.upper = upper
        self.fit_bias = bool(fit_bias)
        self.penalize_bias = bool(penalize_bias)
        self.group_size = group_size

    # ------------------------------------------------------------------ sizes
    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_in(self) -> int:
        return self.X.shape[1]

    @property
    def n_out(self) -> int:
        return self.Y.shape[1]

    @property
    def per_neuron(self) -> bool:
        """True when ``epsilon`` holds one budget per output neuron."""
        return self.epsilon.ndim == 1

    @property
    def active(self) -> np.ndarray:
        """Boolean mask ``Omega`` of shape ``(n_samples, n_out)``: entries held in the ball."""
        if self.relu:
            return self.Y > 0
        return np.ones(self.Y.shape, dtype=bool)

    @property
    def budget(self) -> float:
        """Layer-level budget ``sqrt(sum epsilon_m^2)`` (equal to ``epsilon`` for a float)."""
        return float(np.sqrt(np.sum(self.epsilon**2)))

    def __repr__(self) -> str:
        eps = "per-neuron" if self.per_neuron else f"{float(self.epsilon):.4g}"
        return (
            f"LayerProblem(n_samples={self.n_samples}, n_in={self.n_in}, n_out={self.n_out}, "
            f"epsilon={eps}, relu={self.relu}, upper={'given' if self.upper is not None else None}, "
            f"fit_bias={self.fit_bias}, penalize_bias={self.penalize_bias}"
            + (f", group_size={self.group_size})" if self.group_size is not None else ")")
        )

    # ------------------------------------------------------------ certificate
    def _check_answer(self, weight: Any, bias: Any | None) -> tuple[np.ndarray, np.ndarray | None]:
        weight = _to_numpy(weight, "weight").astype(np.float64, copy=False)
        _check_matrix(weight, "weight", (self.n_out, self.n_in), f"(n_out, n_in) = ({self.n_out}, {self.n_in})")
        if bias is not None:
            bias = _to_numpy(bias, "bias").astype(np.float64, copy=False).reshape(-1)
            if bias.shape != (self.n_out,):
                raise ValueError(f"bias: got shape {bias.shape}, needs ({self.n_out},)")
        return weight, bias

    def response(self, weight: Any, bias: Any | None = None) -> np.ndarray:
        """The layer's pre-activation ``X W^T + b`` in float64, shape ``(n_samples, n_out)``."""
        weight, bias = self._check_answer(weight, bias)
        response = self.X.astype(np.float64, copy=False) @ weight.T
        if bias is not None:
            response += bias
        return response

    def group_norms(self, weight: Any) -> np.ndarray:
        """``||W[:, g k:(g + 1) k]||_F`` of every group (``group_size = k``; one per input
        when ``group_size`` is None)."""
        weight, _ = self._check_answer(weight, None)
        k = self.group_size or 1
        blocks = weight.reshape(self.n_out, -1, k)
        return np.sqrt(np.einsum("mgk,mgk->g", blocks, blocks))

    def objective(self, weight: Any, bias: Any | None = None) -> float:
        """The objective ``||W||_1``, or the sum of the group norms with ``group_size``
        (plus ``||b||_1`` when ``penalize_bias``)."""
        weight, bias = self._check_answer(weight, bias)
        value = float(np.abs(weight).sum()) if self.group_size is None else float(self.group_norms(weight).sum())
        if self.penalize_bias and bias is not None:
            value += float(np.abs(bias).sum())
        return value

    def violation(self, weight: Any, bias: Any | None = None) -> float:
        """Relative excess of ``(weight, bias)`` over the constraints; 0 when feasible.

        With ``R = X W^T + b``, the excess of the ball is ``(||(R - Y)_Omega||_F - epsilon)_+``
        for a layer budget and ``||((||(R - Y)_{Omega, m}|| - epsilon_m)_+)_m||_2`` for
        per-neuron budgets; the excess of the inequality is ``||(R - V)_+||_F`` over the
        inactive entries. Each is divided by the layer budget ``sqrt(sum epsilon_m^2)``
        (or by ``||Y||_F`` when that budget is 0) and the larger is returned. A value of
        0.01 means the answer leaves its budget by 1%.
        """
        weight, bias = self._check_answer(weight, bias)
        column_sq, over_sq, _ = self._excess_by_column(weight, bias)
        return _combine(column_sq, over_sq, self.Y, self.epsilon)

    def _excess_by_column(self, weight: np.ndarray, bias: np.ndarray | None,
                          keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Per-output squared residual on ``Omega`` and squared inequality excess of a
        checked answer (float64), the response formed a block of rows at a time; with
        ``keep`` (output indices) also those outputs' response, ``n_samples x len(keep)``."""
        column_sq, over_sq = np.zeros(self.n_out), np.zeros(self.n_out)
        kept = None if keep is None else np.empty((self.n_samples, len(keep)))
        for rows in row_blocks(self.n_samples):
            response = np.asarray(self.X[rows], dtype=np.float64) @ weight.T
            if bias is not None:
                response += bias
            block_sq, block_over = _excess_parts(response, self.Y[rows], self.relu,
                                                 None if self.upper is None else self.upper[rows])
            column_sq += block_sq
            over_sq += block_over
            if kept is not None:
                kept[rows] = response[:, keep]
        return column_sq, over_sq, kept


def _excess_parts(response: np.ndarray, Y: np.ndarray, relu: bool,
                  upper: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-column squared norms of the residual on ``Omega`` and of the inequality excess
    on ``Omega^c``, accumulated over row blocks in float64."""
    column_sq = np.zeros(Y.shape[1])
    over_sq = np.zeros(Y.shape[1])
    for rows in row_blocks(Y.shape[0]):
        y = np.asarray(Y[rows], dtype=np.float64)
        residual = np.asarray(response[rows], dtype=np.float64) - y
        if relu:
            active = y > 0
            # on inactive entries Y = 0, so the residual is the response there
            bound = 0.0 if upper is None else np.asarray(upper[rows], dtype=np.float64)
            over = np.maximum(residual - bound, 0.0)
            over[active] = 0.0
            over_sq += np.einsum("pm,pm->m", over, over)
            residual[~active] = 0.0
        column_sq += np.einsum("pm,pm->m", residual, residual)
    return column_sq, over_sq


def _combine(column_sq: np.ndarray, over_sq: np.ndarray, Y: np.ndarray, epsilon: np.ndarray) -> float:
    if epsilon.ndim == 1:
        ball_excess = float(np.linalg.norm(np.maximum(np.sqrt(column_sq) - epsilon, 0.0)))
    else:
        ball_excess = max(float(np.sqrt(column_sq.sum())) - float(epsilon), 0.0)
    scale = float(np.sqrt(np.sum(epsilon**2)))
    if scale == 0.0:
        scale = float(np.linalg.norm(Y)) or 1.0
    return max(ball_excess, float(np.sqrt(np.sum(over_sq)))) / scale


def relative_excess(
    response: np.ndarray,
    Y: np.ndarray,
    epsilon: np.ndarray,
    *,
    relu: bool,
    upper: np.ndarray | None,
) -> float:
    """Relative excess of a response over the constraints (see :meth:`LayerProblem.violation`).

    Invariant under scaling ``response``, ``Y``, ``upper`` and ``epsilon`` together, so the
    ADMM evaluates it on its scaled copies. Accumulates in float64 whatever the input dtype,
    a block of rows at a time (:mod:`solvers._blocks`) (its temporaries do not grow with ``n_samples``).
    """
    column_sq, over_sq = _excess_parts(response, Y, relu, upper)
    return _combine(column_sq, over_sq, Y, epsilon)
