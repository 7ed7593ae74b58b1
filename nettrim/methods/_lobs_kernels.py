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

__all__ = ["greedy_obs_rows", "greedy_obs_rows_each", "greedy_obs_path"]


@njit(cache=True)
def _remove_greedily(w: np.ndarray, P: np.ndarray, alive: np.ndarray, n_alive: int, n_prunable: int,
                     count: int) -> int:
    """Remove ``count`` more entries of ``w`` (in place) among its first ``n_prunable``, greedily.

    ``P`` is the inverse Hessian restricted to the entries still in the row, ``alive[:n_alive]``
    (downdated in place, each removal costing ``O(n_alive^2)``). Returns the new ``n_alive``.
    """
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
    return n_alive


@njit(cache=True)
def _greedy_obs_row(w: np.ndarray, hinv: np.ndarray, n_prunable: int, count: int) -> None:
    """Remove ``count`` entries of ``w`` (in place) among its first ``n_prunable``, greedily,
    starting from the inverse Hessian ``hinv`` of the whole row (copied)."""
    _remove_greedily(w, hinv.copy(), np.arange(w.shape[0]), w.shape[0], n_prunable, count)


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
def greedy_obs_rows_each(theta: np.ndarray, hinvs: np.ndarray, widths: np.ndarray, n_fixed: int,
                         counts: np.ndarray) -> None:
    """:func:`greedy_obs_rows` with an inverse Hessian and a width of its own for each row,
    as the ReLU-aware objective's second stage gives (:mod:`._relu_obs`).

    Row ``m`` of ``theta`` (``n_out x n_cols``, in place) holds ``widths[m]`` prunable
    entries, then ``n_fixed`` that stay (the bias), then padding that is never read;
    ``hinvs[m]`` (``n_out x n_cols x n_cols``) is the inverse Hessian of those entries in
    its leading rows and columns.
    """
    for m in prange(theta.shape[0]):
        n_held = widths[m] + n_fixed
        _remove_greedily(theta[m], hinvs[m].copy(), np.arange(n_held), n_held, widths[m], counts[m])


@njit(parallel=True, cache=True)
def greedy_obs_path(theta: np.ndarray, hinv: np.ndarray, n_prunable: int, counts: np.ndarray) -> np.ndarray:
    """:func:`greedy_obs_rows` at several sparsities in one pass.

    ``counts`` (``n_levels x n_out``, non-decreasing down each column) gives how many entries
    each row has lost at each level; greedy removal never revisits a choice, so level ``l``
    is the state after ``counts[l, m]`` removals, the same as :func:`greedy_obs_rows` with
    those counts. Returns the rows at every level (``n_levels x n_out x n_cols``);
    ``theta`` is not modified.
    """
    n_levels, n_out, n_cols = counts.shape[0], theta.shape[0], theta.shape[1]
    levels = np.empty((n_levels, n_out, n_cols))
    for m in prange(n_out):
        w = theta[m].copy()
        P = hinv.copy()
        alive = np.arange(n_cols)
        n_alive, done = n_cols, 0
        for level in range(n_levels):
            n_alive = _remove_greedily(w, P, alive, n_alive, n_prunable, counts[level, m] - done)
            done = max(done, counts[level, m])
            levels[level, m] = w
    return levels
