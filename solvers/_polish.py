"""Solution polishing for the ADMM: the exact optimum on the support the ADMM found, with
a certificate of optimality.

Once the ADMM has found the support ``S_m`` and signs ``sigma`` of each neuron's weights and
the inactive entries whose bound ``V`` is tight (``T_m``, where the inequality's dual is
positive), the program restricted to them has a closed form. For one neuron, with ``M``
the rows ``Omega_m`` and columns ``S_m`` of the scaled input, ``E`` the rows ``T_m``, and
``w`` the l1 weights:

.. math::

    \\min_\\theta (w \\sigma)^T \\theta \\quad \\text{s.t.} \\quad
    \\|M \\theta - y\\|^2 \\le \\varepsilon^2, \\quad E \\theta = h

Its KKT conditions give ``theta = theta_0 + t theta_1`` where ``theta_0`` is the
equality-constrained least-squares fit and ``theta_1`` solves the same KKT matrix with
right-hand side ``-w sigma``; the residual is ``a + c t^2`` with
``a = ||M theta_0 - y||^2`` and ``c = -(w sigma)^T theta_1``, so ``t`` follows from the
budget (one ``t`` per neuron, or one for the layer ball). The ball's multiplier is
``lambda = 1 / (2 t)`` and the equalities' ``nu = mu_0 / t + nu_1``.

The answer is accepted only with a certificate for the FULL program: the signs are
kept, every other constraint holds, ``nu >= 0``, and the subgradient condition
``|g_j| <= w_j`` holds off the support, where ``g = Xa^T N`` and ``N`` holds
``(R - Y) / t`` on ``Omega`` and ``nu`` on ``T`` (one product for all neurons).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .problem import relative_excess

__all__ = ["polish", "can_polish", "PolishResult"]

logger = logging.getLogger(__name__)


@dataclass
class PolishResult:
    """Outcome of one polishing attempt (``Theta`` is None when it is rejected)."""

    Theta: np.ndarray | None
    reason: str
    certificate: float = np.inf  # max over off-support of |g_j| / w_j (<= 1 + tol: optimal)


def can_polish(problem) -> bool:
    """Whether the closed form applies: every ball that holds entries has a positive budget.

    With ``epsilon = 0`` on a neuron (or layer) that has active entries, the ball is an
    equality and its multiplier is not given by the closed form.
    """
    if problem.per_neuron:
        has_entries = problem.active.any(axis=0)
        return bool(np.all(problem.epsilon[has_entries] > 0))
    return bool(problem.epsilon > 0 or not problem.active.any())


def _kkt_solve(G: np.ndarray, E: np.ndarray, rhs_top: np.ndarray, rhs_bottom: np.ndarray):
    """Solve ``[[G, E^T], [E, 0]] [x; mu] = [rhs_top; rhs_bottom]`` for several right-hand sides.

    LU first; when the matrix is singular (repeated tight rows, from duplicate samples)
    or the answer does not solve the system, least squares (minimum norm). The caller's
    certificate decides whether the answer is good.
    """
    n_vars, n_eq = G.shape[0], E.shape[0]
    K = np.zeros((n_vars + n_eq, n_vars + n_eq))
    K[:n_vars, :n_vars] = G
    K[n_vars:, :n_vars] = E
    K[:n_vars, n_vars:] = E.T
    rhs = np.vstack([rhs_top, rhs_bottom])
    try:
        solution = np.linalg.solve(K, rhs)
        accurate = np.all(np.isfinite(solution)) and (
            np.linalg.norm(K @ solution - rhs) <= 1e-8 * max(np.linalg.norm(rhs), 1e-300))
    except np.linalg.LinAlgError:
        accurate = False
    if not accurate:
        solution = np.linalg.lstsq(K, rhs, rcond=None)[0]
    return solution[:n_vars], solution[n_vars:]


def _neuron_kkt(Xa, Y, V, rows, columns, tight_rows, linear, m):
    """One neuron's two KKT solutions ``(theta_0, mu_0)`` and ``(theta_1, nu_1)``."""
    M = Xa[np.ix_(rows, columns)].astype(np.float64)
    y = Y[rows, m].astype(np.float64)
    E = Xa[np.ix_(tight_rows, columns)].astype(np.float64)
    h = np.zeros(tight_rows.size) if V is None else V[tight_rows, m].astype(np.float64)
    x, mu = _kkt_solve(M.T @ M, E, np.column_stack([M.T @ y, -linear]), np.column_stack([h, np.zeros_like(h)]))
    theta0, theta1 = x[:, 0], x[:, 1]
    a = float(np.sum((M @ theta0 - y) ** 2))
    c = float(-linear @ theta1)
    return tight_rows, theta0, theta1, mu[:, 0], mu[:, 1], a, c


