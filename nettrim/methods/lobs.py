"""Layer-wise Optimal Brain Surgeon (Dong, Chen, Pan, NeurIPS 2017).

The layer's reconstruction error ``||Xa (theta - theta')^T||^2 / (2n)`` has the Hessian

.. math::  H = X_a^T X_a / n + \\delta I

with ``Xa = [X, 1]`` (the bias is an input fixed at 1; it is updated, never removed) and
``delta = damping * mean(diag(X_a^T X_a / n))``. Removing weight ``q`` of a row costs
``w_q^2 / (2 [H^{-1}]_qq)`` and the rest of the row compensates by
``delta w = -(w_q / [H^{-1}]_qq) H^{-1}[:, q]``; every row shares ``H``.

How many weights each row loses is decided once, globally over the layer, by the costs
at the original weights (the smallest ``sparsity`` fraction of them, as L-OBS ranks the
whole layer). Then:

- ``faithful=False`` (default): each row removes its share greedily, recomputing the costs
  after every removal against the inverse restricted to the row's remaining entries
  (:mod:`._lobs_kernels`, rows in parallel) — the OBS the paper describes.
- ``faithful=True``: as the released code does, each row removes exactly the weights the
  initial ranking chose, in that order, with the full ``H^{-1}`` (never downdated), and
  the removed entries are zeroed at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers._threads import parallel_launch

from ._lobs_kernels import greedy_forward_path, greedy_obs_path, greedy_obs_rows, ranked_obs_path
from .base import LayerOutcome, LayerTask, Method, require_sparsity

ORDERS = ("auto", "backward", "forward", "ranked")  # how prune_path chooses the kept entries
BACKWARD_FLOPS = 0.0  # prune_path's "auto": greedy removals up to this many operations whatever forward counts

__all__ = ["prune_layer", "prune_path", "hessian", "inverse_hessian", "backward_flops", "forward_flops", "ORDERS",
           "BACKWARD_FLOPS", "removal_counts", "cheapest", "LobsOptions", "METHOD"]


def hessian(X: np.ndarray, fit_bias: bool, damping: float) -> np.ndarray:
    """``H = Xa^T Xa / n + delta I`` (float64)."""
    X = np.asarray(X, dtype=np.float64)
    n_samples = X.shape[0]
    Xa = np.hstack([X, np.ones((n_samples, 1))]) if fit_bias else X
    H = Xa.T @ Xa / n_samples
    delta = damping * float(np.mean(np.diag(H)))
    H[np.diag_indices_from(H)] += delta if delta > 0 else 1e-12
    return H


def inverse_hessian(X: np.ndarray, fit_bias: bool, damping: float, H: np.ndarray | None = None) -> np.ndarray:
    """``H^{-1}`` with ``H = Xa^T Xa / n + delta I`` (float64, Cholesky-based; ``H`` when
    the caller has it)."""
    from scipy.linalg import cho_factor, cho_solve

    H = hessian(X, fit_bias, damping) if H is None else H
    inverse = cho_solve(cho_factor(H, lower=True), np.eye(H.shape[0]))
    return (inverse + inverse.T) / 2


def removal_counts(weight: np.ndarray, hinv_diag: np.ndarray, sparsity: float) -> tuple[np.ndarray, np.ndarray]:
    """The globally cheapest ``sparsity`` fraction of the layer's weights at the start.

    ``hinv_diag``: the diagonal of ``H^{-1}`` on the weights' columns, ``(n_in,)`` for one
    Hessian shared by the rows or ``(n_out, n_in)`` for one per row. Returns the boolean
    mask of those weights and the count per row.
    """
    return cheapest(_removal_cost(weight, hinv_diag), int(round(sparsity * weight.size)))


def _removal_cost(weight: np.ndarray, hinv_diag: np.ndarray) -> np.ndarray:
    """``w_q^2 / (2 [H^{-1}]_qq)``: what removing each weight alone costs at the start."""
    return weight**2 / (2.0 * np.broadcast_to(hinv_diag, weight.shape))


def cheapest(cost: np.ndarray, n_remove: int) -> tuple[np.ndarray, np.ndarray]:
    """The mask of the ``n_remove`` smallest entries of ``cost`` (ties by position; ``inf``
    marks an entry that may not go) and how many of each row it holds."""
    chosen = np.zeros(cost.shape, dtype=bool)
    if n_remove > 0:
        chosen.ravel()[np.argsort(cost, axis=None, kind="stable")[:n_remove]] = True
    return chosen, chosen.sum(axis=1).astype(np.int64)


def _faithful(theta: np.ndarray, hinv: np.ndarray, chosen: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Sequential OBS updates with the fixed ``H^{-1}``, rows vectorised: step ``k`` removes
    the ``k``-th cheapest chosen weight of every row that has one."""
    n_in = chosen.shape[1]
    ranked = np.where(chosen, cost, np.inf)
    order = np.argsort(ranked, axis=1, kind="stable")
    counts = chosen.sum(axis=1)
    rows = np.arange(theta.shape[0])
    for step in range(int(counts.max(initial=0))):
        active = rows[counts > step]
        q = order[active, step]
        factor = theta[active, q] / hinv[q, q]
        theta[active] -= factor[:, None] * hinv[q]
    theta[:, :n_in][chosen] = 0.0
    return theta


