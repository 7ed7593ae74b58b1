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

from ._restricted import Moments, mend_unsolvable, restricted
from .problem import relative_excess

__all__ = ["polish", "can_polish", "PolishResult", "Moments"]

logger = logging.getLogger(__name__)


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
        outcome = restricted(moments, Xa, V, epsilon, support, signs, tight, weights, cache)
        if outcome[0] != "ok":
            stop, reason = mend_unsolvable(outcome, moments, cache, support, signs, tight)
            if stop:
                return PolishResult(None, reason)
            continue
        _, Theta, nu, inverse_steps = outcome
        round_ = _Round(Xa, Y, V, epsilon, active, weights, free, support, signs, Theta, nu, inverse_steps, tight,
                        tol)
        if not round_.needs_mending:
            return round_.certify(relu)
        count = round_.count
        logger.debug("polish round: %d flipped, %d off-support excess, %d bounds released, %d violated",
                     round_.flipped.sum(), (round_.excess > 0).sum(), round_.n_released, round_.n_violated)
        if first_count is None:
            first_count = count
        elif round_index >= _STALL_ROUNDS and count > _STALL_FRACTION * first_count:
            # the active set is not settling: the iterate is too far; the ADMM goes on
            return PolishResult(None, f"the active set is not settling ({count} changes left of {first_count})")
        reason = round_.reason
        support, signs, tight = round_.mended()
    return PolishResult(None, reason)


class _Round:
    """One completed round of :func:`polish`: the restricted optimum ``Theta`` (with the
    bounds' multipliers ``nu``) checked against the full program's optimality conditions.

    ``flipped``: penalised weights whose sign changed; ``excess``: how far the subgradient
    of each off-support weight exceeds its l1 weight; ``released``: tight bounds with a
    negative multiplier; ``violated``: free bounds the response crosses (the worst few per
    neuron). :meth:`mended` gives the next round's support, signs and tight bounds;
    :meth:`certify` the answer when nothing needs mending.
    """

    def __init__(self, Xa, Y, V, epsilon, active, weights, free, support, signs, Theta, nu, inverse_steps, tight,
                 tol) -> None:
        self.Y, self.V, self.epsilon, self.active, self.tol = Y, V, epsilon, active, tol
        self.support, self.signs, self.Theta, self.nu, self.tight = support, signs, Theta, nu, tight
        penalised = support & ~free
        self.flipped = penalised & (Theta * signs <= 0)
        self.response = Xa @ Theta
        N = (self.response - Y) * inverse_steps
        if active is not None:
            N[~active] = 0.0 if nu is None else nu[~active]
        self.gradient = Xa.T @ N
        self.bound = np.broadcast_to(weights[:, None], signs.shape)
        self.outside = ~support
        self.excess = np.where(self.outside, np.abs(self.gradient) - self.bound * (1.0 + tol), -np.inf)
        self.slack_scale = max(float(np.sqrt(np.sum(epsilon**2))), 1e-300)
        self.released = self.violated = None
        if tight is not None:
            self._bounds()

    def _bounds(self) -> None:
        """Tight bounds to release and free bounds that join (the worst, a quarter of the
        neuron's support at most)."""
        tight, nu, tol = self.tight, self.nu, self.tol
        scale = max(1.0, float(np.abs(nu).max()))
        is_tight = tight > 0
        self.released = is_tight & (nu < -tol * scale)
        upper = 0.0 if self.V is None else self.V
        excess_bound = np.where(~self.active & ~is_tight, self.response - upper, 0.0)
        violated = excess_bound > tol * self.slack_scale / np.sqrt(self.Y.size)
        limit = np.maximum(1, self.support.sum(axis=0) // 4)
        for m in np.flatnonzero(violated.sum(axis=0) > limit):
            rows = np.flatnonzero(violated[:, m])
            keep = rows[np.argsort(-excess_bound[rows, m])[: limit[m]]]
            violated[:, m] = False
            violated[keep, m] = True
        self.violated = violated

    @property
    def mend_bounds(self) -> bool:
        return self.tight is not None and bool(self.released.any() or self.violated.any())

    @property
    def needs_mending(self) -> bool:
        return bool(self.flipped.any() or (self.excess > 0).any() or self.mend_bounds)

    @property
    def n_released(self) -> int:
        return 0 if self.released is None else int(self.released.sum())

    @property
    def n_violated(self) -> int:
        return 0 if self.violated is None else int(self.violated.sum())

    @property
    def count(self) -> int:
        """How many changes this round asks for."""
        return int(self.flipped.sum() + (self.excess > 0).sum() + self.n_released + self.n_violated)

    @property
    def reason(self) -> str:
        return ("a weight changed sign" if self.flipped.any() else
                "the subgradient condition fails off the support" if (self.excess > 0).any() else
                "a tight bound has a negative multiplier or a free bound is violated")

    def certify(self, relu: bool) -> PolishResult:
        """The certificate for the full program, when no change is asked for."""
        tol, response = self.tol, self.response
        if relative_excess(response, self.Y, self.epsilon, relu=relu, upper=self.V) > tol:
            return PolishResult(None, "a constraint outside the restricted program is violated")
        # stationarity on the support (g = -w sign) and complementary slackness on the
        # bounds: exact when the KKT systems were solved exactly, checked in case not
        on_support = np.abs(self.gradient + self.bound * self.signs)[self.support]
        if on_support.size and on_support.max() > tol * max(1.0, float(self.bound.max())):
            return PolishResult(None, "stationarity fails on the support")
        if self.tight is not None and self.nu.max() > 0:
            upper = np.zeros_like(response) if self.V is None else self.V
            gap = np.abs(response - upper)[self.nu > 0]
            if gap.max() > tol * self.slack_scale / np.sqrt(self.Y.size):
                return PolishResult(None, "a bound with a positive multiplier is not tight")
        ratio = np.abs(self.gradient[self.outside]) / self.bound[self.outside]
        return PolishResult(self.Theta, "certified", float(ratio.max()) if ratio.size else 0.0)

    def mended(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The next round's support, signs and tight bounds (an active-set step)."""
        joining = self.excess > 0
        limit = np.maximum(1, self.support.sum(axis=0) // 10)  # a few per neuron: joining all at once cycles
        for m in np.flatnonzero(joining.sum(axis=0) > limit):
            rows = np.flatnonzero(joining[:, m])
            joining[rows[np.argsort(-self.excess[rows, m])[limit[m]:]], m] = False
        support = (self.support & ~self.flipped) | joining
        signs = np.where(joining, -np.sign(self.gradient), self.signs)
        tight = self.tight
        if self.mend_bounds:
            tight = np.where(self.released, 0.0, tight)
            tight = np.where(self.violated, np.inf, tight)  # new bounds rank first
        return support, signs, tight
