"""Solution polishing for the ADMM: the exact optimum on the support the ADMM found, with
a certificate of optimality.

Once the ADMM has found the support ``S_m`` and signs ``sigma`` of each neuron's weights,
the program restricted to them is solved exactly. For one neuron, with ``M`` the rows
``Omega_m`` and columns ``S_m`` of the scaled input and ``c = w sigma`` the signed l1
weights:

.. math::

    \\min_\\theta c^T \\theta \\quad \\text{s.t.} \\quad \\|M \\theta - y\\|^2 \\le \\varepsilon^2
    \\quad (\\text{and on a ReLU layer } E\\theta \\le h, \\; \\sigma_j \\theta_j \\ge 0)

A linear layer's has a closed form (:mod:`solvers._restricted`) while its signs hold; a
ReLU layer's keeps its inactive bounds ``E theta <= h`` and its signs
``sigma_j theta_j >= 0`` as inequalities and is solved per neuron as a quadratic program
in the ball's step (:mod:`solvers._bounded`). Once a linear layer's round has flipped a
sign, its later rounds are solved the ReLU layer's way with no sample bound (the signs as
bounds): a weight stops at zero instead of flipping back and forth, and stays in the
program at zero. Either gives the multipliers: the ball's ``lambda = 1 / (2 t)`` and the
bounds' ``nu >= 0``.

The answer is accepted only with a certificate for the FULL program: every constraint
holds, and with ``g = Xa^T N`` (``N`` holds ``(R - Y) / t`` on ``Omega`` and ``nu`` on the
inactive entries; one product for all neurons) ``g_j = -w_j sigma_j`` on the support and
``|g_j| <= w_j`` off it. In the rounds with sign bounds a duality gap may also certify:
the multipliers, each neuron's shifted on its active entries so that the free weight's
(the bias's) ``g`` is exactly zero and divided by its largest ``|g_j| / w_j``, are
feasible for the dual, whose value bounds the optimum from below (:meth:`_Round.dual_bound`, the best
over the attempt's rounds); a relative gap within ``tol`` certifies a feasible answer by
weak duality, even where degenerate bounds leave the multipliers not unique or the
restricted program was not solved exactly (the optimality conditions are then not
checked). When a round's gap has stalled within a few times ``tol`` (the attempt would
give up, :mod:`solvers._progress`) and a few neurons' multipliers hold it there (their ``|g_j| > (1 + tol) w_j``), those
neurons' inactive multipliers are chosen again by a small linear program each
(:mod:`solvers._multipliers`), which finds a feasible dual point for them without the
division where one exists.

:class:`solvers._polisher.Polisher` runs the attempts for the ADMM: when to try, and how
much work they may take.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._bounded import bounded_restricted, mend_bounded
from ._multipliers import better_multipliers
from ._neuron import first_round_flops
from ._progress import _Progress
from ._restricted import Moments, Work, mend_unsolvable, restricted
from .problem import relative_excess

__all__ = ["polish", "can_polish", "PolishResult", "Moments", "Work"]

logger = logging.getLogger(__name__)


_ROUND_OFF = 1e-12  # a penalised weight this small relative to the layer's largest is round-off of a zero
_REFINE_NEURONS = 4  # a stalled gap (solvers._progress) held back by at most this many neurons' multipliers
# re-solves theirs (an LP each)


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
           Q: np.ndarray, weights: np.ndarray, tol: float, rounds: int = 40, moments: Any = None,
           work: Work | None = None, flops_limit: float = np.inf, steps: Any = None) -> PolishResult:
    """Try to turn the ADMM's iterate into the exact, certified optimum.

    Starting from the support and signs of ``Q``, each round solves the restricted
    program and checks the certificate; what the check finds wrong is mended for the next
    round (an active-set step, :meth:`_Round.mended`): off-support weights whose
    subgradient exceeds their weight join with the sign that lowers the objective; with
    sign bounds (a ReLU layer's rounds, a linear layer's after one flipped a sign) the
    weights they hold at zero stay in the next round's program (:meth:`_Round.mended`).
    A neuron whose support cannot meet the budget gains the columns most correlated with
    its residual.

    Parameters
    ----------
    Xa, Y, V, epsilon : the ADMM's scaled data (``Xa`` with its bias column).
    relu : bool
    Q : ndarray (n_cols, n_out)
        The ADMM's sparse copy; its nonzeros give the support and signs.
    weights : ndarray (n_cols,)
        l1 weight of each row (0 for an unpenalised bias, which is always in the support).
    tol : float
        Tolerance of the certificate (relative).
    rounds : int
        Active-set rounds before giving up.
    moments : Moments or callable, optional
        The second moments of the data, to reuse across attempts within one solve (or a
        function that gives them, called only when a round is to run).
    work : Work, optional
        Where the attempt's floating-point operations are added up (a new counter if
        None; the result's ``flops`` is its total either way).
    flops_limit : float, default inf
        The attempt gives up after a round that takes ``work`` beyond this (a linear layer's
        first round always runs; a ReLU layer's gives up within a round too, and is not made
        when the cost model expects more; :mod:`solvers._progress` may extend or cut it).
    steps : ndarray or callable, optional
        A first guess of the ball's step ``t`` per ball (NaN: none) for the first round with
        bounds (:mod:`solvers._bounded`), or a function called once rounds are to run.
    """
    Xa, Y, V = _float64(Xa, Y, V)
    free, work = weights[:, None] == 0, Work() if work is None else work
    support, signs, active = (Q != 0) | free, np.sign(Q), (Y > 0 if relu else None)
    if relu and first_round_flops(active, support, _entering(Xa, Q, V, active)) > flops_limit:
        return PolishResult(None, "the support is too large to polish within its share of the work")
    # formed once per solve (or given as a function that forms them): a set-up, not charged to ``work``
    moments = Moments(Xa, Y, active) if moments is None else moments() if callable(moments) else moments
    seeded = _seeded(steps() if callable(steps) else steps)
    cache, progress = dict(seeded), _Progress(tol, flops_limit)
    bounded = relu  # a linear layer's rounds hold the signs as bounds once a round flipped one
    for round_index in range(rounds):
        stop = progress.stop_before(round_index, work.flops)
        if stop is not None:
            return PolishResult(None, stop, flops=work.flops)
        outcome = (bounded_restricted(moments, Xa, V, epsilon, support, signs, weights, work, cache, tol,
                                      progress.limit)
                   if bounded else restricted(moments, Xa, epsilon, support, signs, weights, cache, work))
        if outcome[0] != "ok":
            mend = mend_bounded if bounded else mend_unsolvable
            stop, progress.reason = mend(outcome, moments, cache, support, signs)
            if stop:
                return PolishResult(None, progress.reason, flops=work.flops)
            continue
        _, Theta, nu, inverse_steps = outcome
        solved_on = support
        if bounded:  # the answer's support: without the weights that the sign bounds hold at zero
            Theta = _without_round_off(Theta, free)
            support = (Theta != 0) | free
        round_ = _Round(Xa, Y, V, epsilon, active, weights, free, support, signs, Theta, nu, inverse_steps, tol,
                        solved_on, moments)
        round_.charge(work)
        progress.judge(round_, bounded, work)
        if round_.settled(bounded, progress.gaps[-1]):
            return round_.certify(relu, work.flops, by_gap=bounded and round_.gap_certifies(progress.gaps[-1]))
        stop = progress.stop_after(round_, round_index, bounded, work)
        if stop is not None:
            return PolishResult(None, stop, flops=work.flops)
        support, signs, switching = round_.mended(bounded)
        if switching:  # from now on the signs are bounds: a weight stops at zero instead of flipping
            bounded, cache = True, dict(seeded)
    return PolishResult(None, progress.reason, flops=work.flops)


def _entering(Xa: np.ndarray, Q: np.ndarray, V: np.ndarray | None, active: np.ndarray) -> np.ndarray:
    """Per neuron, the inactive samples at which the iterate's response ``Xa Q`` is at or
    above the bound (0, or the cascade's ``V``): the bounds a first round is expected to
    take in (:func:`solvers._neuron.first_round_flops`). One product, a set-up of the
    decision, not charged to the attempt's work (as the moments)."""
    above = Xa @ Q >= (0.0 if V is None else V)
    return np.count_nonzero(above & ~active, axis=0)


def _float64(Xa: np.ndarray, Y: np.ndarray, V: np.ndarray | None) -> tuple:
    """The data in float64, the polish's precision (no copies when the ADMM ran in float64)."""
    return (np.ascontiguousarray(Xa, dtype=np.float64), np.asarray(Y, dtype=np.float64),
            None if V is None else np.asarray(V, dtype=np.float64))


def _seeded(steps: Any) -> dict[str, np.ndarray]:
    """The cache of the first round with bounds, seeded with the guess of the ball's steps (if any)."""
    return {} if steps is None else {"start": np.asarray(steps, dtype=np.float64)}


def _without_round_off(Theta: np.ndarray, free: np.ndarray) -> np.ndarray:
    """``Theta`` with its penalised entries at round-off level (at most ``_ROUND_OFF``
    times the largest penalised ``|theta|`` of the layer) set to exactly zero. A weight the
    bounds hold at zero can come out of the restricted solve at 1e-16 instead of 0 (a
    neuron whose answer is zero, dropped whole by a layer ball, keeps its weights there),
    and would count as kept."""
    penalised = np.where(free, 0.0, np.abs(Theta))
    largest = float(penalised.max()) if penalised.size else 0.0
    return np.where(~free & (penalised <= _ROUND_OFF * largest), 0.0, Theta)


class _Round:
    """One completed round of :func:`polish`: the restricted optimum ``Theta`` (with the
    bounds' multipliers ``nu``, None on a linear layer) checked against the full program's
    optimality conditions.

    ``flipped``: penalised weights whose sign changed; ``excess``: how far the subgradient
    of each off-support weight exceeds its l1 weight. :meth:`mended` gives the next
    round's support and signs; :meth:`certify` the answer once :meth:`settled`.
    """

    def __init__(self, Xa, Y, V, epsilon, active, weights, free, support, signs, Theta, nu, inverse_steps,
                 tol, solved_on=None, moments: Moments | None = None) -> None:
        self.Xa, self.Y, self.V, self.epsilon, self.active, self.tol = Xa, Y, V, epsilon, active, tol
        self.support, self.signs, self.Theta, self.nu = support, signs, Theta, nu
        self.solved_on = support if solved_on is None else solved_on  # the support the round was solved on
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
        self.moments = Moments(Xa, Y, active) if moments is None else moments  # the solve's (active_sums)

    @property
    def primal(self) -> float:
        """The round's objective ``sum_j w_j |theta_j|``."""
        return float(np.sum(self.bound * np.abs(self.Theta)))

    def dual_bound(self) -> float:
        """A lower bound of the optimum from the round's multipliers (``-inf`` when they give none).

        The dual of the program is ``max y^T z - eps ||z|| - h^T nu`` over ``nu >= 0`` and
        ``|M^T z - E^T nu|_j <= w_j`` (per neuron; the layer ball takes ``eps ||Z||_F``). The
        round's multipliers give ``z = -N`` on the active entries and ``nu = N`` on the
        inactive ones, whose constraint is ``|g_j| <= w_j`` (``g_f = 0`` for the free
        bias): each neuron's are shifted to make ``g_f`` zero (:meth:`_free_stationary`)
        and divided by its largest ``|g_j| / w_j`` (when above 1), which makes them
        feasible, so the dual's value there bounds the optimum from below (weak duality).
        """
        return self._dual_value(self.N, self.gradient)

    def refined_dual_bound(self, work: Work, flops_limit: float = np.inf) -> float:
        """:meth:`dual_bound` with better multipliers (:mod:`solvers._multipliers`) for the
        neurons whose own hold the dual back (``|g_j| > (1 + tol) w_j``), when they are at
        most ``_REFINE_NEURONS`` (``-inf`` otherwise, or on a layer without bounds)."""
        if self.active is None:
            return -np.inf
        holding = np.flatnonzero(self._largest_ratios(self.gradient) > 1.0 + self.tol)
        if holding.size == 0 or holding.size > _REFINE_NEURONS:
            return -np.inf
        N = better_multipliers(self.Xa, self.N, self.active, self.V, self.bound, holding, work, flops_limit)
        gradient = self.gradient.copy()
        gradient[:, holding] = self.Xa.T @ N[:, holding]
        return self._dual_value(N, gradient)

    def _dual_value(self, N: np.ndarray, gradient: np.ndarray) -> float:
        """The dual's value at the multipliers ``N`` (``g = Xa^T N``), each neuron's divided
        by its largest ``|g_j| / w_j`` above 1 (:meth:`dual_bound`)."""
        N, gradient = self._free_stationary(N, gradient)
        if N is None:
            return -np.inf  # an unpenalised weight is not stationary: no dual point from these multipliers
        shrink = 1.0 / np.maximum(1.0, self._largest_ratios(gradient))
        active = np.ones(self.Y.shape, dtype=bool) if self.active is None else self.active
        Z = np.where(active, -N, 0.0) * shrink
        upper = 0.0 if self.V is None else self.V
        dual = float(np.sum(Z * self.Y)) - float(np.sum(np.where(active, 0.0, N * upper) * shrink))
        if np.ndim(self.epsilon) == 1:
            return dual - float(self.epsilon @ np.linalg.norm(Z, axis=0))
        return dual - float(self.epsilon) * float(np.linalg.norm(Z))

    def _free_stationary(self, N: np.ndarray, gradient: np.ndarray) -> tuple:
        """The multipliers ``N`` and their gradient with the unpenalised row's gradient made
        exactly zero, as the dual's equality ``(Xa^T N)_f = 0`` for the free weight (the
        bias) asks; ``(None, None)`` where that cannot be done.

        The round's own multipliers meet it only to the accuracy of the restricted solve
        (2e-4 of the l1 weight on a wide layer at ``tol = 1e-4``, which gave no dual
        point). Each neuron's active entries, free in sign (the inactive ones are
        ``nu >= 0`` and stay), are shifted by one amount
        ``delta_m = -g_fm / sum_{i in Omega_m} Xa_if``; the other gradients move by
        ``delta_m`` times the active rows' column sums, which the division of
        :meth:`_dual_value` absorbs. A neuron without active samples whose free gradient is
        not zero gets ``N = 0`` (a feasible dual point of value 0). With more than one free
        row (not formed by :func:`polish`) the gradient must be within ``tol`` of zero as
        it is."""
        free_rows = np.flatnonzero(self.bound[:, 0] == 0)
        if free_rows.size == 0:
            return N, gradient
        if free_rows.size > 1:
            stationary = np.abs(gradient[free_rows]).max() <= self.tol * max(1.0, float(self.bound.max()))
            return (N, gradient) if stationary else (None, None)
        row = free_rows[0]
        sums = self.moments.active_sums()  # Xa^T of the active indicator, once per solve
        along, residual = sums[row], gradient[row]
        usable = along != 0
        delta = np.where(usable, -residual / np.where(usable, along, 1.0), 0.0)
        unmoved = ~usable & (residual != 0)
        shift = np.broadcast_to(delta, N.shape) if self.active is None else np.where(self.active, delta, 0.0)
        N, gradient = N + shift, gradient + sums * delta
        gradient[row] = 0.0  # zero by construction, but for round-off
        N[:, unmoved], gradient[:, unmoved] = 0.0, 0.0
        return N, gradient

    def _largest_ratios(self, gradient: np.ndarray) -> np.ndarray:
        """Each neuron's largest ``|g_j| / w_j`` over its penalised weights (0 if none)."""
        penalised = self.bound > 0
        return np.where(penalised, np.abs(gradient) / np.where(penalised, self.bound, 1.0), 0.0).max(axis=0)

    def charge(self, work: Work) -> None:
        """Add the round's two products, its response ``Xa Theta`` and gradient ``Xa^T N``, to ``work``."""
        n_samples, n_cols = self.response.shape[0], self.gradient.shape[0]
        work.product(n_samples, n_cols, self.response.shape[1])
        work.product(n_cols, n_samples, self.response.shape[1])

    @property
    def needs_mending(self) -> bool:
        return bool(self.flipped.any() or (self.excess > 0).any())

    def settled(self, bounded: bool, gap: float = np.inf) -> bool:
        """Whether to stop mending: nothing to change, or (a round with sign bounds, no
        sign flipped) the relative duality gap (:meth:`gap`) within ``tol``."""
        if not self.needs_mending:
            return True
        return bounded and self.gap_certifies(gap)

    def gap_certifies(self, gap: float) -> bool:
        """Whether the relative duality gap ``gap`` certifies the round's answer (a round
        with sign bounds): no sign flipped and ``gap <= tol``."""
        return not self.flipped.any() and gap <= self.tol

    def gap(self, dual_bound: float) -> float:
        """The relative duality gap ``(P - D) / P`` to ``D = dual_bound``, a lower bound of
        the optimum (the best of this round's and the earlier rounds')."""
        gap = (self.primal - dual_bound) / max(self.primal, 1e-300)
        logger.debug("polish round: relative duality gap %.3g", gap)
        return gap

    @property
    def count(self) -> int:
        """How many changes this round asks for."""
        return int(self.flipped.sum() + (self.excess > 0).sum())

    @property
    def reason(self) -> str:
        return "a weight changed sign" if self.flipped.any() else "the subgradient condition fails off the support"

    def log(self, round_index: int, flops: float) -> None:
        logger.debug("polish round %d: %d flipped, %d off-support excess, %.3g flops so far", round_index,
                     self.flipped.sum(), (self.excess > 0).sum(), flops)

    def certify(self, relu: bool, flops: float, by_gap: bool = False) -> PolishResult:
        """The certificate for the full program (``flops``: the attempt's work, reported with
        the result). ``by_gap``: the relative duality gap is within ``tol``, which with
        every constraint holding certifies the answer by weak duality whether or not the
        restricted program was solved exactly; otherwise the optimality conditions."""
        result = self._certificate(relu, by_gap)
        result.flops = flops
        return result

    def _certificate(self, relu: bool, by_gap: bool) -> PolishResult:
        tol, response = self.tol, self.response
        if relative_excess(response, self.Y, self.epsilon, relu=relu, upper=self.V) > tol:
            return PolishResult(None, "a constraint outside the restricted program is violated")
        ratio = np.abs(self.gradient[self.outside]) / self.bound[self.outside]
        if by_gap:
            return PolishResult(self.Theta, "certified", float(ratio.max()) if ratio.size else 0.0)
        # stationarity on the support (g = -w sign) and complementary slackness on the
        # bounds: exact when the restricted program was solved exactly, checked in case not
        on_support = np.abs(self.gradient + self.bound * self.signs)[self.support]
        if on_support.size and on_support.max() > tol * max(1.0, float(self.bound.max())):
            return PolishResult(None, "stationarity fails on the support")
        if self.nu is not None and self.nu.max() > 0:
            upper = np.zeros_like(response) if self.V is None else self.V
            slack = np.abs(response - upper)[self.nu > 0]
            if slack.max() > tol * self.slack_scale / np.sqrt(self.Y.size):
                return PolishResult(None, "a bound with a positive multiplier is not tight")
        return PolishResult(self.Theta, "certified", float(ratio.max()) if ratio.size else 0.0)

    def mended(self, bounded: bool) -> tuple[np.ndarray, np.ndarray, bool]:
        """The next round's support and signs (an active-set step), and whether its signs
        become bounds. With sign bounds (``bounded``) every off-support weight whose
        subgradient exceeds its weight joins; without, a few per neuron, and after a round
        that flipped signs the flipped weights stay, with their new signs, and the next
        rounds hold the signs as bounds (the weights that flipped leave otherwise). With
        sign bounds the weights they held at zero, not part of this round's answer, stay
        in the next round's program, at zero unless it moves them (the support only grows:
        dropping them let the same weights leave and join again round after round, and the
        rounds cycled at a duality gap of about 1e-2 on layers whose answers keep a tenth
        of the weights)."""
        flip = not bounded and bool(self.flipped.any())
        joining = self.excess > 0
        limit = np.maximum(1, self.support.sum(axis=0) // 10)  # a few per neuron: joining all at once cycles
        for m in np.flatnonzero(joining.sum(axis=0) > limit) if not bounded else ():
            rows = np.flatnonzero(joining[:, m])
            joining[rows[np.argsort(-self.excess[rows, m])[limit[m]:]], m] = False
        turned = self.flipped & (self.Theta != 0) if flip else np.zeros_like(self.flipped)
        support = (self.support & ~self.flipped) | turned | joining
        if bounded:
            support |= self.solved_on
        signs = np.where(joining, -np.sign(self.gradient), np.where(turned, np.sign(self.Theta), self.signs))
        return support, signs, flip
