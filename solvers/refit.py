"""The ReLU-aware refit: the best weights on a fixed support, with a certified error.

For a ReLU layer with original output ``Y`` (``Omega = {Y > 0}``, the active entries), an
input ``X`` and a support ``S_m`` for each output neuron ``m``, the refit solves, neuron
by neuron, over the weights on ``S_m`` and a free bias,

.. math::

    \\min_{w, b} \\; f(w, b) = \\sum_{p \\in \\Omega_m} (z_p - y_p)^2
        + \\sum_{p \\notin \\Omega_m} \\max(z_p - v_p, 0)^2, \\qquad z = X_{:, S_m} w + b

with ``v = 0`` (or a given bound ``V``, as the cascade program's). Each term is convex
and continuously differentiable, so ``f`` is convex with a piecewise-linear gradient.

With ``v = 0`` and ``y >= 0``: on ``Omega``, ``|relu(z) - y| <= |z - y|``; off ``Omega``,
``relu(z) = max(z, 0)``. Hence ``||relu(X W^T + b) - Y||_F^2 <= sum_m f_m``: the square root
of the objective is a certified bound of the layer's post-ReLU error
(:func:`certified_error`). A Net-Trim answer at budget ``epsilon`` (on original signals) has
``f <= epsilon^2``; started from it, the refit can only lower ``f``, so it keeps the
program's guarantee ``||relu(X W^T + b) - Y|| <= epsilon``. A layer without ReLU is refitted
by least squares on every row.

The solver is a semismooth Newton method: with the rows ``R = Omega ∪ {p : z_p > v_p}``
of the current point, the quadratic model is least squares on ``R`` towards
``t = y`` (active) or ``v`` (inactive), solved through the normal equations on the
support; a backtracking line search on ``f`` keeps every step a descent, and the method
stops when the rows no longer change (the point then minimises ``f`` exactly) or the
relative decrease of ``f`` falls below ``tol``. Neurons are processed in chunks, all the
neurons of a chunk together: their supports padded to one width, the Gram matrices
``X_{R,S}^T X_{R,S}`` formed by one batched product and factored by one batched Cholesky.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

__all__ = ["RefitResult", "relu_refit", "refit_objective", "certified_error"]

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 64 * 2**20  # the gathered inputs of one chunk of neurons stay below this
_RIDGE = 1e-12  # relative to the mean diagonal of a Gram matrix: keeps a collinear support solvable
_BACKTRACKS = 30


@dataclass
class RefitResult:
    """Weights refitted on their supports.

    Attributes
    ----------
    weight : ndarray (n_out, n_in)
        Zero off the supports.
    bias : ndarray (n_out,) or None
    objective : ndarray (n_out,)
        ``f_m`` at the answer (with the ``v`` of the fit).
    steps : int
        Newton steps of the slowest chunk.
    converged : bool
        Every neuron stopped with its rows settled or its decrease below ``tol``.
    info : dict
    """

    weight: np.ndarray
    bias: np.ndarray | None
    objective: np.ndarray
    steps: int
    converged: bool
    info: dict = field(default_factory=dict)


def refit_objective(X: np.ndarray, Y: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *,
                    relu: bool = True, upper: np.ndarray | None = None) -> np.ndarray:
    """``f_m`` of every neuron at ``(weight, bias)`` (float64): squared error on the active
    entries plus the squared excess over ``upper`` (0 when None) on the inactive ones; for a
    layer without ReLU, the squared error on every entry."""
    Z = np.asarray(X, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T
    if bias is not None:
        Z += np.asarray(bias, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if not relu:
        return np.sum((Z - Y) ** 2, axis=0)
    active = Y > 0
    bound = 0.0 if upper is None else np.asarray(upper, dtype=np.float64)
    residual = np.where(active, Z - Y, np.maximum(Z - bound, 0.0))
    return np.sum(residual**2, axis=0)


def certified_error(X: np.ndarray, Y: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *,
                    relu: bool = True) -> float:
    """``sqrt(sum_m f_m)`` with ``v = 0``: an upper bound of ``||relu(X W^T + b) - Y||_F``
    (of ``||X W^T + b - Y||_F``, exactly, for a layer without ReLU)."""
    return float(np.sqrt(np.sum(refit_objective(X, Y, weight, bias, relu=relu))))


def _chunks(support: np.ndarray, n_samples: int) -> list[np.ndarray]:
    """Neuron indices in chunks whose gathered inputs fit in ``_CHUNK_BYTES``, neurons of
    similar support size together (less padding)."""
    sizes = support.sum(axis=1)
    chunks, current = [], []
    for m in np.argsort(sizes, kind="stable"):  # ascending: the last neuron sets the width
        if current and (len(current) + 1) * n_samples * (int(sizes[m]) + 1) * 8 > _CHUNK_BYTES:
            chunks.append(np.array(current))
            current = []
        current.append(m)
    if current:
        chunks.append(np.array(current))
    return chunks


class _Chunk:
    """The refit of a chunk of neurons: their inputs gathered and padded to one width."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, V: np.ndarray | None, support: np.ndarray,
                 neurons: np.ndarray, relu: bool, fit_bias: bool) -> None:
        self.neurons, self.relu = neurons, relu
        width = int(support[neurons].sum(axis=1).max(initial=0))
        n_cols = width + fit_bias
        self.columns = np.zeros((neurons.size, width), dtype=np.int64)
        self.valid = np.zeros((neurons.size, n_cols), dtype=bool)
        for k, m in enumerate(neurons):
            found = np.flatnonzero(support[m])
            self.columns[k, :found.size] = found
            self.valid[k, :found.size] = True
        if fit_bias:
            self.valid[:, width] = True
        self.A = np.zeros((neurons.size, X.shape[0], n_cols))  # (chunk, n_samples, width [+ 1])
        self.A[:, :, :width] = np.moveaxis(X[:, self.columns], 1, 0)
        self.A[:, :, :width] *= self.valid[:, None, :width]
        if fit_bias:
            self.A[:, :, width] = 1.0
        self.y = Y[:, neurons].T  # (chunk, n_samples)
        self.active = self.y > 0 if relu else np.ones_like(self.y, dtype=bool)
        self.v = np.zeros_like(self.y) if V is None else V[:, neurons].T
        self.target = np.where(self.active, self.y, self.v)

    def response(self, theta: np.ndarray) -> np.ndarray:
        return np.einsum("cps,cs->cp", self.A, theta)

    def objective(self, z: np.ndarray, neurons: np.ndarray | slice = slice(None)) -> np.ndarray:
        """``f`` of the chunk's ``neurons`` (all by default) at their responses ``z``."""
        residual = np.where(self.active[neurons], z - self.y[neurons], np.maximum(z - self.v[neurons], 0.0))
        return np.einsum("cp,cp->c", residual, residual)

    def rows(self, z: np.ndarray) -> np.ndarray:
        return self.active | (z > self.v)

    def newton_point(self, rows: np.ndarray) -> np.ndarray:
        """The least-squares fit on ``rows`` towards the targets, for every neuron of the chunk."""
        weighted = self.A * rows[:, :, None]
        gram = np.matmul(np.swapaxes(weighted, 1, 2), self.A)
        rhs = np.einsum("cps,cp->cs", weighted, self.target)
        diagonal = np.einsum("css->cs", gram)
        scale = np.maximum(np.sum(diagonal * self.valid, axis=1) / np.maximum(self.valid.sum(axis=1), 1), 1.0)
        gram[:, np.arange(gram.shape[1]), np.arange(gram.shape[1])] += np.where(
            self.valid, _RIDGE * scale[:, None], 1.0)
        rhs = np.where(self.valid, rhs, 0.0)
        factor = np.linalg.cholesky(gram)
        half = np.linalg.solve(factor, rhs[:, :, None])
        return np.linalg.solve(np.swapaxes(factor, 1, 2), half)[:, :, 0]

    def start(self, weight: np.ndarray | None, bias: np.ndarray | None) -> np.ndarray:
        width = self.columns.shape[1]
        theta = np.zeros(self.valid.shape)
        if weight is not None:
            theta[:, :width] = np.take_along_axis(weight[self.neurons], self.columns, axis=1) * self.valid[:, :width]
            if bias is not None and self.valid.shape[1] > width:
                theta[:, width] = bias[self.neurons]
            return theta
        return self.newton_point(self.active)  # least squares on the active rows

    def weights(self, theta: np.ndarray, n_in: int, fit_bias: bool) -> tuple[np.ndarray, np.ndarray | None]:
        width = self.columns.shape[1]
        weight = np.zeros((self.neurons.size, n_in))
        valid = self.valid[:, :width]
        rows = np.broadcast_to(np.arange(self.neurons.size)[:, None], valid.shape)
        weight[rows[valid], self.columns[valid]] = theta[:, :width][valid]
        return weight, (theta[:, width] if fit_bias else None)


