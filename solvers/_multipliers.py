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

It has thousands of variables (a convolution's inactive samples) and a few hundred
constraints, dense, and a vertex of it at most as many nonzeros as constraints; HiGHS
took about half a second on one of the suite's (150 x 5,615). It is solved by column
generation instead: the program on a few of the samples (those the round's multipliers
use, and some spread over the rest), with an elastic slack on every constraint at a
large cost so that any few are feasible; the slacks' constraint prices then price every
sample, and the samples whose reduced cost is negative join, until none is. That is the
whole program's optimum (the elastic one's, which is the program's where its slacks come
out zero; where they do not, the whole program is solved as it is).
"""
from __future__ import annotations

import numpy as np

from ._restricted import Work

__all__ = ["better_multipliers", "LP_COST"]

# an LP's work per entry of its matrix (samples x columns), in flops of a large product (see Work); set
# when HiGHS solved the whole program, kept since (column generation takes a tenth of that or less): the
# polishing attempts' choices made on it are those they were
LP_COST = 5e4
_SPREAD = 2  # samples spread over all of them in the first restricted program, per constraint
_JOINING = 2  # samples that may join at a round, at most, per constraint
_ROUNDS = 30  # rounds of column generation before the whole program is solved as it is
_ELASTIC = 1e6  # a slack's cost, relative to the largest bound |h_i| (or 1)


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
        program = _Program(np.vstack([E_T[penalised], -E_T[penalised]]),
                           np.r_[w[penalised] - fixed[penalised], w[penalised] + fixed[penalised]],
                           E_T[~penalised], -fixed[~penalised], h)
        nu = program.solve(np.flatnonzero(N[inactive, m] > 0))
        if nu is not None:
            N[inactive, m] = nu
    return N


class _Program:
    """``min h^T nu`` over ``nu >= 0`` with ``A_ub nu <= b_ub`` and ``A_eq nu = b_eq``, one
    variable per sample (a column of the matrices), by column generation (module docstring)."""

    def __init__(self, A_ub, b_ub, A_eq, b_eq, h) -> None:
        self.A_ub, self.b_ub, self.A_eq, self.b_eq, self.h = A_ub, b_ub, A_eq, b_eq, h
        self.n_rows, self.n_samples = A_ub.shape[0] + A_eq.shape[0], A_ub.shape[1]
        self.elastic = _ELASTIC * max(1.0, float(np.abs(h).max(initial=0.0)))

    def solve(self, used: np.ndarray) -> np.ndarray | None:
        """The optimum (every sample's ``nu``), or None where the program has no feasible point.
        ``used``: the samples to start with besides those spread over all of them."""
        spread = np.linspace(0, self.n_samples - 1, min(self.n_samples, _SPREAD * self.n_rows)).astype(np.int64)
        chosen = np.union1d(used, spread)
        scale = 1e-9 * max(1.0, float(np.abs(self.h).max(initial=0.0)))  # a reduced cost below -scale: joins
        for _ in range(_ROUNDS):
            result = self._restricted(chosen)
            if result.status != 0:
                break
            reduced = self.h - self.A_ub.T @ result.ineqlin.marginals
            if self.A_eq.shape[0]:
                reduced -= self.A_eq.T @ result.eqlin.marginals
            reduced[chosen] = 0.0
            joining = np.flatnonzero(reduced < -scale)
            if joining.size == 0:
                nu, slack = result.x[:chosen.size], result.x[chosen.size:]
                if float(slack.sum()) <= 1e-9 * max(1.0, float(np.abs(self.b_ub).max(initial=0.0))):
                    answer = np.zeros(self.n_samples)
                    answer[chosen] = np.maximum(nu, 0.0)
                    return answer
                if not np.any(self.h):  # the elastic optimum is the least violation: none is feasible
                    return None
                break  # the slacks' cost may be too low for these bounds: the whole program decides
            count = min(joining.size, _JOINING * self.n_rows)
            chosen = np.union1d(chosen, joining[np.argpartition(reduced[joining], count - 1)[:count]])
        return self._whole()

    def _restricted(self, chosen: np.ndarray):
        """The program on the samples ``chosen``, each constraint with an elastic slack."""
        from scipy.optimize import linprog

        n_ub, n_eq = self.A_ub.shape[0], self.A_eq.shape[0]
        A_ub = np.hstack([self.A_ub[:, chosen], -np.eye(n_ub), np.zeros((n_ub, 2 * n_eq))])
        A_eq = np.hstack([self.A_eq[:, chosen], np.zeros((n_eq, n_ub)), np.eye(n_eq), -np.eye(n_eq)])
        cost = np.r_[self.h[chosen], np.full(n_ub + 2 * n_eq, self.elastic)]
        return linprog(cost, A_ub=A_ub, b_ub=self.b_ub, A_eq=A_eq if n_eq else None, b_eq=self.b_eq if n_eq else None,
                       bounds=(0.0, None), method="highs-ds")

    def _whole(self) -> np.ndarray | None:
        """The program on every sample, as it is (no slacks)."""
        from scipy.optimize import linprog

        n_eq = self.A_eq.shape[0]
        result = linprog(self.h, A_ub=self.A_ub, b_ub=self.b_ub, A_eq=self.A_eq if n_eq else None,
                         b_eq=self.b_eq if n_eq else None, bounds=(0.0, None), method="highs-ds")
        return np.maximum(result.x, 0.0) if result.status == 0 else None
