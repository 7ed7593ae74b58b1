"""Net-Trim: the sparsest weights that keep the layer's response within ``epsilon``.

With ``sparsity=None`` the layer program is solved once at the budget the mode gives
(``task.budget``): the convex program. With a target ``sparsity`` (fraction of weights
removed) the support comes, by default (``support='obs'``), from greedy Optimal Brain
Surgeon removals and the weights from the ReLU-aware fit on that support
(:func:`solvers.refit.relu_refit`: active entries matched, inactive ones kept at or below
0, towards the original output on the input the layer is solved on, the program's
constraints as a penalty). Two supports are tried: OBS with the Hessian of the program's
ReLU-aware objective (:mod:`._relu_obs`: one per neuron, from the rows it is active on,
taking over from L-OBS once the layer keeps twice the target's weights, or a tenth of
its weights more than the target where that is fewer) and with the
layer's shared ``X^T X`` (L-OBS's), each fitted. The fit's objective, a
certified bound of the layer's post-ReLU error, is a sum over neurons, and every neuron
is fitted on its own, so each neuron takes the row of the Hessian that serves the layer
best within the layer's count of weights (:func:`choose_rows`; ``info["neurons_by_hessian"]``):
never worse than either Hessian's rows taken whole. Where the next layer is known
(``task.importance``, :mod:`nettrim.consumers`) each neuron's error counts as much as the
next layer reads the neuron, in that choice and in the per-neuron candidate's allotment
of removals: the network's output error, not the layer's, is what the rows should lower
(``info["consumer_weighted"]``). Neither Hessian wins everywhere
(``benchmarks/compare_methods.py``); the fit is what closes the gap to the original output.
Greedy removal never takes a weight back, so each neuron's support is then improved by
single swaps on the least-squares model of its fit (:mod:`._swaps`, ``swaps`` passes;
``info["swapped"]``), kept where the refit errs less.

``support='l1'`` moves the program's ``epsilon`` instead, until the ℓ1 solution keeps the
target fraction (within :data:`SPARSITY_TOLERANCE`): a path in ``epsilon``
(:func:`solvers.path.solve_at_sparsity`), one ADMM run continued from budget to budget,
starting at the mode's budget; where no budget's solution lands on the target, a denser one
is rounded onto it within the solver's tolerance (``info["rounded"]``); a layer whose
target it cannot reach is reported with the reason (``info["why"]``).

Below the floor (cascade mode: the error the original weights carry on the pruned input)
the program with the cascade's inactive bound ``V`` is infeasible or nearly so, since any
weight closer than the original must move the response at the inactive entries. There
the bound is lifted: only the active entries are held within ``epsilon`` (the ReLU
guarantee on the inactive entries is given up for that layer; its report shows the
error).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from solvers import LayerProblem
from solvers.refit import ActiveSystems, RefitResult, relu_refit

from ._relu_obs import WIDEN, obs_candidates
from ._swaps import SWEEPS, swap_supports
from .base import LayerOutcome, LayerSolver, LayerTask, Method

__all__ = ["prune_layer", "refit_support", "choose_rows", "NetTrimOptions", "METHOD", "SPARSITY_TOLERANCE", "SUPPORTS"]

SUPPORTS = ("obs", "l1")

logger = logging.getLogger(__name__)

SPARSITY_TOLERANCE = 0.01  # the l1 path lands within 1 point of the target
_LIFT = 1e3  # how far the inactive bound is lifted below the floor, in units of max |Y|


def _problem(task: LayerTask, epsilon: float | np.ndarray) -> LayerProblem:
    """The layer's program at ``epsilon`` (below the cascade floor, with the inactive bound lifted)."""
    upper = task.upper
    if upper is not None and np.any(np.asarray(epsilon) < task.floor):
        # below the cascade floor the original weights' bound on the inactive entries
        # makes the program infeasible or nearly so: lift it out of the way
        upper = upper + _LIFT * max(float(np.abs(task.Y).max()), 1.0)
    return LayerProblem(task.X, task.Y, epsilon, relu=task.relu, upper=upper, fit_bias=task.bias is not None)


