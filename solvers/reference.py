"""The Net-Trim layer program in cvxpy: the independent reference for the ADMM.

Slow (an interior-point method on ``n_out * n_in`` variables and as many second-order
and linear constraints as there are samples), so meant for small problems and checks.
Clarabel is used by default; SCS when Clarabel is missing or fails.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from .problem import LayerProblem
from .solution import Solution

__all__ = ["solve_cvxpy", "SOLVERS"]

logger = logging.getLogger(__name__)

SOLVERS = ("CLARABEL", "SCS")


def _build(problem: LayerProblem):
    import cvxpy as cp

    X = problem.X.astype(np.float64)
    Y = problem.Y.astype(np.float64)
    weight = cp.Variable((problem.n_out, problem.n_in), name="weight")
    bias = cp.Variable(problem.n_out, name="bias") if problem.fit_bias else None
    response = X @ weight.T
    if bias is not None:
        response = response + cp.reshape(bias, (1, problem.n_out), order="C")

    if problem.group_size is None:
        objective = cp.sum(cp.abs(weight))
    else:  # the group norms over blocks of group_size inputs
        k = problem.group_size
        objective = sum(cp.norm(weight[:, start:start + k], "fro") for start in range(0, problem.n_in, k))
    if problem.penalize_bias:
        objective = objective + cp.sum(cp.abs(bias))

    constraints = []
    active = problem.active
    residual = cp.multiply(active.astype(np.float64), response - Y)
    if problem.per_neuron:
        constraints.append(cp.norm(residual, 2, axis=0) <= problem.epsilon)
    else:
        constraints.append(cp.norm(residual, "fro") <= float(problem.epsilon))
    if problem.relu:
        # column-major flat index of each inactive entry, as cp.vec orders them
        inactive = np.flatnonzero(~active.T)
        if inactive.size:
            upper = np.zeros(Y.shape) if problem.upper is None else problem.upper.astype(np.float64)
            constraints.append(cp.vec(response, order="F")[inactive] <= upper.T.reshape(-1)[inactive])
    return cp.Problem(cp.Minimize(objective), constraints), weight, bias


def solve_cvxpy(problem: LayerProblem, *, solver: str | None = None, verbose: bool = False,
                **solver_options) -> Solution:
    """Solve a :class:`~solvers.LayerProblem` with cvxpy.

    Parameters
    ----------
    problem : LayerProblem
    solver : {'CLARABEL', 'SCS'}, optional
        Default: Clarabel, falling back to SCS when Clarabel is not installed or fails.
    verbose : bool
        Print the solver's log.
    **solver_options
        Passed to ``cvxpy.Problem.solve`` (e.g. ``eps=1e-6`` for SCS).

    Returns
    -------
    Solution
        Weights rounded to exact zeros below ``1e-9 max|w|`` (interior-point answers have
        none); ``objective`` and ``violation`` are those of the returned weights.
    """
    import cvxpy as cp

    if solver is not None and solver.upper() not in SOLVERS:
        raise ValueError(f"solver: got {solver!r}, needs one of {SOLVERS}")
    started = time.perf_counter()
    program, weight_var, bias_var = _build(problem)
    installed = set(cp.installed_solvers())
    candidates = [solver.upper()] if solver else [s for s in SOLVERS if s in installed]
    if not candidates:
        raise RuntimeError(f"cvxpy has none of the solvers {SOLVERS}; pip install clarabel or scs")
    status, used = "solver_error", None
    for name in candidates:
        try:
            program.solve(solver=name, verbose=verbose, **solver_options)
        except cp.error.SolverError as exc:
            logger.warning("cvxpy solver %s failed: %s", name, exc)
            continue
        status, used = program.status, name
        if weight_var.value is not None:
            break
    if weight_var.value is None:
        raise RuntimeError(f"cvxpy could not solve the problem (status {status!r} with {used or candidates})")

    weight = np.array(weight_var.value, dtype=np.float64)
    weight[np.abs(weight) <= 1e-9 * max(np.abs(weight).max(), 1e-300)] = 0.0
    bias = None if bias_var is None else np.array(bias_var.value, dtype=np.float64).reshape(-1)
    stats = program.solver_stats
    return Solution(
        weight=weight,
        bias=bias,
        status=status,
        iterations=int(stats.num_iters or 0) if stats is not None else 0,
        objective=problem.objective(weight, bias),
        violation=problem.violation(weight, bias),
        primal_residual=float("nan"),
        dual_residual=float("nan"),
        solve_time=time.perf_counter() - started,
        method="cvxpy",
        info={"solver": used},
    )
