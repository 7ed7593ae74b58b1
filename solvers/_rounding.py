"""Rounding an answer to a count of weights within the solver's feasibility tolerance.

The ADMM returns an answer whose violation of its budget is at most
:attr:`~solvers.AdmmSettings.feasibility_tol` (relative to the budget). Along the path in
``epsilon`` a weight leaves the support by shrinking to zero continuously, so an answer
holds weights on their way out; on a small layer several often leave at nearly the same
budget (on the suite's small convolutions, four weights within 0.5% of ``epsilon``),
and then no budget's answer keeps the count a target asks for.

:func:`round_to_count` sets weights to zero, the one that carries least of the response
first (smallest ``|w_mj| ||x_j||``, ``x_j`` the input's column ``j``), each only when the
answer's violation stays within ``slack`` after it, until ``count`` weights are left.
Setting a weight to zero changes one output's response by ``w_mj x_j``, so each step
updates that column's residual and its inequality excess (``O(n_samples)``) and the
violation from the per-column parts. The objective (the l1 norm) only falls; the
violation stays within the tolerance every ADMM answer is held to.
"""
from __future__ import annotations

import numpy as np

from ._blocks import row_blocks
from .problem import LayerProblem, _combine, _excess_parts

__all__ = ["round_to_count"]


def _column_norms(X: np.ndarray) -> np.ndarray:
    """``||x_j||`` of every input column, in float64, a block of rows at a time."""
    squares = np.zeros(X.shape[1])
    for rows in row_blocks(X.shape[0]):
        block = np.asarray(X[rows], dtype=np.float64)
        squares += np.einsum("pj,pj->j", block, block)
    return np.sqrt(squares)


def round_to_count(problem: LayerProblem, weight: np.ndarray, bias: np.ndarray | None, count: int,
                   slack: float) -> tuple[np.ndarray, int]:
    """Set weights of an answer to zero until ``count`` are left or its violation would exceed ``slack``.

    Parameters
    ----------
    problem : LayerProblem
        The program the answer is for (its budget, inequality and data); the l1 objective
        (``group_size`` None).
    weight : ndarray, shape (n_out, n_in)
        The answer's weights; not modified.
    bias : ndarray, shape (n_out,), or None
    count : int
        How many nonzero weights to leave.
    slack : float
        The largest violation (:meth:`LayerProblem.violation`, relative to the budget) the
        rounded answer may have.

    Returns
    -------
    weight : ndarray
        A copy of ``weight`` (float64) with the weights set to zero.
    removed : int
        How many were set to zero (0 when the answer keeps at most ``count`` already, or
        when not one of its weights can go within ``slack``). Candidates are tried in the
        order of ``|w_mj| ||x_j||``; one that would leave the slack is skipped, and the
        rounding ends after as many skips as weights it had to remove.
    """
    if problem.group_size is not None:
        raise ValueError("round_to_count: a group program's answer keeps whole groups; rounding single weights "
                         "would leave its objective's structure")
    weight = np.array(weight, dtype=np.float64)
    bias = None if bias is None else np.asarray(bias, dtype=np.float64)
    surplus = int(np.count_nonzero(weight)) - int(count)
    if surplus <= 0:
        return weight, 0
    outputs, inputs = np.nonzero(weight)
    order = np.argsort(np.abs(weight[outputs, inputs]) * _column_norms(problem.X)[inputs], kind="stable")
    order = order[:2 * surplus]  # at most ``surplus`` removals and as many skips
    touched = np.unique(outputs[order])
    ball, over, kept = problem._excess_by_column(weight, bias, keep=touched)
    responses = {int(m): kept[:, k] for k, m in enumerate(touched)}
    epsilon = np.asarray(problem.epsilon, dtype=np.float64)
    removed = skipped = 0
    for position in order:
        if removed == surplus or skipped == surplus:
            break
        m, j = int(outputs[position]), int(inputs[position])
        trial = responses[m] - np.asarray(problem.X[:, j], dtype=np.float64) * weight[m, j]
        upper = None if problem.upper is None else problem.upper[:, m:m + 1]
        ball_m, over_m = _excess_parts(trial[:, None], problem.Y[:, m:m + 1], problem.relu, upper)
        trial_ball, trial_over = ball.copy(), over.copy()
        trial_ball[m], trial_over[m] = ball_m[0], over_m[0]
        if _combine(trial_ball, trial_over, problem.Y, epsilon) > slack:
            skipped += 1
            continue
        weight[m, j] = 0.0
        responses[m], ball, over = trial, trial_ball, trial_over
        removed += 1
    return weight, removed
