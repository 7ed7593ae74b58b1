"""Compiled kernel of :func:`solvers.exchange.exchange_each`: one neuron's support improved
by single swaps on its least-squares model.

For a neuron with Gram matrix ``C`` and right-hand side ``c`` over its candidate columns
(``C = A^T A``, ``c = A^T t`` for the rows ``A`` and target ``t`` it is fitted on), keeping
the columns ``K`` and fitting on them leaves ``f(K) = ||t||^2 - c_K^T C_KK^{-1} c_K``. With
``P = C_KK^{-1}``, the coefficients ``beta = P c_K``, ``G = C_{:,K} P``, the residual
correlations ``r = c - C_{:,K} beta`` and ``F_h = (G C_{K,:})_hh``, taking the kept column
at position ``g`` out raises ``f`` by ``beta_g^2 / P_gg`` and changes

.. math::  r_h' = r_h + G_{hg} \\beta_g / P_{gg}, \\qquad
           S_h = C_{hh} - F_h + G_{hg}^2 / P_{gg}

(``S_h`` the Schur complement of column ``h`` against ``K \\ {g}``); adding column ``h`` then
lowers ``f`` by ``r_h'^2 / S_h``. Each position's best replacement is found in
``O(n_columns)``; an accepted swap refactors the fit (``O(n_columns k^2)``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["_swap_columns"]


@njit(cache=True, nogil=True)
def _fit(C, c, kept, ridge):
    """``P``, ``beta``, ``G``, ``r``, ``F`` and the explained part ``c_K^T beta`` of the fit on ``kept``."""
    k, n = kept.size, C.shape[0]
    block = np.empty((k, k))
    for a in range(k):
        for b in range(k):
            block[a, b] = C[kept[a], kept[b]]
        block[a, a] += ridge
    P = np.linalg.inv(block)
    beta = np.zeros(k)
    for a in range(k):
        for b in range(k):
            beta[a] += P[a, b] * c[kept[b]]
    explained = 0.0
    for a in range(k):
        explained += c[kept[a]] * beta[a]
    CK = np.empty((n, k))
    for h in range(n):
        for a in range(k):
            CK[h, a] = C[h, kept[a]]
    G = CK @ P
    r = c - CK @ beta
    F = np.zeros(n)
    for h in range(n):
        total = 0.0
        for a in range(k):
            total += G[h, a] * CK[h, a]
        F[h] = total
    return P, beta, G, r, F, explained


@njit(cache=True, nogil=True)
def _swap_columns(C, c, kept, swappable, sweeps, ridge, tol):
    """Improve ``kept`` (column indices, in place) by single swaps until no swap lowers
    ``f`` by more than ``tol`` or ``sweeps`` passes are done; only the positions where
    ``swappable`` is True may change (a fixed column, such as the bias, stays). A pass
    takes each swappable position in turn and replaces its column by the one that lowers
    ``f`` most, when that beats keeping it. Returns ``f``'s explained part before and after."""
    n, k = C.shape[0], kept.size
    held = np.zeros(n, dtype=np.bool_)
    for a in range(k):
        held[kept[a]] = True
    P, beta, G, r, F, explained = _fit(C, c, kept, ridge)
    first = explained
    for _ in range(sweeps):
        swapped = False
        for g in range(k):
            if not swappable[g]:
                continue
            pgg = P[g, g]
            if pgg <= 0.0:
                continue
            loss = beta[g] * beta[g] / pgg
            best, best_gain = -1, 0.0
            for h in range(n):
                if held[h]:
                    continue
                schur = C[h, h] - F[h] + G[h, g] * G[h, g] / pgg
                if schur <= ridge:
                    continue
                correlation = r[h] + G[h, g] * beta[g] / pgg
                gain = correlation * correlation / schur
                if gain > best_gain:
                    best, best_gain = h, gain
            if best >= 0 and best_gain - loss > tol:
                held[kept[g]] = False
                kept[g] = best
                held[best] = True
                P, beta, G, r, F, explained = _fit(C, c, kept, ridge)
                swapped = True
        if not swapped:
            break
    return first, explained
