"""Inputs whose weights are zero at every optimum, dropped before the ADMM iterates.

A column of ``X`` that is zero on every sample never changes the response ``X W^T + b``,
so a weight on it only adds to the objective; with a fitted, unpenalised bias a constant
column ``c 1`` is the same, since the bias absorbs ``c w`` at no cost. Every optimum of the
program therefore has zero weights on such inputs, and the program without them has the
same optimal value: its answer with zeros put back is an answer of the full program, and
its certificate holds for the full program too (the dropped inputs' gradient is zero).
For the group program a group is dropped only when all of its columns are.

Inputs like these are common in pruning: a ReLU neuron that never fires on the calibration
data feeds zeros to the next layer, and in cascade mode so does every neuron that an
earlier layer's answer switched off.
"""
from __future__ import annotations

import numpy as np

from .problem import LayerProblem
from .solution import Solution

__all__ = ["dead_inputs", "kept_columns", "without_inputs", "warm_start_without", "with_inputs", "restore_inputs"]


def dead_inputs(X: np.ndarray, fit_bias: bool, penalize_bias: bool, group_size: int | None) -> np.ndarray:
    """Boolean mask ``(n_in,)`` of the inputs of ``X`` whose weights are zero at every optimum.

    Zero columns always; constant columns when the bias is fitted and not penalised;
    whole groups only for the group program (``group_size`` not None).
    """
    dead = ~X.any(axis=0)
    if fit_bias and not penalize_bias:  # two reductions, no (n_samples, n_in) temporary
        dead |= X.max(axis=0) == X.min(axis=0)
    if group_size is not None:
        dead = np.repeat(dead.reshape(-1, group_size).all(axis=1), group_size)
    return dead


def kept_columns(dead: np.ndarray, group_size: int | None) -> np.ndarray:
    """The columns the reduced program keeps: those not ``dead``, or the first group when
    every input is dead (a program needs an input; its weights are zeroed on the way back)."""
    live = np.flatnonzero(~dead)
    return live if live.size else np.arange(group_size or 1)


def without_inputs(problem: LayerProblem, dead: np.ndarray) -> LayerProblem:
    """The same program on :func:`kept_columns`."""
    live = kept_columns(dead, problem.group_size)
    return LayerProblem(problem.X[:, live], problem.Y, problem.epsilon, relu=problem.relu, upper=problem.upper,
                        fit_bias=problem.fit_bias, penalize_bias=problem.penalize_bias,
                        group_size=problem.group_size)


def warm_start_without(problem: LayerProblem, dead: np.ndarray, weight: np.ndarray,
                       bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A warm start ``(weight, bias)`` of the full program for the reduced one, with the
    same response: a constant input's part moves into the bias (a zero input has none)."""
    if problem.fit_bias:
        shift = weight[:, dead] @ problem.X[0, dead]
        bias = shift if bias is None else bias + shift
    return weight[:, kept_columns(dead, problem.group_size)], bias


def with_inputs(weight: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """The reduced program's ``weight`` as ``(n_out, n_in)``, zero on every ``dead`` input."""
    full = np.zeros((weight.shape[0], dead.size), dtype=weight.dtype)
    live = np.flatnonzero(~dead)
    if live.size:
        full[:, live] = weight
    return full


def restore_inputs(problem: LayerProblem, solution: Solution, dead: np.ndarray | None) -> Solution:
    """The answer of the program without the ``dead`` inputs as one of ``problem`` (zero
    weights put back, objective and violation on the full program); ``info["screened"]``."""
    if dead is not None and dead.any():
        solution.weight = with_inputs(solution.weight, dead)
        solution.objective = problem.objective(solution.weight, solution.bias)
        solution.violation = problem.violation(solution.weight, solution.bias)
    solution.info["screened"] = 0 if dead is None else int(dead.sum())
    return solution
