"""Better multipliers for a ReLU round's dual point: one small linear program per neuron.

A polishing round (:mod:`solvers._polish`) bounds the optimum from below by the dual of
the program at its own multipliers: ``z = -N`` on the active entries and ``nu = N >= 0``
on the inactive ones, each neuron's divided by its largest ``|g_j| / w_j``
(``g = Xa^T N``) to make them feasible. Where a neuron's bounds are degenerate (many of
them tight at once: a neuron with few active samples and weights near zero has every
inactive bound tight), its ``nu`` is one of many, the least-distance kernel's choice may
leave some ``|g_j|`` well above ``w_j``, and the division then costs the dual more than
the program's true gap.

For a neuron ``m`` with the active part ``z`` fixed, any ``nu >= 0`` with

.. math::  |c_j + (E^T \\nu)_j| \\le w_j \\; (w_j > 0), \\qquad c_j + (E^T \\nu)_j = 0 \\; (w_j = 0)

(``c = -M^T z``, the active rows' part of ``g``; ``E`` the inactive rows) makes a
feasible dual point without division, and the least ``h^T nu`` (``h`` the bounds, 0 or the
cascade's ``V``) the best one for that ``z``. That is a linear program in the inactive
samples' multipliers with two constraints per column, solved by HiGHS (through scipy).
"""
from __future__ import annotations

import numpy as np

from ._restricted import Work

__all__ = ["better_multipliers", "LP_COST"]

LP_COST = 5e4  # an LP's work per entry of its matrix (samples x columns), in flops of a large product (see Work)


def better_multipliers(Xa: np.ndarray, N: np.ndarray, active: np.ndarray, V: np.ndarray | None,
                       bound: np.ndarray, neurons: np.ndarray, work: Work, flops_limit: float = np.inf) -> np.ndarray:
    """``N`` with the inactive entries of ``neurons`` replaced by the multipliers of the
    module docstring's program (a new array).

    Parameters
    ----------
    Xa : ndarray (n_samples, n_cols)
        The scaled input with its bias column.
    N : ndarray (n_samples, n_out)
        The round's ``(R - Y) / t`` on the active entries and ``nu`` on the inactive ones.
    active : ndarray of bool (n_samples, n_out)
    V : ndarray (n_samples, n_out) or None
        The inactive entries' bounds (None: 0).
    bound : ndarray (n_cols, n_out)
        Each weight's l1 weight ``w_j`` (0: unpenalised).
    neurons : ndarray of int
        The neurons to solve for; a neuron whose program is infeasible keeps its ``nu``.
    work : Work
        Each program's work (``LP_COST`` per entry of its matrix) is added.
    flops_limit : float, default inf
        No program is started that would take ``work`` past this.
    """
    from scipy.optimize import linprog

    N = N.copy()
    for m in neurons:
        inactive = np.flatnonzero(~active[:, m])
        cost = LP_COST * inactive.size * Xa.shape[1]
        if inactive.size == 0 or work.flops + cost > flops_limit:
            continue
        work.flops += cost
        rows = np.flatnonzero(active[:, m])
        fixed = Xa[rows].T @ N[rows, m]
        E_T = Xa[inactive].T
        w = bound[:, m]
        penalised = w > 0
        h = np.zeros(inactive.size) if V is None else V[inactive, m]
        result = linprog(h, A_ub=np.vstack([E_T[penalised], -E_T[penalised]]),
                         b_ub=np.r_[w[penalised] - fixed[penalised], w[penalised] + fixed[penalised]],
                         A_eq=E_T[~penalised] if (~penalised).any() else None,
                         b_eq=-fixed[~penalised] if (~penalised).any() else None,
                         bounds=(0.0, None), method="highs-ds")
        if result.status == 0:
            N[inactive, m] = np.maximum(result.x, 0.0)
    return N
