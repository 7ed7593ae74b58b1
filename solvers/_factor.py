"""The ADMM's weight-step operator ``(Xa^T Xa + I)^{-1}``, factored once per problem.

One algorithm for every engine, written against a small array namespace (:class:`ArrayOps`):
:data:`NUMPY_OPS` here (numpy arrays, scipy's Cholesky) and ``TORCH_OPS`` in
:mod:`solvers._torch_kernels` (torch tensors on their device), which imports torch.

- ``n_samples >= n_cols`` (tall): from the Cholesky factor of the Gram matrix
  ``G = Xa^T Xa + I`` (``n_cols x n_cols``), accumulated in float64 over row blocks
  (:mod:`solvers._blocks`), so no float64 copy of a long ``Xa`` is made.
- ``n_samples < n_cols`` (wide): from that of ``K = Xa Xa^T + I``
  (``n_samples x n_samples``), with ``(Xa^T Xa + I)^{-1} = I - Xa^T K^{-1} Xa``.

The inverse is formed once from the factor in float64 (its condition number is at most
``1 + n_cols * gram_target`` after scaling), symmetrised and stored in the iteration's
dtype, then applied as one small product per iteration: triangular solves would go
through another BLAS thread pool inside the loop.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from ._blocks import row_blocks

__all__ = ["ArrayOps", "Factor", "NUMPY_OPS"]


class ArrayOps(Protocol):
    """The array operations the factorisation needs beyond ``@``, ``.T``, ``+=`` and slicing."""

    def float64(self, array: Any) -> Any:
        """``array`` in float64 (no copy when it already is)."""

    def zeros(self, n: int, like: Any) -> Any:
        """An ``n x n`` float64 zero matrix where ``like`` lives."""

    def add_identity(self, matrix: Any) -> None:
        """``matrix += I`` in place."""

    def cholesky_inverse(self, matrix: Any) -> Any:
        """The inverse of a symmetric positive definite float64 matrix, through its Cholesky factor."""

    def cast(self, array: Any, like: Any) -> Any:
        """``array`` in ``like``'s dtype, contiguous."""

    def matmul(self, a: Any, b: Any, out: Any) -> Any:
        """``out = a @ b``."""

    def subtract(self, a: Any, b: Any, out: Any) -> Any:
        """``out = a - b``."""


class _NumpyOps:
    """:class:`ArrayOps` for numpy arrays."""

    def float64(self, array: np.ndarray) -> np.ndarray:
        return array.astype(np.float64, copy=False)

    def zeros(self, n: int, like: np.ndarray) -> np.ndarray:
        return np.zeros((n, n))

    def add_identity(self, matrix: np.ndarray) -> None:
        matrix[np.diag_indices_from(matrix)] += 1.0

    def cholesky_inverse(self, matrix: np.ndarray) -> np.ndarray:
        cholesky = cho_factor(matrix, lower=True, overwrite_a=True, check_finite=False)
        return cho_solve(cholesky, np.eye(matrix.shape[0]), check_finite=False)

    def cast(self, array: np.ndarray, like: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=like.dtype)

    def matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.matmul(a, b, out=out)

    def subtract(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.subtract(a, b, out=out)


NUMPY_OPS = _NumpyOps()


class Factor:
    """``(Xa^T Xa + I)^{-1}`` for the scaled input ``Xa`` (see the module docstring).

    Parameters
    ----------
    Xa : array (n_samples, n_cols)
        The scaled input, numpy array or torch tensor, in the iteration's dtype.
    ops : ArrayOps
        The operations for ``Xa``'s kind of array.
    """

    def __init__(self, Xa: Any, ops: ArrayOps) -> None:
        self.Xa, self.ops = Xa, ops
        n_samples, n_cols = Xa.shape
        self.tall = n_samples >= n_cols
        if self.tall:
            gram = ops.zeros(n_cols, Xa)
            for rows in row_blocks(n_samples):
                block = ops.float64(Xa[rows])
                gram += block.T @ block
        else:
            Xa64 = ops.float64(Xa)
            gram = Xa64 @ Xa64.T
            del Xa64
        ops.add_identity(gram)
        inverse = ops.cholesky_inverse(gram)
        del gram
        self.inverse = ops.cast((inverse + inverse.T) / 2, Xa)

    def ridge(self, Y: Any) -> Any:
        """``(Xa^T Xa + I)^{-1} Xa^T Y``: the starting point without a warm start."""
        if self.tall:
            return self.inverse @ (self.Xa.T @ Y)
        return self.Xa.T @ (self.inverse @ Y)

    def weight_step(self, B: Any, C: Any, Theta: Any, R: Any, work: Any) -> None:
        """``Theta = (Xa^T Xa + I)^{-1} (Xa^T B + C)`` and ``R = Xa Theta``, in place.

        Tall: ``work`` has the shape of ``Theta``. Wide, with ``E = K^{-1}(B - Xa C)``:
        ``Theta = C + Xa^T E`` and ``R = B - E`` (two products as well; ``work`` has the
        shape of ``B``).
        """
        Xa, ops = self.Xa, self.ops
        if self.tall:
            ops.matmul(Xa.T, B, out=work)
            work += C
            ops.matmul(self.inverse, work, out=Theta)
            ops.matmul(Xa, Theta, out=R)
        else:
            ops.matmul(Xa, C, out=work)
            ops.subtract(B, work, out=work)
            ops.matmul(self.inverse, work, out=R)  # R holds E for a moment
            ops.matmul(Xa.T, R, out=Theta)
            Theta += C
            ops.subtract(B, R, out=R)
