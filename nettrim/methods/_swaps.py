"""Net-Trim's supports at a target sparsity, improved by single swaps.

Greedy OBS removes one weight at a time and never takes one back: a weight removed early,
when its neighbours could still stand in for it, can be missed once they are gone. After
the fit, each neuron's support is improved by swaps (:func:`solvers.exchange.exchange_each`)
on the least-squares model of its fit: with ``A_m`` the rows the neuron is fitted on
(``[X, 1]``, every row for a layer without ReLU; the rows of ``Omega_m``, where the original
neuron is active, for a ReLU layer) and ``t_m`` their targets,

.. math::  f_m(K) = \\|t_m\\|^2 - c_K^T C_{KK}^{-1} c_K, \\qquad C = A_m^T A_m,\\; c = A_m^T t_m,

each kept weight in turn is replaced by the candidate that lowers ``f_m`` most, when that
beats keeping it, pass after pass until a pass swaps nothing (at most :data:`SWEEPS`). The
count of weights per neuron does not change. A layer without ReLU draws the candidates
from every input (its ``C`` is shared by the neurons: one Gram matrix, which also gives
the least-squares refit of a swapped support). A ReLU layer draws them from the entries
either OBS candidate kept (L-OBS's and the per-neuron Hessians', :mod:`._relu_obs`): their
equations on the active rows are what the fits already form
(:func:`solvers.refit.active_systems`). Wider candidates (every entry the per-neuron stage
started from) lowered the output error a little more for 1.1-1.4x the default's time on
the MNIST-1D MLP, in a probe (two passes at most). For a ReLU layer the model leaves out
the inactive rows (the fit's squared excess over 0): a neuron whose swapped support is
refitted (:func:`solvers.refit.relu_refit`) to a lower objective takes it, any other keeps
its row, so the layer's certified error never grows.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..types import LayerTask

__all__ = ["swap_supports", "SWEEPS"]

SWEEPS = 10  # passes over each neuron's kept weights, at most (a pass that swaps nothing ends them)


def _linear_systems(task: LayerTask) -> Any:
    """A layer without ReLU: every neuron's equations on every input and every row, one
    Gram matrix shared by the neurons (as :class:`solvers.refit.ActiveSystems`, for the
    swaps and for the refit of the swapped supports)."""
    from solvers.refit import ActiveSystems

    X, Y = np.ascontiguousarray(task.X, dtype=np.float64), np.asarray(task.Y, dtype=np.float64)
    Xa = np.hstack([X, np.ones((X.shape[0], 1))]) if task.bias is not None else X
    gram, rhs = Xa.T @ Xa, Xa.T @ Y
    n_out = Y.shape[1]
    return ActiveSystems([np.arange(X.shape[1])] * n_out, [gram] * n_out, list(rhs.T))


def swap_supports(task: LayerTask, weight: np.ndarray, bias: np.ndarray | None, objective: np.ndarray,
                  candidates: np.ndarray | None = None, systems: Any = None,
                  sweeps: int = SWEEPS) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, dict]:
    """The fitted rows ``(weight, bias)`` with every neuron's support improved by swaps
    (module docstring), where the swapped support's fit lowers its objective.

    Parameters
    ----------
    task : LayerTask
    weight, bias : ndarray
        The fitted rows (zeros off the supports).
    objective : ndarray (n_out,)
        Their fitted objectives ``f_m`` (:func:`solvers.refit.relu_refit`).
    candidates : ndarray of bool (n_out, n_in), optional
        A ReLU layer's candidate entries (holding each support); ignored without ReLU.
    systems : ActiveSystems, optional
        The active rows' equations on ``candidates`` (:func:`solvers.refit.active_systems`),
        formed here when None.
    sweeps : int, default :data:`SWEEPS`

    Returns
    -------
    weight, bias, objective, info
        ``info``: ``swapped`` (neurons whose row changed) and ``swap_decrease`` (the
        relative decrease of the summed objective).
    """
    from solvers.exchange import exchange_each
    from solvers.refit import active_systems, relu_refit

    fit_bias = bias is not None
    support = weight != 0
    Y = np.asarray(task.Y, dtype=np.float64)
    if task.relu:
        candidates = support if candidates is None else (candidates | support)
        if systems is None:
            systems = active_systems(task.X, task.Y, candidates, relu=True, fit_bias=fit_bias)
        if systems is None:  # more than solvers.refit.SYSTEMS_BYTES of equations: the rows stay
            return weight, bias, objective, {"swapped": 0, "swap_decrease": 0.0}
        totals = np.einsum("pm,pm->m", np.where(Y > 0, Y, 0.0), Y)
    else:
        systems, totals = _linear_systems(task), np.einsum("pm,pm->m", Y, Y)
    columns = systems.columns
    kept, swappable = [], []
    for m, held in enumerate(columns):
        positions = np.flatnonzero(support[m, held])
        kept.append(np.append(positions, held.size) if fit_bias else positions)  # the bias: last, never swapped
        swappable.append(np.arange(kept[-1].size) < positions.size)
    new_kept, _ = exchange_each(systems.gram, systems.rhs, totals, kept, swappable, sweeps=sweeps)
    changed = np.array([not np.array_equal(a, b) for a, b in zip(kept, new_kept)], dtype=bool)
    info = {"swapped": 0, "swap_decrease": 0.0}
    if not changed.any():
        return weight, bias, objective, info
    index = np.flatnonzero(changed)
    new_support = np.zeros((index.size, weight.shape[1]), dtype=bool)
    for i, m in enumerate(index):
        held = columns[m]
        chosen = new_kept[m][:-1] if fit_bias else new_kept[m]
        new_support[i, held[chosen]] = True
    fit = relu_refit(task.X, Y[:, index], new_support, relu=task.relu, fit_bias=fit_bias,
                     systems=systems.subset(index))
    better = fit.objective < objective[index]
    taken = index[better]
    before = float(np.sum(objective))
    weight, objective = weight.copy(), objective.copy()
    weight[taken] = fit.weight[better]
    objective[taken] = fit.objective[better]
    if fit_bias:
        bias = bias.copy()
        bias[taken] = fit.bias[better]
    info = {"swapped": int(taken.size),
            "swap_decrease": float(1.0 - objective.sum() / max(before, 1e-300))}
    return weight, bias, objective, info
