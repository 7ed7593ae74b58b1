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
kept, every constraint holds, ``nu >= 0`` and is zero where a bound is not tight, and
with ``g = Xa^T N`` (``N`` holds ``(R - Y) / t`` on ``Omega`` and ``nu`` on ``T``; one
product for all neurons) ``g_j = -w_j sigma_j`` on the support and ``|g_j| <= w_j`` off it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .problem import relative_excess

__all__ = ["polish", "can_polish", "PolishResult", "Moments"]

logger = logging.getLogger(__name__)


_DROP_TIGHT = 0.25  # fraction of a neuron's tight bounds released when its support misses the budget
_BUDGET_MEND = 0.25  # fraction of the neurons (furthest from Y first) mended when a layer ball is missed
_STALL_ROUNDS = 4  # after this many rounds, stop unless the changes needed fell below ...
_STALL_FRACTION = 0.25  # ... this fraction of the first round's


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


def _kkt_solve(G: np.ndarray, E: np.ndarray, rhs_top: np.ndarray, rhs_bottom: np.ndarray,
               least_squares: bool = False):
    """Solve ``[[G, E^T], [E, 0]] [x; mu] = [rhs_top; rhs_bottom]`` for several right-hand sides.

    LU; None when the matrix is singular or the answer does not solve the system (repeated
    tight rows, from duplicate samples). ``least_squares=True``: minimum-norm least
    squares instead, which always answers; the caller's certificate decides whether the
    answer is good.
    """
    n_vars, n_eq = G.shape[0], E.shape[0]
    K = np.zeros((n_vars + n_eq, n_vars + n_eq))
    K[:n_vars, :n_vars] = G
    K[n_vars:, :n_vars] = E
    K[:n_vars, n_vars:] = E.T
    rhs = np.vstack([rhs_top, rhs_bottom])
    if least_squares:
        solution = np.linalg.lstsq(K, rhs, rcond=None)[0]
    else:
        try:
            solution = np.linalg.solve(K, rhs)
        except np.linalg.LinAlgError:
            return None
        if not (np.all(np.isfinite(solution)) and
                np.linalg.norm(K @ solution - rhs) <= 1e-8 * max(np.linalg.norm(rhs), 1e-300)):
            return None
    return solution[:n_vars], solution[n_vars:]


class Moments:
    """Each neuron's second moments on its active rows, computed once per solve.

    ``gram[m] = Xa_{Omega_m}^T Xa_{Omega_m}`` (all neurons at once when ``n_out n_cols^2``
    floats fit in ``memory`` bytes, else gathered neuron by neuron on demand),
    ``moment[:, m] = Xa_{Omega_m}^T y_m`` and ``y_sq[m] = ||y_{Omega_m}||^2``, so a
    restricted least-squares fit costs ``O(|S_m|^3)`` instead of a pass over the samples.
    """

    def __init__(self, Xa: np.ndarray, Y: np.ndarray, active: np.ndarray | None, memory: float = 256e6) -> None:
        self.Xa, self.active = Xa, active
        masked = Y if active is None else np.where(active, Y, 0.0)
        self.moment = Xa.T @ masked
        self.y_sq = np.einsum("pm,pm->m", masked, masked)
        n_cols, n_out = Xa.shape[1], Y.shape[1]
        self.gram = None
        if active is None:
            self.gram = Xa.T @ Xa  # one Gram for every neuron
        elif n_out * n_cols**2 * 8 <= memory:
            self.gram = np.empty((n_out, n_cols, n_cols))
            full = Xa.T @ Xa
            for m in range(n_out):
                if 2 * np.count_nonzero(active[:, m]) > Xa.shape[0]:  # fewer rows to subtract
                    rows = Xa[~active[:, m]]
                    np.subtract(full, rows.T @ rows, out=self.gram[m])
                else:
                    rows = Xa[active[:, m]]
                    np.matmul(rows.T, rows, out=self.gram[m])

    def neuron(self, m: int, columns: np.ndarray) -> np.ndarray:
        """``M^T M`` for neuron ``m`` restricted to ``columns``."""
        if self.gram is None:
            M = self.Xa[np.ix_(np.flatnonzero(self.active[:, m]), columns)]
            return M.T @ M
        gram = self.gram if self.gram.ndim == 2 else self.gram[m]
        return gram[np.ix_(columns, columns)]