def _descend(chunk: _Chunk, theta: np.ndarray, tol: float, max_steps: int) -> tuple[np.ndarray, int, bool]:
    """Semismooth Newton with backtracking on ``f``, all neurons of the chunk together."""
    z = chunk.response(theta)
    value = chunk.objective(z)
    running = np.ones(theta.shape[0], dtype=bool)
    step_count = 0
    for step_count in range(1, max_steps + 1):
        rows = chunk.rows(z)
        direction = chunk.newton_point(rows) - theta
        direction[~running] = 0.0
        dz = chunk.response(direction)
        length = np.ones(theta.shape[0])
        trial = chunk.objective(z + dz)
        for _ in range(_BACKTRACKS):  # halve where f did not decrease
            worse = running & (trial > value)
            if not worse.any():
                break
            length[worse] *= 0.5
            trial[worse] = chunk.objective(z[worse] + length[worse, None] * dz[worse], worse)
        accepted = trial <= value
        theta = theta + np.where(accepted, length, 0.0)[:, None] * direction
        z = z + np.where(accepted, length, 0.0)[:, None] * dz
        settled = np.all(chunk.rows(z) == rows, axis=1) & (length == 1.0)
        small = (value - np.minimum(trial, value)) <= tol * np.maximum(value, 1e-300)
        value = np.minimum(trial, value)
        running &= ~(settled | small | ~accepted)
        if not running.any():
            return theta, step_count, True
    return theta, step_count, False


