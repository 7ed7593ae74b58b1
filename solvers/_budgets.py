"""Two budgets of a layer program known in closed form, which bound a path in ``epsilon``.

:func:`zero_budget`: the smallest budget at which zero weights are feasible (nothing is
kept there or above). :func:`warm_budget`: the smallest budget a given answer meets (the
program is feasible there or above). Both serve :func:`solvers.solve_at_sparsity`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .problem import LayerProblem

__all__ = ["zero_budget", "warm_budget"]


def zero_budget(problem: LayerProblem) -> float | None:
    """The smallest layer budget at which zero weights are feasible, None when none is.

    With ``W = 0`` the response is the bias alone, one constant per neuron: the mean of the
    neuron's targets on its active rows, held at or below its inactive entries' bound
    (``V``, 0 by default), or 0 without a bias. The budget is the norm of what is left. At
    that budget and above, ``W = 0`` is the program's answer: nothing is kept. Only for one
    layer budget and an unpenalised bias (a penalised one has a price of its own).
    """
    if problem.per_neuron or problem.penalize_bias:
        return None
    Y = problem.Y
    active = problem.active
    n_active = active.sum(axis=0)
    if problem.fit_bias:
        bias = np.where(n_active > 0, np.where(active, Y, 0.0).sum(axis=0) / np.maximum(n_active, 1), 0.0)
    else:
        bias = np.zeros(problem.n_out)
    if problem.relu:
        bound = np.zeros_like(Y) if problem.upper is None else problem.upper
        lowest = np.where(active, np.inf, bound).min(axis=0)  # the inactive entries' tightest bound
        if not problem.fit_bias and np.any(lowest < 0):
            return None
        bias = np.minimum(bias, lowest)
    left = np.where(active, Y - bias, 0.0)
    return float(np.linalg.norm(left))


def warm_budget(problem: LayerProblem, warm_start: Any) -> float:
    """The smallest layer budget the warm start meets (its error on the active entries),
    or infinity when it breaks the inactive bound, there is none, or the budgets are per
    neuron. At and above it the program is feasible: a stage there that stops short is
    slow, not infeasible."""
    if warm_start is None or problem.per_neuron:
        return math.inf
    weight, bias = warm_start if isinstance(warm_start, (tuple, list)) else (warm_start, None)
    response = problem.response(weight, bias if problem.fit_bias else None)
    active = problem.active
    if problem.relu:
        bound = 0.0 if problem.upper is None else problem.upper
        if np.any(np.where(active, -np.inf, response - bound) > 0):
            return math.inf
    return float(np.linalg.norm(np.where(active, response - problem.Y, 0.0)))
