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

:class:`Polisher` runs the attempts for the ADMM: when to try, and how much work failed
attempts may take (``AdmmSettings.polish_budget``, counted by the cost model of
:class:`~solvers._restricted.Work`, never by a clock).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._bounded import bounded_restricted, mend_budget
from ._restricted import Moments, Work, mend_unsolvable, restricted
from .problem import relative_excess

__all__ = ["polish", "can_polish", "PolishResult", "Polisher", "Moments", "Work"]

logger = logging.getLogger(__name__)


_STALL_ROUNDS = 4  # after this many rounds, stop unless the changes needed fell below ...
_STALL_FRACTION = 0.25  # ... this fraction of the first round's


@dataclass
class PolishResult:
    """Outcome of one polishing attempt (``Theta`` is None when it is rejected) and the
    floating-point operations it took (:class:`~solvers._restricted.Work`)."""

    Theta: np.ndarray | None
    reason: str
    certificate: float = np.inf  # max over off-support of |g_j| / w_j (<= 1 + tol: optimal)
    flops: float = 0.0


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
           rounds: int = 40, moments: Moments | None = None, work: Work | None = None,
           flops_limit: float = np.inf) -> PolishResult:
    """Try to turn the ADMM's iterate into the exact, certified optimum.

    Starting from the support and signs of ``Q`` and the ``tight`` bounds, each round
    solves the restricted program and checks the certificate; what the check finds
    wrong is mended for the next round (an active-set step): weights that changed sign
    leave the support, off-support weights whose subgradient exceeds its weight join it
    with the sign that lowers the objective (the worst few per neuron per round, at most
    a tenth of its support: letting all join at once cycles), bounds with negative
    multipliers are released and violated bounds become tight. A neuron whose restricted
    program is inconsistent loses its tight bounds; neurons whose supports cannot meet
    the budget gain the columns most correlated with their residuals and lose the
    weakest quarter of their tight bounds. Violated bounds join a few at a time (the worst first, at
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
    work : Work, optional
        Where the attempt's floating-point operations are added up (a new counter if
        None; the result's ``flops`` is its total either way).
    flops_limit : float, default inf
        The attempt gives up after a round that takes ``work`` beyond this many
        operations (the first round always runs).
    """
    # float64 throughout (no copies when the ADMM ran in float64)
    Xa, Y = np.asarray(Xa, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    V = None if V is None else np.asarray(V, dtype=np.float64)
    free = weights[:, None] == 0
    support, signs, active = (Q != 0) | free, np.sign(Q), (Y > 0 if relu else None)
    work = Work() if work is None else work
    if moments is None:  # formed once per solve: a set-up, not charged to ``work``
        moments = Moments(Xa, Y, active)
    tight = None if tight is None else tight.copy()
    reason, cache = "no round", {}
    first_count = None  # mends needed in the first completed round
    for round_index in range(rounds):
        stop = _stop_before(round_index, first_count, reason, work.flops, flops_limit)
        if stop is not None:
            return PolishResult(None, stop, flops=work.flops)
        if relu:
            outcome = bounded_restricted(moments, np.ascontiguousarray(Xa), V, epsilon, support, signs, weights,
                                         work, cache, tol)
        else:
            outcome = restricted(moments, Xa, V, epsilon, support, signs, tight, weights, cache, work)
        if outcome[0] != "ok":
            if relu:
                reason = ("the bounds admit no point on the support" if outcome[0] == "kkt"
                          else "the support cannot meet the budget")
                if outcome[0] == "kkt" or not mend_budget(moments, cache, support, signs, outcome[1]):
                    return PolishResult(None, reason, flops=work.flops)
                continue
            stop, reason = mend_unsolvable(outcome, moments, cache, support, signs, tight)
            if stop:
                return PolishResult(None, reason, flops=work.flops)
            continue
        _, Theta, nu, inverse_steps = outcome
        if relu:
            support = (Theta != 0) | free
            tight = np.where(nu > 0, nu, 0.0)
        round_ = _Round(Xa, Y, V, epsilon, active, weights, free, support, signs, Theta, nu, inverse_steps, tight,
                        tol)
        round_.charge(work)
        if not round_.needs_mending:
            return round_.certify(relu, work.flops)
        if relu and not (round_.flipped.any() or round_.mend_bounds):
            gap = round_.relative_gap()
            logger.debug("polish round %d: relative duality gap %.3g", round_index, gap)
            if gap <= tol:
                return round_.certify(relu, work.flops)
        round_.log(round_index, work.flops)
        if first_count is None:
            first_count = round_.count
        elif round_index >= _STALL_ROUNDS and round_.count > _STALL_FRACTION * first_count:
            # the active set is not settling: the iterate is too far; the ADMM goes on
            return PolishResult(None, f"the active set is not settling ({round_.count} changes left of "
                                f"{first_count})", flops=work.flops)
        reason = round_.reason
        support, signs, tight = round_.mended(every=relu)
    return PolishResult(None, reason, flops=work.flops)


def _stop_before(round_index: int, first_count: int | None, reason: str, flops: float,
                 flops_limit: float) -> str | None:
    """Why an attempt gives up before its next round (None: it goes on): no restricted
    solution after several rounds, or the work allowed is spent (the first round always runs)."""
    if round_index >= _STALL_ROUNDS and first_count is None:
        return reason + " (no restricted solution after several rounds)"
    if round_index > 0 and flops > flops_limit:
        return f"{reason} (its share of the work is spent)"
    return None


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
        self.gradient, self.N = Xa.T @ N, N
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

    def relative_gap(self) -> float:
        """The relative duality gap ``(P - D) / P`` of the round's point.

        The dual of the program is ``max y^T z - eps ||z|| - h^T nu`` over ``nu >= 0`` and
        ``|M^T z - E^T nu|_j <= w_j`` (per neuron; the layer ball takes ``eps ||Z||_F``). The
        round's multipliers give ``z = -N`` on the active entries and ``nu = N`` on the
        inactive ones, whose constraint is ``|g_j| <= w_j``: each neuron's are divided by
        its largest ``|g_j| / w_j`` (when above 1), which makes them feasible, so ``D`` is a
        lower bound of the optimum and the gap bounds how far ``P`` is from it.
        """
        penalised = self.bound > 0
        if (self.bound[~penalised].size and np.abs(self.gradient[~penalised]).max()
                > self.tol * max(1.0, float(self.bound.max()))):
            return np.inf  # an unpenalised weight is not stationary: no dual point from these multipliers
        ratio = np.where(penalised, np.abs(self.gradient) / np.where(penalised, self.bound, 1.0), 0.0)
        shrink = 1.0 / np.maximum(1.0, ratio.max(axis=0))
        active = np.ones(self.Y.shape, dtype=bool) if self.active is None else self.active
        Z = np.where(active, -self.N, 0.0) * shrink
        upper = 0.0 if self.V is None else self.V
        dual = float(np.sum(Z * self.Y)) - float(np.sum(np.where(active, 0.0, self.N * upper) * shrink))
        if np.ndim(self.epsilon) == 1:
            dual -= float(self.epsilon @ np.linalg.norm(Z, axis=0))
        else:
            dual -= float(self.epsilon) * float(np.linalg.norm(Z))
        primal = float(np.sum(self.bound * np.abs(self.Theta)))
        return (primal - dual) / max(primal, 1e-300)

    def charge(self, work: Work) -> None:
        """Add the round's two products, its response ``Xa Theta`` and gradient ``Xa^T N``, to ``work``."""
        n_samples, n_cols = self.response.shape[0], self.gradient.shape[0]
        work.product(n_samples, n_cols, self.response.shape[1])
        work.product(n_cols, n_samples, self.response.shape[1])

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

    def log(self, round_index: int, flops: float) -> None:
        logger.debug("polish round %d: %d flipped, %d off-support excess, %d bounds released, %d violated, "
                     "%.3g flops so far", round_index, self.flipped.sum(), (self.excess > 0).sum(),
                     self.n_released, self.n_violated, flops)

    def certify(self, relu: bool, flops: float) -> PolishResult:
        """The certificate for the full program, when no change is asked for (``flops``: the
        attempt's work, reported with the result)."""
        result = self._certificate(relu)
        result.flops = flops
        return result

    def _certificate(self, relu: bool) -> PolishResult:
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

    def mended(self, every: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The next round's support, signs and tight bounds (an active-set step). ``every``:
        every off-support weight whose subgradient exceeds its weight joins."""
        joining = self.excess > 0
        limit = np.maximum(1, self.support.sum(axis=0) // 10)  # a few per neuron: joining all at once cycles
        for m in np.flatnonzero(joining.sum(axis=0) > limit) if not every else ():
            rows = np.flatnonzero(joining[:, m])
            joining[rows[np.argsort(-self.excess[rows, m])[limit[m]:]], m] = False
        support = (self.support & ~self.flipped) | joining
        signs = np.where(joining, -np.sign(self.gradient), self.signs)
        tight = self.tight
        if self.mend_bounds:
            tight = np.where(self.released, 0.0, tight)
            tight = np.where(self.violated, np.inf, tight)  # new bounds rank first
        return support, signs, tight


class Polisher:
    """Polishing attempts on host copies of the iterate (float64), and their schedule.

    The float64 data and the per-neuron second moments are formed at the first attempt
    and kept for the others; ``seconds`` adds up the time of every attempt. Work is
    counted in floating-point operations of a fixed cost model
    (:class:`~solvers._restricted.Work`; an ADMM iteration is its two products and the
    weight step's small one), so that which attempts run never depends on the machine:
    on a ReLU layer, once an attempt has failed, failed attempts may take at most
    ``polish_budget`` times the ADMM's work so far. (There the polish must also find which
    inactive bounds are tight; at ``tol=1e-3`` it certified none of the suite's ReLU layers
    while it took 26-59% of their time. A linear layer's attempts are cheap and certify
    within two attempts on the suite; they keep the backoff alone.)
    """

    def __init__(self, problem, data, settings) -> None:
        self.problem, self.data, self.settings = problem, data, settings
        # the certificate is that of the l1 program; the group program stops on the ADMM's tolerance
        self.enabled = settings.polish and can_polish(problem) and problem.group_size is None
        self.next_at, self.wait = settings.polish_wait, settings.polish_wait  # the wait grows after a failure
        self.seconds = 0.0
        self.failed_flops = 0.0  # the work of the attempts that did not certify
        n_cols = problem.n_in + problem.fit_bias
        n_samples, n_out = problem.n_samples, problem.n_out
        self.iteration_flops = 4.0 * n_samples * n_cols * n_out + 2.0 * min(n_samples, n_cols) ** 2 * n_out
        self._cache: dict[str, Any] = {}

    @property
    def budgeted(self) -> bool:
        """Whether the next attempt is held to ``polish_budget``: on a ReLU layer, once an
        attempt has failed."""
        return self.problem.relu and self.failed_flops > 0

    def allowance(self, iteration: int) -> float:
        """The work failed attempts may still take at ``iteration`` (``polish_budget``
        times the work of the iterations so far, less what they took already)."""
        return self.settings.polish_budget * iteration * self.iteration_flops - self.failed_flops

    def due(self, primal_rel: float, iteration: int) -> bool:
        """Whether to attempt at this check: the relative primal residual is small enough, the
        wait since the last failure is over and the failed attempts are within budget."""
        return (self.enabled and primal_rel <= self.settings.polish_start and iteration >= self.next_at
                and (not self.budgeted or self.allowance(iteration) >= 0))

    def failed(self, iteration: int, attempt: PolishResult) -> None:
        """Count a failed attempt's work and schedule the next one (the backoff)."""
        self.failed_flops += attempt.flops
        self.next_at, self.wait = iteration + self.wait, int(round(self.settings.polish_backoff * self.wait))

    def _float64(self) -> dict[str, Any]:
        """The float64 data and the moments, formed once per solve for every attempt (their
        work is not charged to the attempts: it is a set-up, like the ADMM's factorisation)."""
        if not self._cache:
            data = self.data
            self._cache.update(Xa=data.Xa.astype(np.float64, copy=False), Y=data.Y.astype(np.float64, copy=False),
                               V=None if data.V is None else data.V.astype(np.float64, copy=False))
            self._cache["moments"] = Moments(self._cache["Xa"], self._cache["Y"],
                                             (data.Y > 0) if self.problem.relu else None)
        return self._cache

    def attempt(self, engine, state, iteration: int | None = None) -> PolishResult:
        """One attempt at the ADMM's current iterate ``state`` (its engine's arrays brought
        to the host). After a failed one, it gives up after a round that takes the failed
        attempts' work past the allowance at ``iteration`` (None: no limit)."""
        started = time.perf_counter()
        work = Work()
        cache, data, alpha = self._float64(), self.data, self.settings.alpha
        Q_host = engine.host(state.Q)
        tight = None
        if self.problem.relu:
            Y, V = data.Y, data.V
            dual = (engine.host(state.carry_a) - (1.0 - alpha) * engine.host(state.B)) / (2.0 - alpha)  # U = A - B
            dual = np.where(~(Y > 0), dual, 0.0)
            # a positive dual and a response of Q at its bound (within 5% of a typical |Y|)
            near = data.Xa @ Q_host >= (0.0 if V is None else V) - 0.05 * np.linalg.norm(Y) / np.sqrt(Y.size)
            work.product(*data.Xa.shape, Q_host.shape[1])
            tight = np.where((dual > 1e-9 * max(float(dual.max()), 1e-300)) & near, dual, 0.0)
        limit = self.allowance(iteration) if self.budgeted and iteration is not None else np.inf
        result = polish(cache["Xa"], cache["Y"], cache["V"], data.epsilon, self.problem.relu, Q_host, tight,
                        state.penalized, self.settings.tol, moments=cache["moments"], work=work, flops_limit=limit)
        self.seconds += time.perf_counter() - started
        return result
