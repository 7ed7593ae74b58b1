"""Numba kernel of L-OBS: greedy Optimal Brain Surgeon removals, one row per thread.

For one row ``w`` of the layer (its weights and, last, its bias) and the inverse Hessian
``P = H_S^{-1}`` restricted to the entries ``S`` still in the row, removing entry ``q``
costs ``w_q^2 / (2 P_qq)`` in reconstruction error and the best compensation of the rest
of the row is

.. math::  w \\leftarrow w - \\frac{w_q}{P_{qq}} P_{:, q}, \\qquad
           P \\leftarrow P - \\frac{P_{:, q} P_{q, :}}{P_{qq}}

(the second is the inverse of ``H`` restricted to ``S \\setminus \\{q\\}``, padded with a
zero row and column for ``q``). Each row repeats: pick the remaining prunable entry with
the smallest cost, remove it, update.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["greedy_obs_rows", "greedy_obs_rows_each"]


@njit(cache=True)
def _greedy_obs_row(w: np.ndarray, hinv: np.ndarray, n_prunable: int, count: int) -> None:
    """Remove ``count`` entries of ``w`` (in place) among its first ``n_prunable``, greedily.

    ``hinv`` is the inverse Hessian of the whole row; it is copied, then downdated on the
    entries that remain (``alive``), so each removal costs ``O(|alive|^2)``.
    """
    n_cols = w.shape[0]
    P = hinv.copy()
    alive = np.arange(n_cols)
    n_alive = n_cols
    for _ in range(count):
        best, best_at = np.inf, -1
        for k in range(n_alive):
            q = alive[k]
            if q < n_prunable:
                cost = w[q] * w[q] / P[q, q]
                if cost < best:
                    best, best_at = cost, k
        if best_at < 0:
            break
        q = alive[best_at]
        pqq = P[q, q]
        factor = w[q] / pqq
        column = np.empty(n_alive)
        for k in range(n_alive):
            column[k] = P[alive[k], q]
        for k in range(n_alive):
            w[alive[k]] -= factor * column[k]
        for a in range(n_alive):
            scale = column[a] / pqq
            if scale != 0.0:
                i = alive[a]
                for b in range(n_alive):
                    P[i, alive[b]] -= scale * column[b]
        w[q] = 0.0
        alive[best_at] = alive[n_alive - 1]
        n_alive -= 1


@njit(parallel=True, cache=True)
def greedy_obs_rows(theta: np.ndarray, hinv: np.ndarray, n_prunable: int, counts: np.ndarray) -> None:
    """Greedy OBS on every row of ``theta`` (``n_out x n_cols``, in place), rows in parallel.

    Parameters
    ----------
    theta : ndarray (n_out, n_cols), float64
        Rows of weights (and bias, in the columns after ``n_prunable``).
    hinv : ndarray (n_cols, n_cols), float64
        ``H^{-1}`` of the layer, shared by every row.
    n_prunable : int
        Entries ``0 .. n_prunable - 1`` may be removed (the bias column may not).
    counts : ndarray (n_out,), int64
        How many entries to remove from each row.
    """
    for m in prange(theta.shape[0]):
        _greedy_obs_row(theta[m], hinv, n_prunable, counts[m])


@njit(parallel=True, cache=True)
def greedy_obs_rows_each(theta: np.ndarray, hinvs: np.ndarray, n_prunable: int, counts: np.ndarray) -> None:
    """:func:`greedy_obs_rows` with an inverse Hessian of its own for each row
    (``hinvs``: ``n_out x n_cols x n_cols``), as the ReLU-aware objective gives."""
    for m in prange(theta.shape[0]):
        _greedy_obs_row(theta[m], hinvs[m], n_prunable, counts[m])
