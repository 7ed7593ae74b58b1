"""Supports for Net-Trim at a target sparsity: greedy OBS on the ReLU-aware objective.

Net-Trim's program keeps the active entries of a ReLU layer close to the original output
``Y`` and the inactive ones at or below their bound. Its penalty form, the ReLU-aware fit
of :mod:`solvers.refit`,

.. math::  f_m(w) = \\sum_{p \\in \\Omega_m} (z_p - y_p)^2 + \\sum_{p \\notin \\Omega_m} \\max(z_p, 0)^2,

has, at weights whose inactive responses are at or below 0, the Hessian of neuron ``m``'s
own active rows. On the entries ``S_m`` a row still holds,

.. math::  H_m = X_{a, \\Omega_m S_m}^T X_{a, \\Omega_m S_m} / n + \\delta_m I

(``Xa = [X, 1]``, the bias always in ``S_m``; ``delta_m = damping * mean(diag)``). Removing
weight ``q`` of neuron ``m`` costs ``w_q^2 / (2 [H_m^{-1}]_{qq})`` and the rest of the row
compensates by ``-(w_q / [H_m^{-1}]_{qq}) H_m^{-1}[:, q]``: Optimal Brain Surgeon with one
Hessian per neuron instead of L-OBS's one shared ``X^T X``, which counts the rows a neuron
ignores.

The removals run in two stages (:func:`obs_candidates`):

1. Greedy L-OBS (the shared Hessian, :func:`.lobs.prune_path`) removes weights until the
   layer keeps ``widen`` (:data:`WIDEN`, 2, by default) times the target's count, and at
   most :data:`STEP` (a tenth) of the layer's weights more than the target
   (:func:`first_stage`). The same pass goes on to the target:
   the shared Hessian's candidate. Where selecting the kept entries forward counts fewer
   operations than greedy removal (``prune_path``'s ``order="auto"``: on the same
   objective, ``O(n K^2)`` per row for ``K`` kept against ``O(n^3)``; where little is
   kept), the pass selects them forward instead.
2. From the first stage's weights, each neuron's Hessian is formed on the entries its row
   still holds, the remaining removals are allotted over the layer by the costs there
   (each neuron's times how much the next layer reads it, ``task.importance``, where the
   graph tells: :mod:`nettrim.consumers`), and each row removes its share greedily with
   its inverse downdated (:func:`._lobs_kernels.greedy_obs_rows_each`).

The per-neuron Hessians are thus ``widen * (1 - sparsity)`` of the full width on a side:
at 90% a fifth, for a twenty-fifth of the products and far less than that of the
inverses. Below 90% the cap :data:`STEP` binds: at 70% the Hessians are 0.4 of the width
instead of 0.6, for under half the products of the per-neuron equations, and the
second stage's removals, allotted over the layer by the costs at its start, are a third
as many. On the benchmark suite (``benchmarks/compare_methods.py``'s time breakdown, against
``widen`` alone, run just before) that took the supports' time on the VGG-style CNN at
70% from 1.77 to 1.04 s and the default's whole prune to 0.71-0.95 times its time at
50%, where the cap binds most (a median 0.98 over the 30 points, with the mix of
:mod:`nettrim.neuron_choice` now tried at one more of them), and moved the network's
output error by a median factor of 1.003 (0.95-1.12). A per-neuron Hessian is estimated from its
neuron's active rows, fewer than the shared one's; in two stages it decides only the
removals closest to the target. On the suite's networks the network's output error
comes out about the same as with the
per-neuron candidate started from the original weights (``widen = inf``;
``benchmarks/compare_methods.py --methods lobs,nettrim,nettrim-full-width``). A layer
without ReLU has every row active: the shared Hessian's pass straight to the target is its
only candidate (L-OBS itself, or its forward selection where that counts fewer operations).
"""
from __future__ import annotations

import numpy as np

from solvers._threads import blas_threads, deal, map_threads, parallel_launch
from solvers.refit import ActiveSystems, active_systems

