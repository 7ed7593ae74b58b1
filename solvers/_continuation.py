"""One ADMM run carried through a sequence of budgets (the stages of :mod:`solvers.path`).

The input is screened, scaled and factored once, the iterates start once (from the warm
start or the ridge solution), and each stage only sets the new scaled budget and inactive
bound on the engine and iterates on from where the last stage stopped: the weights, the
response, both scaled duals and ``rho`` carry over, and the rho and polishing schedules
count iterations from the first stage (failed polishing attempts are held to one
allowance over the whole path). A search stage stops at a loose tolerance without
polishing and reports the kept fraction of the thresholded iterate; a final stage runs
the solver's own tolerance and polishing and returns a :class:`~solvers.Solution`. A
final stage that stops on the ADMM's own test before an attempt has certified it (it
starts near its answer, and often stops at its first check) gets one attempt at that
answer, within the allowance.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import numpy as np

from ._budgets import warm_budget
from ._engine import make_engine
from ._polisher import Polisher
from ._screening import restore_inputs, warm_start_without, without_inputs
from .admm import _finish, _Run, _run, _solution, _start, _warm_parts, screened_inputs
from .problem import LayerProblem
from .settings import AdmmSettings, resolve_dtype
from .solution import Solution

__all__ = ["Continuation"]

_STAGE_TOL = 1e-2  # a search stage's tolerance ...
_STAGE_ITERATIONS = 1000  # ... and iteration cap, where the warm start meets the budget ...
_UNKNOWN_ITERATIONS = 300  # ... and below that budget, where the program may be infeasible
_STAGE_VIOLATION = 0.05  # a stage that stops short with a larger violation reads as infeasible ...
_EDGE_ITERATIONS = 2000  # ... and so does a full stage below that budget not converged within this many


class Continuation:
    """The ADMM state of one path, and its stages.

    Parameters
    ----------
    first : LayerProblem
        The program at the first budget; every later one must share its ``X``, ``Y`` and
        bias (only ``epsilon`` and ``upper`` change).
    settings, warm_start, dtype, backend, device, prepared, **overrides
        As for :func:`solvers.admm.solve_admm`.

    Attributes
    ----------
    iterations : int
        The iterations of every stage so far.
    """

    def __init__(self, first: LayerProblem, settings: AdmmSettings | None = None, *, warm_start: Any = None,
                 dtype: Any = None, backend: str = "numba", device: Any = None, prepared: Any = None,
                 **overrides: Any) -> None:
        self.settings = (AdmmSettings() if settings is None else settings).replace(**overrides)
        dtype = resolve_dtype(dtype)
        self.first, self.backend, self.prepared = first, backend, prepared
        self.dead = screened_inputs(first, self.settings, dtype, backend, prepared)
        reduced = without_inputs(first, self.dead) if self.dead is not None and self.dead.any() else first
        original_warm = warm_start
        if warm_start is not None and reduced is not first:
            warm_start = warm_start_without(first, self.dead, *_warm_parts(first, warm_start))
        self.data, self.engine, self.dtype = make_engine(backend, device, dtype, reduced, self.settings, prepared)
        self.settings = self.settings.for_device(self.engine.device_name)
        self.known_feasible = warm_budget(first, original_warm)
        self.reduced_first, self.warm_start = reduced, warm_start
        self.state = _start(reduced, self.data, self.engine, self.settings, warm_start, self.dtype)
        self.restart = False
        self.iterations = 0
        self.polisher: Polisher | None = None  # one for every stage: failed attempts count over the path

    def _reduced(self, problem: LayerProblem) -> LayerProblem:
        if problem.X is not self.first.X or problem.Y is not self.first.Y:
            raise ValueError("problem_at: every budget's program must share the first one's X and Y")
        if self.reduced_first is self.first:
            return problem
        reduced = copy.copy(self.reduced_first)  # its input is sliced once; the bounds are the new ones
        reduced.epsilon, reduced.upper = problem.epsilon, problem.upper
        return reduced

    def _weights(self, reduced: LayerProblem) -> tuple[np.ndarray, np.ndarray | None]:
        """The thresholded iterate as ``(weight, bias)`` of the reduced program, in its units."""
        return _finish(reduced, self.data, self.engine, self.state, self.dtype, None)

    def _set_bounds(self, reduced: LayerProblem) -> None:
        data = self.data
        data.epsilon = reduced.epsilon / data.scale
        data.V = None if reduced.upper is None else (reduced.upper / data.scale).astype(self.dtype)
        self.engine.set_bounds(data.epsilon, data.V)

    def _certified(self, run: _Run) -> _Run:
        """A final stage that stopped on the ADMM's own test before an attempt certified
        it gets one more attempt at its answer (within the path's allowance for failed
        attempts): a stage that starts near its answer often stops at its first check,
        where the solver's schedule would only then attempt. ``run`` with the polished
        answer when it certifies."""
        if not self.polisher.last_due(run.iterations):
            return run
        attempt = self.polisher.attempt(self.engine, self.state, run.iterations)
        if attempt.Theta is None:
            self.polisher.failed(run.iterations, attempt)
            return run
        return dataclasses.replace(run, polished=attempt)

    def stage(self, problem: LayerProblem, final: bool) -> tuple[float | None, Solution | None]:
        """Iterate on at ``problem``'s budget: ``(kept fraction or None when infeasible,
        the Solution of a final stage or None)``. A stage that stops short of the tolerance
        with a violation above 5% reads as infeasible, unless the warm start meets the
        budget (:func:`~solvers._budgets.warm_budget`): then the program only converges slowly,
        and the stage reads the support it has."""
        feasible = not problem.per_neuron and float(problem.epsilon) >= self.known_feasible
        started = time.perf_counter()
        reduced = self._reduced(problem)
        self._set_bounds(reduced)
        settings = self.settings
        capped = final and not feasible and not problem.per_neuron  # next to a cascade layer's floor, perhaps
        if capped:
            settings = settings.replace(max_iter=min(_EDGE_ITERATIONS, settings.max_iter))
        if not final:  # a linear layer's polish is cheap and gives the exact support: kept there
            cap = _STAGE_ITERATIONS if feasible else _UNKNOWN_ITERATIONS
            settings = settings.replace(tol=max(_STAGE_TOL, settings.tol), polish=settings.polish and not problem.relu,
                                        max_iter=min(cap, settings.max_iter))
        if self.restart:  # after a stage that did not converge: fresh duals from the last good weights
            self.state = _start(self.reduced_first, self.data, self.engine, self.settings, self.warm_start,
                                self.dtype)
        # each stage may move rho again from its first check (the wait doubles within a stage)
        self.state.last_change, self.state.adapt_interval = self.iterations, settings.check_every
        self.state.feasible = feasible
        if self.polisher is None:
            self.polisher = Polisher(reduced, self.data, settings)
        else:
            self.polisher.stage(reduced, settings)
        run = _run(self.engine, self.state, self.polisher, settings, done=self.iterations)
        self.iterations = run.iterations
        if final and run.status == "optimal" and run.polished is None:
            run = self._certified(run)
        # a stage that ran out of iterations may have been infeasible, and its duals grown
        # without bound: the next stage starts afresh from the last converged stage's weights
        self.restart = run.status != "optimal"
        if not self.restart:
            self.warm_start = self._weights(reduced)
        if not final and run.polished is None:
            if not feasible and run.status != "optimal" and self.engine.violation(self.state.Q) > _STAGE_VIOLATION:
                return None, None
            Q = self.engine.host(self.state.Q)[:reduced.n_in]
            return float(np.count_nonzero(Q)) / (problem.n_in * problem.n_out), None
        solution = _solution(reduced, self.data, self.engine, self.state, self.dtype, run, self.polisher)
        solution = restore_inputs(problem, solution, self.dead)
        solution.info.update(backend=self.backend, prepared=self.prepared is not None)
        solution.solve_time = time.perf_counter() - started
        read = feasible or solution.status == "optimal" or (not capped and solution.violation <= _STAGE_VIOLATION)
        return (solution.nnz / solution.weight.size if read else None), solution