def _neuron_kkt(moments, Xa, V, columns, tight_rows, linear, m):
    """One neuron's two KKT solutions ``(theta_0, mu_0)`` and ``(theta_1, nu_1)``."""
    G = moments.neuron(m, columns)
    b = moments.moment[columns, m]
    E = Xa[np.ix_(tight_rows, columns)]
    h = np.zeros(tight_rows.size) if V is None else V[tight_rows, m]
    solved = _kkt_solve(G, E, np.column_stack([b, -linear]), np.column_stack([h, np.zeros_like(h)]))
    if solved is None and tight_rows.size > 1:  # the same bound twice (duplicate samples)?
        _, first = np.unique(np.column_stack([E, h]), axis=0, return_index=True)
        first.sort()
        tight_rows, E, h = tight_rows[first], E[first], h[first]
        solved = _kkt_solve(G, E, np.column_stack([b, -linear]), np.column_stack([h, np.zeros_like(h)]))
    if solved is None:
        solved = _kkt_solve(G, E, np.column_stack([b, -linear]), np.column_stack([h, np.zeros_like(h)]),
                            least_squares=True)
    x, mu = solved
    theta0, theta1 = x[:, 0], x[:, 1]
    a = max(float(theta0 @ G @ theta0 - 2.0 * b @ theta0 + moments.y_sq[m]), 0.0)  # ||M theta0 - y||^2
    c = float(-linear @ theta1)
    return tight_rows, theta0, theta1, mu[:, 0], mu[:, 1], a, c


def _neuron_part(moments, Xa, V, support, signs, tight, weights, cache, m):
    """Solve neuron ``m``'s restricted KKT systems into ``cache[m]`` unless already there."""
    key = (support[:, m].tobytes(), signs[:, m].tobytes(), b"" if tight is None else (tight[:, m] > 0).tobytes())
    if m not in cache or cache[m][0] != key:
        columns = np.flatnonzero(support[:, m])
        tight_rows = np.flatnonzero(tight[:, m] > 0) if tight is not None else np.empty(0, dtype=int)
        if tight_rows.size > columns.size:  # at most one equality per unknown: the strongest
            tight_rows = np.sort(tight_rows[np.argsort(-tight[tight_rows, m])[: columns.size]])
        linear = weights[columns] * signs[columns, m]
        cache[m] = (key, (columns, *_neuron_kkt(moments, Xa, V, columns, tight_rows, linear, m)))


def _restricted(moments, Xa, V, epsilon, support, signs, tight, weights, cache):
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
        _neuron_part(moments, Xa, V, support, signs, tight, weights, cache, m)
    for m in range(n_out):
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
        worst = np.argsort(-a_values)[: max(1, int(_BUDGET_MEND * n_out))]  # the neurons furthest from Y
        return "budget", list(worst[a_values[worst] > 0])
    # t = sqrt((budget - a) / c); no penalised weight (c = 0): the ball is not binding, 1/t = 0
    inverse_steps = np.where(c_ref > 0, np.sqrt(c_ref / np.maximum(budgets - a_ref, 1e-300)), 0.0)

    Theta = np.zeros((n_cols, n_out))
    nu = np.zeros((Xa.shape[0], n_out)) if tight is not None else None
    for m, (columns, tight_rows, theta0, theta1, mu0, nu1, _, _) in enumerate(parts):
        step = 1.0 / inverse_steps[m] if inverse_steps[m] > 0 else 0.0
        Theta[columns, m] = theta0 + step * theta1
        if nu is not None:
            nu[tight_rows, m] = mu0 * inverse_steps[m] + nu1
    return "ok", Theta, nu, inverse_steps


def _correlated_columns(moments, support, Theta_fit, m, count):
    """Off-support columns most correlated with neuron ``m``'s residual, and their signs."""
    columns = np.flatnonzero(Theta_fit)
    gram_rows = moments.gram if moments.gram is not None and moments.gram.ndim == 2 else None
    if moments.gram is not None and gram_rows is None:
        gram_rows = moments.gram[m]
    if gram_rows is not None:  # X_Omega^T (y - X_Omega theta) from the moments
        correlation = moments.moment[:, m] - gram_rows[:, columns] @ Theta_fit[columns]
    else:
        rows = np.flatnonzero(moments.active[:, m])
        correlation = moments.Xa[rows].T @ (moments.Xa[np.ix_(rows, columns)] @ -Theta_fit[columns])
        correlation += moments.moment[:, m]
    correlation[support[:, m]] = 0.0
    best = np.argsort(-np.abs(correlation))[:count]
    best = best[np.abs(correlation[best]) > 0]
    return best, np.sign(correlation[best])


def _mend_unsolvable(outcome, moments, cache, support, signs, tight) -> tuple[bool, str]:
    """Change the restricted program after ``_restricted`` found no answer (in place).

    Inconsistent neurons lose their tight bounds; neurons that cannot meet the budget lose
    the weakest quarter of theirs and gain the columns most correlated with their
    residuals. Returns whether polishing must stop, and why the round failed.
    """
    kind, neurons = outcome
    reason = "inconsistent restricted program" if kind == "kkt" else "the support cannot meet the budget"
    logger.debug("polish round: %s for %d neurons", reason, len(neurons))
    for m in neurons:
        if kind == "kkt":
            if tight is None or not (tight[:, m] > 0).any():
                return True, reason
            tight[:, m] = 0.0
            continue
        columns, used_rows, theta0 = cache[m][1][:3]
        if used_rows.size:
            weakest = used_rows[np.argsort(tight[used_rows, m])[: max(1, int(_DROP_TIGHT * used_rows.size))]]
            tight[weakest, m] = 0.0
        fit = np.zeros(support.shape[0])
        fit[columns] = theta0
        count = max(2, int(0.1 * support[:, m].sum()))
        added, added_signs = _correlated_columns(moments, support, fit, m, count)
        if added.size == 0 and not used_rows.size:  # nothing left to change for this neuron
            return True, reason
        support[added, m] = True
        signs[added, m] = added_signs
    return False, reason