from ..types import LayerTask
from ._lobs_kernels import damped_inverse, greedy_obs_rows_each
from .lobs import cheapest, prune_path

__all__ = ["obs_candidates", "first_stage", "neuron_inverse_hessians", "WIDEN", "STEP"]

WIDEN = 2.0  # the first stage keeps this many times the target's weights ...
STEP = 0.1  # ... and at most this share of the layer's weights more than the target
_INVERSE_BYTES = 2**30  # the neurons' inverse Hessians held at once (in chunks beyond this)


def neuron_inverse_hessians(systems: ActiveSystems, n_samples: int, n_cols: int, damping: float,
                            neurons: np.ndarray) -> np.ndarray:
    """``H_m^{-1}`` of the ``neurons`` on the entries they hold (``len x n_cols x n_cols``, float64).

    ``systems`` holds each neuron's normal equations on its active rows over the entries
    ``S_m`` it holds (:func:`solvers.refit.active_systems`; the bias last, when fitted):
    ``systems.gram[m] = Xa_{Omega_m S_m}^T Xa_{Omega_m S_m}``, the same equations the
    ReLU-aware fit reads afterwards. ``H_m`` is that over ``n_samples`` plus the damping.
    Neuron ``neurons[k]``'s inverse sits in the leading ``|S_m|`` rows and columns of
    ``[k]``; the rest, padding, is the identity. Each is made at its own size, so that a
    few wide rows do not make every neuron pay for their width, by LAPACK's inverse from
    the Cholesky factor (exactly symmetric), formed and inverted in one compiled call
    (:func:`._lobs_kernels.damped_inverse`); the neurons are shared out over the cores
    (:func:`solvers._threads.map_threads`), with BLAS on one thread (LAPACK's threaded
    inverse rounds differently). A Hessian that is not positive definite is named by its
    neuron.
    """
    hessians = np.zeros((neurons.size, n_cols, n_cols))
    sizes = np.array([systems.gram[m].shape[0] for m in neurons], dtype=np.int64)

    def invert(positions: np.ndarray) -> None:
        for k in positions:
            if not damped_inverse(hessians[k], systems.gram[neurons[k]], n_samples, damping):
                raise np.linalg.LinAlgError(f"the Hessian of neuron {neurons[k]} is not positive definite")

    map_threads(invert, deal(sizes, blas_threads()), serial_blas=True)
    return hessians


