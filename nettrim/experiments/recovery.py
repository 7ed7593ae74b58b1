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

A trial succeeds when ``||w_hat - w*|| <= 1e-3 ||w*||``. The theory (the journal version
of Net-Trim) says (a) recovers ``w*`` with high probability once ``n_samples >~ C s log(n_in / s)``;
:func:`nettrim.experiments.transition.phase_transition` measures the success rate over a
grid of ``(s, n_samples)`` and ``transition_point`` reads off the number of samples at 50%
success.

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

from solvers import LayerProblem, solve

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

    W_hat, errors, success, pending, history, total_iterations = _staged_admm(
        X, Y, W_star, program, stages, success_tol, decide_tol, certified, options)
    undecided[pending] = True
    success[pending] = errors[pending] <= success_tol
    if pending.size:
        logger.info("%s: %d of %d neurons undecided after %d stages (judged on their last weights)",
                    program, pending.size, n_neurons, len(history))
    return BatchRecovery(program, errors, success, undecided, certified, total_iterations,
                         time.perf_counter() - started, history)


def _staged_admm(X: np.ndarray, Y: np.ndarray, W_star: np.ndarray, program: str,
                 stages: Iterable[tuple[float, int]], success_tol: float, decide_tol: float,
                 certified: np.ndarray, options: dict[str, Any]) -> tuple:
    """The ADMM stages of :func:`solve_recovery`: each runs the neurons still undecided,
    warm-started, and decides successes (close to ``w*``) and certified failures
    (``certified`` is set in place). Returns ``(W_hat, errors, success, pending,
    history, iterations)`` with ``pending`` the neurons left undecided."""
    n_neurons = W_star.shape[0]
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
    return W_hat, errors, success, pending, history, total_iterations


def recovery_batch(
    X: np.ndarray,
    Y: np.ndarray,
    W_star: np.ndarray,
    programs: Sequence[str] = PROGRAMS,
    **options: Any,
) -> dict[str, BatchRecovery]:
    """Every program of ``programs`` on the same batch (:func:`solve_recovery`'s options)."""
    return {program: solve_recovery(X, Y, W_star, program, **options) for program in programs}
