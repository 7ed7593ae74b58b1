"""A target sparsity as a path in ``epsilon``: one continued run instead of a search.

The number of nonzeros of the program's answer falls as its budget ``epsilon`` grows, and
``log kept`` is close to linear in ``log epsilon``. :func:`solve_at_sparsity` moves
``epsilon`` until the answer keeps the target fraction of the weights:

1. *Search stages.* At each ``epsilon`` the program is iterated to a loose tolerance
   (1e-2; polished only on a layer without ReLU, where polishing is cheap and exact),
   enough to read the kept fraction off the thresholded iterate. The next ``epsilon``
   comes from the stages so far: while every stage kept too much (or too little), a step
   by a factor 2 to 4 extrapolated from the last two; once the target is bracketed,
   interpolation of ``log kept`` in ``log epsilon`` inside the bracket (bisection where
   an end has no usable value). A step never goes past :func:`zero_budget`, where zero
   weights are feasible and nothing is kept; it goes halfway there instead. The search
   stops at a stage within half the tolerance of the target, or, once the target is
   bracketed, when two stages in a row come no closer than the closest reading and
   contradict it (a larger budget read denser, or a smaller one sparser), or three in a
   row read farther from it: a loose reading then follows the run more than the budget,
   and the full stages take over.
2. *Full stages.* The ``epsilon`` whose stage kept closest to the target is iterated to
   the solver's own tolerance, with polishing; a stage that stops on the ADMM's own test
   before any attempt gets one at its answer. An answer no attempt certifies is the
   ADMM's own, and its support depends on the run that reached it: ``info["polished"]``
   says which, and ``info["polish_outcome"]`` why the last attempt gave up (or that
   none was made). If that answer misses the target by more
   than ``tolerance``, up to ``_FINAL_STAGES`` more full stages follow: secant steps from
   the last full answer, with the slope of the search stages nearby (held to a factor
   0.8-1.25) after the first and with the slope between the last two full answers (held
   to a factor 0.5-2) after that, then, once full answers bracket the target,
   interpolation among them.
3. *Landing.* A full answer that keeps too much is first rounded to the target's count
   (:func:`solvers._rounding.round_to_count`): its weights that carry least of the
   response are set to zero while its violation stays within the solver's feasibility
   tolerance (``AdmmSettings.feasibility_tol``, the violation every ADMM answer may
   have), and if that lands within ``tolerance`` the path ends there, with
   ``info["rounded"]`` the number of weights set to zero. The answer is then no longer
   the program's optimum at its budget (its l1 norm is lower, and it uses the slack that
   the budget's answers are allowed); its error is at most ``(1 + feasibility_tol)``
   times a budget whose optimum keeps more than the target (a smaller budget than one
   whose optimum keeps the target, the kept count falling as ``epsilon`` grows). Weights
   leave the path by shrinking to zero, so the answers hold weights on their way out,
   and on a small layer several leave at nearly the same budget: on the suite's small
   convolutions no budget's optimum came within a point of the target, and the rounded
   answers reached it at budgets up to a third smaller than those of the optima that
   keep as many weights (``benchmarks/sparsity_path.py``).

With the ADMM the stages are one run: the iterates (weights, response, both duals and
``rho``) carry over from one ``epsilon`` to the next, and only the radius of the ball (and
the cascade's inactive bound, through ``problem_at``) changes, so a stage near the last
``epsilon`` costs a few dozen iterations, and the input is scaled, screened and factored
once. At or above :func:`warm_budget` (the budget the warm start meets) the program is
feasible and a stage that runs out of iterations still reads its support; below it, one
that stops short more than 5% over its budget reads as infeasible (after 300 iterations
rather than 1,000), and a full stage there that has not converged after 2,000
iterations reads as infeasible whatever its violation: near a cascade layer's floor the
ADMM converges slowly or not at all, and the loose search stages read that floor too
low, so the full stages step up from it (a search reading less than 5% above a budget a
full stage found infeasible is not trusted) instead of ending there. A stage that runs
out of iterations (an infeasible budget can make the duals grow without bound) makes
the next one start afresh from the last converged stage's weights.

When the target is not reached within ``tolerance``, ``info["why"]`` says why: the kept
fraction jumps over the target between two budgets less than 0.1% apart; or the answers
are not monotone in ``epsilon`` at the solver's accuracy; or the answer does not get
denser as ``epsilon`` shrinks (it stays sparser than the target); or the full solve did
not converge within ``max_iter``; or the budget left its range (``min_epsilon``,
``max_epsilon``).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._budgets import warm_budget, zero_budget
from ._rounding import round_to_count
from .problem import LayerProblem
from .solution import Solution

__all__ = ["solve_at_sparsity", "next_epsilon", "zero_budget", "warm_budget"]

logger = logging.getLogger(__name__)

_MAX_STAGES = 30
_FINAL_STAGES = 5  # full stages after the first, when the first misses the target
_PLATEAU = 0.005  # kept fractions this close ...
_PLATEAU_STEP = 1.5  # ... at an epsilon at least this many times smaller ...
_PLATEAU_BELOW = 0.02  # ... below this epsilon relative to ||Y||: no denser answer to find
_EDGE = 1.05  # a full stage read as infeasible: the search's readings below this many times its budget are not trusted
_STALL = 2  # bracketed search stages in a row no closer than the closest reading that contradict it: it ends
# (so do _STALL + 1 farther from the target, whatever they read)


@dataclass
class _Point:
    """One stage: its ``epsilon``, kept fraction (None: infeasible), iterations, kind."""

    epsilon: float
    kept: float | None
    iterations: int
    final: bool
    solution: Solution | None = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "kept": self.kept, "iterations": self.iterations, "final": self.final}


def _within(kept: float, target_kept: float, tolerance: float) -> bool:
    """Whether ``kept`` is within ``tolerance`` of the target, a count exactly at the
    edge included (196 of 400 weights is one point from half, though ``0.5 - 0.49``
    rounds above 0.01)."""
    return abs(kept - target_kept) <= tolerance + 1e-12


def _log_kept(kept: float, size: int) -> float:
    return math.log(kept + 0.5 / size)  # finite at kept = 0


def _sides(readings: list[tuple[float, float | None]], target_kept: float) -> tuple[list, list]:
    """The readings ``(epsilon, kept)`` that kept too much (or were infeasible: ``kept``
    None), and those that kept at most the target."""
    too_dense = [(e, k) for e, k in readings if k is None or k > target_kept]
    too_sparse = [(e, k) for e, k in readings if k is not None and k <= target_kept]
    return too_dense, too_sparse


def next_epsilon(points: list[tuple[float, float | None]], target_kept: float, size: int) -> float | None:
    """The next ``epsilon`` to try, from ``(epsilon, kept)`` pairs (``kept`` None: infeasible).

    ``lo``: the largest ``epsilon`` that kept too much (or was infeasible); ``hi``: the
    smallest that kept too little. With both, ``log kept`` is interpolated linearly in
    ``log epsilon`` between them, kept inside the middle 60% of the bracket, or the bracket
    is bisected geometrically when an end has no usable value (``lo`` infeasible, ``hi``
    keeping nothing). With one side only, the step extrapolates from the last two feasible
    pairs, by a factor 2 to 4. None when the bracket has closed (less than 0.1% wide).
    """
    too_dense, too_sparse = _sides(points, target_kept)
    lo = max(too_dense, key=lambda p: p[0]) if too_dense else None
    hi = min(too_sparse, key=lambda p: p[0]) if too_sparse else None
    goal = _log_kept(target_kept, size)
    if lo is not None and hi is not None:
        if hi[0] / lo[0] < 1.0 + 1e-3:
            return None
        if lo[1] is None or hi[1] == 0:  # no usable slope: bisect
            return math.sqrt(lo[0] * hi[0])
        a, b = _log_kept(lo[1], size), _log_kept(hi[1], size)
        t = (goal - a) / (b - a) if b != a else 0.5
        t = min(max(t, 0.2), 0.8)
        return math.exp(math.log(lo[0]) + t * (math.log(hi[0]) - math.log(lo[0])))
    last = points[-1]
    step_up = hi is None  # everything so far kept too much: a larger epsilon
    feasible = [(e, k) for e, k in points if k is not None]
    factor = 2.0
    if len(feasible) >= 2:
        (e1, k1), (e2, k2) = feasible[-2], feasible[-1]
        slope = (_log_kept(k2, size) - _log_kept(k1, size)) / (math.log(e2) - math.log(e1)) if e1 != e2 else 0.0
        if slope < 0:  # kept falls as epsilon grows, as it should
            log_wanted = (goal - _log_kept(k2, size)) / slope  # log of the wanted epsilon ratio
            log_factor = log_wanted if step_up else -log_wanted
            factor = math.exp(min(max(log_factor + math.log(1.2), math.log(2.0)), math.log(4.0)))
    return last[0] * factor if step_up else last[0] / factor


def _plateau(points: list[_Point], target_kept: float, scale: float) -> bool:
    """The last two stages, at small and smaller budgets (below ``_PLATEAU_BELOW`` of
    ``||Y||``), feasible, both sparser than the target and keeping nearly the same: the
    answer does not get denser as ``epsilon`` shrinks."""
    feasible = [p for p in points if p.kept is not None]
    if len(feasible) < 2 or any(p.kept > target_kept for p in feasible):
        return False
    first, second = feasible[-2], feasible[-1]
    return (second.epsilon * _PLATEAU_STEP <= first.epsilon < _PLATEAU_BELOW * scale
            and abs(second.kept - first.kept) < _PLATEAU)


def solve_at_sparsity(problem_at: Callable[[float], LayerProblem], sparsity: float, epsilon: float, *,
                      method: str = "admm", tolerance: float = 0.01, min_epsilon: float | None = None,
                      max_epsilon: float | None = None, **options: Any) -> Solution:
    """Solve the program at the budget whose answer removes ``sparsity`` of the weights.

    Parameters
    ----------
    problem_at : callable
        ``epsilon -> LayerProblem``: the program at a budget (the same ``X``, ``Y`` and
        bias for every budget; only ``epsilon`` and ``upper`` may change with it).
    sparsity : float
        Fraction of the weights to remove, in [0, 1).
    epsilon : float
        The first budget to try (absolute, > 0).
    method : {'admm'}
        The solver: the ADMM, whose stages continue one run (module docstring). The
        cvxpy reference is refused: its interior-point answers have no exact zeros to count.
    tolerance : float, default 0.01
        How far the kept fraction may land from ``1 - sparsity``.
    min_epsilon, max_epsilon : float, optional
        The range of budgets searched: default ``1e-4 ||Y||_F`` and ``64 ||Y||_F``.
    **options
        The solver's options, as :func:`solvers.solve` takes them (``warm_start``,
        ``tol``, ``dtype``, ...).

    Returns
    -------
    Solution
        The final stage's answer, at the budget ``info["epsilon"]``. Also in ``info``:
        ``path`` (one record per stage: ``epsilon``, ``kept``, ``iterations``, ``final``),
        ``path_iterations`` (all stages' iterations), ``target_met`` and, when it is not
        met, ``why``; ``rounded`` when the final answer was rounded onto the target
        (module docstring, *Landing*). ``solve_time`` covers the whole path.
    """
    if method != "admm":
        raise ValueError(f"method: got {method!r}; the path reads the support of each answer, which only the "
                         f"ADMM gives exactly (interior-point answers have no exact zeros): use method='admm'")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity: got {sparsity!r}, needs a fraction in [0, 1)")
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance: got {tolerance!r}, needs a fraction in (0, 1) (0.01: within one point)")
    if not (np.isscalar(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon: got {epsilon!r}, needs a positive number to start the path from")
    started = time.perf_counter()
    first = problem_at(float(epsilon))
    scale = float(np.linalg.norm(first.Y)) or 1.0
    lowest = 1e-4 * scale if min_epsilon is None else float(min_epsilon)
    highest = 64.0 * scale if max_epsilon is None else float(max_epsilon)
    target_kept = 1.0 - sparsity
    size = first.n_in * first.n_out
    from ._continuation import Continuation

    stages = Continuation(first, **options)
    points: list[_Point] = []
    zero = zero_budget(first)
    why = _search(stages, problem_at, points, float(epsilon), target_kept, size, scale, (lowest, highest), zero,
                  tolerance)
    final, why_final, exhausted = _finish(stages, problem_at, points, target_kept, size, tolerance,
                                          (lowest, highest), zero)
    solution = final.solution
    met = _within(solution.nnz / size, target_kept, tolerance)
    if exhausted and why is not None:
        why = f"{why}; {why_final}"  # what the search stages read, and that the full stages did not get past it
    else:
        why = why_final or why or (f"the answer keeps {solution.nnz / size:.4f} of the weights at epsilon "
                                   f"{final.epsilon:.4g} after {sum(p.final for p in points)} full solves")
    solution.info.update(epsilon=final.epsilon, path=[p.record() for p in points], target_met=met,
                         path_iterations=stages.iterations, why=None if met else why)
    solution.solve_time = time.perf_counter() - started
    logger.info("path to sparsity %.3f: kept %.4f at epsilon %.4g after %d stages, %d iterations in all",
                sparsity, solution.nnz / size, final.epsilon, len(points), stages.iterations)
    return solution


def _search(stages, problem_at, points: list[_Point], epsilon: float, target_kept: float, size: int,
            scale: float, limits: tuple[float, float], zero: float | None, tolerance: float) -> str | None:
    """The search stages, from ``epsilon``, until one keeps within half the ``tolerance`` of
    the target, the readings stall (:func:`_stalled`) or the path cannot go on (the
    reason, else None). A step to ``zero`` (the :func:`zero_budget`) or beyond, where
    nothing is kept, goes halfway to it instead."""
    for _ in range(_MAX_STAGES):
        done = stages.iterations
        kept, _solution = stages.stage(problem_at(epsilon), final=False)
        points.append(_Point(epsilon, kept, stages.iterations - done, final=False))
        logger.debug("path: epsilon %.4g -> kept %s", epsilon, kept)
        if kept is not None and _within(kept, target_kept, tolerance / 2):
            return None
        if _stalled(points, target_kept):
            return None
        if _plateau(points, target_kept, scale):
            return (f"the answer keeps at most {points[-1].kept:.4f} of the weights at epsilon down to "
                    f"{points[-1].epsilon:.4g}; it does not get denser as epsilon shrinks")
        readings = [(p.epsilon, p.kept) for p in points]
        following = next_epsilon(readings, target_kept, size)
        if following is None:
            return _jump(readings, target_kept)
        following = _short_of_zero(following, points, target_kept, zero)
        if following is None:
            return (f"the answer keeps more than the target up to epsilon {points[-1].epsilon:.6g}, within 0.1% of "
                    f"{zero:.6g} where zero weights are feasible")
        if not limits[0] < following < limits[1]:
            return f"the budget left its range [{limits[0]:.4g}, {limits[1]:.4g}] at {following:.4g}"
        epsilon = following
    return f"{_MAX_STAGES} stages without reaching the target"


def _no_closer(points: list[_Point], count: int, target_kept: float,
               strictly: bool = False) -> tuple[_Point, list[_Point]] | None:
    """The closest reading before the last ``count`` stages and those stages, when all of
    them are feasible readings no closer to the target than it (``strictly``: farther);
    otherwise None."""
    recent, earlier = points[-count:], [p for p in points[:-count] if p.kept is not None]
    if len(points) <= count or not earlier or any(p.kept is None for p in recent):
        return None
    closest = min(earlier, key=lambda p: abs(p.kept - target_kept))
    best = abs(closest.kept - target_kept)
    if any(abs(p.kept - target_kept) < best or (strictly and abs(p.kept - target_kept) == best) for p in recent):
        return None
    return closest, recent


def _stalled(points: list[_Point], target_kept: float) -> bool:
    """The readings bracket the target, and either the last ``_STALL`` stages came no
    closer to it than the closest reading before them and contradict it (a larger budget
    read denser, or a smaller one sparser), or the last ``_STALL + 1`` all read farther
    from it, whatever they read (a reading that respects the budget and repeats the
    closest, as on either side of a jump over the target, leaves the bracket to close).
    A loose stage's reading depends on the iterate it starts from as well as on its
    budget: within a narrow bracket that drift is larger than the budget's
    effect, and a bracket entered from the sparse side can hold the readings of its dense
    side still while interpolation narrows it (the MNIST-1D CNN's conv2 at 70%: seven
    stages at budgets 134.1 to 157.6 read 31.5-32.1%, the target 30% and the closest
    reading 28.9% at 157.7), so further interpolation reads noise; the full stages take
    over from the closest reading. (Before a bracket, the steps and :func:`_plateau` decide.)"""
    if not all(_sides([(p.epsilon, p.kept) for p in points], target_kept)):
        return False
    contradicting = _no_closer(points, _STALL, target_kept)
    if contradicting is not None:
        closest, recent = contradicting
        if all((p.epsilon - closest.epsilon) * (p.kept - closest.kept) > 0 for p in recent):
            return True
    return _no_closer(points, _STALL + 1, target_kept, strictly=True) is not None


def _short_of_zero(following: float, points: list[_Point], target_kept: float, zero: float | None) -> float | None:
    """``following``, or, when it is at or beyond ``zero`` (where nothing is kept), the
    geometric middle between ``zero`` and the largest budget that kept too much; None when
    that budget is within 0.1% of ``zero``."""
    if zero is None or following < zero:
        return following
    largest = max((p.epsilon for p in points if p.kept is None or p.kept > target_kept), default=points[-1].epsilon)
    return None if zero / largest < 1.0 + 1e-3 else math.sqrt(largest * zero)


def _jump(readings: list[tuple[float, float | None]], target_kept: float) -> str:
    """Why the bracket closed: the kept fraction jumps over the target, or the readings
    are not monotone in ``epsilon`` (a denser answer at the larger budget); or, when every
    reading is on one side of the target, that the next budget repeats one of them."""
    too_dense, too_sparse = _sides(readings, target_kept)
    if not too_dense or not too_sparse:
        epsilon, kept = readings[-1]
        last = "no feasible answer" if kept is None else f"{kept:.4f} kept"
        return (f"every answer so far keeps {'more' if too_dense else 'less'} than the target {target_kept:.4f} "
                f"(the last: {last} at epsilon {epsilon:.6g}), and the next budget repeats one already solved")
    below = max(too_dense, key=lambda r: r[0])
    above = min(too_sparse, key=lambda r: r[0])
    first = "infeasible" if below[1] is None else f"{below[1]:.4f}"
    if below[0] > above[0]:
        return (f"the answers are not monotone in epsilon at the solver's accuracy: {above[1]:.4f} kept at "
                f"epsilon {above[0]:.6g}, {first} at {below[0]:.6g} (a smaller tol reads them closer)")
    return (f"the kept fraction jumps from {first} at epsilon {below[0]:.6g} to {above[1]:.4f} at "
            f"{above[0]:.6g}, over the target {target_kept:.4f}")


def _full_step(points: list[_Point], target_kept: float, size: int) -> tuple[float | None, list]:
    """The next budget after a full stage that missed, and the readings it came from.

    Once the full stages' answers bracket the target, the search's interpolation among
    them. Until then a secant step from the last full answer: with the slope of ``log
    kept`` in ``log epsilon`` between the last two full answers when there are two (the
    step held to a factor 0.5-2), else with the slope fitted (least squares) to the
    search stages within a factor 1.25 of its budget (2 if fewer), the step held to a
    factor 0.8-1.25: a search stage's loose support is off by a few per cent, which
    decides little at a 2-4x step but much within the last one (on the MNIST-1D CNN's
    convolutions the full answers kept 5 points more than the search stages at the same
    budget).
    """
    full = [(p.epsilon, p.kept) for p in points if p.final]
    if full[-1][1] is None:  # infeasible: between it and the search's sparser budgets, not those just above it
        edge = full[-1][0] * _EDGE
        readings = full + [(p.epsilon, p.kept) for p in points if not p.final and p.epsilon >= edge]
        return next_epsilon(readings, target_kept, size), readings
    if all(_sides(full, target_kept)):  # both sides among the full answers
        return next_epsilon(full, target_kept, size), full
    epsilon, kept = full[-1]
    up = kept is None or kept > target_kept
    answered = [(e, k) for e, k in full if k is not None]
    if len(answered) >= 2 and answered[-1][0] != answered[-2][0]:
        (e1, k1), (e2, k2) = answered[-2], answered[-1]
        slope = (_log_kept(k2, size) - _log_kept(k1, size)) / (math.log(e2) - math.log(e1))
        if slope < 0:  # the full answers' own slope: no loose support in it
            return epsilon * _secant_factor(slope, kept, target_kept, size, up, 2.0), full
    for window in (1.25, 2.0):  # the slope as local as the search stages allow
        near = [(math.log(p.epsilon), _log_kept(p.kept, size)) for p in points
                if not p.final and p.kept is not None and abs(math.log(p.epsilon / epsilon)) <= math.log(window)]
        if len({e for e, _ in near}) >= 2:
            break
    slope = 0.0
    if kept is not None and len({e for e, _ in near}) >= 2:
        x, y = np.array(near).T
        slope = float(np.polyfit(x, y, 1)[0])
    return epsilon * _secant_factor(slope, kept, target_kept, size, up, 1.25), full


def _secant_factor(slope: float, kept: float | None, target_kept: float, size: int, up: bool,
                   reach: float) -> float:
    """The factor on ``epsilon`` that takes ``log kept`` to the target along ``slope`` (in
    ``log epsilon``; 1.1, or 1 / 1.1, when it does not fall), held within ``[1, reach]``
    going up and ``[1 / reach, 1]`` going down."""
    factor = 1.1 if up else 1.0 / 1.1
    if slope < 0:
        factor = math.exp((_log_kept(target_kept, size) - _log_kept(kept, size)) / slope)
    return min(max(factor, 1.0), reach) if up else min(max(factor, 1.0 / reach), 1.0)


def _land(problem: LayerProblem, solution: Solution, target_kept: float, size: int, tolerance: float,
          slack: float) -> float:
    """The kept fraction of a full answer that keeps too much, after rounding it to the
    target's count within the solver's feasibility tolerance ``slack``
    (:func:`~solvers._rounding.round_to_count`) when that lands within ``tolerance``:
    ``solution`` is then changed in place (its weights, objective and violation;
    ``info["rounded"]``, the weights set to zero). Otherwise the answer is left as it is."""
    kept = solution.nnz / size
    if problem.group_size is not None:
        return kept
    weight, removed = round_to_count(problem, solution.weight, solution.bias, round(target_kept * size), slack)
    landed = (solution.nnz - removed) / size
    if not removed or not _within(landed, target_kept, tolerance):
        return kept
    solution.weight = weight.astype(solution.weight.dtype, copy=False)
    solution.objective = problem.objective(solution.weight, solution.bias)
    solution.violation = problem.violation(solution.weight, solution.bias)
    solution.info["rounded"] = removed
    logger.debug("path: %d weights rounded to zero within violation %.3g", removed, slack)
    return landed


def _finish(stages, problem_at, points: list[_Point], target_kept: float, size: int, tolerance: float,
            limits: tuple[float, float], zero: float | None) -> tuple[_Point, str | None, bool]:
    """Full stages: at the search's best budget, then, while the answer misses the target
    by more than ``tolerance``, at the budget the full stages so far point to. A full stage
    that does not converge ends the path (another would cost as much again), unless it
    reads as infeasible (below the warm start's budget it does, after 2,000 iterations):
    then the path goes on to a larger budget. Returns the
    stage whose answer kept closest to the target (the last one when none was feasible),
    why the path ended short, if it did, and whether every full stage allowed ran (and
    missed)."""
    feasible = [p for p in points if p.kept is not None]
    epsilon = (min(feasible, key=lambda p: (abs(p.kept - target_kept), p.epsilon)) if feasible
               else max(points, key=lambda p: p.epsilon)).epsilon
    best, why, exhausted = None, None, False
    for _ in range(1 + _FINAL_STAGES):
        done = stages.iterations
        problem = problem_at(epsilon)
        kept, solution = stages.stage(problem, final=True)
        if kept is not None and kept > target_kept + tolerance and solution.status.startswith("optimal"):
            kept = _land(problem, solution, target_kept, size, tolerance, stages.settings.feasibility_tol)
        point = _Point(epsilon, kept, stages.iterations - done, final=True, solution=solution)
        points.append(point)
        if kept is not None and (best is None or abs(kept - target_kept) < abs(best.kept - target_kept)):
            best = point
        if kept is not None and _within(kept, target_kept, tolerance):
            break
        if not solution.status.startswith("optimal") and kept is not None:  # slow, not infeasible
            why = (f"the program at epsilon {epsilon:.4g} did not converge ({solution.status}, "
                   f"violation {solution.violation:.2g})")
            break
        following, readings = _full_step(points, target_kept, size)
        if following is not None and any(abs(following / p.epsilon - 1.0) < 1e-3 for p in points if p.final):
            following = None
        if following is None:
            why = _jump(readings, target_kept)
            break
        following = _short_of_zero(following, points, target_kept, zero)
        if following is None:
            why = f"the answer keeps more than the target up to within 0.1% of epsilon {zero:.6g}"
            break
        if not limits[0] < following < limits[1]:
            why = f"the budget left its range [{limits[0]:.4g}, {limits[1]:.4g}] at {following:.4g}"
            break
        epsilon = following
    else:  # every full stage allowed ran and missed
        exhausted = True
        if best is not None:
            why = (f"{1 + _FINAL_STAGES} full solves did not reach it either: the closest keeps "
                   f"{best.kept:.4f} of the weights at epsilon {best.epsilon:.4g}")
    return (point if best is None else best), why, exhausted