def _restricted(Xa, Y, V, epsilon, relu, active, support, signs, tight, weights, cache):
    """Closed-form optimum of the program restricted to ``support`` and ``tight``.

    Returns ``("ok", Theta, nu, inverse_steps)`` with ``inverse_steps = 1 / t = 2 lambda``
    per neuron, or ``("kkt", neurons)`` when those neurons' restricted programs are
    inconsistent, or ``("budget", neurons)`` when their supports cannot meet the budget.
    ``cache`` keeps each neuron's KKT solution between rounds; only neurons whose support,
    signs or tight bounds changed are solved again.
    """
    n_cols, n_out = support.shape
    per_neuron = epsilon.ndim == 1
    parts, inconsistent = [], []
    for m in range(n_out):
        key = (support[:, m].tobytes(), signs[:, m].tobytes(), b"" if tight is None else (tight[:, m] > 0).tobytes())
        if m not in cache or cache[m][0] != key:
            columns = np.flatnonzero(support[:, m])
            rows = np.flatnonzero(active[:, m]) if relu else np.arange(Y.shape[0])
            tight_rows = np.flatnonzero(tight[:, m] > 0) if tight is not None else np.empty(0, dtype=int)
            if tight_rows.size > 1:  # the same bound twice (duplicate samples, a bias-only support)
                bound = np.zeros(tight_rows.size) if V is None else V[tight_rows, m]
                _, first = np.unique(np.column_stack([Xa[np.ix_(tight_rows, columns)], bound]),
                                     axis=0, return_index=True)
                tight_rows = tight_rows[np.sort(first)]
            if tight_rows.size > columns.size:  # at most one equality per unknown: the strongest
                tight_rows = np.sort(tight_rows[np.argsort(-tight[tight_rows, m])[: columns.size]])
            linear = weights[columns] * signs[columns, m]
            cache[m] = (key, (columns, *_neuron_kkt(Xa, Y, V, rows, columns, tight_rows, linear, m)))
        part = cache[m][1]
        if part[-1] < -1e-9 * max(1.0, abs(part[-2])):
            inconsistent.append(m)
        parts.append(part)
    if inconsistent:
        return "kkt", inconsistent
    a_values = np.array([part[-2] for part in parts])
    c_values = np.maximum(np.array([part[-1] for part in parts]), 0.0)
    if per_neuron:
        budgets, a_ref, c_ref = epsilon**2, a_values, c_values
    else:
        budgets = np.full(n_out, float(epsilon) ** 2)
        a_ref, c_ref = np.full(n_out, a_values.sum()), np.full(n_out, c_values.sum())
    over = a_ref > budgets
    if over.any():
        if per_neuron:
            return "budget", list(np.flatnonzero(over))
        worst = np.argsort(-a_values)[: max(1, n_out // 4)]  # the neurons furthest from Y
        return "budget", list(worst[a_values[worst] > 0])
    # t = sqrt((budget - a) / c); no penalised weight (c = 0): the ball is not binding, 1/t = 0
    inverse_steps = np.where(c_ref > 0, np.sqrt(c_ref / np.maximum(budgets - a_ref, 1e-300)), 0.0)

    Theta = np.zeros((n_cols, n_out))
    nu = np.zeros(Y.shape) if tight is not None else None
    for m, (columns, tight_rows, theta0, theta1, mu0, nu1, _, _) in enumerate(parts):
        step = 1.0 / inverse_steps[m] if inverse_steps[m] > 0 else 0.0
        Theta[columns, m] = theta0 + step * theta1
        if nu is not None:
            nu[tight_rows, m] = mu0 * inverse_steps[m] + nu1
    return "ok", Theta, nu, inverse_steps


def _correlated_columns(Xa, Y, active, relu, support, Theta_fit, m, count):
    """Off-support columns most correlated with neuron ``m``'s residual, and their signs."""
    rows = np.flatnonzero(active[:, m]) if relu else np.arange(Y.shape[0])
    residual = Y[rows, m] - Xa[rows] @ Theta_fit
    correlation = Xa[rows].T @ residual
    correlation[support[:, m]] = 0.0
    best = np.argsort(-np.abs(correlation))[:count]
    best = best[np.abs(correlation[best]) > 0]
    return best, np.sign(correlation[best])


def polish(Xa: np.ndarray, Y: np.ndarray, V: np.ndarray | None, epsilon: np.ndarray, relu: bool,
           Q: np.ndarray, tight: np.ndarray | None, weights: np.ndarray, tol: float,
           rounds: int = 12) -> PolishResult:
    """Try to turn the ADMM's iterate into the exact, certified optimum.

    Starting from the support and signs of ``Q`` and the ``tight`` bounds, each round
    solves the restricted program and checks the certificate; what the check finds
    wrong is mended for the next round (an active-set step): weights that changed sign
    leave the support, off-support weights whose subgradient exceeds its weight join it
    with the sign that lowers the objective, bounds with negative multipliers are
    released and violated bounds become tight. A neuron whose restricted program is
    inconsistent loses its tight bounds; neurons whose supports cannot meet the budget
    gain the columns most correlated with their residuals and lose the weakest quarter
    of their tight bounds. Violated bounds join a few
    at a time (the worst first, at most a quarter of the neuron's support per round).

    Parameters
    ----------
    Xa, Y, V, epsilon : the ADMM's scaled data (``Xa`` with its bias column).
    relu : bool
    Q : ndarray (n_cols, n_out)
        The ADMM's sparse copy; its nonzeros give the support and signs.
    tight : ndarray (n_samples, n_out) or None
        Inactive entries whose bound is taken as an equality: positive entries, ranked by
        value (the ADMM's dual) when a neuron has more of them than support entries.
        None for a linear layer.
    weights : ndarray (n_cols,)
        l1 weight of each row (0 for an unpenalised bias, which is always in the support).
    tol : float
        Tolerance of the certificate (relative).
    rounds : int
        Active-set rounds before giving up.
    """
    free = weights[:, None] == 0
    support = (Q != 0) | free
    signs = np.sign(Q)
    active = Y > 0 if relu else None
    tight = None if tight is None else tight.copy()
    reason = "no round"
    cache: dict = {}
    for _ in range(rounds):
        outcome = _restricted(Xa, Y, V, epsilon, relu, active, support, signs, tight, weights, cache)
        if outcome[0] != "ok":
            kind, neurons = outcome
            reason = "inconsistent restricted program" if kind == "kkt" else "the support cannot meet the budget"
            logger.debug("polish round: %s for %d neurons", reason, len(neurons))
            for m in neurons:
                if kind == "kkt":
                    if tight is None or not (tight[:, m] > 0).any():
                        return PolishResult(None, reason)
                    tight[:, m] = 0.0
                    continue
                columns, used_rows, theta0 = cache[m][1][:3]
                if used_rows.size:  # release the weakest quarter of the bounds it used
                    weakest = used_rows[np.argsort(tight[used_rows, m])[: max(1, used_rows.size // 4)]]
                    tight[weakest, m] = 0.0
                fit = np.zeros(Q.shape[0])
                fit[columns] = theta0
                count = max(2, int(0.1 * support[:, m].sum()))
                added, added_signs = _correlated_columns(Xa, Y, active, relu, support, fit, m, count)
                if added.size == 0:
                    return PolishResult(None, reason)
                support[added, m] = True
                signs[added, m] = added_signs
            continue
        _, Theta, nu, inverse_steps = outcome
        penalised = support & ~free
        flipped = penalised & (Theta * signs <= 0)
        response = Xa.astype(np.float64) @ Theta
        N = (response - Y) * inverse_steps
        if relu:
            N[~active] = 0.0 if nu is None else nu[~active]
        gradient = Xa.T.astype(np.float64) @ N
        bound = np.broadcast_to(weights[:, None], Q.shape)
        outside = ~support
        excess = np.where(outside, np.abs(gradient) - bound * (1.0 + tol), -np.inf)
        released = violated = None
        if tight is not None:
            scale = max(1.0, float(np.abs(nu).max()))
            is_tight = tight > 0
            released = is_tight & (nu < -tol * scale)
            upper = 0.0 if V is None else V
            slack_scale = max(float(np.sqrt(np.sum(epsilon**2))), 1e-300)
            excess_bound = np.where(~active & ~is_tight, response - upper, 0.0)
            violated = excess_bound > tol * slack_scale / np.sqrt(Y.size)
            limit = np.maximum(1, support.sum(axis=0) // 4)
            for m in np.flatnonzero(violated.sum(axis=0) > limit):
                rows = np.flatnonzero(violated[:, m])
                keep = rows[np.argsort(-excess_bound[rows, m])[: limit[m]]]
                violated[:, m] = False
                violated[keep, m] = True
        mend_bounds = tight is not None and (released.any() or violated.any())
        if not flipped.any() and not (excess > 0).any() and not mend_bounds:
            if relative_excess(response, Y, epsilon, relu=relu, upper=V) > tol:
                return PolishResult(None, "a constraint outside the restricted program is violated")
            ratio = np.abs(gradient[outside]) / bound[outside]
            return PolishResult(Theta, "certified", float(ratio.max()) if ratio.size else 0.0)
        logger.debug("polish round: %d flipped, %d off-support excess, %d bounds released, %d violated",
                     flipped.sum(), (excess > 0).sum(), 0 if released is None else released.sum(),
                     0 if violated is None else violated.sum())
        reason = ("a weight changed sign" if flipped.any() else
                  "the subgradient condition fails off the support" if (excess > 0).any() else
                  "a tight bound has a negative multiplier or a free bound is violated")
        support = (support & ~flipped) | (excess > 0)
        signs = np.where(excess > 0, -np.sign(gradient), signs)
        if mend_bounds:
            tight = np.where(released, 0.0, tight)
            tight = np.where(violated, np.inf, tight)  # new bounds rank first
    return PolishResult(None, reason)