def relu_refit(X: np.ndarray, Y: np.ndarray, support: np.ndarray, *, relu: bool = True,
               upper: np.ndarray | None = None, fit_bias: bool = True, weight: np.ndarray | None = None,
               bias: np.ndarray | None = None, tol: float = 1e-10, max_steps: int = 50) -> RefitResult:
    """Refit every neuron on its support (module docstring).

    Parameters
    ----------
    X : ndarray (n_samples, n_in)
        The input the layer is fitted on (the pruned network's, in cascade mode).
    Y : ndarray (n_samples, n_out)
        The original layer's output (``relu(Z)`` for a ReLU layer); ``Y > 0`` is ``Omega``.
    support : ndarray (n_out, n_in) of bool
        The entries each neuron may use.
    relu : bool, default True
        False: least squares on every row (a layer without ReLU).
    upper : ndarray (n_samples, n_out), optional
        The bound ``v`` of the inactive entries (default 0, which makes the objective a
        certified bound of the post-ReLU error).
    fit_bias : bool, default True
        Fit a free bias per neuron.
    weight, bias : ndarray, optional
        The starting point (e.g. the method's answer; restricted to ``support``). Default:
        least squares on the active rows.
    tol : float, default 1e-10
        A neuron stops once a step lowers its ``f`` by less than ``tol`` relative.
    max_steps : int, default 50

    Returns
    -------
    RefitResult
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    support = np.asarray(support, dtype=bool)
    n_out, n_in = support.shape
    if X.shape[1] != n_in or Y.shape != (X.shape[0], n_out):
        raise ValueError(f"support: got shape {support.shape} for X {X.shape} and Y {Y.shape}; needs (n_out, n_in)")
    V = None if upper is None or not relu else np.asarray(upper, dtype=np.float64)
    new_weight = np.zeros((n_out, n_in))
    new_bias = np.zeros(n_out) if fit_bias else None
    objective = np.zeros(n_out)
    steps, converged = 0, True
    for neurons in _chunks(support, X.shape[0]):
        chunk = _Chunk(X, Y, V, support, neurons, relu, fit_bias)
        theta = chunk.start(None if weight is None else np.asarray(weight, dtype=np.float64),
                            None if bias is None else np.asarray(bias, dtype=np.float64))
        if relu:
            theta, used, done = _descend(chunk, theta, tol, max_steps)
        else:  # least squares on every row: one Newton point
            theta, used, done = chunk.newton_point(chunk.active), 1, True
        steps, converged = max(steps, used), converged and done
        new_weight[neurons], chunk_bias = chunk.weights(theta, n_in, fit_bias)
        if fit_bias:
            new_bias[neurons] = chunk_bias
        objective[neurons] = chunk.objective(chunk.response(theta))
    if not converged:
        logger.info("relu_refit: some neurons still decreasing after %d steps", max_steps)
    return RefitResult(new_weight, new_bias, objective, steps, converged)
