"""The answer of a layer solve, whichever method produced it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Solution"]


@dataclass
class Solution:
    """Result of :func:`solvers.solve` on a :class:`~solvers.LayerProblem`.

    Attributes
    ----------
    weight : ndarray, shape (n_out, n_in)
        The pruned weight, with exact zeros.
    bias : ndarray, shape (n_out,) or None
        The fitted bias, or None when the problem has ``fit_bias=False``.
    status : str
        ``"optimal"`` (converged to the requested tolerance), ``"max_iter"`` (ran out of
        iterations), or for the cvxpy path the solver's own status (``"optimal_inaccurate"``,
        ``"infeasible"``, ...).
    iterations : int
        Iterations the solver made.
    objective : float
        ``problem.objective(weight, bias)`` of the RETURNED weights.
    violation : float
        ``problem.violation(weight, bias)`` of the RETURNED weights: their relative excess
        over the constraints, 0 when feasible.
    primal_residual, dual_residual : float
        Relative primal and dual residuals at the last check (ADMM); NaN for cvxpy.
    solve_time : float
        Wall time in seconds, set-up and factorisation included.
    method : str
        ``"admm"`` or ``"cvxpy"``.
    info : dict
        Method-specific details (ADMM: final ``rho``, ``scale``, ``backend``, ``dtype``,
        ``factor_time``; cvxpy: ``solver``).
    """

    weight: np.ndarray
    bias: np.ndarray | None
    status: str
    iterations: int
    objective: float
    violation: float
    primal_residual: float
    dual_residual: float
    solve_time: float
    method: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def nnz(self) -> int:
        """Number of nonzero weights (the bias is not counted)."""
        return int(np.count_nonzero(self.weight))

    @property
    def density(self) -> float:
        """Fraction of nonzero weights."""
        return self.nnz / self.weight.size

    def __repr__(self) -> str:
        return (
            f"Solution(method={self.method!r}, status={self.status!r}, iterations={self.iterations}, "
            f"objective={self.objective:.6g}, violation={self.violation:.2e}, "
            f"density={self.density:.3f}, solve_time={self.solve_time:.3g}s)"
        )
