"""ADMM for the Net-Trim layer program, all neurons at once.

With the augmented input ``Xa = [X, 1]`` (the ones column only when the bias is fitted)
and ``Theta = [W, b]^T`` of shape ``(n_in + 1, n_out)``, the program is split as

.. math::

    \\min \\; \\|Q\\|_{1,w} + \\iota_C(A) \\quad \\text{s.t.} \\quad
    A = X_a \\Theta, \\; Q = \\Theta

(``w`` is 0 on the bias row unless it is penalised, ``C`` the constraint set of
:class:`~solvers.LayerProblem`). One iteration with scaled duals ``UA, UQ`` and
over-relaxation ``alpha``:

.. math::

    \\Theta &= (X_a^T X_a + I)^{-1} \\left[X_a^T (A - UA) + (Q - UQ)\\right],
        \\qquad R = X_a \\Theta \\\\
    A &= \\Pi_C(\\alpha R + (1-\\alpha) A + UA), \\qquad
    Q = S_{w/\\rho}(\\alpha \\Theta + (1-\\alpha) Q + UQ) \\\\
    UA &\\mathrel{+}= \\alpha R + (1-\\alpha) A_{old} - A, \\qquad
    UQ \\mathrel{+}= \\alpha \\Theta + (1-\\alpha) Q_{old} - Q

``rho`` appears only in the threshold, so the matrix is factored once per problem
(:mod:`solvers._factor`) and ``rho`` adapts for free. The two products ``Xa^T B`` and
``Xa Theta`` are the only ``O(n_samples n_in n_out)`` work; the rest is done by fused
kernels (:mod:`solvers._kernels`). Once the iterate is close, the program restricted to
its support is solved exactly and certified (:mod:`solvers._polish`).

Before iterating, :func:`solve_admm` drops the inputs whose weights are zero at every
optimum (:mod:`solvers._screening`). The solve itself is a short loop over named stages:
:func:`_start` (the starting point and rho), :func:`_iterate` (one iteration),
:func:`_check` (residuals and the stopping test), :class:`~solvers._polisher.Polisher`
(polishing attempts, their schedule and their budget), :func:`_adapt` (the rho rule),
:func:`_run` (the loop over them) and :func:`_finish` (the :class:`~solvers.Solution`).
The array work is done by an engine (:mod:`solvers._engine`: numpy/numba here, torch in
:mod:`solvers._torch_kernels`), the data are scaled by :mod:`solvers._scaling`, and
every number of the rule is a field of :class:`~solvers.settings.AdmmSettings`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._engine import BACKENDS, Engine, make_engine
from ._polisher import Polisher, PolishResult
from ._scaling import PreparedInput, ScaledData
from ._screening import dead_inputs, restore_inputs, warm_start_without, without_inputs
from .problem import LayerProblem
from .settings import AdmmSettings, resolve_dtype
from .solution import Solution

__all__ = ["solve_admm", "BACKENDS", "PreparedInput", "AdmmSettings"]

logger = logging.getLogger(__name__)

def _warm_parts(problem: LayerProblem, warm_start: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """``(weight, bias)`` of ``warm_start = (weight, bias)`` or a bare weight, checked."""
    if isinstance(warm_start, (tuple, list)):
        if len(warm_start) != 2:
            raise ValueError("warm_start: needs (weight, bias) or a weight array")
        weight, bias = warm_start
    else:
        weight, bias = warm_start, None
    return problem._check_answer(weight, bias)


def _warm_theta(problem: LayerProblem, warm_start: Any, dtype: np.dtype) -> np.ndarray:
    """``Theta = [W, b]^T`` from ``warm_start = (weight, bias)`` or a bare weight."""
    weight, bias = _warm_parts(problem, warm_start)
    n_cols = problem.n_in + problem.fit_bias
    Theta = np.zeros((n_cols, problem.n_out), dtype=dtype)
    Theta[: problem.n_in] = weight.T
    if problem.fit_bias and bias is not None:
        Theta[problem.n_in] = bias
    return Theta


@dataclass
class _State:
    """The iterates of one solve, in the engine's arrays.

    ``Theta``, ``R = Xa Theta``; the response block's state ``carry_a = (1 - alpha) A + UA``
    and ``B = A - UA``; the weight block's ``carry_q``, ``C`` and the sparse copy ``Q``;
    ``DA``, ``DQ`` (changes, on checks) and ``work`` (scratch); ``rho``, the row weights of
    the l1 norm (``penalized``) and the soft thresholds ``penalized / rho``; the
    rho schedule (``last_change``, ``adapt_interval``); and whether the program is known
    to be feasible (``feasible``: the starting point meets the budget).
    """

    Theta: Any
    R: Any
    B: Any
    C: Any
    carry_a: Any
    carry_q: Any
    Q: Any
    DA: Any
    DQ: Any
    work: Any
    penalized: np.ndarray
    rho: float
    threshold: Any
    last_change: int = 0
    adapt_interval: int = 25
    feasible: bool = False


def _tightness(data: ScaledData, settings: AdmmSettings) -> float:
    """How much larger rho starts for the budget: ``sqrt(rho_budget_ref / r)`` with the
    relative budget ``r = ||epsilon|| / ||Y||_F`` below ``rho_budget_ref``, else 1."""
    relative = float(np.linalg.norm(data.epsilon)) / max(float(np.linalg.norm(data.Y)), 1e-300)
    if not 0.0 < relative < settings.rho_budget_ref:
        return 1.0
    return float(np.sqrt(settings.rho_budget_ref / relative))


def _start_rho(Theta_host: np.ndarray, penalized: np.ndarray, n_out: int, tightness: float,
               settings: AdmmSettings) -> float:
    """rho at the start: ``rho_start_factor sqrt(#weights) / ||Theta_0||`` for ``'auto'``
    (a threshold ``1/rho`` of half the weights' root mean square), times the budget's
    ``tightness`` (:func:`_tightness`), else the fixed value."""
    if settings.rho != "auto":
        return float(settings.rho)
    norm0 = float(np.linalg.norm(Theta_host[penalized > 0]))
    rho = float(np.linalg.norm(penalized)) * np.sqrt(n_out) / norm0 if norm0 > 0 else 1.0
    return float(np.clip(rho * settings.rho_start_factor * tightness, *settings.rho_bounds))


def _start(problem: LayerProblem, data: ScaledData, engine: Engine, settings: AdmmSettings,
           warm_start: Any, dtype: np.dtype) -> _State:
    """The starting point: ``Theta`` (warm start or ridge), ``A = Pi_C(Xa Theta)``,
    ``Q = Theta``, both duals 0, rho, and whether that point meets the budget."""
    n_in, alpha = problem.n_in, settings.alpha
    if warm_start is not None:
        Theta_host = _warm_theta(problem, warm_start, dtype)
        if data.mean is not None:  # the centred program's bias is b + W mean
            Theta_host[n_in] += (data.mean @ Theta_host[:n_in].astype(np.float64)).astype(dtype)
        if problem.fit_bias:
            Theta_host[n_in] /= dtype.type(data.bias_unit)
        Theta = engine.asarray(Theta_host)
    else:
        Theta = engine.ridge()
        Theta_host = engine.host(Theta)
    R = engine.response(Theta)
    A = engine.project(R)
    Q = engine.copy(Theta)
    penalized = np.ones(n_in + problem.fit_bias)  # l1 weight of each row of Theta
    if problem.fit_bias:
        penalized[n_in] = data.bias_unit if problem.penalize_bias else 0.0
    rho = _start_rho(Theta_host, penalized, problem.n_out, _tightness(data, settings), settings)
    return _State(Theta=Theta, R=R, B=A, C=engine.copy(Q), carry_a=A * (1.0 - alpha), carry_q=Q * (1.0 - alpha),
                  Q=Q, DA=engine.empty_like(R), DQ=engine.empty_like(Theta),
                  work=engine.empty_like(Theta) if engine.tall else engine.empty_like(R), penalized=penalized,
                  rho=rho, threshold=engine.vector(penalized / rho), adapt_interval=settings.check_every,
                  feasible=engine.violation(Q) <= settings.feasibility_tol)


def _iterate(engine: Engine, state: _State, alpha: float, check: bool) -> tuple[Any, Any]:
    """One iteration in place: the weight step's two products, then the response and weight
    blocks' fused updates. Returns their statistics (meaningful on a check only)."""
    engine.weight_products(state.B, state.C, state.Theta, state.R, state.work)
    stats_a = engine.response_step(state.R, state.carry_a, state.B, state.DA, alpha, check)
    stats_q = engine.weight_step(state.Theta, state.Q, state.carry_q, state.C, state.threshold, alpha, state.DQ,
                                 check)
    return stats_a, stats_q


@dataclass
class _Residuals:
    """A check's verdict: relative residuals, whether both met ``tol``, and the thresholded
    copy's violation (None when it was not needed)."""

    primal_rel: float
    dual_rel: float
    met: bool
    violation: float | None


def _check(engine: Engine, state: _State, stats: tuple[Any, Any], settings: AdmmSettings,
           debug: bool) -> _Residuals:
    """Residuals of a check iteration (OSQP-style absolute + relative tolerances)."""
    stats_a, stats_q = engine.stats(stats[0]), engine.stats(stats[1])  # the one sync of a check
    n_primal = state.R.shape[0] * state.R.shape[1] + state.Theta.shape[0] * state.Theta.shape[1]
    n_dual = state.Theta.shape[0] * state.Theta.shape[1]
    primal = np.sqrt(stats_a[0] + stats_q[0])
    primal_scale = max(np.sqrt(stats_a[2] + stats_q[2]), np.sqrt(stats_a[3] + stats_q[3]))
    dual = state.rho * engine.dual_norm(state.DA, state.DQ)
    dual_scale = state.rho * np.sqrt(stats_q[4])
    primal_ok = primal <= settings.eps_abs * np.sqrt(n_primal) + settings.tol * primal_scale
    dual_ok = dual <= settings.eps_abs * np.sqrt(n_dual) + settings.tol * dual_scale
    # the violation costs one product: at a check only when the stop needs it or DEBUG logs it
    violation = engine.violation(state.Q) if (primal_ok and dual_ok) or debug else None
    return _Residuals(primal / max(primal_scale, 1e-300), dual / max(dual_scale, 1e-300),
                      bool(primal_ok and dual_ok), violation)


def _rescale_duals(carry: Any, rhs: Any, alpha: float, factor: float) -> None:
    """Scale the dual ``U`` by ``factor`` (``rho_old / rho_new``) inside ``carry`` and ``rhs``.

    With ``carry = (1 - alpha) A + U`` and ``rhs = A - U``: ``A = (rhs + carry) / (2 - alpha)``.
    Written with operators only, so it serves numpy arrays and torch tensors alike.
    """
    A = (rhs + carry) / (2.0 - alpha)
    U = (A - rhs) * factor
    rhs[...] = A - U
    carry[...] = A * (1.0 - alpha) + U


def _adapt(engine: Engine, state: _State, residuals: _Residuals, iteration: int, settings: AdmmSettings) -> None:
    """The rho rule after a check, once the wait since the last change has passed (the wait
    doubles after each change).

    When both residuals met ``tol`` but the thresholded copy ``Q`` still leaves its budget
    by more than ``feasibility_tol``, rho grows by ``violation / feasibility_tol`` (at most
    ``rho_feasibility_step``): a larger rho weighs the splitting constraints ``A = Xa Theta``,
    ``Q = Theta`` more against the objective, and the violation of ``Q`` is what the stop
    still waits for. Otherwise, after the hold, rho balances the two residuals; on a
    program known to be feasible, the primal side is at least the violation over
    ``feasibility_factor`` (the relative residual the stop waits for: on a tight budget the
    splitting's residual meets ``tol`` long before the weights meet the budget, and
    balancing that residual alone lowered rho, slowing them further). The balancing acts
    when the two differ by more than ``rho_adapt_ratio``, and also when the primal side
    alone is left above ``tol``: the stop then waits on it, and a ratio inside the band
    had left rho alone for hundreds of iterations while the primal residual hovered just
    above ``tol`` (warm-started stages of a sparsity path). Where feasibility
    is not known, a lasting violation may be the program's own (its duals then grow),
    and rho does not fall while the weights leave the budget: balancing alone had taken
    it to its floor there, the weights ever further outside.
    """
    if not (settings.rho == "auto" and settings.rho_adapt) or iteration - state.last_change < state.adapt_interval:
        return
    if residuals.met and residuals.violation > settings.feasibility_tol and settings.rho_feasibility_step > 1:
        factor = min(settings.rho_feasibility_step, residuals.violation / settings.feasibility_tol)
    else:
        primal_rel, dual_rel = residuals.primal_rel, residuals.dual_rel
        if not (dual_rel > 0 and primal_rel > 0 and iteration >= settings.rho_hold):
            return
        violation = residuals.violation
        if state.feasible:
            violation = engine.violation(state.Q) if violation is None else violation
            primal_rel = max(primal_rel, violation / settings.feasibility_factor)
        factor = np.sqrt(primal_rel / dual_rel)
        waiting_on_primal = primal_rel > settings.tol >= dual_rel and factor > 1.0
        if not (factor > settings.rho_adapt_ratio or factor < 1.0 / settings.rho_adapt_ratio
                or waiting_on_primal):
            return
        if factor < 1.0 and not state.feasible:
            violation = engine.violation(state.Q) if violation is None else violation
            if violation > settings.feasibility_tol:
                return
    new_rho = float(np.clip(state.rho * factor, *settings.rho_bounds))
    _rescale_duals(state.carry_a, state.B, settings.alpha, state.rho / new_rho)
    _rescale_duals(state.carry_q, state.C, settings.alpha, state.rho / new_rho)
    state.rho = new_rho
    state.threshold = engine.vector(state.penalized / new_rho)
    state.last_change, state.adapt_interval = iteration, 2 * state.adapt_interval


@dataclass
class _Run:
    """How the iterations ended: ``status``, ``iterations``, the last check's residuals,
    the first check at which both residuals met ``tol`` and the certified polish, if any."""

    status: str
    iterations: int
    residuals: _Residuals
    residuals_met_at: int | None
    polished: PolishResult | None


def _run(engine: Engine, state: _State, polisher: Polisher, settings: AdmmSettings, done: int = 0) -> _Run:
    """Iterate until a check stops the run (residuals met and the thresholded copy within
    ``feasibility_tol``, or a certified polish) or ``max_iter`` more iterations; a last
    polish then, within the allowance. ``done``: iterations the state already had (a path's
    earlier stages; the rho and polish schedules count from the first); ``iterations`` counts all."""
    status, polished, residuals_met_at = "max_iter", None, None
    residuals = _Residuals(np.inf, np.inf, False, None)
    debug = logger.isEnabledFor(logging.DEBUG)
    iteration, last = done, done + settings.max_iter
    for iteration in range(done + 1, last + 1):
        check = iteration % settings.check_every == 0 or iteration == last
        stats = _iterate(engine, state, settings.alpha, check)
        if not check:
            continue
        residuals = _check(engine, state, stats, settings, debug)
        if debug:
            logger.debug("iter %d rho %.3g primal %.2e dual %.2e violation %.2e", iteration, state.rho,
                         residuals.primal_rel, residuals.dual_rel, residuals.violation)
        if residuals.met:
            residuals_met_at = iteration if residuals_met_at is None else residuals_met_at
            if residuals.violation <= settings.feasibility_tol:
                status = "optimal"
                break
        if polisher.due(residuals.primal_rel, iteration):
            attempt = polisher.attempt(engine, state, iteration, residuals)
            logger.debug("iter %d polish: %s (%.3g flops)", iteration, attempt.reason, attempt.flops)
            if attempt.Theta is not None:
                polished, status = attempt, "optimal"
                break
            polisher.failed(iteration, attempt)
        _adapt(engine, state, residuals, iteration, settings)
    if status != "optimal" and polisher.last_due(iteration):
        attempt = polisher.attempt(engine, state, iteration)
        if attempt.Theta is not None:
            polished, status = attempt, "optimal"
    return _Run(status, iteration, residuals, residuals_met_at, polished)


def _finish(problem: LayerProblem, data: ScaledData, engine: Engine, state: _State, dtype: np.dtype,
            polished: PolishResult | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The answer in the problem's units: the polished ``Theta`` or the thresholded copy
    ``Q`` (exact zeros either way), the bias out of its unit and back from the centring."""
    n_in = problem.n_in
    Q = polished.Theta.astype(dtype) if polished is not None else engine.host(state.Q)
    weight = np.ascontiguousarray(Q[:n_in].T)
    bias = Q[n_in] * dtype.type(data.bias_unit) if problem.fit_bias else None
    if data.mean is not None:  # back from the centred program's bias b + W mean
        bias = (bias.astype(np.float64) - weight.astype(np.float64) @ data.mean).astype(dtype)
    return weight, bias


def solve_admm(problem: LayerProblem, settings: AdmmSettings | None = None, *, warm_start: Any = None,
               dtype: Any = None, backend: str = "numba", device: Any = None,
               prepared: PreparedInput | None = None, **overrides: Any) -> Solution:
    """Solve a :class:`~solvers.LayerProblem` by ADMM.

    Parameters
    ----------
    problem : LayerProblem
    settings : AdmmSettings, optional
        Tolerances, the rho rule, scaling and polishing (:class:`~solvers.settings.AdmmSettings`,
        whose defaults are the solver's).
    warm_start : (weight, bias) or weight, optional
        Starting weights, e.g. the original layer's. Default: the ridge solution
        ``(Xa^T Xa + I)^{-1} Xa^T Y``.
    dtype : float32 or float64, optional
        Precision of the iterations (numpy or torch spelling). Default: float32 for
        ``backend='torch'`` on a CUDA device, float64 otherwise; an explicit dtype is used
        on every backend and device. Norms are accumulated in float64 either way, the
        weight-step matrix is formed and factored in float64, and the reported objective
        and violation are evaluated in float64 on the original data.
    backend : {'numba', 'numpy', 'torch'}, default 'numba'
        ``'numba'``: numpy arrays, fused numba passes for the elementwise steps;
        ``'numpy'``: their numpy twins (same answer); ``'torch'``: the same iteration on
        torch tensors on ``device`` (the host sees a few scalars per check). Same scaling,
        rules and :class:`~solvers.Solution`.
    device : None, str or torch.device, optional
        Only with ``backend='torch'``. None: ``'cuda'`` when available, else ``'cpu'``.
    prepared : PreparedInput, optional
        The problem's input already scaled and factored, shared by the programs of
        several blocks of neurons; the answer is the same as without.
    **overrides
        Fields of :class:`~solvers.settings.AdmmSettings` to change (``tol=1e-3``, ...).

    Returns
    -------
    Solution
        ``weight`` is the polished answer, or else the soft-thresholded copy ``Q``;
        ``objective`` and ``violation`` are those of the returned ``weight`` and ``bias``.
        ``info`` holds ``polished``, ``polish_outcome`` (``'certified'``, ``'off'``,
        ``'not attempted'`` or why the last attempt gave up), ``certificate`` (largest
        ``|g_j| / w_j`` off the support), ``rho``, ``scale``, ``factor_time``,
        ``polish_time`` (failed attempts included), ``residuals_met_at`` (the first check
        at which both residuals met ``tol``, None if none did: when it is well below
        ``iterations`` and nothing was polished, the violation test decided the stop),
        ``backend``, ``device``, ``dtype``,
        ``polish_failed_flops`` and ``iteration_flops`` (the failed polishing attempts'
        work and an iteration's, in the cost model of ``AdmmSettings.polish_budget``) and
        ``screened`` (how many inputs were dropped before iterating, :mod:`solvers._screening`;
        their weights are zero).
    """
    settings = (AdmmSettings() if settings is None else settings).replace(**overrides)
    started = time.perf_counter()
    dtype = resolve_dtype(dtype)
    dead = screened_inputs(problem, settings, dtype, backend, prepared)
    if dead is None or not dead.any():
        solution = _solve(problem, settings, warm_start, dtype, backend, device, prepared)
    else:  # the program without the inputs whose weights are zero at every optimum
        if warm_start is not None:
            warm_start = warm_start_without(problem, dead, *_warm_parts(problem, warm_start))
        solution = _solve(without_inputs(problem, dead), settings, warm_start, dtype, backend, device, prepared)
    solution = restore_inputs(problem, solution, dead)
    solution.solve_time = time.perf_counter() - started
    logger.info("admm %s after %d iterations: objective %.6g, violation %.2e, %.3fs (%d inputs screened out)",
                solution.status, solution.iterations, solution.objective, solution.violation, solution.solve_time,
                solution.info["screened"])
    return solution


def screened_inputs(problem: LayerProblem, settings: AdmmSettings, dtype: np.dtype | None, backend: str,
                    prepared: PreparedInput | None) -> np.ndarray | None:
    """The inputs to drop (:mod:`solvers._screening`; a prepared input's, checked against the
    problem), or None when screening is off."""
    if prepared is not None and backend != "torch":  # make_engine refuses the torch case
        prepared.check(problem, prepared.dtype if dtype is None else dtype, settings)
        return prepared.dead
    return (dead_inputs(problem.X, problem.fit_bias, problem.penalize_bias, problem.group_size)
            if settings.screen else None)


def _solve(problem: LayerProblem, settings: AdmmSettings, warm_start: Any, dtype: np.dtype | None, backend: str,
           device: Any, prepared: PreparedInput | None) -> Solution:
    """:func:`solve_admm` on a program with nothing to screen out (or screening off)."""
    started = time.perf_counter()
    data, engine, dtype = make_engine(backend, device, dtype, problem, settings, prepared)
    settings = settings.for_device(engine.device_name)
    engine.sync()
    factor_time = time.perf_counter() - started
    state = _start(problem, data, engine, settings, warm_start, dtype)
    polisher = Polisher(problem, data, settings)
    run = _run(engine, state, polisher, settings)
    solution = _solution(problem, data, engine, state, dtype, run, polisher)
    solution.solve_time = time.perf_counter() - started
    solution.info.update(backend=backend, factor_time=factor_time, prepared=prepared is not None)
    return solution


def _solution(problem: LayerProblem, data: ScaledData, engine: Engine, state: _State, dtype: np.dtype, run: _Run,
              polisher: Polisher) -> Solution:
    """The :class:`~solvers.Solution` of a run (its ``solve_time`` and set-up facts are the caller's)."""
    weight, bias = _finish(problem, data, engine, state, dtype, run.polished)
    return Solution(
        weight=weight, bias=bias, status=run.status, iterations=run.iterations,
        objective=problem.objective(weight, bias), violation=problem.violation(weight, bias),
        primal_residual=float(run.residuals.primal_rel), dual_residual=float(run.residuals.dual_rel),
        solve_time=float("nan"), method="admm",
        info={"rho": state.rho, "scale": data.scale, "centered": data.mean is not None,
              "device": engine.device_name, "dtype": dtype.name,
              "factorization": "gram" if engine.tall else "inversion-lemma",
              "polished": run.polished is not None, "polish_outcome": polisher.summary(run.polished is not None),
              "polish_time": polisher.seconds,
              "polish_failed_flops": polisher.failed_flops, "iteration_flops": polisher.iteration_flops,
              "residuals_met_at": run.residuals_met_at,
              "certificate": run.polished.certificate if run.polished is not None else None})
