"""Elementwise steps of the ADMM in :mod:`solvers.admm`, fused into single passes.

BLAS does the two products of each iteration; everything else is elementwise over the
response block (``n_samples x n_out``) and the weight block (``(n_in + 1) x n_out``).
Each step below makes one parallel pass (two for the ball projection, which needs its
norm first) and returns the squared norms the stopping rule needs, so no other pass
over the data is made. Every kernel has a numpy twin with the same signature and the
same answer; ``backend="numpy"`` uses the twins, for checking.

Notation (scaled ADMM, over-relaxation ``alpha``): ``R`` is the response ``Xa @ Theta``,
``A`` its constrained copy, ``UA`` the scaled dual of ``A = R``; ``Theta`` the weights,
``Q`` their l1 copy and ``UQ`` the scaled dual of ``Q = Theta``. With ``T = alpha R +
(1 - alpha) A + UA``:

.. math::

    A^+ = \\Pi_C(T), \\qquad UA^+ = T - A^+, \\qquad B = A^+ - UA^+

and the same for the weight block with the soft threshold in place of ``Pi_C``.
``B`` and ``C = Q^+ - UQ^+`` are the right-hand sides of the next weight step.

Statistics returned by the response step, in order: ``||R - A+||^2`` (primal residual),
``||A+ - A||^2`` (change), ``||R||^2``, ``||A+||^2``. By the weight step: ``||Theta -
Q+||^2``, ``||Q+ - Q||^2``, ``||Theta||^2``, ``||Q+||^2``, ``||UQ+||^2``.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

__all__ = ["RESPONSE_STEP", "WEIGHT_STEP", "ball_factors"]


def ball_factors(column_sq: np.ndarray, epsilon: np.ndarray, per_neuron: bool) -> np.ndarray:
    """Scale factors that project the active residual onto the ball(s).

    For one ball over the layer, ``f = min(1, epsilon / ||T - Y||_Omega)`` for every
    column; per neuron, ``f_m = min(1, epsilon_m / ||(T - Y)_{Omega, m}||)``. A zero norm
    gives ``f = 1`` (nothing to project) and ``epsilon = 0`` gives ``f = 0``.
    """
    norms = np.sqrt(column_sq) if per_neuron else np.full_like(column_sq, np.sqrt(column_sq.sum()))
    eps = epsilon if per_neuron else np.full_like(column_sq, float(epsilon))
    factors = np.ones_like(column_sq)
    outside = norms > eps
    factors[outside] = eps[outside] / norms[outside]
    return factors


# ----------------------------------------------------------------------------- numba


def _n_chunks(n_rows: int) -> int:
    """Row blocks for the parallel passes: a few per thread, for load balance."""
    return max(1, min(n_rows, 4 * get_num_threads()))


@njit(cache=True, parallel=True)
def _active_sq_numba(R, A, UA, Y, alpha, relu, n_chunks):  # pragma: no cover - compiled
    """Per-column ``||(T - Y)_Omega||^2`` with ``T = alpha R + (1 - alpha) A + UA``."""
    n_rows, n_cols = R.shape
    partial = np.zeros((n_chunks, n_cols))
    beta = 1.0 - alpha
    for c in prange(n_chunks):
        start = c * n_rows // n_chunks
        stop = (c + 1) * n_rows // n_chunks
        for p in range(start, stop):
            for m in range(n_cols):
                y = Y[p, m]
                if relu and y <= 0:
                    continue
                d = alpha * R[p, m] + beta * A[p, m] + UA[p, m] - y
                partial[c, m] += d * d
    return partial.sum(axis=0)


@njit(cache=True, parallel=True)
def _response_update_numba(R, A, UA, Y, V, has_upper, relu, factors, alpha, B, DA, store_change, n_chunks):  # pragma: no cover
    """Project ``T`` onto the constraint set, update ``A``, ``UA``, ``B`` in place."""
    n_rows, n_cols = R.shape
    partial = np.zeros((n_chunks, 4))
    beta = 1.0 - alpha
    for c in prange(n_chunks):
        start = c * n_rows // n_chunks
        stop = (c + 1) * n_rows // n_chunks
        s_res = 0.0
        s_chg = 0.0
        s_r = 0.0
        s_a = 0.0
        for p in range(start, stop):
            for m in range(n_cols):
                r = R[p, m]
                a_old = A[p, m]
                t = alpha * r + beta * a_old + UA[p, m]
                y = Y[p, m]
                if relu and y <= 0:
                    v = V[p, m] if has_upper else 0.0
                    a = t if t < v else v
                else:
                    a = y + factors[m] * (t - y)
                u = t - a
                A[p, m] = a
                UA[p, m] = u
                B[p, m] = a - u
                if store_change:
                    DA[p, m] = a - a_old
                s_res += (r - a) * (r - a)
                s_chg += (a - a_old) * (a - a_old)
                s_r += r * r
                s_a += a * a
        partial[c, 0] = s_res
        partial[c, 1] = s_chg
        partial[c, 2] = s_r
        partial[c, 3] = s_a
    return partial.sum(axis=0)


def _response_step_numba(R, A, UA, Y, V, relu, epsilon, per_neuron, alpha, B, DA, store_change):
    n_chunks = _n_chunks(R.shape[0])
    column_sq = _active_sq_numba(R, A, UA, Y, alpha, relu, n_chunks)
    factors = ball_factors(column_sq, epsilon, per_neuron)
    has_upper = V is not None
    V_arr = V if has_upper else np.zeros((1, 1), dtype=R.dtype)
    DA_arr = DA if store_change else np.zeros((1, 1), dtype=R.dtype)
    return _response_update_numba(
        R, A, UA, Y, V_arr, has_upper, relu, factors.astype(R.dtype), alpha, B, DA_arr, store_change, n_chunks
    )


@njit(cache=True, parallel=True)
def _weight_step_numba(Theta, Q, UQ, threshold, alpha, C, DQ, store_change, n_chunks):  # pragma: no cover
    """Soft-threshold ``T = alpha Theta + (1 - alpha) Q + UQ`` row by row; update in place."""
    n_rows, n_cols = Theta.shape
    partial = np.zeros((n_chunks, 5))
    beta = 1.0 - alpha
    for c in prange(n_chunks):
        start = c * n_rows // n_chunks
        stop = (c + 1) * n_rows // n_chunks
        s_res = 0.0
        s_chg = 0.0
        s_w = 0.0
        s_q = 0.0
        s_u = 0.0
        for i in range(start, stop):
            kappa = threshold[i]
            for m in range(n_cols):
                w = Theta[i, m]
                q_old = Q[i, m]
                t = alpha * w + beta * q_old + UQ[i, m]
                if t > kappa:
                    q = t - kappa
                elif t < -kappa:
                    q = t + kappa
                else:
                    q = 0.0
                u = t - q
                Q[i, m] = q
                UQ[i, m] = u
                C[i, m] = q - u
                if store_change:
                    DQ[i, m] = q - q_old
                s_res += (w - q) * (w - q)
                s_chg += (q - q_old) * (q - q_old)
                s_w += w * w
                s_q += q * q
                s_u += u * u
        partial[c, 0] = s_res
        partial[c, 1] = s_chg
        partial[c, 2] = s_w
        partial[c, 3] = s_q
        partial[c, 4] = s_u
    return partial.sum(axis=0)


def _weight_step_numba_entry(Theta, Q, UQ, threshold, alpha, C, DQ, store_change):
    DQ_arr = DQ if store_change else np.zeros((1, 1), dtype=Theta.dtype)
    return _weight_step_numba(
        Theta, Q, UQ, threshold.astype(Theta.dtype), alpha, C, DQ_arr, store_change, _n_chunks(Theta.shape[0])
    )


# ----------------------------------------------------------------------------- numpy


def _response_step_numpy(R, A, UA, Y, V, relu, epsilon, per_neuron, alpha, B, DA, store_change):
    """numpy twin of the response step (same arguments, same in-place updates)."""
    T = alpha * R + (1.0 - alpha) * A + UA
    D = T - Y
    if relu:
        active = Y > 0
        D = np.where(active, D, 0.0)
    column_sq = np.einsum("pm,pm->m", D, D, dtype=np.float64)
    factors = ball_factors(column_sq, epsilon, per_neuron).astype(R.dtype)
    A_new = Y + factors * D
    if relu:
        A_new = np.where(active, A_new, np.minimum(T, 0.0 if V is None else V))
    change = A_new - A
    if store_change:
        DA[...] = change
    stats = np.array(
        [np.sum((R - A_new) ** 2, dtype=np.float64), np.sum(change**2, dtype=np.float64),
         np.sum(R**2, dtype=np.float64), np.sum(A_new**2, dtype=np.float64)]
    )
    A[...] = A_new
    UA[...] = T - A_new
    B[...] = A - UA
    return stats


def _weight_step_numpy(Theta, Q, UQ, threshold, alpha, C, DQ, store_change):
    """numpy twin of the weight step (same arguments, same in-place updates)."""
    T = alpha * Theta + (1.0 - alpha) * Q + UQ
    kappa = threshold.astype(Theta.dtype)[:, None]
    Q_new = np.sign(T) * np.maximum(np.abs(T) - kappa, 0.0)
    change = Q_new - Q
    if store_change:
        DQ[...] = change
    U_new = T - Q_new
    stats = np.array(
        [np.sum((Theta - Q_new) ** 2, dtype=np.float64), np.sum(change**2, dtype=np.float64),
         np.sum(Theta**2, dtype=np.float64), np.sum(Q_new**2, dtype=np.float64),
         np.sum(U_new**2, dtype=np.float64)]
    )
    Q[...] = Q_new
    UQ[...] = U_new
    C[...] = Q - UQ
    return stats


RESPONSE_STEP = {"numba": _response_step_numba, "numpy": _response_step_numpy}
WEIGHT_STEP = {"numba": _weight_step_numba_entry, "numpy": _weight_step_numpy}
