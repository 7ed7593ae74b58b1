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
``O(n_columns)``. An accepted swap updates the fit in ``O(n_columns k)``: taking ``g`` out
is a rank-one downdate of ``P``, ``beta``, ``G``, ``r`` and ``F`` by ``P_{:,g} / P_gg``, and
putting ``h`` in borders ``P`` with ``u = P' C_{K',h}`` and ``1 / S_h``, the new column of
``G`` being ``v / S_h`` with ``v = C_{:,h} - G' C_{K',h}``. A pass that follows ``k`` or
more swaps since the last factorisation starts from a fresh one (``C_KK``'s inverse from
its Cholesky factor, then ``G``: ``O(n_columns k^2)``, no more than those swaps' updates
cost), so round-off does not build up.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._lapack import invert_spd

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
    P = block.copy()
    if not invert_spd(P, k):  # round-off made the ridged block indefinite: the general inverse
        P = np.ascontiguousarray(np.linalg.inv(block))
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
    since = 0  # swaps since the last factorisation
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
                schur = C[h, h] + ridge - F[h] + G[h, g] * G[h, g] / pgg
                if schur <= ridge:
                    continue
                correlation = r[h] + G[h, g] * beta[g] / pgg
                gain = correlation * correlation / schur
                if gain > best_gain:
                    best, best_gain = h, gain
            if best >= 0 and best_gain - loss > tol:
                held[kept[g]] = False
                explained = _replace(C, kept, g, best, P, beta, G, r, F, explained, ridge)
                held[best] = True
                swapped = True
                since += 1
        if not swapped:
            break
        if since >= k:
            P, beta, G, r, F, explained = _fit(C, c, kept, ridge)
            since = 0
    return first, explained


@njit(cache=True, nogil=True)
def _replace(C, kept, g, h, P, beta, G, r, F, explained, ridge):
    """Replace the column at position ``g`` by column ``h`` in the fit (in place; module
    docstring): a rank-one downdate, then the bordered inverse. Returns the new explained part."""
    n, k = C.shape[0], kept.size
    pgg, bg = P[g, g], beta[g]
    pg = P[:, g].copy()
    Gg = G[:, g].copy()
    for a in range(k):
        for b in range(k):
            P[a, b] -= pg[a] * pg[b] / pgg
        beta[a] -= pg[a] * bg / pgg
    for j in range(n):
        for a in range(k):
            G[j, a] -= Gg[j] * pg[a] / pgg
        r[j] += Gg[j] * bg / pgg
        F[j] -= Gg[j] * Gg[j] / pgg
    explained -= bg * bg / pgg
    kept[g] = h
    u = G[h].copy()  # P' C_{K',h}, with a zero at position g
    u[g] = 0.0
    s = C[h, h] + ridge - F[h]
    v = np.empty(n)
    for j in range(n):
        total = C[j, h]
        for a in range(k):
            if a != g:
                total -= G[j, a] * C[kept[a], h]
        v[j] = total
    rh = r[h]
    for a in range(k):
        for b in range(k):
            P[a, b] += u[a] * u[b] / s
        P[a, g] = -u[a] / s
        P[g, a] = -u[a] / s
        beta[a] -= u[a] * rh / s
    P[g, g] = 1.0 / s
    beta[g] = rh / s
    for j in range(n):
        for a in range(k):
            G[j, a] -= v[j] * u[a] / s
        G[j, g] = v[j] / s
        r[j] -= v[j] * rh / s
        F[j] += v[j] * v[j] / s
    return explained + rh * rh / s
