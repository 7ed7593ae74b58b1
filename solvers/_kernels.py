"""Elementwise steps of the ADMM in :mod:`solvers.admm`, fused into single passes.

BLAS does the two products of each iteration; everything else is elementwise over the
response block (``n_samples x n_out``) and the weight block (``n_cols x n_out``). Each
step below is one compiled pass (two for the response block, whose ball projection needs
its norm first) that updates the ADMM state in place and, on check iterations, returns
the squared norms the stopping rule needs, so no other pass over the data is made.
Every kernel has a numpy twin with the same signature and answer (``backend="numpy"``).

State. With over-relaxation ``alpha``, the iteration needs the constrained copy ``A`` and
the scaled dual ``U`` only through two combinations, which are what is stored:

.. math::

    \\text{carry} = (1 - \\alpha) A + U, \\qquad B = A - U

so that ``T = alpha R + carry`` is the point to project, ``A+ = Pi_C(T)``, ``U+ = T - A+``,
and ``B`` is the right-hand side of the next weight step. ``A = (B + carry) / (2 - alpha)``
recovers the copy when it is needed (the change ``A+ - A`` on check iterations). The
weight block is the same with the soft threshold in place of ``Pi_C``, and also writes
``Q`` itself (the returned weights need its exact zeros).

Statistics, returned on check iterations (zeros otherwise). Response step:
``[||R - A+||^2, ||A+ - A||^2, ||R||^2, ||A+||^2]``. Weight step:
``[||Theta - Q+||^2, ||Q+ - Q||^2, ||Theta||^2, ||Q+||^2, ||U+||^2]``.

The passes are serial on purpose: inside the iteration, a numba-parallel pass competes
with OpenBLAS's worker threads, which keep spinning after each product, and was measured
slower than the serial pass on 2 cores (see ``benchmarks/solver_vs_cvxpy.py``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["RESPONSE_STEP", "WEIGHT_STEP", "GROUP_WEIGHT_STEP", "ball_factors", "project_response", "group_shrink"]


def ball_factors(column_sq: np.ndarray, epsilon: np.ndarray, per_neuron: bool) -> np.ndarray:
    """Scale factors that project the active residual onto the ball(s).

    One ball over the layer: ``f = min(1, epsilon / ||T - Y||_Omega)`` for every column;
    per neuron: ``f_m = min(1, epsilon_m / ||(T - Y)_{Omega, m}||)``. A zero norm gives
    ``f = 1`` (nothing to project) and ``epsilon = 0`` gives ``f = 0``.
    """
    norms = np.sqrt(column_sq) if per_neuron else np.full_like(column_sq, np.sqrt(column_sq.sum()))
    eps = epsilon if per_neuron else np.full_like(column_sq, float(epsilon))
    factors = np.ones_like(column_sq)
    outside = norms > eps
    factors[outside] = eps[outside] / norms[outside]
    return factors


def project_response(T: np.ndarray, Y: np.ndarray, V: np.ndarray | None, relu: bool,
                     epsilon: np.ndarray, per_neuron: bool) -> np.ndarray:
    """Euclidean projection ``Pi_C(T)`` onto the constraint set (numpy, a new array).

    On ``Omega``: ``Y + f (T - Y)`` with the factors of :func:`ball_factors`; elsewhere
    ``min(T, V)`` (``V = 0`` when not given).
    """
    D = T - Y
    if relu:
        active = Y > 0
        D = np.where(active, D, 0.0)
    column_sq = np.einsum("pm,pm->m", D, D, dtype=np.float64)
    projected = Y + ball_factors(column_sq, epsilon, per_neuron).astype(T.dtype) * D
    if relu:
        projected = np.where(active, projected, np.minimum(T, 0.0 if V is None else V))
    return projected.astype(T.dtype, copy=False)


# ----------------------------------------------------------------------------- numba


@njit(cache=True)
def _active_sq(R, carry, Y, alpha, relu):  # pragma: no cover - compiled
    """Per-column ``||(T - Y)_Omega||^2`` with ``T = alpha R + carry`` (pass 1)."""
    n_rows, n_cols = R.shape
    column_sq = np.zeros(n_cols)
    for p in range(n_rows):
        for m in range(n_cols):
            y = Y[p, m]
            if relu and y <= 0:
                continue
            d = alpha * R[p, m] + carry[p, m] - y
            column_sq[m] += d * d
    return column_sq


@njit(cache=True)
def _response_update(R, carry, B, Y, V, has_upper, relu, factors, alpha, DA, check):  # pragma: no cover
    """Project ``T = alpha R + carry``; update ``carry`` and ``B`` in place (pass 2)."""
    n_rows, n_cols = R.shape
    stats = np.zeros(4)
    beta = 1.0 - alpha
    inv = 1.0 / (2.0 - alpha)
    for p in range(n_rows):
        for m in range(n_cols):
            r = R[p, m]
            t = alpha * r + carry[p, m]
            y = Y[p, m]
            if relu and y <= 0:
                v = V[p, m] if has_upper else 0.0
                a = t if t < v else v
            else:
                a = y + factors[m] * (t - y)
            u = t - a
            if check:
                a_old = (B[p, m] + carry[p, m]) * inv
                DA[p, m] = a - a_old
                stats[0] += (r - a) * (r - a)
                stats[1] += (a - a_old) * (a - a_old)
                stats[2] += r * r
                stats[3] += a * a
            B[p, m] = a - u
            carry[p, m] = beta * a + u
    return stats


def _response_step_numba(R, carry, B, Y, V, relu, epsilon, per_neuron, alpha, DA, check):
    column_sq = _active_sq(R, carry, Y, alpha, relu)
    factors = ball_factors(column_sq, epsilon, per_neuron).astype(R.dtype)
    has_upper = V is not None
    V_arr = V if has_upper else np.zeros((1, 1), dtype=R.dtype)
    return _response_update(R, carry, B, Y, V_arr, has_upper, relu, factors, alpha, DA, check)


def _weight_step_numba_entry(Theta, Q, carry, C, threshold, alpha, DQ, check):
    """Soft-threshold ``T = alpha Theta + carry`` row by row; update ``Q``, ``carry``, ``C``
    (the group step with no grouped rows)."""
    return _group_weight_step_numba(Theta, Q, carry, C, threshold.astype(Theta.dtype), 1, 0, alpha, DQ, check)


@njit(cache=True)
def _group_weight_step_numba(Theta, Q, carry, C, threshold, group_size, n_grouped, alpha, DQ,
                             check):  # pragma: no cover - compiled
    """Group soft threshold of ``T = alpha Theta + carry``: each block of ``group_size``
    rows among the first ``n_grouped`` is scaled by ``max(0, 1 - kappa / ||T_g||_F)``; the
    rows after them (the bias, or every row when ``n_grouped = 0``: the l1 step) are
    soft-thresholded entry by entry. Then ``U+ = T - Q+``, ``C = Q+ - U+`` and
    ``carry = (1 - alpha) Q+ + U+``."""
    n_rows, n_cols = Theta.shape
    stats = np.zeros(5)
    beta = 1.0 - alpha
    n_groups = n_grouped // group_size
    for g in range(n_groups + n_rows - n_grouped):
        grouped = g < n_groups
        start = g * group_size if grouped else n_grouped + g - n_groups
        stop = start + group_size if grouped else start + 1
        kappa = threshold[start]
        scale = 0.0
        if grouped:
            square = 0.0
            for i in range(start, stop):
                for m in range(n_cols):
                    t = alpha * Theta[i, m] + carry[i, m]
                    square += t * t
            norm = np.sqrt(square)
            if norm > kappa:
                scale = 1.0 - kappa / norm
        for i in range(start, stop):
            for m in range(n_cols):
                w = Theta[i, m]
                t = alpha * w + carry[i, m]
                if grouped:
                    q = scale * t
                elif t > kappa:
                    q = t - kappa
                elif t < -kappa:
                    q = t + kappa
                else:
                    q = 0.0
                u = t - q
                if check:
                    q_old = Q[i, m]
                    DQ[i, m] = q - q_old
                    stats[0] += (w - q) * (w - q)
                    stats[1] += (q - q_old) * (q - q_old)
                    stats[2] += w * w
                    stats[3] += q * q
                    stats[4] += u * u
                Q[i, m] = q
                C[i, m] = q - u
                carry[i, m] = beta * q + u
    return stats


def _group_weight_step_numba_entry(Theta, Q, carry, C, threshold, group_size, n_grouped, alpha, DQ, check):
    return _group_weight_step_numba(Theta, Q, carry, C, threshold.astype(Theta.dtype), group_size, n_grouped,
                                    alpha, DQ, check)


# ----------------------------------------------------------------------------- numpy


def _response_step_numpy(R, carry, B, Y, V, relu, epsilon, per_neuron, alpha, DA, check):
    """numpy twin of the response step (same arguments, same in-place updates)."""
    T = alpha * R + carry
    A = project_response(T, Y, V, relu, epsilon, per_neuron)
    U = T - A
    stats = np.zeros(4)
    if check:
        A_old = (B + carry) / (2.0 - alpha)
        DA[...] = A - A_old
        stats[:] = [np.sum((R - A) ** 2, dtype=np.float64), np.sum(DA**2, dtype=np.float64),
                    np.sum(R**2, dtype=np.float64), np.sum(A**2, dtype=np.float64)]
    B[...] = A - U
    carry[...] = (1.0 - alpha) * A + U
    return stats


def _weight_step_numpy(Theta, Q, carry, C, threshold, alpha, DQ, check):
    """numpy twin of the weight step (same arguments, same in-place updates)."""
    T = alpha * Theta + carry
    kappa = threshold.astype(Theta.dtype)[:, None]
    Q_new = np.sign(T) * np.maximum(np.abs(T) - kappa, 0.0)
    return _finish_weight_step(Theta, Q, carry, C, T, Q_new, alpha, DQ, check)


def group_shrink(T: np.ndarray, threshold: np.ndarray, group_size: int, n_grouped: int) -> np.ndarray:
    """The proximal map of ``sum_g kappa_g ||Theta_g||_F`` (first ``n_grouped`` rows, in
    blocks of ``group_size``) plus the l1 norm on the remaining rows, at ``T`` (a new array)."""
    Q = np.empty_like(T)
    head = T[:n_grouped].reshape(-1, group_size, T.shape[1])
    norms = np.sqrt(np.einsum("gkm,gkm->g", head, head, dtype=np.float64))
    kappa = threshold[:n_grouped:group_size]
    scale = np.where(norms > kappa, 1.0 - kappa / np.where(norms > 0, norms, 1.0), 0.0)
    Q[:n_grouped] = (head * scale.astype(T.dtype)[:, None, None]).reshape(n_grouped, -1)
    tail, tail_kappa = T[n_grouped:], threshold[n_grouped:].astype(T.dtype)[:, None]
    Q[n_grouped:] = np.sign(tail) * np.maximum(np.abs(tail) - tail_kappa, 0.0)
    return Q


def _group_weight_step_numpy(Theta, Q, carry, C, threshold, group_size, n_grouped, alpha, DQ, check):
    """numpy twin of the group weight step."""
    T = alpha * Theta + carry
    Q_new = group_shrink(T, threshold, group_size, n_grouped)
    return _finish_weight_step(Theta, Q, carry, C, T, Q_new, alpha, DQ, check)


def _finish_weight_step(Theta, Q, carry, C, T, Q_new, alpha, DQ, check):
    """The updates after the proximal map: the dual, ``Q``, ``C``, ``carry`` and the statistics."""
    U = T - Q_new
    stats = np.zeros(5)
    if check:
        DQ[...] = Q_new - Q
        stats[:] = [np.sum((Theta - Q_new) ** 2, dtype=np.float64), np.sum(DQ**2, dtype=np.float64),
                    np.sum(Theta**2, dtype=np.float64), np.sum(Q_new**2, dtype=np.float64),
                    np.sum(U**2, dtype=np.float64)]
    Q[...] = Q_new
    C[...] = Q_new - U
    carry[...] = (1.0 - alpha) * Q_new + U
    return stats


RESPONSE_STEP = {"numba": _response_step_numba, "numpy": _response_step_numpy}
WEIGHT_STEP = {"numba": _weight_step_numba_entry, "numpy": _weight_step_numpy}
GROUP_WEIGHT_STEP = {"numba": _group_weight_step_numba_entry, "numpy": _group_weight_step_numpy}
