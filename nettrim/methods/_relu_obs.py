"""Supports for Net-Trim at a target sparsity: greedy OBS on the ReLU-aware objective.

Net-Trim's program keeps the active entries of a ReLU layer close to the original output
``Y`` and the inactive ones at or below their bound. Its penalty form, the ReLU-aware fit
of :mod:`solvers.refit`,

.. math::  f_m(w) = \\sum_{p \\in \\Omega_m} (z_p - y_p)^2 + \\sum_{p \\notin \\Omega_m} \\max(z_p, 0)^2,

has, at the original weights (whose inactive responses are at or below 0), the Hessian
of neuron ``m``'s own active rows:

.. math::  H_m = X_{a, \\Omega_m}^T X_{a, \\Omega_m} / n + \\delta_m I

(``Xa = [X, 1]``; ``delta_m = damping * mean(diag)``). Removing weight ``q`` of neuron ``m``
costs ``w_q^2 / (2 [H_m^{-1}]_{qq})`` and the rest of the row compensates by
``-(w_q / [H_m^{-1}]_{qq}) H_m^{-1}[:, q]``: Optimal Brain Surgeon, with one Hessian per
neuron instead of L-OBS's one shared ``X^T X`` that counts the rows a neuron ignores. The
removals are allotted over the layer by the initial costs, then each row removes its
share greedily with its inverse downdated (:func:`._lobs_kernels.greedy_obs_rows_each`).
A layer without ReLU has every row active: the shared Hessian, as L-OBS.
"""
from __future__ import annotations

import numpy as np

from ..types import LayerTask
from ._lobs_kernels import greedy_obs_rows_each
from .lobs import prune_layer as lobs_layer, removal_counts

__all__ = ["relu_obs_weights", "neuron_inverse_hessians"]


_INVERSE_BYTES = 2**30  # the neurons' inverse Hessians held at once (in chunks beyond this)


def _augmented_transpose(X: np.ndarray, fit_bias: bool) -> np.ndarray:
    """``[X, 1]^T`` in float32."""
    X = np.asarray(X, dtype=np.float32)
    return np.vstack([X.T, np.ones((1, X.shape[0]), dtype=np.float32)]) if fit_bias else np.ascontiguousarray(X.T)


def neuron_inverse_hessians(X: np.ndarray, active: np.ndarray, fit_bias: bool, damping: float,
                            neurons: np.ndarray | None = None, XaT: np.ndarray | None = None) -> np.ndarray:
    """``H_m^{-1}`` of the ``neurons`` (default all; ``len x n_cols x n_cols``, float64) from
    their active rows.

    The products are formed in float32 (they only rank and compensate removals; the
    ReLU-aware fit that follows is float64), the damping and the inverses in float64.
    Each neuron's inverse depends on its own rows only, so any chunking gives the same.
    """
    XaT = _augmented_transpose(X, fit_bias) if XaT is None else XaT
    n_samples, n_cols = XaT.shape[1], XaT.shape[0]
    neurons = np.arange(active.shape[1]) if neurons is None else neurons
    hessians = np.empty((neurons.size, n_cols, n_cols))
    block = np.empty((n_cols, n_cols), dtype=np.float32)
    for k, m in enumerate(neurons):
        rows = XaT[:, active[:, m]]
        np.matmul(rows, rows.T, out=block)
        hessians[k] = block
    hessians /= n_samples
    diagonal = np.einsum("mii->mi", hessians)
    delta = damping * diagonal.mean(axis=1)
    diagonal += np.where(delta > 0, delta, 1e-12)[:, None]  # a writable view: the diagonal itself
    return _cholesky_inverses(hessians)


_BATCH_BYTES = 64 * 2**20  # the matrices inverted by one batched call


def _cholesky_inverses(matrices: np.ndarray) -> np.ndarray:
    """Inverses of symmetric positive definite matrices (in place), by batched Cholesky
    factors and inverses from them (``torch.linalg.cholesky_ex``, ``torch.cholesky_inverse``:
    half the work of a general inverse, and one call for many small matrices instead of a
    loop whose overhead would dominate them)."""
    import torch

    n_cols = matrices.shape[-1]
    size = max(1, _BATCH_BYTES // (8 * n_cols * n_cols))
    for start in range(0, matrices.shape[0], size):
        batch = torch.from_numpy(matrices[start:start + size])
        factor, info = torch.linalg.cholesky_ex(batch)
        if bool((info != 0).any()):
            index = start + int(torch.nonzero(info)[0, 0])
            raise np.linalg.LinAlgError(f"the Hessian of neuron {index} is not positive definite")
        batch.copy_(torch.cholesky_inverse(factor))
    return matrices


def _neuron_chunks(n_out: int, n_cols: int) -> list[np.ndarray]:
    """Neurons in chunks whose inverse Hessians fit in ``_INVERSE_BYTES``."""
    size = max(1, _INVERSE_BYTES // (8 * n_cols * n_cols))
    return [np.arange(start, min(start + size, n_out)) for start in range(0, n_out, size)]


def relu_obs_weights(task: LayerTask, sparsity: float, damping: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The layer pruned to ``sparsity`` by greedy OBS on the ReLU-aware objective (module
    docstring); exact zeros on the removed entries, the rest compensated.

    When the neurons' inverse Hessians do not fit in ``_INVERSE_BYTES`` at once, they are
    formed a chunk of neurons at a time, twice: for the removal costs, then for the
    removals (the same numbers either way).
    """
    if not task.relu:  # every row active: the shared Hessian, L-OBS itself
        pruned = lobs_layer(task, sparsity=sparsity, damping=damping)
        return pruned.weight, pruned.bias
    fit_bias = task.bias is not None
    n_out, n_in = task.weight.shape
    theta = np.hstack([task.weight, task.bias[:, None]]) if fit_bias else np.array(task.weight, copy=True)
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    active, XaT = np.asarray(task.Y) > 0, _augmented_transpose(task.X, fit_bias)
    chunks = _neuron_chunks(n_out, n_in + fit_bias)
    inverses = None
    diagonal = np.empty((n_out, n_in))
    for neurons in chunks:
        inverses = neuron_inverse_hessians(task.X, active, fit_bias, damping, neurons, XaT)
        diagonal[neurons] = np.einsum("mii->mi", inverses)[:, :n_in]
    counts = removal_counts(task.weight, diagonal, sparsity)[1]
    for neurons in chunks:
        if len(chunks) > 1:  # formed again: only one chunk is held at a time
            inverses = neuron_inverse_hessians(task.X, active, fit_bias, damping, neurons, XaT)
        rows = np.ascontiguousarray(theta[neurons])
        greedy_obs_rows_each(rows, np.ascontiguousarray(inverses), n_in, counts[neurons])
        theta[neurons] = rows
    return np.ascontiguousarray(theta[:, :n_in]), (theta[:, n_in].copy() if fit_bias else None)

