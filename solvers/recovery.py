"""Sample complexity of Net-Trim: exact recovery of a planted sparse ReLU neuron.

One neuron with input ``x ~ N(0, I_{n_in})``, an ``s``-sparse weight ``w*`` with Gaussian
values, and output ``y = relu(X w*)`` on ``n_samples`` samples. With ``Omega = {p : y_p > 0}``
three programs try to find ``w*`` back from ``(X, y)``:

(a) ``"nettrim"``, the Net-Trim program at ``epsilon = 0`` (a linear program):

.. math::

    \\min_w \\|w\\|_1 \\quad \\text{s.t.} \\quad X_\\Omega w = y_\\Omega, \\quad
    X_{\\Omega^c} w \\le 0

(b) ``"active_bp"``, the same without the inequalities: basis pursuit on the active rows,
``min ||w||_1  s.t.  X_Omega w = y_Omega``;

(c) ``"active_ls"``, least squares on the active rows, minimum-norm solution
``w = X_Omega^+ y_Omega``: it recovers ``w*`` exactly when ``X_Omega`` has full column
rank, i.e. when ``|Omega| >= n_in`` (about ``2 n_in`` samples), and not before.

A trial succeeds when ``||w_hat - w*|| <= 1e-3 ||w*||``. The theory (see DESIGN.md §1)
says (a) recovers ``w*`` with high probability once ``n_samples >~ C s log(n_in / s)``;
:func:`phase_transition` measures the success rate over a grid of ``(s, n_samples)`` and
:func:`transition_point` reads off the number of samples at 50% success.

How (a) and (b) are solved
--------------------------
Many trials that share ``X`` are the neurons of ONE layer program with per-neuron budgets
``epsilon_m = 0`` (:class:`~solvers.LayerProblem`, solved by :func:`solvers.solve`, the
project's ADMM). Program (b) is the same layer with an inactive bound ``V`` so large
that it never binds (:func:`inactive_bound`), which keeps one shared ``X`` although
every trial has its own active rows.

At ``epsilon = 0`` the ADMM's polishing step does not apply (its closed form needs a
positive budget), and the ADMM converges slowly on trials whose program has no unique
solution, i.e. on the failures. The verdicts therefore come from staged solves
(:func:`solve_recovery`): after each stage a trial is decided

- a failure when a feasible point with a smaller l1 norm than ``w*`` exists
  (:func:`beats_planted`, an exact certificate that ``w*`` is not the minimiser), or
- a success when the ADMM's weights are within ``decide_tol`` (default ``1e-5``, a
  hundredth of the success tolerance) of ``w*``: near the transition the minimiser can
  sit ``1e-3`` away from ``w*`` with an l1 norm smaller by ``1e-5`` only, and the ADMM
  passes closer than ``1e-3`` to ``w*`` on its way there;

the trials left undecided go on, warm-started, with a tighter tolerance and more
iterations. Trials still undecided after the last stage are judged by the plain
criterion on their last weights and reported (``undecided``).

Programs (a) and (b) succeed on exactly the same trials. ``w*`` is the unique minimiser
of a (polyhedral) convex program iff every feasible direction from ``w*`` increases
``||w||_1``; the
inequalities of (a) hold strictly at ``w*`` (``x_p^T w* < 0`` off ``Omega``), so they
remove no direction near ``w*`` and the two programs have the same feasible directions
there (the argument of :func:`beats_planted`). The inequalities change the minimiser
when recovery fails, not whether it succeeds.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.linalg import lstsq

from . import solve
from .problem import LayerProblem

__all__ = [
    "PROGRAMS",
    "DEFAULT_STAGES",
    "BatchRecovery",
    "planted_neurons",
    "inactive_bound",
    "recovery_problem",
    "beats_planted",
    "relative_errors",
    "solve_recovery",
    "recovery_batch",
    "phase_transition",
    "transition_point",
    "transition_interval",
    "isotonic_increasing",
    "log_curve",
    "neurips_curve",
]

logger = logging.getLogger(__name__)

PROGRAMS = ("nettrim", "active_bp", "active_ls")
#: ``(tol, max_iter)`` of each ADMM stage; a stage runs only the trials still undecided.
DEFAULT_STAGES: tuple[tuple[float, int], ...] = ((1e-6, 1500), (1e-7, 4000), (1e-8, 12000), (1e-9, 30000))
SUCCESS_TOL = 1e-3
DECIDE_TOL = 1e-5
_CERTIFICATE_MARGIN = 1e-9  # relative l1 margin that a certificate must beat, far above round-off


@dataclass
class BatchRecovery:
    """Outcome of one program on a batch of trials that share ``X``.

    Attributes
    ----------
    program : str
    errors : ndarray, shape (n_trials,)
        Relative error ``||w_hat - w*|| / ||w*||`` of the weights returned for each trial
        (for a trial decided a failure by certificate: of the ADMM's weights at that stage).
    success : ndarray of bool, shape (n_trials,)
    undecided : ndarray of bool, shape (n_trials,)
        Trials that no stage decided (judged by the plain criterion on their last weights).
    certified : ndarray of bool, shape (n_trials,)
        Failures proven by :func:`beats_planted`.
    iterations : int
        ADMM iterations summed over the stages (0 for least squares).
    seconds : float
        Wall time of the program on the batch.
    stages : list of dict
        Per stage: ``tol``, ``max_iter``, ``n_trials`` run, ``iterations``, ``status``,
        ``seconds``.
    """

    program: str
    errors: np.ndarray
    success: np.ndarray
    undecided: np.ndarray
    certified: np.ndarray
    iterations: int = 0
    seconds: float = 0.0
    stages: list[dict] = field(default_factory=list)


def planted_neurons(
    n_samples: int,
    n_in: int,
    sparsity_s: int | Sequence[int],
    n_trials: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one Gaussian input and planted sparse neurons that share it.

    ``X[p, i] ~ N(0, 1)`` i.i.d.; each planted weight ``w*`` has its support drawn
    uniformly among the ``binom(n_in, s)`` subsets of size ``s`` and ``N(0, 1)`` values
    there; ``Y = relu(X W*^T)``.

    Parameters
    ----------
    n_samples, n_in : int
    sparsity_s : int or sequence of int
        Nonzeros per planted weight. A sequence gives ``n_trials`` neurons for each of
        its values, in that order (so all sparsities share the same ``X``).
    n_trials : int
        Neurons per sparsity.
    rng : numpy.random.Generator

    Returns
    -------
    X : ndarray, shape (n_samples, n_in)
    Y : ndarray, shape (n_samples, n_neurons)
    W_star : ndarray, shape (n_neurons, n_in)
        One planted weight per row (as ``torch.nn.Linear.weight``), ``n_neurons =
        n_trials * len(sparsity_s)``.

    The order matches :func:`solve_recovery`'s first arguments.
    """
    values = np.atleast_1d(np.asarray(sparsity_s, dtype=int))
    if values.ndim != 1 or (values < 1).any() or (values > n_in).any():
        raise ValueError(f"sparsity_s: got {sparsity_s!r}, needs integers in [1, n_in={n_in}]")
    if n_samples < 1 or n_trials < 1:
        raise ValueError(f"n_samples and n_trials: got {n_samples}, {n_trials}; need >= 1")
    X = rng.standard_normal((n_samples, n_in))
    sparsities = np.repeat(values, n_trials)
    W_star = np.zeros((sparsities.size, n_in))
    for row, s in enumerate(sparsities):
        support = rng.choice(n_in, size=s, replace=False)
        W_star[row, support] = rng.standard_normal(s)
    Y = np.maximum(X @ W_star.T, 0.0)
    return X, Y, W_star


def inactive_bound(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """An inactive bound ``V`` that no candidate of program (b) can reach.

    With ``w_0`` the minimum-norm solution of ``X_Omega w = y_Omega`` (feasible for (b)),
    the optimum ``w`` of (b) has ``||w||_1 <= ||w_0||_1``, so
    ``|x_p^T w| <= ||x_p||_inf ||w_0||_1``. Twice that bound, plus one, never binds: the
    layer program with ``relu=True``, ``epsilon = 0`` and ``upper = V`` IS program (b),
    with one shared ``X`` for trials whose active rows differ.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_in)
    Y : ndarray, shape (n_samples, n_neurons)
        Non-negative targets; ``Omega`` holds their positive entries.

    Returns
    -------
    V : ndarray, shape (n_samples, n_neurons)
    """
    l1_feasible = np.array([np.abs(_least_squares(X, Y[:, m])).sum() for m in range(Y.shape[1])])
    row_max = np.abs(X).max(axis=1)
    return 2.0 * np.outer(row_max, l1_feasible) + 1.0


def recovery_problem(X: np.ndarray, Y: np.ndarray, program: str) -> LayerProblem:
    """The layer program whose neurons are program ``program`` on each column of ``Y``.

    ``"nettrim"``: ``LayerProblem(X, Y, epsilon=0 per neuron, relu=True, fit_bias=False)``;
    ``"active_bp"``: the same with ``upper=inactive_bound(X, Y)``.
    """
    zeros = np.zeros(Y.shape[1])
    if program == "nettrim":
        return LayerProblem(X, Y, zeros, relu=True, fit_bias=False)
    if program == "active_bp":
        return LayerProblem(X, Y, zeros, relu=True, upper=inactive_bound(X, Y), fit_bias=False)
    raise ValueError(f"program: got {program!r}, needs 'nettrim' or 'active_bp' (an l1 program)")


def _least_squares(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Minimum-norm least-squares solution of ``X_Omega w = y_Omega`` (``Omega = {y > 0}``)."""
    active = y > 0
    if not active.any():
        return np.zeros(X.shape[1])
    return lstsq(X[active], y[active], lapack_driver="gelsd", check_finite=False)[0]


def relative_errors(W_hat: np.ndarray, W_star: np.ndarray) -> np.ndarray:
    """``||w_hat_m - w*_m||_2 / ||w*_m||_2`` for each row ``m``."""
    return np.linalg.norm(W_hat - W_star, axis=1) / np.linalg.norm(W_star, axis=1)


def beats_planted(X: np.ndarray, Y: np.ndarray, W_hat: np.ndarray, W_star: np.ndarray) -> np.ndarray:
    """Whether each neuron has a certificate that ``w*`` is NOT the l1 minimiser.

    The candidate ``w_hat`` is moved onto the affine set ``X_Omega w = y_Omega`` by the
    minimum-norm correction ``w_f = w_hat + X_Omega^+ (y_Omega - X_Omega w_hat)``. If
    ``||w_f||_1 < ||w*||_1`` then ``w*`` does not minimise program (b), for which ``w_f``
    is feasible, nor program (a): ``w*`` is strictly inside the inequalities
    (``x_p^T w* < 0`` off ``Omega``), so ``w_t = (1 - t) w* + t w_f`` is feasible for (a)
    for some ``t in (0, 1]`` and ``||w_t||_1 <= (1 - t)||w*||_1 + t ||w_f||_1 < ||w*||_1``.
    The certificate is exact whatever the accuracy of ``w_hat``; a margin of ``1e-9``
    relative guards against round-off. When ``X_Omega`` has full column rank, ``w*`` is
    the only feasible point and no certificate exists.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_in)
    Y : ndarray, shape (n_samples, n_neurons)
    W_hat, W_star : ndarray, shape (n_neurons, n_in)

    Returns
    -------
    ndarray of bool, shape (n_neurons,)
    """
    beaten = np.zeros(W_star.shape[0], dtype=bool)
    for m in range(W_star.shape[0]):
        active = Y[:, m] > 0
        if not active.any():  # w = 0 is feasible for both programs
            beaten[m] = True
            continue
        X_active = X[active]
        if X_active.shape[0] >= X.shape[1]:  # w* is the only solution of the equalities (full rank a.s.)
            continue
        residual = Y[active, m] - X_active @ W_hat[m]
        correction = lstsq(X_active, residual, lapack_driver="gelsy", check_finite=False)[0]
        feasible = W_hat[m] + correction
        if np.linalg.norm(X_active @ feasible - Y[active, m]) > 1e-9 * max(np.linalg.norm(Y[active, m]), 1e-300):
            continue  # not on the affine set (numerically): no certificate
        target = np.abs(W_star[m]).sum()
        beaten[m] = np.abs(feasible).sum() < target * (1.0 - _CERTIFICATE_MARGIN)
    return beaten


def solve_recovery(
    X: np.ndarray,
    Y: np.ndarray,
    W_star: np.ndarray,
    program: str = "nettrim",
    *,
    method: str = "admm",
    stages: Iterable[tuple[float, int]] = DEFAULT_STAGES,
    success_tol: float = SUCCESS_TOL,
    decide_tol: float = DECIDE_TOL,
    **options: Any,
) -> BatchRecovery:
    """Solve one recovery program for every neuron of a batch that shares ``X``.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_in)
    Y : ndarray, shape (n_samples, n_neurons)
        ``relu(X W*^T)``.
    W_star : ndarray, shape (n_neurons, n_in)
        The planted weights, to score the answers and certify failures.
    program : {'nettrim', 'active_bp', 'active_ls'}
    method : {'admm', 'cvxpy'}, default 'admm'
        ``'admm'``: staged ADMM solves with certificates (module docstring); each stage
        ``(tol, max_iter)`` of ``stages`` runs the undecided neurons, warm-started from
        the previous stage. ``'cvxpy'``: one solve by the reference path, verdicts from
        its weights alone (slow; to check the ADMM's verdicts). Ignored for
        ``'active_ls'``.
    stages : iterable of (tol, max_iter)
    success_tol : float, default 1e-3
        Success when ``||w_hat - w*|| <= success_tol ||w*||``.
    decide_tol : float, default 1e-5
        A stage decides a success when the error is at most ``decide_tol`` (ADMM only;
        see the module docstring).
    **options
        Passed to :func:`solvers.solve` (e.g. ``backend``, ``alpha``).

    Returns
    -------
    BatchRecovery
    """
    if program not in PROGRAMS:
        raise ValueError(f"program: got {program!r}, needs one of {PROGRAMS}")
    started = time.perf_counter()
    n_neurons = W_star.shape[0]
    undecided = np.zeros(n_neurons, dtype=bool)
    certified = np.zeros(n_neurons, dtype=bool)
    if program == "active_ls":
        W_hat = np.stack([_least_squares(X, Y[:, m]) for m in range(n_neurons)])
        errors = relative_errors(W_hat, W_star)
        return BatchRecovery(program, errors, errors <= success_tol, undecided, certified,
                             seconds=time.perf_counter() - started)
    if method == "cvxpy":
        solution = solve(recovery_problem(X, Y, program), "cvxpy", **options)
        errors = relative_errors(solution.weight, W_star)
        return BatchRecovery(program, errors, errors <= success_tol, undecided, certified,
                             seconds=time.perf_counter() - started,
                             stages=[{"status": solution.status, "seconds": solution.solve_time}])
    if method != "admm":
        raise ValueError(f"method: got {method!r}, needs 'admm' or 'cvxpy'")

    W_hat = np.zeros_like(W_star)
    errors = np.full(n_neurons, np.inf)
    success = np.zeros(n_neurons, dtype=bool)
    pending = np.arange(n_neurons)
    history, total_iterations = [], 0
    for index, (tol, max_iter) in enumerate(stages):
        stage_start = time.perf_counter()
        problem = recovery_problem(X, Y[:, pending], program)
        warm = W_hat[pending] if index > 0 else None
        solution = solve(problem, "admm", tol=tol, max_iter=max_iter, warm_start=warm, **options)
        W_hat[pending] = solution.weight
        errors[pending] = relative_errors(solution.weight, W_star[pending])
        close = errors[pending] <= min(decide_tol, success_tol)
        beaten = np.zeros(pending.size, dtype=bool)
        far = ~close
        if far.any():
            beaten[far] = beats_planted(X, Y[:, pending[far]], solution.weight[far], W_star[pending[far]])
        success[pending[close]] = True
        certified[pending[beaten]] = True
        total_iterations += solution.iterations
        history.append({"tol": tol, "max_iter": max_iter, "n_trials": int(pending.size),
                        "iterations": solution.iterations, "status": solution.status,
                        "seconds": time.perf_counter() - stage_start})
        logger.debug("%s stage %d: %d neurons, %d iterations (%s), %d successes, %d certified failures",
                     program, index, pending.size, solution.iterations, solution.status,
                     close.sum(), beaten.sum())
        pending = pending[~(close | beaten)]
        if pending.size == 0:
            break
    undecided[pending] = True
    success[pending] = errors[pending] <= success_tol
    if pending.size:
        logger.info("%s: %d of %d neurons undecided after %d stages (judged on their last weights)",
                    program, pending.size, n_neurons, len(history))
    return BatchRecovery(program, errors, success, undecided, certified, total_iterations,
                         time.perf_counter() - started, history)


def recovery_batch(
    X: np.ndarray,
    Y: np.ndarray,
    W_star: np.ndarray,
    programs: Sequence[str] = PROGRAMS,
    **options: Any,
) -> dict[str, BatchRecovery]:
    """Every program of ``programs`` on the same batch (:func:`solve_recovery`'s options)."""
    return {program: solve_recovery(X, Y, W_star, program, **options) for program in programs}


def phase_transition(
    n_in: int,
    s_values: Sequence[int],
    n_samples_values: Sequence[int],
    n_trials: int,
    seed: int = 0,
    programs: Sequence[str] = PROGRAMS,
    *,
    trials_per_draw: int | None = None,
    success_tol: float = SUCCESS_TOL,
    **options: Any,
) -> list[dict]:
    """Success rate of each program over a grid of sparsities and sample sizes.

    For each ``n_samples``, the ``n_trials`` trials are split into draws of
    ``trials_per_draw``; each draw takes one ``X`` shared by ``trials_per_draw`` planted
    neurons of EVERY sparsity of ``s_values`` (:func:`planted_neurons`), and all programs
    run on that same draw (:func:`recovery_batch`). Draw ``d`` at ``n_samples`` uses the
    generator seeded by ``(seed, n_samples, d)``: a cell's draws do not depend on the rest
    of the grid nor on ``programs`` (they do on ``s_values`` and ``trials_per_draw``).

    Parameters
    ----------
    n_in : int
    s_values : sequence of int
    n_samples_values : sequence of int
    n_trials : int
        Trials per ``(s, n_samples)`` cell.
    seed : int
    programs : sequence of {'nettrim', 'active_bp', 'active_ls'}
    trials_per_draw : int, optional
        Trials sharing one ``X`` (default: all ``n_trials``). Smaller gives more
        independent draws of ``X`` per cell at more solves.
    success_tol : float
    **options
        Passed to :func:`solve_recovery` (``method``, ``stages``, solver options).

    Returns
    -------
    list of dict
        One record per ``(program, s, n_samples)``: ``program``, ``n_in``, ``s``,
        ``n_samples``, ``n_trials``, ``n_success``, ``probability``, ``undecided``,
        ``certified`` (failures proven), ``median_error``, ``mean_active`` (mean
        ``|Omega|``), ``iterations`` (ADMM iterations of the draws, summed), ``seconds``
        (wall time of the program on the draws, shared among the cells of a draw in
        proportion to their trials).
    """
    s_values = [int(s) for s in s_values]
    trials_per_draw = n_trials if trials_per_draw is None else int(trials_per_draw)
    if trials_per_draw < 1:
        raise ValueError(f"trials_per_draw: got {trials_per_draw}, needs >= 1")
    unknown = [p for p in programs if p not in PROGRAMS]
    if unknown:
        raise ValueError(f"programs: got {unknown}, needs a subset of {PROGRAMS}")
    records = []
    for n_samples in n_samples_values:
        n_samples = int(n_samples)
        cells = {(p, s): {"errors": [], "success": [], "undecided": [], "certified": [], "active": [],
                          "iterations": 0, "seconds": 0.0} for p in programs for s in s_values}
        n_draws = -(-n_trials // trials_per_draw)
        for draw in range(n_draws):
            size = min(trials_per_draw, n_trials - draw * trials_per_draw)
            rng = np.random.default_rng([seed, n_samples, draw])
            X, Y, W_star = planted_neurons(n_samples, n_in, s_values, size, rng)
            active = (Y > 0).sum(axis=0)
            for program, result in recovery_batch(X, Y, W_star, programs, success_tol=success_tol,
                                                  **options).items():
                for k, s in enumerate(s_values):
                    block = slice(k * size, (k + 1) * size)
                    cell = cells[(program, s)]
                    cell["errors"].append(result.errors[block])
                    cell["success"].append(result.success[block])
                    cell["undecided"].append(result.undecided[block])
                    cell["certified"].append(result.certified[block])
                    cell["active"].append(active[block])
                    cell["iterations"] += result.iterations
                    cell["seconds"] += result.seconds / len(s_values)
        for (program, s), cell in cells.items():
            success = np.concatenate(cell["success"])
            records.append({
                "program": program, "n_in": n_in, "s": s, "n_samples": n_samples,
                "n_trials": int(success.size), "n_success": int(success.sum()),
                "probability": float(success.mean()),
                "undecided": int(np.concatenate(cell["undecided"]).sum()),
                "certified": int(np.concatenate(cell["certified"]).sum()),
                "median_error": float(np.median(np.concatenate(cell["errors"]))),
                "mean_active": float(np.concatenate(cell["active"]).mean()),
                "iterations": int(cell["iterations"]), "seconds": float(cell["seconds"]),
            })
        logger.info("n_samples %d done: %s", n_samples, {
            p: [r["n_success"] for r in records[-len(cells):] if r["program"] == p] for p in programs})
    return records


def isotonic_increasing(values: Sequence[float], weights: Sequence[float] | None = None) -> np.ndarray:
    """Least-squares non-decreasing fit of ``values`` (pool adjacent violators).

    ``min_f sum_i weights_i (f_i - values_i)^2`` subject to ``f_1 <= f_2 <= ...``.
    """
    values = np.asarray(values, dtype=float)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float)
    blocks: list[list[float]] = []  # [mean, weight, length]
    for value, weight in zip(values, weights):
        blocks.append([value, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean2, weight2, length2 = blocks.pop()
            mean1, weight1, length1 = blocks.pop()
            total = weight1 + weight2
            blocks.append([(mean1 * weight1 + mean2 * weight2) / total, total, length1 + length2])
    return np.concatenate([np.full(int(length), mean) for mean, _, length in blocks]) if blocks else values


def transition_point(
    n_samples_values: Sequence[float],
    probability: Sequence[float],
    level: float = 0.5,
    *,
    monotone: bool = True,
) -> float:
    """The number of samples at which the success probability reaches ``level``.

    The empirical curve is first made non-decreasing (:func:`isotonic_increasing`, so
    that trial noise cannot create several crossings; ``monotone=False`` skips it), then
    interpolated linearly between the last grid point below ``level`` and the next one:

    .. math::

        n_{50} = n_i + (n_{i+1} - n_i) \\frac{\\text{level} - p_i}{p_{i+1} - p_i}

    Returns NaN when the curve never reaches ``level`` on the grid, and the first grid
    point when it starts at or above ``level`` (the transition lies at or before it).
    """
    n = np.asarray(n_samples_values, dtype=float)
    p = np.asarray(probability, dtype=float)
    if n.shape != p.shape or n.ndim != 1 or n.size == 0:
        raise ValueError(f"n_samples_values and probability: got shapes {n.shape} and {p.shape}, "
                         "need equal 1-D shapes")
    order = np.argsort(n)
    n, p = n[order], p[order]
    if monotone:
        p = isotonic_increasing(p)
    above = np.flatnonzero(p >= level)
    if above.size == 0:
        return float("nan")
    if monotone:
        first = above[0]
    else:  # the last crossing from below
        below = np.flatnonzero(p < level)
        if below.size == 0:
            return float(n[0])
        later = above[above > below[-1]]
        if later.size == 0:
            return float("nan")
        first = later[0]
    if first == 0:
        return float(n[0])
    lower = first - 1
    return float(n[lower] + (n[first] - n[lower]) * (level - p[lower]) / (p[first] - p[lower]))


def transition_interval(
    n_samples_values: Sequence[float],
    n_success: Sequence[int],
    n_trials: int | Sequence[int],
    level: float = 0.5,
    *,
    coverage: float = 0.9,
    n_boot: int = 400,
    seed: int = 0,
) -> tuple[float, float]:
    """A parametric-bootstrap interval for :func:`transition_point`.

    Each cell's count is redrawn as ``Binomial(n_trials, n_success / n_trials)``
    independently, the transition point recomputed, and the central ``coverage``
    quantiles of the ``n_boot`` values returned (NaN-free draws only; NaNs when more than
    half of them never reach ``level``). It measures the trial noise of the estimate,
    not the grid's resolution.
    """
    rng = np.random.default_rng(seed)
    n_success = np.asarray(n_success, dtype=int)
    n_trials = np.broadcast_to(np.asarray(n_trials, dtype=int), n_success.shape)
    estimate = n_success / n_trials
    points = np.array([
        transition_point(n_samples_values, rng.binomial(n_trials, estimate) / n_trials, level)
        for _ in range(n_boot)
    ])
    finite = points[np.isfinite(points)]
    if finite.size < n_boot / 2:
        return float("nan"), float("nan")
    tail = (1.0 - coverage) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def log_curve(s: np.ndarray | float, n_in: int) -> np.ndarray:
    """``2 s ln(n_in / s)``: the empirical scale of the transition (natural log)."""
    s = np.asarray(s, dtype=float)
    return 2.0 * s * np.log(n_in / s)


def neurips_curve(s: np.ndarray | float, n_in: int, mu: float = 1.0) -> np.ndarray:
    """``(11 s + 7) mu ln(n_in)``: the NeurIPS sufficient condition (natural log, ``mu = 1``).

    With ``mu > 1`` it holds with probability at least ``1 - n_in^(1 - mu)``; ``mu = 1``
    is the curve's scale, not a probability statement.
    """
    s = np.asarray(s, dtype=float)
    return (11.0 * s + 7.0) * mu * np.log(n_in)