def _neuron_chunks(n_out: int, n_cols: int) -> list[np.ndarray]:
    """Neurons in chunks whose inverse Hessians fit in ``_INVERSE_BYTES``."""
    size = max(1, _INVERSE_BYTES // (8 * n_cols * n_cols))
    return [np.arange(start, min(start + size, n_out)) for start in range(0, n_out, size)]


def _per_neuron_stage(task: LayerTask, start: tuple[np.ndarray, np.ndarray | None], sparsity: float,
                      damping: float, systems: ActiveSystems | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Stage 2 (module docstring): from the first stage's weights ``start``, the removals
    left to reach ``sparsity``, by greedy OBS with each neuron's Hessian on its entries.
    The removals are allotted by the costs times ``task.importance`` (how much the next
    layer reads each neuron) when the task has it.

    ``systems``: the neurons' active-row equations on the entries ``start`` holds
    (:func:`solvers.refit.active_systems`); None when they would not fit in memory at once,
    and then they are formed a chunk of neurons at a time (``_INVERSE_BYTES``), twice: for
    the removal costs, then for the removals (the same numbers either way, to round-off:
    the chunk's equations may be formed the other of :func:`solvers.refit.active_systems`'s
    two ways). Row ``m`` of
    the working array holds the ``w_m`` weights its neuron still has, then its bias, then
    padding.
    """
    weight, bias = start
    fit_bias = bias is not None
    n_out, n_in = weight.shape
    held = [np.flatnonzero(row) for row in weight]
    widths = np.array([columns.size for columns in held], dtype=np.int64)
    n_cols = int(widths.max(initial=0)) + fit_bias
    theta = np.zeros((n_out, n_cols))
    for m, columns in enumerate(held):
        theta[m, :columns.size] = weight[m, columns]
        if fit_bias:
            theta[m, columns.size] = bias[m]
    chunks = _neuron_chunks(n_out, n_cols)

    def inverses_of(neurons: np.ndarray) -> np.ndarray:
        if systems is not None:
            return neuron_inverse_hessians(systems, task.X.shape[0], n_cols, damping, neurons)
        formed = active_systems(task.X, task.Y[:, neurons], weight[neurons] != 0, relu=True, fit_bias=fit_bias,
                                max_bytes=2**62)  # no limit: a chunk is sized to fit (_neuron_chunks)
        return neuron_inverse_hessians(formed, task.X.shape[0], n_cols, damping, np.arange(neurons.size))

    inverses = None
    cost = np.full((n_out, n_cols), np.inf)
    prunable = np.arange(n_cols)[None, :] < widths[:, None]
    for neurons in chunks:
        inverses = inverses_of(neurons)
        diagonal = np.einsum("mii->mi", inverses)
        cost[neurons] = np.where(prunable[neurons], theta[neurons] ** 2 / (2.0 * diagonal), np.inf)
    if task.importance is not None:  # the entries that may not go stay at inf
        cost *= np.where(prunable, task.importance[:, None], 1.0)
    counts = cheapest(cost, int(round(sparsity * weight.size)) - int(n_out * n_in - widths.sum()))[1]
    for neurons in chunks:
        if len(chunks) > 1:  # formed again: only one chunk is held at a time
            inverses = inverses_of(neurons)
        rows = np.ascontiguousarray(theta[neurons])
        with parallel_launch():
            greedy_obs_rows_each(rows, np.ascontiguousarray(inverses), widths[neurons], int(fit_bias), counts[neurons])
        theta[neurons] = rows
    pruned = np.zeros((n_out, n_in))
    for m, columns in enumerate(held):
        pruned[m, columns] = theta[m, :columns.size]
    return pruned, (theta[np.arange(n_out), widths].copy() if fit_bias else None)


def first_stage(sparsity: float, widen: float) -> float:
    """The sparsity at which the first stage (greedy L-OBS) hands over to the per-neuron
    Hessians: the layer keeps ``widen`` times the target's weights, and at most
    :data:`STEP` of its weights more than the target,
    ``max(0, 1 - widen (1 - sparsity), sparsity - STEP)``; ``widen = inf``: 0, the per-neuron
    Hessians from the original weights."""
    if widen == float("inf"):
        return 0.0
    return max(0.0, 1.0 - widen * (1.0 - sparsity), sparsity - STEP)


def obs_candidates(task: LayerTask, sparsity: float, damping: float, widen: float = WIDEN
                   ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray | None]], ActiveSystems | None]:
    """The layer pruned to ``sparsity`` by OBS, exact zeros on the removed entries and the
    rest compensated: ``'layer'``, greedy L-OBS (the shared Hessian), and, for a ReLU
    layer, ``'neuron'``, the two stages of the module docstring (the same L-OBS pass up to
    :func:`first_stage`, then a Hessian per neuron; with ``widen = inf`` the first stage
    removes nothing).

    Also returns, for a ReLU layer, every neuron's active-row equations on the entries the
    first stage kept (:func:`solvers.refit.active_systems`): the per-neuron Hessians are
    formed from them, both candidates' supports lie inside them, so their ReLU-aware fits
    read their equations off them too (None without ReLU, or beyond
    :data:`solvers.refit.SYSTEMS_BYTES`).
    """
    if not task.relu:  # every row active: the shared Hessian's pass is the only candidate
        return {"layer": prune_path(task, [sparsity], damping)[0]}, None
    start, final = prune_path(task, [first_stage(sparsity, widen), sparsity], damping)
    systems = active_systems(task.X, task.Y, start[0] != 0, relu=True, fit_bias=start[1] is not None)
    return {"neuron": _per_neuron_stage(task, start, sparsity, damping, systems), "layer": final}, systems
