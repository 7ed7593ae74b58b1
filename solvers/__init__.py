"""Numerical core of nettrim: the Net-Trim layer program and its solvers.

>>> from solvers import LayerProblem, solve
>>> problem = LayerProblem(X, Y, epsilon=0.05 * np.linalg.norm(Y))      # doctest: +SKIP
>>> solution = solve(problem)                                           # doctest: +SKIP
>>> solution.weight, solution.violation                                 # doctest: +SKIP
>>> at_90 = solve_at_sparsity(lambda e: LayerProblem(X, Y, e), 0.9, epsilon=1.0)  # doctest: +SKIP

This package never imports torch at module level.
"""
from __future__ import annotations

from typing import Any

from .path import solve_at_sparsity
from .problem import LayerProblem
from .settings import AdmmSettings
from .solution import Solution

__all__ = ["LayerProblem", "Solution", "AdmmSettings", "solve", "solve_at_sparsity", "METHODS"]

METHODS = ("admm", "cvxpy")


def solve(problem: LayerProblem, method: str = "admm", **options: Any) -> Solution:
    """Solve a layer program.

    Parameters
    ----------
    problem : LayerProblem
    method : {'admm', 'cvxpy'}, default 'admm'
        ``'admm'``: the fast engine (:func:`solvers.admm.solve_admm`; options ``settings``
        (an :class:`AdmmSettings`) or any of its fields (``tol``, ``max_iter``, ``rho``,
        ``alpha``, ``check_every``, ``polish``, ...), ``warm_start``, ``dtype``,
        ``backend`` ('numba', 'numpy' or 'torch'), ``device`` (torch only: None, 'cpu',
        'cuda'), ``prepared``). ``'cvxpy'``: the reference path
        (:func:`solvers.reference.solve_cvxpy`; options ``solver``, ``verbose`` and the
        solver's own).

    Returns
    -------
    Solution
    """
    if not isinstance(problem, LayerProblem):
        raise TypeError(f"problem: got {type(problem).__name__}, needs a solvers.LayerProblem")
    if method == "admm":
        from .admm import solve_admm

        return solve_admm(problem, **options)
    if method == "cvxpy":
        from .reference import solve_cvxpy

        return solve_cvxpy(problem, **options)
    raise ValueError(f"method: got {method!r}, needs one of {METHODS}")