def _rows(task: LayerTask) -> np.ndarray:
    """The layer's rows ``[W, b]`` (float64, a copy)."""
    theta = np.hstack([task.weight, task.bias[:, None]]) if task.bias is not None else task.weight
    return np.array(theta, dtype=np.float64, order="C", copy=True)


def backward_flops(n_cols: int, removals: np.ndarray) -> float:
    """Floating-point operations of greedy removals (:func:`._lobs_kernels.greedy_obs_path`):
    a removal from a row holding ``k`` entries downdates its ``k x k`` inverse, so
    ``removals[m]`` of row ``m``'s ``n_cols`` cost ``2/3 (n^3 - (n - R_m)^3)``."""
    removals = np.asarray(removals, dtype=np.float64)
    return float(np.sum(2.0 / 3.0 * (n_cols**3 - (n_cols - removals) ** 3)))


def forward_flops(n_cols: int, kept: np.ndarray) -> float:
    """Floating-point operations of forward selection (:func:`._lobs_kernels.greedy_forward_path`)
    up to ``kept[m]`` entries of each row: ``n K^2`` per row, and ``2 n^2`` for its ``H w``."""
    kept = np.asarray(kept, dtype=np.float64)
    return float(np.sum(n_cols * kept**2 + 2.0 * n_cols**2))


