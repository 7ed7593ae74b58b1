"""When the ADMM polishes (:mod:`solvers._polish`), and how much work the attempts may take.

Work is counted in floating-point operations of a fixed cost model
(:class:`~solvers._restricted.Work`), never by a clock, so that which attempts run, and
so the answer, never depends on the machine's speed.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._polish import Moments, PolishResult, Work, can_polish, polish

__all__ = ["Polisher", "PolishResult"]

_ATTEMPT_FLOOR = 1e10  # a ReLU layer's attempt may always take this much work (a fraction of a second)
_ELEMENT_COST = 300.0  # an iteration's elementwise passes over the response, per entry, in flops of a product
# an attempt's counted work takes about 1 / this of the time the same count takes in ADMM iterations
# (probes on the random MLP's wide layer, the digits hidden layer, a LeNet-size layer and the digits CNN's
# conv2 in cascade: 1.5-3.5x), so an attempt may count this many times the iterations it would save
_POLISH_PACE = 2.0


class Polisher:
    """Polishing attempts on host copies of the iterate (float64), and their schedule.

    The float64 data and the per-neuron second moments are formed when first needed
    and kept for the others; ``seconds`` adds up the time of every attempt. Work is
    counted in floating-point operations of a fixed cost model
    (:class:`~solvers._restricted.Work`; an ADMM iteration is its two products, the
    weight step's small one and its elementwise passes over the response at
    ``_ELEMENT_COST`` per entry, which on a layer of few inputs take longer than the
    products), so that which attempts run never depends on the machine:
    on a ReLU layer, once an attempt has failed, failed attempts may take at most
    ``polish_budget`` times the ADMM's work so far. (A ReLU layer's attempts solve a
    quadratic program per neuron and round; a linear layer's are cheap, and those of the
    suite that polish certify at their first attempt; they keep the backoff alone.)
    """

    def __init__(self, problem, data, settings) -> None:
        self.data = data
        self.stage(problem, settings)
        self.next_at, self.wait = settings.polish_wait, settings.polish_wait  # the wait grows after a failure
        self.seconds = 0.0
        self.failed_flops = 0.0  # the work of the attempts that did not certify
        n_cols = problem.n_in + problem.fit_bias
        n_samples, n_out = problem.n_samples, problem.n_out
        self.iteration_flops = (4.0 * n_samples * n_cols * n_out + 2.0 * min(n_samples, n_cols) ** 2 * n_out
                                + _ELEMENT_COST * n_samples * n_out)
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
        return self.last_due(iteration) and primal_rel <= self.settings.polish_start and iteration >= self.next_at

    def last_due(self, iteration: int) -> bool:
        """Whether to make a last attempt after a run that did not converge: polishing is on
        and the failed attempts are within budget (no wait, no residual test)."""
        return self.enabled and (not self.budgeted or self.allowance(iteration) >= 0)

    def failed(self, iteration: int, attempt: PolishResult) -> None:
        """Count a failed attempt's work and schedule the next one (the backoff)."""
        self.failed_flops += attempt.flops
        self.next_at, self.wait = iteration + self.wait, int(round(self.settings.polish_backoff * self.wait))

    def stage(self, problem, settings) -> None:
        """Go on with the next stage of a path (:mod:`solvers._continuation`): its program
        (a new budget and bound on the same data) and settings. The failed attempts' work
        and the backoff carry over, so that the allowance covers the whole path, as it
        does one solve; the float64 data and the moments stay."""
        if settings.polish is None:
            raise ValueError("Polisher: settings.polish is None; resolve it for the engine's device first "
                             "(AdmmSettings.for_device)")
        self.problem, self.settings = problem, settings
        # the certificate is that of the l1 program; the group program stops on the ADMM's tolerance
        self.enabled = settings.polish and can_polish(problem) and problem.group_size is None
        self.outcome: str | None = None  # the reason of the stage's last attempt (None: none made)

    def _float64(self) -> dict[str, Any]:
        """The float64 data, formed once per solve for every attempt (the bound ``V``
        again when a path's stage has set a new one)."""
        data, cache = self.data, self._cache
        if not cache:
            cache.update(Xa=data.Xa.astype(np.float64, copy=False), Y=data.Y.astype(np.float64, copy=False))
        if "V" not in cache or cache["V_source"] is not data.V:
            cache["V_source"] = data.V
            cache["V"] = None if data.V is None else data.V.astype(np.float64, copy=False)
        return cache

    def _moments(self) -> Moments:
        """The per-neuron second moments, formed at the first attempt that runs a round and
        kept for the others (their work is not charged to the attempts: a set-up, like the
        ADMM's factorisation)."""
        cache = self._float64()
        if "moments" not in cache:
            cache["moments"] = Moments(cache["Xa"], cache["Y"], (self.data.Y > 0) if self.problem.relu else None)
        return cache["moments"]

    def _steps(self, engine, state) -> np.ndarray:
        """The ball's step ``t = 1 / (2 lambda)`` that the ADMM's duals give, one per ball
        (NaN where they give none), the polish's first guess.

        The response block's dual ``rho UA`` is, at the optimum, in the normal cone of the
        ball at ``A``: ``2 lambda (A - Y)`` on the entries the ball holds (the active ones
        on a ReLU layer). So ``t = ||D||^2 / (rho <UA, D>)`` with ``D = A - Y`` there, per
        neuron or over the layer. From the state: ``A = (B + carry_a) / (2 - alpha)``,
        ``UA = A - B``."""
        Y = self._float64()["Y"]
        B = engine.host(state.B).astype(np.float64)  # copies: the state's own arrays stay as they are
        D = engine.host(state.carry_a).astype(np.float64)
        D += B
        D /= 2.0 - self.settings.alpha  # A
        np.subtract(D, B, out=B)  # UA
        D -= Y
        if self.problem.relu:
            D[Y <= 0] = 0.0  # the ball holds the active entries alone
        squares, pairing = np.einsum("pm,pm->m", D, D), np.einsum("pm,pm->m", B, D)
        if np.ndim(self.data.epsilon) == 0:  # one ball for the layer
            squares, pairing = squares.sum(keepdims=True), pairing.sum(keepdims=True)
        usable = (pairing > 0) & (squares > 0)
        return np.where(usable, squares / np.where(usable, state.rho * pairing, 1.0), np.nan)

    def attempt(self, engine, state, iteration: int, residuals=None) -> PolishResult:
        """One attempt at the ADMM's current iterate ``state`` (its engine's arrays brought
        to the host). After a failed one, it gives up after a round that takes the failed
        attempts' work past the allowance at ``iteration``. ``residuals``: the check's
        (:class:`solvers.admm._Residuals`), for the work the ADMM is expected to need
        still (:meth:`remaining`; None: not projected, as for a run's last attempt)."""
        started = time.perf_counter()
        work = Work()
        cache = self._float64()
        Q_host = engine.host(state.Q)
        allowance = self.allowance(iteration) if self.budgeted else np.inf
        limit = allowance
        if self.problem.relu:  # one attempt's share, whether or not others failed (small layers: a floor)
            share = self.settings.polish_limit
            if residuals is not None and np.isfinite(share):  # inf: no limit at all
                share = min(share, _POLISH_PACE * self.remaining(engine, state, iteration, residuals))
            limit = min(limit, max(share * self.iteration_flops, _ATTEMPT_FLOOR))
        result = polish(cache["Xa"], cache["Y"], cache["V"], self.data.epsilon, self.problem.relu, Q_host,
                        state.penalized, self.settings.tol, moments=self._moments, work=work, flops_limit=limit,
                        steps=lambda: self._steps(engine, state))
        self.seconds += time.perf_counter() - started
        if result.Theta is None and limit == allowance < np.inf:  # the share was what failures had left
            result.reason = f"{result.reason}; the share was what the failed attempts had left of their allowance"
        self.outcome = result.reason
        return result

    def remaining(self, engine, state, iteration: int, residuals) -> float:
        """The iterations the ADMM is expected to need still at ``iteration``, if the
        measures its stop waits for fall like ``1 / k`` (its rate in general):
        ``k (r - 1)``, with ``r`` the largest of the relative residuals over ``tol`` and
        the thresholded copy's violation over ``feasibility_tol``. An attempt that would
        cost more than that (its counted work over ``_POLISH_PACE``) does not pay: near
        its stop (the random MLP's wide layer in cascade at iteration 400: 175 iterations
        left, an attempt of 770 iterations' worth) the ADMM finishes first. The violation
        costs one product, taken only when the residuals leave the attempt's share of it
        below ``polish_limit``."""
        settings = self.settings
        ratio = max(residuals.primal_rel, residuals.dual_rel) / settings.tol
        if _POLISH_PACE * iteration * (ratio - 1.0) < settings.polish_limit:
            violation = engine.violation(state.Q) if residuals.violation is None else residuals.violation
            ratio = max(ratio, violation / settings.feasibility_tol)
        return max(iteration * (ratio - 1.0), 0.0)

    def summary(self, polished: bool) -> str:
        """What polishing did for the answer: ``'certified'``, ``'off'`` (polishing off, or
        no certificate for this program), ``'not attempted'``, or the reason the last attempt
        gave up."""
        if polished:
            return "certified"
        if not self.enabled:
            return "off"
        return "not attempted" if self.outcome is None else self.outcome
