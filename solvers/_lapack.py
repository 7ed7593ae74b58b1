"""Cholesky factors and triangular solves of small dense systems, straight from LAPACK,
and the two BLAS products of a neuron's normal equations, for compiled kernels.

The polish of a ReLU layer (:mod:`solvers._bounded`) factors and solves thousands of
systems of a few to a few hundred unknowns, one neuron and one step at a time. The
``scipy.linalg`` functions check and convert their arguments on every call, which costs
several times such a solve (about 10 µs against 2 µs at 20 unknowns). These functions call
the same LAPACK routines (``dpotrf``, ``dpotrs``, ``dtrtrs``) with the arguments
``scipy.linalg`` passes for a C-ordered factor, so the answers are the same bit for bit,
and skip the checks: the arguments must be finite float64 arrays, and the factor ``L`` a
C-contiguous lower triangle. Empty systems (no unknown, or no right-hand side) give
empty answers, as in ``scipy.linalg``.

:func:`invert_spd` and :func:`solve_spd` are for compiled kernels (numba): the inverse of a
symmetric positive definite matrix, and the solution of a system with one, from its
Cholesky factor (``dpotrf``, then ``dpotri`` or ``dpotrs``), called without the GIL.
:func:`gram_into` and :func:`product_into` are too: ``B B^T`` by BLAS's symmetric rank-k
update (``dsyrk``, what numpy's ``B @ B.T`` calls) and ``B x`` (``dgemv``), from SciPy's BLAS.
A kernel that forms a neuron's equations with them holds no GIL from its rows to its
system, where numpy's products would each take it back on return: with several threads
forming equations at once, those hand-overs, not the products, set the pace on narrow
layers.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address
from scipy.linalg import LinAlgError, lapack

__all__ = ["cholesky_lower", "cho_solve_lower", "solve_lower", "solve_lower_transposed", "invert_spd", "solve_spd",
           "gram_into", "product_into"]

_potrf, _potrs, _trtrs = lapack.dpotrf, lapack.dpotrs, lapack.dtrtrs

# the same LAPACK, callable from compiled kernels without the GIL: declared by symbol name,
# so that the kernels that call them can be cached
for _routine in ("dpotrf", "dpotri", "dpotrs"):
    llvm.add_symbol("nettrim_" + _routine, get_cython_function_address("scipy.linalg.cython_lapack", _routine))
_FORTRAN_CALL = types.void(*[types.voidptr] * 5)
_dpotrf = types.ExternalFunction("nettrim_dpotrf", _FORTRAN_CALL)  # (uplo, n, a, lda, info)
_dpotri = types.ExternalFunction("nettrim_dpotri", _FORTRAN_CALL)
# (uplo, n, nrhs, a, lda, b, ldb, info)
_dpotrs = types.ExternalFunction("nettrim_dpotrs", types.void(*[types.voidptr] * 8))
for _routine in ("dsyrk", "dgemv"):
    llvm.add_symbol("nettrim_" + _routine, get_cython_function_address("scipy.linalg.cython_blas", _routine))
# (uplo, trans, n, k, alpha, a, lda, beta, c, ldc)
_dsyrk = types.ExternalFunction("nettrim_dsyrk", types.void(*[types.voidptr] * 10))
# (trans, m, n, alpha, a, lda, x, incx, beta, y, incy)
_dgemv = types.ExternalFunction("nettrim_dgemv", types.void(*[types.voidptr] * 11))


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


@njit(cache=True, nogil=True)
def invert_spd(matrix: np.ndarray, size: int) -> bool:
    """Invert, in place, the leading ``size`` rows and columns of the symmetric positive
    definite ``matrix`` (2-D, C-contiguous; the rest is left as it is), for compiled
    kernels: LAPACK's Cholesky factorisation ``H = L L^T`` (``dpotrf``, ``n^3 / 3``
    multiply-adds) and the inverse from it, ``H^{-1} = L^{-T} L^{-1}`` (``dpotri``,
    ``2 n^3 / 3``; a general inverse, ``getrf`` and ``getri``, takes about twice that),
    in the matrix's own memory, one triangle computed and mirrored (exactly symmetric).
    Returns False, the block left factored in part, when it is not positive definite.
    OpenBLAS's threaded ``dpotri`` rounds differently from its single-threaded one: call
    it with BLAS on one thread where the answers must not depend on the thread count."""
    if not matrix.flags.c_contiguous:
        raise ValueError("invert_spd: the matrix must be C-contiguous (LAPACK reads it with its row length)")
    if size == 0:
        return True
    # C order is Fortran's transpose, and the block symmetric: LAPACK's lower triangle is C's upper one
    lower = np.array([76], dtype=np.uint8)  # 'L'
    n = np.array([size], dtype=np.int32)
    lda = np.array([matrix.shape[1]], dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    _dpotrf(lower.ctypes, n.ctypes, matrix.ctypes, lda.ctypes, info.ctypes)
    if info[0] != 0:
        return False
    _dpotri(lower.ctypes, n.ctypes, matrix.ctypes, lda.ctypes, info.ctypes)
    for a in range(1, size):
        for b in range(a):
            matrix[a, b] = matrix[b, a]
    return True


@njit(cache=True, nogil=True)
def solve_spd(matrix: np.ndarray, rhs: np.ndarray) -> bool:
    """Solve ``H x = b`` in place for the symmetric positive definite ``matrix`` (square,
    C-contiguous) and one right-hand side ``rhs`` (1-D, contiguous), for compiled kernels:
    LAPACK's Cholesky factorisation ``H = L L^T`` (``dpotrf``, ``n^3 / 3`` multiply-adds;
    an LU factorisation, what ``np.linalg.solve`` does, takes ``2 n^3 / 3``) and two
    triangular solves (``dpotrs``). ``matrix`` ends up holding the factor in one triangle,
    ``rhs`` the solution. Returns False, ``rhs`` untouched, when ``matrix`` is not positive
    definite. Call it with BLAS on one thread where the answers must not depend on the
    thread count (as :func:`invert_spd`)."""
    if not matrix.flags.c_contiguous or not rhs.flags.c_contiguous:
        raise ValueError("solve_spd: the matrix and right-hand side must be C-contiguous")
    size = matrix.shape[0]
    if size == 0:
        return True
    lower = np.array([76], dtype=np.uint8)  # 'L' (the matrix is symmetric: C's upper triangle, read as Fortran's)
    n = np.array([size], dtype=np.int32)
    one = np.array([1], dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    _dpotrf(lower.ctypes, n.ctypes, matrix.ctypes, n.ctypes, info.ctypes)
    if info[0] != 0:
        return False
    _dpotrs(lower.ctypes, n.ctypes, one.ctypes, matrix.ctypes, n.ctypes, rhs.ctypes, n.ctypes, info.ctypes)
    return info[0] == 0


@njit(cache=True, nogil=True)
def gram_into(block: np.ndarray, gram: np.ndarray) -> None:
    """``gram[:s, :s] = B B^T`` for ``B = block`` (``s x k``, C-contiguous; ``gram`` C-contiguous,
    at least ``s x s``), for compiled kernels: BLAS's symmetric rank-k update (``dsyrk``,
    ``s^2 k / 2`` multiply-adds, half a general product's), one triangle computed and
    mirrored, as numpy computes ``B @ B.T``. With ``k = 0`` the block is zero."""
    if not block.flags.c_contiguous or not gram.flags.c_contiguous:
        raise ValueError("gram_into: the block and the Gram matrix must be C-contiguous")
    size, depth = block.shape
    if size == 0:
        return
    if depth == 0:  # no rows: BLAS may return before it writes
        gram[:size, :size] = 0.0
        return
    # C's (s, k) block is Fortran's (k, s) matrix A, and C's Gram matrix Fortran's transpose:
    # A^T A by the transposed update, in Fortran's lower triangle, C's upper one
    lower, transposed = np.array([76], dtype=np.uint8), np.array([84], dtype=np.uint8)  # 'L', 'T'
    n, k = np.array([size], dtype=np.int32), np.array([depth], dtype=np.int32)
    lda, ldc = np.array([depth], dtype=np.int32), np.array([gram.shape[1]], dtype=np.int32)
    one, zero = np.ones(1), np.zeros(1)
    _dsyrk(lower.ctypes, transposed.ctypes, n.ctypes, k.ctypes, one.ctypes, block.ctypes, lda.ctypes, zero.ctypes,
           gram.ctypes, ldc.ctypes)
    for a in range(1, size):
        for b in range(a):
            gram[a, b] = gram[b, a]


@njit(cache=True, nogil=True)
def product_into(block: np.ndarray, vector: np.ndarray, out: np.ndarray) -> None:
    """``out[:s] = B x`` for ``B = block`` (``s x k``, C-contiguous) and ``x = vector`` (``k``,
    contiguous), for compiled kernels: BLAS's ``dgemv``. With ``k = 0`` it is zero."""
    if not block.flags.c_contiguous or not vector.flags.c_contiguous or not out.flags.c_contiguous:
        raise ValueError("product_into: the block, the vector and the output must be contiguous")
    size, depth = block.shape
    if size == 0:
        return
    if depth == 0:  # no rows: BLAS returns before it writes
        out[:size] = 0.0
        return
    transposed = np.array([84], dtype=np.uint8)  # 'T': C's (s, k) block is Fortran's (k, s) matrix
    m, n = np.array([depth], dtype=np.int32), np.array([size], dtype=np.int32)
    lda, step = np.array([depth], dtype=np.int32), np.ones(1, dtype=np.int32)
    one, zero = np.ones(1), np.zeros(1)
    _dgemv(transposed.ctypes, m.ctypes, n.ctypes, one.ctypes, block.ctypes, lda.ctypes, vector.ctypes, step.ctypes,
           zero.ctypes, out.ctypes, step.ctypes)
