"""SparseGPT (Frantar & Alistarh, ICML 2023): column-wise OBS with lazy block updates.

For the reconstruction ``||X (W - W')^T||^2`` the Hessian of every row is
``H = X^T X + lambda I`` with ``lambda = damping * mean(diag(X^T X))`` (1% by default).
With ``U`` the upper Cholesky factor of ``H^{-1}`` (``H^{-1} = U^T U``), the columns are
visited left to right; removing the entries of column ``j`` chosen by the mask and
spreading their error over the columns not yet visited is

.. math::  e = (w_{:, j} - \\hat w_{:, j}) / U_{jj}, \\qquad
           W_{:, j:} \\leftarrow W_{:, j:} - e \\, U_{j, j:}

which is OBS with the inverse restricted to the remaining columns, for all rows at once.
Updates inside a block of ``blocksize`` columns are applied at once to the columns after
it (lazy batching). The mask is chosen per block, over all rows, by the smallest
``w^2 / U_jj^2`` (adaptive mask selection). The bias is left as it is, as in the paper;
inputs that never fire (zero columns of ``X``) lose their weights first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import LayerOutcome, LayerTask, Method, require_sparsity

__all__ = ["prune_layer", "sparsegpt_weight", "SparseGPTOptions", "METHOD"]


def _upper_inverse_cholesky(H: np.ndarray) -> np.ndarray:
    """Upper ``U`` with ``H^{-1} = U^T U``."""
    from scipy.linalg import cho_factor, cho_solve, cholesky

    inverse = cho_solve(cho_factor(H, lower=True), np.eye(H.shape[0]))
    return cholesky((inverse + inverse.T) / 2, lower=False)


def sparsegpt_weight(weight: np.ndarray, X: np.ndarray, sparsity: float, *, blocksize: int = 128,
                     damping: float = 0.01) -> np.ndarray:
    """The SparseGPT-pruned weight (``n_out x n_in``, float64) for inputs ``X``."""
    W = np.array(weight, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    H = X.T @ X
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H[np.diag_indices_from(H)] += damping * float(np.mean(np.diag(H)))
    U = _upper_inverse_cholesky(H)
    n_in = W.shape[1]
    for start in range(0, n_in, blocksize):
        stop = min(start + blocksize, n_in)
        block = W[:, start:stop].copy()
        U_block = U[start:stop, start:stop]
        errors = np.zeros_like(block)
        score = block**2 / np.diag(U_block)[None, :] ** 2
        n_remove = int(score.size * sparsity)
        remove = np.zeros(score.shape, dtype=bool)
        if n_remove:
            remove.ravel()[np.argsort(score, axis=None, kind="stable")[:n_remove]] = True
        for j in range(stop - start):
            column = block[:, j]
            kept = np.where(remove[:, j], 0.0, column)
            error = (column - kept) / U_block[j, j]
            block[:, j:] -= np.outer(error, U_block[j, j:])
            block[:, j] = kept  # equal up to rounding; exact zeros where removed
            errors[:, j] = error
        W[:, start:stop] = block
        W[:, stop:] -= errors @ U[start:stop, stop:]
    return W


@dataclass(frozen=True)
class SparseGPTOptions:
    """Options of ``method='sparsegpt'`` (see :func:`prune_layer`)."""

    blocksize: int = 128
    damping: float = 0.01

    def __post_init__(self) -> None:
        if not isinstance(self.blocksize, int) or isinstance(self.blocksize, bool) or self.blocksize < 1:
            raise ValueError(f"blocksize: got {self.blocksize!r}, needs a positive integer")
        if not isinstance(self.damping, (int, float)) or isinstance(self.damping, bool) or not self.damping > 0:
            raise ValueError(f"damping: got {self.damping!r}, needs a number > 0")


def prune_layer(task: LayerTask, *, sparsity: float | None, blocksize: int = 128,
                damping: float = 0.01) -> LayerOutcome:
    """Remove the ``sparsity`` fraction of the layer's weights by SparseGPT.

    Parameters
    ----------
    task : LayerTask
        ``task.X`` gives the Hessian; ``task.weight`` is pruned, ``task.bias`` kept.
    sparsity : float
        Fraction of the weights to remove (required).
    blocksize : int, default 128
        Columns per lazy-update block (also the mask-selection block).
    damping : float, default 0.01
        ``lambda`` relative to the mean diagonal of ``X^T X``.
    """
    require_sparsity("sparsegpt", sparsity)
    SparseGPTOptions(blocksize, damping)  # checked
    weight = sparsegpt_weight(task.weight, task.X, sparsity, blocksize=blocksize, damping=damping)
    bias = None if task.bias is None else task.bias.copy()
    return LayerOutcome(weight=weight, bias=bias, epsilon=float("nan"), status="done",
                        info={"blocksize": blocksize, "damping": damping})


METHOD = Method("sparsegpt", "layer", prune_layer, options=SparseGPTOptions)
