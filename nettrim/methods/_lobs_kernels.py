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

:func:`damped_inverse` makes a neuron's ``P`` for the per-neuron Hessians of
:mod:`._relu_obs` from its normal equations, in one call that holds no GIL (the neurons'
inverses are made in Python threads).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from solvers._lapack import invert_spd

__all__ = ["greedy_obs_rows", "greedy_obs_rows_each", "greedy_obs_path", "ranked_obs_path", "damped_inverse"]

_PAIRWISE_BLOCK = 128  # numpy's pairwise summation adds up to this many terms in 8 running sums


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


@njit(parallel=True, cache=True)
def ranked_obs_path(theta: np.ndarray, hinv: np.ndarray, order: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """OBS removals in a fixed order with the fixed ``H^{-1}`` (L-OBS's released code), at
    several sparsities in one pass.

    Row ``m`` removes ``order[m, 0], order[m, 1], ...`` in turn, each removal ``q``
    compensated by ``w <- w - (w_q / P_qq) P_{:, q}`` with ``P = hinv`` never downdated
    (``O(n)`` per removal instead of greedy removal's ``O(n^2)``); level ``l`` is the row
    after its first ``counts[l, m]`` removals (``counts``: ``n_levels x n_out``,
    non-decreasing down each column), its removed entries set to exactly 0 (a later
    compensation moves an entry removed before). Returns the rows at every level
    (``n_levels x n_out x n_cols``); ``theta`` is not modified.
    """
    n_levels, n_out, n_cols = counts.shape[0], theta.shape[0], theta.shape[1]
    levels = np.empty((n_levels, n_out, n_cols))
    for m in prange(n_out):
        w = theta[m].copy()
        done = 0
        for level in range(n_levels):
            for k in range(done, counts[level, m]):
                q = order[m, k]
                factor = w[q] / hinv[q, q]
                for j in range(n_cols):
                    w[j] -= factor * hinv[q, j]
            done = max(done, counts[level, m])
            levels[level, m] = w
            for k in range(done):
                levels[level, m, order[m, k]] = 0.0
    return levels


@njit(cache=True)
def _forward_add(H: np.ndarray, Ut: np.ndarray, d: np.ndarray, r: np.ndarray, z: np.ndarray, chosen: np.ndarray,
                 taken: np.ndarray, k: int, q: int) -> None:
    """Add entry ``q`` as the ``k``-th of the support: its column of ``H`` orthogonalised
    against the ``k`` before (``Ut[k]``, the Cholesky factor's column, held as a row so
    that every update runs over contiguous memory), and every entry's Schur diagonal ``d``
    and residual correlation ``r`` updated (``O(n k)``)."""
    n = H.shape[0]
    ell = np.sqrt(d[q])
    column = Ut[k]
    column[:] = H[q]  # H is symmetric: row q is column q
    for t in range(k):
        factor = Ut[t, q]
        previous = Ut[t]
        for j in range(n):
            column[j] -= factor * previous[j]
    z[k] = r[q] / ell
    for j in range(n):
        column[j] /= ell
        d[j] -= column[j] * column[j]
        r[j] -= column[j] * z[k]
    chosen[k] = q
    taken[q] = True


@njit(cache=True)
def _forward_weights(Ut: np.ndarray, z: np.ndarray, chosen: np.ndarray, k: int, row: np.ndarray) -> None:
    """The least-squares row on the first ``k`` chosen entries, ``H_SS^{-1} g_S = L^{-T} z``
    (``L[a, b] = Ut[b, chosen[a]]``, lower triangular), written into ``row`` (zeros elsewhere)."""
    x = np.zeros(k)
    for a in range(k - 1, -1, -1):
        s = z[a]
        for b in range(a + 1, k):
            s -= Ut[a, chosen[b]] * x[b]
        x[a] = s / Ut[a, chosen[a]]
    row[:] = 0.0
    for a in range(k):
        row[chosen[a]] = x[a]


@njit(parallel=True, cache=True)
def greedy_forward_path(targets: np.ndarray, H: np.ndarray, n_prunable: int, keeps: np.ndarray) -> np.ndarray:
    """Forward greedy selection on each row's OBS objective, at several supports in one pass.

    Row ``m``'s error on a support ``S`` is ``min_{theta_S} (theta - w)^T H (theta - w)
    = w^T H w - g_S^T H_SS^{-1} g_S`` with ``g = H w`` (``targets[m]``); adding entry ``j``
    lowers it by ``r_j^2 / d_j``, its residual correlation squared over its Schur diagonal
    (``r = g - H_{:S} H_SS^{-1} g_S``, ``d_j = H_jj - H_jS H_SS^{-1} H_Sj``). The entries
    from ``n_prunable`` on (the bias) are in every support; then the entry that lowers the
    error most is added, one at a time, each addition an ``O(n k)`` Cholesky-column update,
    so ``K`` additions cost ``O(n K^2)`` against the ``O(n^3)`` of removing ``n - K`` of
    ``n`` greedily (:func:`greedy_obs_path`).

    ``keeps`` (``n_levels x n_out``, non-increasing down each column) gives how many
    prunable entries each row keeps at each level; a level's support is the first
    ``keeps[l, m]`` entries added (nested), and its row the least-squares one on it.
    Returns the rows at every level (``n_levels x n_out x n_cols``).
    """
    n_levels, n_out, n_cols = keeps.shape[0], targets.shape[0], targets.shape[1]
    levels = np.zeros((n_levels, n_out, n_cols))
    n_fixed = n_cols - n_prunable
    for m in prange(n_out):
        most = keeps[0, m]
        Ut = np.zeros((most + n_fixed, n_cols))
        d = np.diag(H).copy()
        r = targets[m].copy()
        z = np.zeros(most + n_fixed)
        chosen = np.zeros(most + n_fixed, dtype=np.int64)
        taken = np.zeros(n_cols, dtype=np.bool_)
        k = 0
        for q in range(n_prunable, n_cols):
            _forward_add(H, Ut, d, r, z, chosen, taken, k, q)
            k += 1
        for added in range(most + 1):
            for level in range(n_levels):
                if keeps[level, m] == added:
                    _forward_weights(Ut, z, chosen, k, levels[level, m])
            if added == most:
                break
            best, best_at = -1.0, -1
            for j in range(n_prunable):
                if not taken[j] and d[j] > 1e-12 * H[j, j]:
                    gain = r[j] * r[j] / d[j]
                    if gain > best:
                        best, best_at = gain, j
            if best_at < 0:  # no entry left independent of the support: the rest of the levels keep it
                for level in range(n_levels):
                    if keeps[level, m] > added:
                        _forward_weights(Ut, z, chosen, k, levels[level, m])
                break
            _forward_add(H, Ut, d, r, z, chosen, taken, k, best_at)
            k += 1
    return levels


@njit(cache=True)
def _block_sum(values: np.ndarray, start: int, count: int) -> float:
    """``values[start:start + count].sum()`` for ``count <= _PAIRWISE_BLOCK``, in numpy's
    order: in 8 running sums, added in pairs, then the terms past the last multiple of 8."""
    if count < 8:
        total = 0.0
        for i in range(count):
            total += values[start + i]
        return total
    sums = values[start:start + 8].copy()
    i = 8
    while i < count - count % 8:
        for j in range(8):
            sums[j] += values[start + i + j]
        i += 8
    total = ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]))
    while i < count:
        total += values[start + i]
        i += 1
    return total


