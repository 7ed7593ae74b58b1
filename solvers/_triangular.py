"""Small dense linear algebra for the least-distance kernel (:mod:`solvers._ldp`), compiled.

Triangular solves with the leading rows and columns of a lower factor, a Cholesky
factorisation that reports a singular matrix instead of raising, and the rank-one
update and downdate of a lower Cholesky factor (``R R^T + x x^T`` and ``R R^T - x x^T``
in ``O(n^2)``, LINPACK's rotations), which let the kernel keep a factor from one call to
the next instead of forming it again.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["_backward", "_downdate", "_forward", "_positive_solve", "_rank_one_update"]


@njit(cache=True, nogil=True)
def _forward(L, b):
    """``L^{-1} b`` for a lower triangular ``L`` (its leading ``b.size`` rows and columns)."""
    x = np.empty(b.size)
    for j in range(b.size):
        value = b[j]
        for l in range(j):
            value -= L[j, l] * x[l]
        x[j] = value / L[j, j]
    return x


@njit(cache=True, nogil=True)
def _backward(L, b):
    """``L^{-T} b`` for a lower triangular ``L`` (its leading ``b.size`` rows and columns)."""
    x = np.empty(b.size)
    for j in range(b.size - 1, -1, -1):
        value = b[j]
        for l in range(j + 1, b.size):
            value -= L[l, j] * x[l]
        x[j] = value / L[j, j]
    return x


@njit(cache=True, nogil=True)
def _rank_one_update(R, start, size, x):
    """Make the rows and columns ``start:size`` of the lower factor ``R`` the factor of
    their product plus ``x x^T`` (in place; ``x`` is overwritten): one rotation per
    column, ``O((size - start)^2)``."""
    n = size - start
    for a in range(n):
        p = start + a
        d = R[p, p]
        r = np.sqrt(d * d + x[a] * x[a])
        c, s = r / d, x[a] / d
        R[p, p] = r
        for b in range(a + 1, n):
            q = start + b
            R[q, p] = (R[q, p] + s * x[b]) / c
            x[b] = c * x[b] - s * R[q, p]


@njit(cache=True, nogil=True)
def _downdate(R, size, x):
    """The lower factor of ``R R^T - x x^T`` (the leading ``size`` rows and columns of
    ``R``), a new array, by LINPACK's rotations (``O(size^2)``); ``(False, R)`` when that
    matrix is not (numerically) positive definite."""
    p = _forward(R, x)
    rest = 1.0 - np.dot(p, p)
    if not rest > 1e-12:
        return False, R
    S = np.empty((size, size))
    for i in range(size):  # S^T is the upper factor the rotations work on
        for j in range(size):
            S[j, i] = R[i, j] if j <= i else 0.0
    rho = np.sqrt(rest)
    carried = np.zeros(size)
    for i in range(size - 1, -1, -1):
        r = np.sqrt(rho * rho + p[i] * p[i])
        c, s = rho / r, p[i] / r
        rho = r
        for j in range(i, size):
            value = c * carried[j] + s * S[i, j]
            S[i, j] = c * S[i, j] - s * carried[j]
            carried[j] = value
    return True, S.T.copy()


@njit(cache=True, nogil=True)
def _positive_solve(A, b):
    """``A^{-1} b`` by Cholesky for a symmetric positive definite ``A``; ``(False, b)`` when a
    pivot is not positive (``A`` singular at round-off)."""
    n = b.size
    R = np.zeros((n, n))
    for j in range(n):
        pivot = A[j, j] - np.dot(R[j, :j], R[j, :j])
        if not pivot > 1e-14 * max(A[j, j], 1e-300):
            return False, b
        R[j, j] = np.sqrt(pivot)
        for i in range(j + 1, n):
            R[i, j] = (A[i, j] - np.dot(R[i, :j], R[j, :j])) / R[j, j]
    return True, _backward(R, _forward(R, b))