def refit_support(task: LayerTask, weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Least squares on each neuron's support: the ℓ1 solution without its shrinkage.

    Neuron ``m`` keeps its support ``S_m`` and is refitted on its active rows ``Omega_m``
    (every row for a layer without ReLU): ``min ||X[Omega_m, S_m] w + b - Y[Omega_m, m]||``,
    bias free. The inactive entries are not constrained, so the answer may leave the
    program's inequality; the caller reports its violation.
    """
    X = np.asarray(task.X, dtype=np.float64)
    new_weight = np.zeros_like(weight, dtype=np.float64)
    new_bias = None if bias is None else np.zeros(bias.shape, dtype=np.float64)
    for m in range(weight.shape[0]):
        columns = np.flatnonzero(weight[m])
        rows = task.Y[:, m] > 0 if task.relu else slice(None)
        target = task.Y[rows, m]
        design = X[rows][:, columns]
        if bias is not None:
            design = np.hstack([design, np.ones((design.shape[0], 1))])
        if design.shape[0] == 0 or design.shape[1] == 0:
            new_weight[m, columns] = weight[m, columns]
            if bias is not None:
                new_bias[m] = bias[m]
            continue
        coef = np.linalg.lstsq(design, target, rcond=None)[0]
        new_weight[m, columns] = coef[: columns.size]
        if bias is not None:
            new_bias[m] = coef[-1]
    return new_weight, new_bias


@dataclass(frozen=True)
class NetTrimOptions:
    """Options of ``method='nettrim'``.

    Attributes
    ----------
    refit : bool, default False
        After the solve fixes the support, refit each neuron on it by least squares on its
        active rows (:func:`refit_support`), removing the l1 shrinkage (the inactive
        entries are not held; ``PruneConfig(refit='relu')`` holds them).
    support : {'obs', 'l1'}, default 'obs'
        With a target sparsity: greedy OBS on the ReLU-aware objective, then the ReLU-aware
        fit (``'obs'``), or the ℓ1 program with ``epsilon`` moved along a path (``'l1'``).
    damping : float, default 1e-4
        ``support='obs'``: the Hessians' damping, relative to their mean diagonal.
    widen : float, default 2.0
        ``support='obs'``: the Hessian per neuron takes over from L-OBS's shared one when the
        layer keeps ``widen`` times the target's weights, or :data:`._relu_obs.STEP` of its
        weights more than the target where that is fewer (:func:`._relu_obs.first_stage`);
        ``inf``: from the original weights.
    neurons : bool, default True
        ``support='obs'`` at a network target of 90% or more: also remove whole neurons at
        the same count of weights and keep that answer where it errs less
        (:mod:`nettrim.neuron_choice`); False keeps the weight-level answer.
    swaps : int, default 10
        ``support='obs'``: passes of single swaps over each neuron's kept weights after
        the fit, at most (a pass that swaps nothing ends them; :mod:`._swaps`); 0 keeps
        the OBS supports as they are.
    """

    refit: bool = False
    support: str = "obs"
    damping: float = 1e-4
    widen: float = WIDEN
    neurons: bool = True
    swaps: int = SWEEPS

    def __post_init__(self) -> None:
        if not isinstance(self.refit, bool):
            raise ValueError(f"refit: got {self.refit!r}, needs True or False")
        if self.support not in SUPPORTS:
            raise ValueError(f"support: got {self.support!r}, needs one of {SUPPORTS}")
        if not isinstance(self.damping, (int, float)) or isinstance(self.damping, bool) or not self.damping >= 0:
            raise ValueError(f"damping: got {self.damping!r}, needs a number >= 0")
        if not isinstance(self.neurons, bool):
            raise ValueError(f"neurons: got {self.neurons!r}, needs True or False")
        if not isinstance(self.swaps, (int, np.integer)) or isinstance(self.swaps, bool) or self.swaps < 0:
            raise ValueError(f"swaps: got {self.swaps!r}, needs an integer >= 0 (0: no swaps)")
        if not isinstance(self.widen, (int, float)) or isinstance(self.widen, bool) or not self.widen >= 1:
            raise ValueError(f"widen: got {self.widen!r}, needs a number >= 1 (inf: the Hessian per neuron from the "
                             f"original weights)")


def choose_rows(objectives: np.ndarray, counts: np.ndarray, budget: int) -> np.ndarray:
    """For every neuron, which candidate's row to take so that the rows' weights stay within
    ``budget`` with the least total objective.

    ``objectives`` and ``counts`` are ``(n_candidates, n_out)``: neuron ``m``'s fitted
    objective ``f_c(m)`` and weights kept ``n_c(m)`` under candidate ``c``. For a multiplier
    ``lam >= 0`` each neuron takes ``argmin_c f_c(m) + lam * n_c(m)``; the weights taken fall
    as ``lam`` grows, and the least ``lam`` that keeps them within ``budget`` is bisected.
    The weights it leaves unused go, one neuron at a time, to the switch that lowers the
    objective most per weight added. Rows are fitted neuron by neuron, so the mix's
    objective is the sum of its rows'; where it is not below that of every candidate
    taken whole (and within ``budget``), the best of those is taken instead.

    Returns
    -------
    ndarray of int (n_out,)
        The candidate of each neuron.
    """
    neurons = np.arange(objectives.shape[1])

    def pick(lam: float) -> np.ndarray:
        return np.argmin(objectives + lam * counts, axis=0)

    def taken(chosen: np.ndarray) -> int:
        return int(counts[chosen, neurons].sum())

    chosen = pick(0.0)
    if taken(chosen) > budget:
        low, high = 0.0, 1.0
        while taken(pick(high)) > budget and high < 1e300:
            high *= 16.0
        for _ in range(100):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if taken(pick(middle)) > budget else (low, middle)
        chosen = pick(high)
        spare = budget - taken(chosen)
        while spare > 0:  # spend what the multiplier left, best gain per weight first
            gain = objectives[chosen, neurons] - objectives  # (candidates, neurons): > 0 lowers f
            added = counts - counts[chosen, neurons]
            worth = np.where((gain > 0) & (added > 0) & (added <= spare), gain / np.maximum(added, 1), 0.0)
            if not np.any(worth > 0):
                break
            c, m = np.unravel_index(np.argmax(worth), worth.shape)
            spare -= int(added[c, m])
            chosen[m] = c
    whole = [c for c in range(objectives.shape[0]) if counts[c].sum() <= budget]
    if whole:
        best = min(whole, key=lambda c: float(objectives[c].sum()))
        if objectives[best].sum() <= objectives[chosen, neurons].sum():
            return np.full(objectives.shape[1], best)
    return chosen


def _fitted(task: LayerTask, candidates: dict[str, tuple[np.ndarray, np.ndarray | None]],
            systems: ActiveSystems | None) -> dict[str, RefitResult]:
    """Every candidate's weights refitted on its support by the ReLU-aware fit
    (:func:`solvers.refit.relu_refit`, reading ``systems`` when there are any). The fit
    goes to the least objective on the support from wherever it starts, so a neuron with
    the first candidate's support takes the first candidate's fitted row, and only the
    other neurons are fitted again."""
    fit_bias = task.bias is not None
    names = list(candidates)
    weight, bias = candidates[names[0]]
    first = weight != 0
    shared = relu_refit(task.X, task.Y, first, relu=task.relu, fit_bias=fit_bias, weight=weight, bias=bias,
                        systems=systems)
    fits = {names[0]: shared}
    for name in names[1:]:
        weight, bias = candidates[name]
        support = weight != 0
        changed = np.flatnonzero(np.any(support != first, axis=1))
        part = relu_refit(task.X, task.Y[:, changed], support[changed], relu=task.relu, fit_bias=fit_bias,
                          weight=weight[changed], bias=None if bias is None else bias[changed],
                          systems=None if systems is None else systems.subset(changed))
        fit = RefitResult(shared.weight.copy(), None if shared.bias is None else shared.bias.copy(),
                          shared.objective.copy(), part.steps, part.converged)
        fit.weight[changed], fit.objective[changed] = part.weight, part.objective
        if fit.bias is not None:
            fit.bias[changed] = part.bias
        fits[name] = fit
    return fits


def _obs(task: LayerTask, sparsity: float, damping: float, widen: float, swaps: int) -> LayerOutcome:
    """Supports by greedy OBS, weights by the ReLU-aware fit; each neuron's row from the
    Hessian whose fitted row serves the layer best under its count (:func:`choose_rows`),
    each neuron's fitted error weighted by ``task.importance`` when the task has it, then
    ``swaps`` passes of single swaps (:func:`._swaps.swap_supports`; 0: none). The
    candidates' supports lie inside the entries OBS's first stage kept, so the fits read
    their normal equations off those formed once there for the per-neuron Hessians
    (:func:`._relu_obs.obs_candidates`), and the swaps off the same, narrowed to the
    entries either candidate kept. ``info`` holds the
    seconds of the two parts: ``seconds_supports`` (the OBS candidates) and
    ``seconds_fits`` (their fits and the choice of rows)."""
    started = time.perf_counter()
    # every fit reads X and Y transposed in float64: read so once here, not in each (solvers.refit.relu_refit)
    task = replace(task, X=np.asfortranarray(task.X, dtype=np.float64), Y=np.asfortranarray(task.Y, dtype=np.float64))
    # without ReLU only L-OBS (the Hessians are the same); with it, the equations both fits read off
    candidates, systems = obs_candidates(task, sparsity, damping, widen)
    supports_seconds, started = time.perf_counter() - started, time.perf_counter()
    fit_bias = task.bias is not None
    union = None
    if len(candidates) > 1:  # the swaps draw from the entries either candidate kept
        union = np.logical_or.reduce([weight != 0 for weight, _ in candidates.values()])
    fits = _fitted(task, candidates, systems)
    names = list(fits)
    counts = np.array([np.count_nonzero(fits[name].weight, axis=1) for name in names])
    budget = int(min(row.sum() for row in counts))
    importance = np.ones(counts.shape[1]) if task.importance is None else task.importance
    chosen = choose_rows(np.array([fits[name].objective for name in names]) * importance, counts, budget)
    weight = np.array(fits[names[0]].weight, copy=True)
    bias = None if fits[names[0]].bias is None else np.array(fits[names[0]].bias, copy=True)
    objective = np.array(fits[names[0]].objective, copy=True)
    for index, name in enumerate(names[1:], start=1):
        rows = chosen == index
        weight[rows] = fits[name].weight[rows]
        objective[rows] = fits[name].objective[rows]
        if bias is not None:
            bias[rows] = fits[name].bias[rows]
    if swaps:
        narrowed = None if systems is None else systems.narrowed(union, fit_bias)
        weight, bias, objective, swapped = swap_supports(task, weight, bias, objective, union, narrowed, swaps)
    else:
        swapped = {}
    info = {"support": "obs", "damping": damping, "widen": widen, "refit": "relu",
            "consumer_weighted": task.importance is not None,
            "refit_steps": max(fit.steps for fit in fits.values()),
            "refit_converged": all(fit.converged for fit in fits.values()),
            "neurons_by_hessian": {name: int(np.sum(chosen == index)) for index, name in enumerate(names)},
            "certified_by_hessian": {name: float(np.sqrt(fit.objective.sum())) for name, fit in fits.items()},
            **swapped,
            "seconds_supports": supports_seconds, "seconds_fits": time.perf_counter() - started}
    return LayerOutcome(weight, bias, epsilon=float("nan"), status="done", info=info)


def prune_layer(task: LayerTask, *, sparsity: float | None, solver: LayerSolver | None = None,
                refit: bool = False, support: str = "obs", damping: float = 1e-4,
                widen: float = WIDEN, neurons: bool = True, swaps: int = SWEEPS) -> LayerOutcome:
    """Solve the layer's Net-Trim program (at the mode's budget, or for a target sparsity).

    Parameters
    ----------
    task : LayerTask
    sparsity : float or None
        Fraction of the layer's weights to remove; None solves once at ``task.budget``.
    solver : LayerSolver, optional
        The solver and its options (default: the ADMM at its own defaults). The ADMM is
        warm-started from the original weights unless its options hold ``warm_start``.
    refit, support, damping, widen, swaps
        See :class:`NetTrimOptions`.
    neurons : bool
        See :class:`NetTrimOptions`: a choice over the whole network, which the pipeline
        makes after the layers (:mod:`nettrim.neuron_choice`); a layer does not read it.

    Returns
    -------
    LayerOutcome
        With ``support='l1'`` and a target, ``info`` holds the path
        (:func:`solvers.path.solve_at_sparsity`: ``path``, ``path_iterations``,
        ``target_met``, ``why``).
    """
    solver = LayerSolver() if solver is None else solver
    NetTrimOptions(refit, support, damping, widen, neurons, swaps)  # checked
    if sparsity is None:
        solution = solver.solve(_problem(task, task.budget), warm_start=(task.weight, task.bias))
        outcome = LayerOutcome.from_solution(solution, task.budget)
    elif support == "obs":
        outcome = _obs(task, sparsity, damping, widen, swaps)
    else:
        outcome = _path(task, sparsity, solver)
    if not refit:
        return outcome
    weight, bias = refit_support(task, outcome.weight, outcome.bias)
    budget = task.budget if sparsity is None else outcome.epsilon
    violation = float("nan")
    if not np.any(np.isnan(budget)):  # the OBS supports have no budget, hence no program to meet
        violation = LayerProblem(task.X, task.Y, budget, relu=task.relu, upper=task.upper,
                                 fit_bias=task.bias is not None).violation(weight, bias)
    info = {**outcome.info, "refit": True, "violation_before_refit": outcome.violation}
    return LayerOutcome(weight=weight, bias=bias, epsilon=outcome.epsilon, status=outcome.status,
                        iterations=outcome.iterations, violation=violation, info=info)


def _path(task: LayerTask, sparsity: float, solver: LayerSolver) -> LayerOutcome:
    """The l1 program at the ``epsilon`` whose answer removes ``sparsity`` of the weights."""
    if solver.name != "admm":
        raise ValueError(f"layer {task.name!r}: support='l1' at a target sparsity reads the support of each "
                         f"answer, which only the ADMM gives exactly; got solver {solver.name!r}: use solver='admm' "
                         f"(the default) or support='obs'")
    scale = task.scale if task.scale > 0 else 1.0
    start = task.budget if task.budget > 0 else 0.05 * scale
    solution = solver.at_sparsity(lambda epsilon: _problem(task, epsilon), sparsity, start,
                                  warm_start=(task.weight, task.bias), tolerance=SPARSITY_TOLERANCE,
                                  max_epsilon=64.0 * scale + 2.0 * float(np.max(task.floor)))
    if not solution.info["target_met"]:
        logger.warning("layer %r: sparsity %.3f reached instead of %.3f: %s", task.name,
                       1.0 - solution.nnz / solution.weight.size, sparsity, solution.info["why"])
    return LayerOutcome.from_solution(solution, solution.info["epsilon"])


METHOD = Method("nettrim", "layer", prune_layer, options=NetTrimOptions, needs_sparsity=False, budget_program=True,
                uses_solver=True, shares_sparsity=True)
