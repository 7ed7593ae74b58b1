"""Numba kernel of L-OBS: greedy Optimal Brain Surgeon removals, one row per thread.

For one row ``w`` of the layer (its weights and, last, its bias) and the inverse Hessian
``P = H_S^{-1}`` restricted to the entries ``S`` still in the row, removing entry ``q``
costs ``w_q^2 / (2 P_qq)`` in reconstruction error and the best compensation of the rest
of the row is

.. math::  w \\leftarrow w - \\frac{w_q}{P_{qq}} P_{:, q}, \\qquad
           P \\leftarrow P - \\frac{P_{:, q} P_{q, :}}{P_{qq}}

(the second is the inverse of ``H`` restricted to ``S \\setminus \\{q\\}``, padded with a
zero row and column for ``q``). Each row repeats: pick the remaining prunable entry with
the smallest cost, remove it, update. The row and ``P`` are held compactly, the entries
still in the row first, so every update runs over contiguous memory.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["greedy_obs_rows", "greedy_obs_rows_each", "greedy_obs_path", "spd_inverse"]


@njit(cache=True)
def _remove_greedily(w: np.ndarray, P: np.ndarray, alive: np.ndarray, n_alive: int, n_prunable: int,
                     count: int) -> int:
    """Remove ``count`` more entries of a row (in place) among its first ``n_prunable``, greedily.

    The row is held compactly: ``w[:n_alive]`` are the weights still in it, ``alive[:n_alive]``
    the entries they are (``alive[k]`` is ``w[k]``'s column in the full row), and
    ``P[:n_alive, :n_alive]`` the inverse Hessian restricted to them. A removal downdates
    that block (``O(n_alive^2)``, contiguous rows) and moves the last entry into the
    removed one's place, so the block stays leading and dense. Returns the new ``n_alive``.
    """
    for _ in range(count):
        best, best_at = np.inf, -1
        for k in range(n_alive):
            if alive[k] < n_prunable:
                cost = w[k] * w[k] / P[k, k]
                if cost < best:
                    best, best_at = cost, k
        if best_at < 0:
            break
        q = best_at
        pqq = P[q, q]
        factor = w[q] / pqq
        column = P[q, :n_alive].copy()  # P is symmetric: row q is column q
        for k in range(n_alive):
            w[k] -= factor * column[k]
        for a in range(n_alive):
            scale = column[a] / pqq
            if scale != 0.0:
                row = P[a]
                for b in range(n_alive):
                    row[b] -= scale * column[b]
        last = n_alive - 1  # the last entry takes the removed one's place
        w[q], w[last] = w[last], 0.0
        alive[q], alive[last] = alive[last], alive[q]
        for k in range(n_alive):
            P[q, k] = P[last, k]
        for k in range(n_alive):
            P[k, q] = P[k, last]
        n_alive -= 1
    return n_alive


@njit(cache=True)
def _scatter(compact: np.ndarray, alive: np.ndarray, n_alive: int, row: np.ndarray) -> None:
    """Write a compact row back into ``row``: ``compact[k]`` at ``alive[k]``, zeros elsewhere."""
    row[:] = 0.0
    for k in range(n_alive):
        row[alive[k]] = compact[k]


@njit(cache=True)
def _greedy_obs_row(w: np.ndarray, hinv: np.ndarray, n_prunable: int, count: int) -> None:
    """Remove ``count`` entries of ``w`` (in place) among its first ``n_prunable``, greedily,
    starting from the inverse Hessian ``hinv`` of the whole row (copied)."""
    alive = np.arange(w.shape[0])
    compact = w.copy()
    n_alive = _remove_greedily(compact, hinv.copy(), alive, w.shape[0], n_prunable, count)
    _scatter(compact, alive, n_alive, w)


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
        _greedy_obs_row(theta[m, :n_held], hinvs[m, :n_held, :n_held], widths[m], counts[m])


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
            _scatter(w, alive, n_alive, levels[level, m])
    return levels


@njit(cache=True, nogil=True)
def spd_inverse(matrices: np.ndarray, k: int, size: int) -> None:
    """Invert, in place, the leading ``size`` rows and columns of the symmetric positive
    definite ``matrices[k]``, made symmetric (the rest, padding, is left as it is). The
    block is factored by Cholesky first (LAPACK's ``potrf``), which raises ``LinAlgError``
    when it is not positive definite, then inverted by LAPACK (``getrf``, ``getri``);
    without the GIL, so that threads can share the matrices out."""
    if size == 0:
        return
    block = np.ascontiguousarray(matrices[k, :size, :size])
    np.linalg.cholesky(block)
    inverse = np.linalg.inv(block)
    for a in range(size):
        for b in range(size):
            matrices[k, a, b] = 0.5 * (inverse[a, b] + inverse[b, a])