def polish(Xa: np.ndarray, Y: np.ndarray, V: np.ndarray | None, epsilon: np.ndarray, relu: bool,
           Q: np.ndarray, tight: np.ndarray | None, weights: np.ndarray, tol: float,
           rounds: int = 12, moments: Moments | None = None) -> PolishResult:
    """Try to turn the ADMM's iterate into the exact, certified optimum.

    Starting from the support and signs of ``Q`` and the ``tight`` bounds, each round
    solves the restricted program and checks the certificate; what the check finds
    wrong is mended for the next round (an active-set step): weights that changed sign
    leave the support, off-support weights whose subgradient exceeds its weight join it
    with the sign that lowers the objective (the worst few per neuron per round, at most
    a tenth of its support: letting all join at once cycles), bounds with negative
    multipliers are
    released and violated bounds become tight. A neuron whose restricted program is
    inconsistent loses its tight bounds; neurons whose supports cannot meet the budget
    gain the columns most correlated with their residuals and lose the weakest quarter
    of their tight bounds. Violated bounds join a few at a time (the worst first, at
    most a quarter of the neuron's support per round).

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
    moments : Moments, optional
        The second moments of the data, to reuse across attempts within one solve.
    """
    # float64 throughout (no copies when the ADMM ran in float64)
    Xa, Y = np.asarray(Xa, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    V = None if V is None else np.asarray(V, dtype=np.float64)
    free = weights[:, None] == 0
    support = (Q != 0) | free
    signs = np.sign(Q)
    active = Y > 0 if relu else None
    if moments is None:
        moments = Moments(Xa, Y, active)
    tight = None if tight is None else tight.copy()
    reason = "no round"
    cache: dict = {}
    first_count = None  # mends needed in the first completed round
    for round_index in range(rounds):
        if round_index >= _STALL_ROUNDS and first_count is None:
            return PolishResult(None, reason + " (no restricted solution after several rounds)")
        outcome = _restricted(moments, Xa, V, epsilon, support, signs, tight, weights, cache)
        if outcome[0] != "ok":
            stop, reason = _mend_unsolvable(outcome, moments, cache, support, signs, tight)
            if stop:
                return PolishResult(None, reason)
            continue
        _, Theta, nu, inverse_steps = outcome
        penalised = support & ~free
        flipped = penalised & (Theta * signs <= 0)
        response = Xa @ Theta
        N = (response - Y) * inverse_steps
        if relu:
            N[~active] = 0.0 if nu is None else nu[~active]
        gradient = Xa.T @ N
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
            # stationarity on the support (g = -w sign) and complementary slackness on the
            # bounds: exact when the KKT systems were solved exactly, checked in case not
            on_support = np.abs(gradient + bound * signs)[support]
            if on_support.size and on_support.max() > tol * max(1.0, float(bound.max())):
                return PolishResult(None, "stationarity fails on the support")
            if tight is not None and nu.max() > 0:
                upper = np.zeros_like(response) if V is None else V
                gap = np.abs(response - upper)[nu > 0]
                if gap.max() > tol * slack_scale / np.sqrt(Y.size):
                    return PolishResult(None, "a bound with a positive multiplier is not tight")
            ratio = np.abs(gradient[outside]) / bound[outside]
            return PolishResult(Theta, "certified", float(ratio.max()) if ratio.size else 0.0)
        count = int(flipped.sum() + (excess > 0).sum() + (0 if released is None else released.sum())
                    + (0 if violated is None else violated.sum()))
        logger.debug("polish round: %d flipped, %d off-support excess, %d bounds released, %d violated",
                     flipped.sum(), (excess > 0).sum(), 0 if released is None else released.sum(),
                     0 if violated is None else violated.sum())
        if first_count is None:
            first_count = count
        elif round_index >= _STALL_ROUNDS and count > _STALL_FRACTION * first_count:
            # the active set is not settling: the iterate is too far; the ADMM goes on
            return PolishResult(None, f"the active set is not settling ({count} changes left of {first_count})")
        reason = ("a weight changed sign" if flipped.any() else
                  "the subgradient condition fails off the support" if (excess > 0).any() else
                  "a tight bound has a negative multiplier or a free bound is violated")
        joining = excess > 0
        limit = np.maximum(1, support.sum(axis=0) // 10)  # a few per neuron: joining all at once cycles
        for m in np.flatnonzero(joining.sum(axis=0) > limit):
            rows = np.flatnonzero(joining[:, m])
            joining[rows[np.argsort(-excess[rows, m])[limit[m]:]], m] = False
        support = (support & ~flipped) | joining
        signs = np.where(joining, -np.sign(gradient), signs)
        if mend_bounds:
            tight = np.where(released, 0.0, tight)
            tight = np.where(violated, np.inf, tight)  # new bounds rank first
    return PolishResult(None, reason)
