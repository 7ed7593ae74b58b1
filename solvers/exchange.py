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
repeat until none swaps or ``sweeps`` is reached, so ``f`` never grows. Taking ``g`` out
of the fit on ``K`` is an update of rank ``per_group`` (:meth:`_Fit.best_swap`), so
trying every position costs ``O(n_in * per_group * n_out)`` each, and only an accepted
swap refactors the fit.

:func:`exchange_each` does the same for single columns, neuron by neuron, each neuron with
a Gram matrix of its own (the rows it is fitted on, its candidate columns): an unstructured
support chosen by greedy elimination (OBS) improved by swaps (compiled,
:mod:`solvers._exchange_kernels`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["subset_error", "exchange", "exchange_each", "group_columns", "solve_blocks", "centred", "Centred"]


class Centred(NamedTuple):
    """An input ``X`` centred, and its Gram matrix (:func:`centred`)."""

    mean: np.ndarray
    """``(n_in,)``: the mean of every column of ``X``."""
    X: np.ndarray
    """``(n_samples, n_in)``, float64: ``X_c``, ``X`` less its mean."""
    gram: np.ndarray
    """``(n_in, n_in)``: ``X_c^T X_c``."""

    def of(self, X: np.ndarray) -> Centred:
        """These moments, checked to be those of an input shaped as ``X``: a ``ValueError``
        naming ``centred`` otherwise."""
        shape = np.shape(X)
        if np.shape(self.X) != shape or np.shape(self.gram) != (shape[-1],) * 2 or np.shape(self.mean) != shape[-1:]:
            raise ValueError(f"centred: got the moments of an input of shape {np.shape(self.X)}, needs those of X "
                             f"{shape} (solvers.exchange.centred(X)), or None to make them here")
        return self


def centred(X: np.ndarray) -> Centred:
    """``X`` centred and ``X_c^T X_c``, for callers that choose groups of the same input more
    than once (:func:`exchange` and :func:`nettrim.cap.greedy_keep` take it as ``centred=``)."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    Xc = X - mean
    return Centred(mean, Xc, Xc.T @ Xc)


def _moments(X: np.ndarray, T: np.ndarray, ridge: float, given: Centred | None = None
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """``C`` (with the ridge), ``M`` and ``||T_c||_F^2`` (module docstring); ``given``:
    :func:`centred` of ``X``, made before."""
    if given is None:
        given = centred(X)
        C = given.gram
    else:
        C = given.of(X).gram.copy()  # the caller's stays as it was
    T = np.asarray(T, dtype=np.float64)
    Tc = T - T.mean(axis=0)
    C[np.diag_indices_from(C)] += ridge * max(float(np.mean(np.diag(C))), 1e-300)
    return C, given.X.T @ Tc, float(np.sum(Tc * Tc))


def solve_blocks(blocks: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``np.linalg.solve(blocks, rhs)`` for a stack of small systems (``blocks``
    ``(n, p, p)``, ``rhs`` ``(n, p, r)``). With ``p = 1`` the answer is ``rhs`` times the
    reciprocal of each block, which is what LAPACK's solve computes for one unknown (so
    the same numbers), without a LAPACK call per block: a greedy elimination over the
    neurons of a dense layer makes hundreds of such stacks, and numpy's batched solve
    took about 2.5 microseconds per block (0.66 ms per stack of 230 blocks)."""
    if blocks.shape[-1] == 1:
        return rhs * (1.0 / blocks)
    return np.linalg.solve(blocks, rhs)


def group_columns(groups: np.ndarray, per_group: int) -> np.ndarray:
    """The column indices of ``groups`` of ``per_group`` consecutive columns each."""
    return (np.asarray(groups, dtype=np.int64)[:, None] * per_group + np.arange(per_group)).reshape(-1)


def _explained(C: np.ndarray, M: np.ndarray, columns: np.ndarray) -> float:
    from scipy import linalg  # here, not at import: ``import nettrim`` does not need scipy.linalg

    if columns.size == 0:
        return 0.0
    factor = linalg.cho_factor(C[np.ix_(columns, columns)])
    return float(np.sum(M[columns] * linalg.cho_solve(factor, M[columns])))


def subset_error(X: np.ndarray, T: np.ndarray, keep: np.ndarray, per_group: int = 1, ridge: float = 1e-8) -> float:
    """``f(K)``: the squared error of the least-squares fit of ``T`` on the columns of the
    groups ``keep`` of ``X`` (with a free bias)."""
    C, M, total = _moments(X, T, ridge)
    return total - _explained(C, M, group_columns(np.asarray(keep), per_group))


class _Fit:
    """The least-squares fit on the kept groups ``K`` and what a swap needs of it:
    ``P = C_KK^{-1}``, ``A = C_{:,K} P``, the coefficients ``B = P M_K``, the residual
    cross-covariance ``R = M - C_{:,K} B``, and the diagonal blocks of ``F = A C_{K,:}``."""

    def __init__(self, C: np.ndarray, M: np.ndarray, kept: list[int], per_group: int) -> None:
        from scipy import linalg  # here, not at import: ``import nettrim`` does not need scipy.linalg

        self.kept, self.per_group = list(kept), per_group
        columns = group_columns(np.array(self.kept, dtype=np.int64), per_group)
        factor = linalg.cho_factor(C[np.ix_(columns, columns)])
        self.P = linalg.cho_solve(factor, np.eye(columns.size))
        self.A = C[:, columns] @ self.P
        self.B = self.P @ M[columns]
        self.R = M - C[:, columns] @ self.B
        self.explained = float(np.sum(M[columns] * self.B))
        n_groups = C.shape[0] // per_group
        blocks = group_columns(np.arange(n_groups), per_group).reshape(n_groups, per_group)
        self.blocks = blocks
        self.C_blocks = C[blocks[:, :, None], blocks[:, None, :]]
        self.F_blocks = np.einsum("gpk,kgq->gpq", self.A[blocks], C[columns][:, blocks.reshape(-1)].reshape(
            columns.size, n_groups, per_group))

    def best_swap(self, position: int) -> tuple[int, float]:
        """With the kept group at ``position`` taken out: the group whose addition explains
        most, and ``f``'s explained part then. Taking group ``g`` out of the fit updates it
        by rank ``per_group``: ``R' = R + A_g P_gg^{-1} B_g`` and
        ``S_h = C_hh - F_hh + A_hg P_gg^{-1} A_hg^T``; it explains ``tr(B_g^T P_gg^{-1} B_g)`` less."""
        per_group = self.per_group
        local = np.arange(position * per_group, (position + 1) * per_group)
        block = self.P[np.ix_(local, local)]
        inverse = 1.0 / block if per_group == 1 else np.linalg.inv(block)  # for one: what LAPACK's inverse gives
        A_g = self.A[:, local]
        B_g = self.B[local]
        residual = self.R + A_g @ (inverse @ B_g)
        explained = self.explained - float(np.sum(B_g * (inverse @ B_g)))
        rest = self.kept[:position] + self.kept[position + 1:]
        outside = np.ones(len(self.blocks), dtype=bool)
        outside[rest] = False
        candidates = np.flatnonzero(outside)  # the groups not kept, ascending
        A_hg = A_g[self.blocks[candidates]]  # (n_candidates, per_group, per_group)
        schur = (self.C_blocks[candidates] - self.F_blocks[candidates]
                 + np.einsum("gpa,ab,gqb->gpq", A_hg, inverse, A_hg))
        R = residual[self.blocks[candidates]]
        decrease = np.einsum("gpo,gpo->g", R, solve_blocks(schur, R))
        best = int(np.argmax(decrease))
        return int(candidates[best]), explained + float(decrease[best])


def exchange(X: np.ndarray, T: np.ndarray, keep: np.ndarray, per_group: int = 1, *, sweeps: int = 2,
             ridge: float = 1e-8, centred: Centred | None = None) -> tuple[np.ndarray, float, float]:
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
    centred : Centred, optional
        :func:`centred` of ``X``, when the caller has it (made here otherwise).

    Returns
    -------
    keep : ndarray of int
        The kept groups, sorted, as many as given.
    error_before, error_after : float
        ``f`` of the groups given and of those returned.
    """
    C, M, total = _moments(X, T, ridge, centred)
    fit = _Fit(C, M, [int(g) for g in keep], per_group)
    before = total - fit.explained
    for _ in range(sweeps):
        swapped = False
        for position in range(len(fit.kept)):
            best, explained = fit.best_swap(position)
            if best != fit.kept[position] and explained > fit.explained + 1e-12 * max(total, 1e-300):
                kept = list(fit.kept)
                kept[position] = best
                fit = _Fit(C, M, kept, per_group)
                swapped = True
        if not swapped:
            break
    return np.array(sorted(fit.kept), dtype=np.int64), before, total - fit.explained


_EACH_RIDGE = 1e-10  # exchange_each: added to the diagonal, relative to its mean
_EACH_GAIN = 1e-12  # ... and the least decrease of f, relative to ||t||^2, that a swap must bring


def exchange_each(grams: Sequence[np.ndarray], rhs: Sequence[np.ndarray], totals: Sequence[float],
                  kept: Sequence[np.ndarray], swappable: Sequence[np.ndarray], *,
                  sweeps: int = 2) -> tuple[list[np.ndarray], np.ndarray]:
    """Improve every neuron's kept columns by single swaps on its least-squares model.

    Neuron ``m`` is fitted on rows ``A_m`` towards ``t_m``, through ``grams[m] = A_m^T A_m``
    and ``rhs[m] = A_m^T t_m`` over its candidate columns; keeping columns ``K`` leaves
    ``f_m(K) = ||t_m||^2 - c_K^T C_KK^{-1} c_K``. Each swappable position of ``kept[m]`` in
    turn takes the column outside ``K`` that lowers ``f_m`` most, when that beats keeping
    it (the arithmetic of :func:`exchange` for one column and one output,
    :mod:`solvers._exchange_kernels`), for at most ``sweeps`` passes: the count of columns
    is unchanged and ``f_m`` never grows. Neurons run in threads (:mod:`solvers._threads`).

    Parameters
    ----------
    grams : sequence of ndarray (n_m, n_m)
        Each neuron's Gram matrix on its candidate columns (the same array may serve several).
    rhs : sequence of ndarray (n_m,)
    totals : sequence of float
        ``||t_m||^2``: the swaps' least gain is ``1e-12`` of it.
    kept : sequence of ndarray of int
        Indices into the candidate columns, the neuron's support to start from.
    swappable : sequence of ndarray of bool
        Per position of ``kept[m]``: whether it may change (False for a column that
        always stays, such as the bias's).
    sweeps : int, default 2
        At most this many passes (a pass that swaps nothing ends them).

    Returns
    -------
    kept : list of ndarray of int
        The new supports (positions as given, columns replaced).
    decrease : ndarray (n_out,)
        How much each neuron's ``f`` fell.
    """
    from ._exchange_kernels import _swap_columns
    from ._threads import blas_threads, deal, map_threads

    n_out = len(kept)
    if not (len(grams) == len(rhs) == len(totals) == len(swappable) == n_out):
        raise ValueError("exchange_each: grams, rhs, totals, kept and swappable need one entry per neuron")
    if not (isinstance(sweeps, (int, np.integer)) and not isinstance(sweeps, bool) and sweeps >= 0):
        raise ValueError(f"sweeps: got {sweeps!r}, needs an integer >= 0")
    new_kept = [np.array(columns, dtype=np.int64) for columns in kept]
    decrease = np.zeros(n_out)

    def run(neurons: np.ndarray) -> None:
        for m in neurons:
            C = np.ascontiguousarray(grams[m], dtype=np.float64)
            if new_kept[m].size == 0 or C.shape[0] <= new_kept[m].size:
                continue  # nothing to swap in
            ridge = _EACH_RIDGE * max(float(np.mean(np.diag(C))), 1e-300)
            before, after = _swap_columns(C, np.asarray(rhs[m], dtype=np.float64), new_kept[m],
                                          np.asarray(swappable[m], dtype=np.bool_), int(sweeps), ridge,
                                          _EACH_GAIN * float(totals[m]))
            decrease[m] = after - before

    costs = [float(np.asarray(grams[m]).shape[0]) * float(new_kept[m].size) ** 2 for m in range(n_out)]
    parts = [np.asarray(part, dtype=np.int64) for part in deal(costs, blas_threads()) if len(part)]
    map_threads(run, parts, serial_blas=True)  # LAPACK's threaded inverse rounds differently
    return new_kept, decrease
