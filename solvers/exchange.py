"""Choosing input groups for a least-squares fit: exchanges after a greedy elimination.

For a layer input ``X`` (``n_samples x n_in``, its columns in ``n_groups`` blocks of
``per_group`` consecutive columns) and a target ``T`` (``n_samples x n_out``), keeping the
groups ``K`` and refitting the weights on their columns, with a free bias, leaves the error

.. math::

    f(K) = \\|T_c\\|_F^2 - \\operatorname{tr}\\left(M_K^T C_{KK}^{-1} M_K\\right), \\qquad
    C = X_c^T X_c, \\quad M = X_c^T T_c

(``X_c``, ``T_c`` centred; ``C`` with a small ridge). Backward elimination (CaP's greedy
choice, :func:`nettrim.cap.greedy_keep`) gives a good ``K`` but is not optimal: a group
removed early cannot come back. :func:`exchange` improves ``K`` by swaps: for each kept
group ``g`` in turn, with ``K' = K \\ {g}`` and ``P = C_{K'K'}^{-1}``, the decrease of
``f`` by adding group ``h`` back is

.. math::

    \\Delta_h = \\operatorname{tr}\\left(R_h^T S_h^{-1} R_h\\right), \\qquad
    R = M - C_{:,K'} P M_{K'}, \\quad S_h = C_{hh} - C_{h,K'} P C_{K',h}

(``S_h`` the Schur complement of block ``h``), for every ``h`` at once; ``g`` is replaced by
the best ``h`` whenever that lowers ``f``. A sweep goes over every kept group; sweeps
repeat until none swaps or ``sweeps`` is reached, so ``f`` never grows.
"""
from __future__ import annotations

import numpy as np
from scipy import linalg

__all__ = ["subset_error", "exchange"]


def _moments(X: np.ndarray, T: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray, float]:
    X = np.asarray(X, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    Tc = T - T.mean(axis=0)
    C = Xc.T @ Xc
    C[np.diag_indices_from(C)] += ridge * max(float(np.mean(np.diag(C))), 1e-300)
    return C, Xc.T @ Tc, float(np.sum(Tc * Tc))


def _columns(groups: np.ndarray, per_group: int) -> np.ndarray:
    return (np.asarray(groups, dtype=np.int64)[:, None] * per_group + np.arange(per_group)).reshape(-1)


def _explained(C: np.ndarray, M: np.ndarray, columns: np.ndarray) -> float:
    if columns.size == 0:
        return 0.0
    factor = linalg.cho_factor(C[np.ix_(columns, columns)])
    return float(np.sum(M[columns] * linalg.cho_solve(factor, M[columns])))


def subset_error(X: np.ndarray, T: np.ndarray, keep: np.ndarray, per_group: int = 1, ridge: float = 1e-8) -> float:
    """``f(K)``: the squared error of the least-squares fit of ``T`` on the columns of the
    groups ``keep`` of ``X`` (with a free bias)."""
    C, M, total = _moments(X, T, ridge)
    return total - _explained(C, M, _columns(np.asarray(keep), per_group))


def _best_addition(C: np.ndarray, M: np.ndarray, rest: np.ndarray, candidates: np.ndarray,
                   per_group: int) -> tuple[int, float, float]:
    """With the groups ``rest`` kept: the candidate group whose addition lowers ``f`` most,
    its decrease, and what ``rest`` alone explains."""
    columns = _columns(rest, per_group)
    if columns.size:
        factor = linalg.cho_factor(C[np.ix_(columns, columns)])
        solved_M = linalg.cho_solve(factor, M[columns])
        explained = float(np.sum(M[columns] * solved_M))
        residual = M - C[:, columns] @ solved_M
    else:
        explained, residual = 0.0, M
    blocks = _columns(candidates, per_group).reshape(len(candidates), per_group)
    schur = C[blocks[:, :, None], blocks[:, None, :]]
    if columns.size:  # minus C_{h,K'} P C_{K',h}, block h only
        inner = linalg.cho_solve(factor, C[columns][:, blocks.reshape(-1)]).reshape(len(columns), *blocks.shape)
        schur = schur - np.einsum("kgp,kgq->gpq", C[columns][:, blocks.reshape(-1)].reshape(inner.shape), inner)
    R = residual[blocks]  # (n_candidates, per_group, n_out)
    solved = np.linalg.solve(schur, R)
    decrease = np.einsum("gpo,gpo->g", R, solved)
    best = int(np.argmax(decrease))
    return int(candidates[best]), float(decrease[best]), explained


def exchange(X: np.ndarray, T: np.ndarray, keep: np.ndarray, per_group: int = 1, *, sweeps: int = 2,
             ridge: float = 1e-8) -> tuple[np.ndarray, float, float]:
    """Improve the kept groups ``keep`` by single swaps (module docstring).

    Parameters
    ----------
    X : ndarray (n_samples, n_in)
    T : ndarray (n_samples, n_out)
        The target of the fit.
    keep : ndarray of int
        The groups kept to start with (e.g. greedy elimination's).
    per_group : int, default 1
        Consecutive columns per group (``n_in`` a multiple of it).
    sweeps : int, default 2
        At most this many passes over the kept groups.
    ridge : float, default 1e-8
        Added to the diagonal of ``C``, relative to its mean.

    Returns
    -------
    keep : ndarray of int
        The kept groups, sorted, as many as given.
    error_before, error_after : float
        ``f`` of the groups given and of those returned.
    """
    C, M, total = _moments(X, T, ridge)
    n_groups = C.shape[0] // per_group
    kept = [int(g) for g in keep]
    current = total - _explained(C, M, _columns(np.array(kept, dtype=np.int64), per_group))
    before = current
    for _ in range(sweeps):
        swapped = False
        for position in range(len(kept)):
            rest = np.array(kept[:position] + kept[position + 1:], dtype=np.int64)
            candidates = np.setdiff1d(np.arange(n_groups), rest)
            best, decrease, explained = _best_addition(C, M, rest, candidates, per_group)
            value = total - explained - decrease
            if best != kept[position] and value < current - 1e-12 * max(total, 1e-300):
                kept[position], current, swapped = best, value, True
        if not swapped:
            break
    return np.array(sorted(kept), dtype=np.int64), before, current