@njit(cache=True)
def _pairwise_sum(values: np.ndarray) -> float:
    """``values.sum()`` added in numpy's order (pairwise: halves, each a multiple of 8 terms
    where it can be, down to :data:`_PAIRWISE_BLOCK` terms, :func:`_block_sum`), so that a
    mean taken here is numpy's to the last bit. The halving runs on a stack of its own
    (compiled functions that call themselves cannot be cached)."""
    if values.size <= _PAIRWISE_BLOCK:
        return _block_sum(values, 0, values.size)
    starts, counts, stages = np.zeros(64, np.int64), np.zeros(64, np.int64), np.zeros(64, np.int64)
    partial = np.zeros(64)
    counts[0] = values.size
    top, done = 0, 0
    while top >= 0:
        start, count = starts[top], counts[top]
        half = count // 2 - (count // 2) % 8
        if count <= _PAIRWISE_BLOCK:
            partial[done] = _block_sum(values, start, count)
            done += 1
            top -= 1
        elif stages[top] < 2:  # the first half, then the second
            stages[top] += 1
            first = stages[top] == 1
            top += 1
            starts[top], counts[top], stages[top] = (start, half, 0) if first else (start + half, count - half, 0)
        else:
            done -= 1
            partial[done - 1] += partial[done]
            top -= 1
    return partial[0]


@njit(cache=True, nogil=True)
def damped_inverse(out: np.ndarray, gram: np.ndarray, n_samples: int, damping: float) -> bool:
    """``out[:s, :s] = H^{-1}`` for ``H = gram / n_samples + delta I`` (``gram`` ``s x s``,
    ``delta = damping * mean(diag(gram / n_samples))``, or ``1e-12`` where that is 0), by
    LAPACK's Cholesky inverse (:func:`solvers._lapack.invert_spd`); the rest of ``out``'s
    diagonal set to 1 (the padding is the identity where ``out`` was zero). ``out``:
    C-contiguous, at least ``s x s``. Returns False when ``H`` is not positive definite."""
    size = gram.shape[0]
    diagonal = np.empty(size)
    for a in range(size):
        for b in range(size):
            out[a, b] = gram[a, b] / n_samples
        diagonal[a] = out[a, a]
    delta = damping * (_pairwise_sum(diagonal) / size) if size else 0.0
    shift = delta if delta > 0 else 1e-12
    for a in range(size):
        out[a, a] += shift
    for a in range(size, out.shape[0]):
        out[a, a] = 1.0
    return invert_spd(out, size)
