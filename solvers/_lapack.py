"""Cholesky factors and triangular solves of small dense systems, straight from LAPACK.

The polish of a ReLU layer (:mod:`solvers._bounded`) factors and solves thousands of
systems of a few to a few hundred unknowns, one neuron and one step at a time. The
``scipy.linalg`` functions check and convert their arguments on every call, which costs
several times such a solve (about 10 µs against 2 µs at 20 unknowns). These functions call
the same LAPACK routines (``dpotrf``, ``dpotrs``, ``dtrtrs``) with the arguments
``scipy.linalg`` passes for a C-ordered factor, so the answers are the same bit for bit,
and skip the checks: the arguments must be finite float64 arrays, and the factor ``L`` a
C-contiguous lower triangle. Empty systems (no unknown, or no right-hand side) give
empty answers, as in ``scipy.linalg``.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import LinAlgError, lapack

__all__ = ["cholesky_lower", "cho_solve_lower", "solve_lower", "solve_lower_transposed"]

_potrf, _potrs, _trtrs = lapack.dpotrf, lapack.dpotrs, lapack.dtrtrs


def cholesky_lower(G: np.ndarray, clean: bool = True) -> np.ndarray:
    """``L`` with ``G = L L^T`` (lower triangular; with ``clean`` False the upper triangle
    holds what ``G`` had there). Raises ``LinAlgError`` when ``G`` is not positive definite."""
    if G.size == 0:  # no unknown (an empty support)
        return np.zeros(G.shape)
    factor, info = _potrf(G, lower=1, clean=int(clean))
    if info != 0:
        raise LinAlgError(f"the {info}-th leading minor is not positive definite" if info > 0
                          else f"illegal value in argument {-info} of dpotrf")
    return factor


def cho_solve_lower(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``G^{-1} b = L^{-T} L^{-1} b`` for the lower Cholesky factor ``L`` of ``G``."""
    if b.size == 0:
        return np.zeros(b.shape)
    x, info = _potrs(L, b, lower=1)
    _check(info, "dpotrs")
    return x


def solve_lower(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``L^{-1} b`` (``L`` C-contiguous, lower triangular: LAPACK reads it as the upper
    triangle ``L^T`` in Fortran order and solves the transposed system)."""
    if b.size == 0:
        return np.zeros(b.shape)
    x, info = _trtrs(L.T, b, lower=0, trans=1)
    _check(info, "dtrtrs")
    return x


def solve_lower_transposed(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``L^{-T} b`` (``L`` C-contiguous, lower triangular)."""
    if b.size == 0:
        return np.zeros(b.shape)
    x, info = _trtrs(L.T, b, lower=0, trans=0)
    _check(info, "dtrtrs")
    return x


def _check(info: int, routine: str) -> None:
    if info > 0:
        raise LinAlgError(f"singular matrix: {routine} met a zero at diagonal {info - 1}")
    if info < 0:
        raise ValueError(f"illegal value in argument {-info} of {routine}")