def prune_path(task: LayerTask, sparsities: list[float] | tuple[float, ...],
               damping: float = 1e-4, order: str = "auto") -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Greedy OBS at each of the increasing ``sparsities``, in one pass.

    The rows lose the counts of :func:`removal_counts` (the globally cheapest weights at the
    start). ``order="backward"``: greedy L-OBS, the same weights and biases as
    :func:`prune_layer` at each sparsity (greedy removal never revisits a choice) for the
    cost of the last one, ``O(n_out n^3)`` for rows of ``n`` entries. ``"forward"``: each
    row's kept entries chosen by forward selection on the same objective
    ``(theta - w)^T H (theta - w)``, one at a time the entry that lowers it most, each level
    the least-squares row on its support (:func:`._lobs_kernels.greedy_forward_path`),
    ``O(n_out n K^2)`` for ``K`` kept: far cheaper when few are kept. ``"auto"``: the order
    that counts fewer floating-point operations (backward where both count the same, or
    where backward counts at most :data:`BACKWARD_FLOPS`, 0 by default: ``inf`` forces
    greedy removal); the count, not the clock, decides, so the answer does not depend on
    the machine. Backward where little is removed, forward where little is kept.
    ``"ranked"``: the same counts, each row removing its entries in the order of their
    costs at the start, compensated with the fixed ``H^{-1}`` (L-OBS's released code,
    :func:`prune_layer` with ``faithful=True``, at each sparsity), ``O(n_out n^2)`` for
    the whole path: no removal is chosen again after another, so its supports are rougher
    than greedy removal's, for a fraction of the cost.
    """
    if any(b < a for a, b in zip(sparsities, sparsities[1:])):
        raise ValueError(f"sparsities: got {list(sparsities)}, needs them in increasing order")
    if order not in ORDERS:
        raise ValueError(f"order: got {order!r}, needs one of {ORDERS}")
    fit_bias = task.bias is not None
    H = hessian(task.X, fit_bias, damping)
    hinv = inverse_hessian(task.X, fit_bias, damping, H)
    n_in = task.weight.shape[1]
    diag = np.diag(hinv)[:n_in]
    cost = _removal_cost(task.weight, diag)
    ranked_rows = np.argsort(cost, axis=None, kind="stable") // n_in  # one ranking serves every level
    counts = np.array([np.bincount(ranked_rows[:int(round(sparsity * cost.size))], minlength=cost.shape[0])
                       for sparsity in sparsities], dtype=np.int64).reshape(len(sparsities), -1)
    rows, n_cols = _rows(task), n_in + fit_bias
    if order == "ranked":
        ranking = np.argsort(cost, axis=1, kind="stable")
        with parallel_launch():
            levels = ranked_obs_path(rows, np.ascontiguousarray(hinv), np.ascontiguousarray(ranking), counts)
        return [(np.ascontiguousarray(level[:, :n_in]), level[:, n_in].copy() if fit_bias else None)
                for level in levels]
    backward = backward_flops(n_cols, counts[-1])
    if order == "backward" or (order == "auto" and (backward <= BACKWARD_FLOPS
                                                     or backward <= forward_flops(n_cols, n_in - counts[0]))):
        with parallel_launch():
            levels = greedy_obs_path(rows, np.ascontiguousarray(hinv), n_in, counts)
    else:
        targets = np.ascontiguousarray(rows @ H)
        with parallel_launch():
            levels = greedy_forward_path(targets, np.ascontiguousarray(H), n_in, n_in - counts)
    return [(np.ascontiguousarray(level[:, :n_in]), level[:, n_in].copy() if fit_bias else None) for level in levels]


@dataclass(frozen=True)
class LobsOptions:
    """Options of ``method='lobs'`` (see :func:`prune_layer`)."""

    faithful: bool = False
    damping: float = 1e-4

    def __post_init__(self) -> None:
        if not isinstance(self.faithful, bool):
            raise ValueError(f"faithful: got {self.faithful!r}, needs True or False")
        if not isinstance(self.damping, (int, float)) or isinstance(self.damping, bool) or not self.damping >= 0:
            raise ValueError(f"damping: got {self.damping!r}, needs a number >= 0")


def prune_layer(task: LayerTask, *, sparsity: float | None, faithful: bool = False,
                damping: float = 1e-4) -> LayerOutcome:
    """Remove the ``sparsity`` fraction of the layer's weights by L-OBS.

    Parameters
    ----------
    task : LayerTask
        ``task.X`` gives the Hessian; the original weights are the starting point.
    sparsity : float
        Fraction of the weights to remove (required).
    faithful : bool, default False
        Follow the released code (fixed ranking, fixed inverse) instead of greedy OBS with
        downdated inverses.
    damping : float, default 1e-4
        ``delta`` relative to the mean diagonal of ``Xa^T Xa / n``.
    """
    require_sparsity("lobs", sparsity)
    LobsOptions(faithful, damping)  # checked
    fit_bias = task.bias is not None
    hinv = inverse_hessian(task.X, fit_bias, damping)
    n_in = task.weight.shape[1]
    theta = _rows(task)
    diag = np.diag(hinv)[:n_in]
    chosen, counts = removal_counts(task.weight, diag, sparsity)
    if faithful:
        theta = _faithful(theta, hinv, chosen, _removal_cost(task.weight, diag))
    else:
        with parallel_launch():
            greedy_obs_rows(theta, np.ascontiguousarray(hinv), n_in, counts)
    weight = theta[:, :n_in]  # removed entries are exact zeros in both variants
    return LayerOutcome(weight=np.ascontiguousarray(weight), bias=theta[:, n_in].copy() if fit_bias else None,
                        epsilon=float("nan"), status="done", info={"faithful": faithful, "damping": damping})


METHOD = Method("lobs", "layer", prune_layer, options=LobsOptions)
