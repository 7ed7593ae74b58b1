"""The ADMM's settings: tolerances, the rho rule, scaling and polishing, in one object.

:class:`AdmmSettings` is the one place where the solver's defaults live. The usual knobs
(``tol``, ``max_iter``, ``rho``, ``alpha``, ``check_every``, ``polish``) are what a user
sets; the rest describe the rule the defaults were measured with
(``benchmarks/rho_rule.py`` runs its ablations by building other settings, never by
patching the solver).

>>> settings = AdmmSettings(tol=1e-3)                       # doctest: +SKIP
>>> solve(problem, settings=settings)                        # doctest: +SKIP
>>> solve(problem, tol=1e-3)                                 # the same, as an override  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AdmmSettings", "resolve_dtype"]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class AdmmSettings:
    """Settings of :func:`solvers.admm.solve_admm`.

    Attributes
    ----------
    tol : float, default 1e-4
        Relative tolerance. The run stops when the primal residual
        ``||(Xa Theta - A, Theta - Q)||`` is below ``tol`` times the larger of the norms
        of its two sides, the dual residual ``rho ||Xa^T dA + dQ||`` below ``tol`` times
        ``||rho UQ||`` (each plus ``abs_tol_factor * tol`` per entry), and the returned
        weight's violation is at most ``feasibility_factor * tol``.
    max_iter : int, default 10000
    rho : 'auto' or float, default 'auto'
        ``'auto'`` starts from ``rho_start_factor * sqrt(#weights) / ||Theta_0||_F``
        (times ``sqrt(rho_budget_ref / (||epsilon|| / ||Y||_F))`` for a budget tighter
        than ``rho_budget_ref``), holds it for ``rho_hold`` iterations, then balances the
        residuals: at a check where ``sqrt(primal_rel / dual_rel)`` leaves ``[1 /
        rho_adapt_ratio, rho_adapt_ratio]``, or exceeds 1 while only ``primal_rel`` is
        above ``tol``, rho is multiplied by that square root
        (clipped to ``rho_bounds``), and the wait before the next change doubles, so rho
        settles and the usual convergence guarantee applies. When the starting point
        meets the budget (the program is feasible), ``primal_rel`` there is at least the
        returned weight's violation over ``feasibility_factor``: the residual the stop
        waits for; when it does not, rho does not fall while that violation is above
        ``feasibility_factor * tol``. A float fixes rho.
    alpha : float, default 1.6
        Over-relaxation, in (0, 2).
    check_every : int, default 25
        Iterations between convergence checks.
    polish : bool or None, default None
        Solve the program restricted to the ADMM's support exactly (a linear layer's in
        closed form, a ReLU layer's with its inactive bounds as inequalities) once the
        relative primal residual is below ``polish_start`` (from iteration
        ``polish_wait``), and stop when the result is certified optimal (the optimality
        conditions, or on a ReLU layer a relative duality gap within ``tol``); a failed attempt
        is retried ``polish_wait``, then ``polish_backoff`` times as many, ... iterations
        later, while the failed attempts are within ``polish_budget``. None: True, except
        when the iterations run on a CUDA device (``backend='torch'``): polishing runs on the
        host in float64 and there costs many times what the GPU's iterations to ``tol`` do
        (:meth:`for_device`).
    rho_start_factor : float, default 2.0
    rho_budget_ref : float, default 0.05
        The relative budget ``||epsilon|| / ||Y||_F`` below which ``rho='auto'`` starts
        larger, by the square root of how much tighter the budget is (0: never). A tight
        ball has a large multiplier, and the splitting needs a larger rho to follow it: in
        probes with rho held fixed on the digits MLP's second hidden layer, the rho that
        converged fastest grew about as that square root as the budget tightened.
    rho_hold : int, default 200
        Iterations during which ``rho='auto'`` stays at its start value: early residuals
        mislead the balancing.
    rho_adapt : bool, default True
        Whether ``rho='auto'`` moves at all (balancing after the hold, and the
        ``rho_feasibility_step``; False: the start value is kept throughout).
    rho_adapt_ratio : float, default 5.0
        The square-root ratio of the residuals beyond which rho moves (OSQP's default).
    rho_feasibility_step : float, default 4.0
        At a check where both residuals met ``tol`` but the returned (thresholded)
        weight still leaves its budget by ``violation > feasibility_factor * tol``, rho
        grows by ``violation / (feasibility_factor * tol)``, at most this factor (same
        wait as the balancing; 1: never). The residuals measure the splitting, not the
        violation of the exact zeros, and on ReLU layers that violation fell as slowly as
        ``1/k`` at the balanced rho: on the suite's convolutions, thousands of iterations
        after the residuals were met.
    rho_bounds : (float, float), default (1e-6, 1e6)
    center : bool, default True
        Centre the input when the bias is fitted and not penalised (an exact change of
        variables that removes the large eigenvalue a common mean puts into ``X^T X``).
    offset_scale_cap : float, default 4.0
        A centred input keeps the scale of its uncentred columns, but at most this many
        times the scale of the centred ones.
    gram_target : float, default 1 / 0.09
        The largest diagonal entry of the scaled ``X^T X`` (the authors' ``0.3 sqrt(max
        diag)`` scaling).
    abs_tol_factor : float, default 1e-3
        The absolute tolerance per entry, as a multiple of ``tol``.
    feasibility_factor : float, default 5.0
        The returned weight's violation must be at most this times ``tol``.
    polish_start : float, default 3e-2
    polish_wait : int, default 50
    polish_backoff : float, default 2.0
        The factor by which the wait before the next attempt grows after each failure.
    polish_budget : float, default 0.1
        On a ReLU layer, the work failed polishing attempts may take in all, as a fraction
        of the ADMM's work so far. The first attempt is held to ``polish_limit`` alone;
        after a failure, an attempt starts only while the failed ones are within the
        budget (the last attempt of a run that did not converge too), and gives up after
        a round that takes them past it; the stages of a path in epsilon
        (:func:`solvers.solve_at_sparsity`) share one budget. (A linear layer's attempts
        are cheap and certify early; they keep the backoff alone.) Work is counted in
        floating-point operations of a fixed cost model (an iteration: its two products
        ``Xa^T B`` and ``Xa Theta``, the weight step's small product and its elementwise
        passes over the response; an attempt: its dense solves, each neuron's solve of a
        ReLU layer's dual at each step, and two products per round, the moments formed
        once per solve not included; :class:`solvers._restricted.Work`), so which attempts
        run never depends on the machine's speed. ``inf``: no limit.
    polish_limit : float, default 800
        On a ReLU layer, the work one polishing attempt may take, in ADMM iterations of
        the cost model: an attempt whose first round the model expects to cost more is
        not made (the support is too large; a later iterate is sparser; the model counts
        the bounds the iterate's response leaves as those that will enter), and one that
        goes past it gives up (a small layer's attempt may always take 1e10 operations),
        unless, at its last round's rate of convergence and cost, it would certify within
        twice as much: then it may take that. An attempt may take no more than twice
        the iterations the ADMM is projected to need still either (its stop's measures
        falling like ``1 / k``, :meth:`solvers._polisher.Polisher.remaining`; an
        attempt's counted work runs about twice as fast as an iteration's): near its
        stop the ADMM finishes first. Certified attempts at the suite's budgets took 100-600
        (a first convolution certified at iteration 50 saves hundreds of iterations; the
        random MLP's wide layers, which the ADMM alone takes 550 iterations to, 430 and 600);
        ``inf``: no limit.
    screen : bool, default True
        Drop before iterating the inputs whose weights are zero at every optimum: columns
        of ``X`` that are zero on every sample, and, with a fitted unpenalised bias,
        constant ones (:mod:`solvers._screening`). Exact: the answer has zeros there.
    """

    tol: float = 1e-4
    max_iter: int = 10_000
    rho: float | str = "auto"
    alpha: float = 1.6
    check_every: int = 25
    polish: bool | None = None
    rho_start_factor: float = 2.0
    rho_budget_ref: float = 0.05
    rho_hold: int = 200
    rho_adapt: bool = True
    rho_adapt_ratio: float = 5.0
    rho_feasibility_step: float = 4.0
    rho_bounds: tuple[float, float] = (1e-6, 1e6)
    center: bool = True
    offset_scale_cap: float = 4.0
    gram_target: float = 1.0 / 0.09
    abs_tol_factor: float = 1e-3
    feasibility_factor: float = 5.0
    polish_start: float = 3e-2
    polish_wait: int = 50
    polish_backoff: float = 2.0
    polish_budget: float = 0.1
    polish_limit: float = 800.0
    screen: bool = True

    def __post_init__(self) -> None:
        if not (_number(self.tol) and 0 < self.tol < 1):
            raise ValueError(f"tol: got {self.tol!r}, needs a float in (0, 1), e.g. 1e-4")
        if not (_integer(self.max_iter) and self.max_iter >= 1):
            raise ValueError(f"max_iter: got {self.max_iter!r}, needs an integer >= 1")
        if not (self.rho == "auto" or (_number(self.rho) and self.rho > 0)):
            raise ValueError(f"rho: got {self.rho!r}, needs 'auto' (adaptive) or a fixed positive float")
        if not (_number(self.alpha) and 0 < self.alpha < 2):
            raise ValueError(f"alpha: got {self.alpha!r}, needs a float in (0, 2) (over-relaxation)")
        if not (_integer(self.check_every) and self.check_every >= 1):
            raise ValueError(f"check_every: got {self.check_every!r}, needs an integer >= 1")
        for name in ("rho_start_factor", "rho_adapt_ratio", "offset_scale_cap", "gram_target", "abs_tol_factor",
                     "feasibility_factor", "polish_start"):
            value = getattr(self, name)
            if not (_number(value) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: got {value!r}, needs a finite number > 0")
        for name in ("rho_feasibility_step", "polish_backoff"):  # factors; 1 leaves things as they are
            value = getattr(self, name)
            if not (_number(value) and math.isfinite(value) and value >= 1):
                raise ValueError(f"{name}: got {value!r}, needs a finite number >= 1")
        if not (_number(self.rho_budget_ref) and math.isfinite(self.rho_budget_ref) and self.rho_budget_ref >= 0):
            raise ValueError(f"rho_budget_ref: got {self.rho_budget_ref!r}, needs a finite number >= 0 (0: rho "
                             f"starts the same at every budget)")
        for name in ("polish_budget", "polish_limit"):
            value = getattr(self, name)
            if not (_number(value) and value >= 0):
                raise ValueError(f"{name}: got {value!r}, needs a number >= 0 (inf: no limit)")
        for name in ("rho_hold", "polish_wait"):
            value = getattr(self, name)
            if not (_integer(value) and value >= 0):
                raise ValueError(f"{name}: got {value!r}, needs an integer >= 0")
        if self.polish not in (None, True, False):
            raise ValueError(f"polish: got {self.polish!r}, needs True, False or None (True except on a CUDA device)")
        low, high = self.rho_bounds
        if not (_number(low) and _number(high) and 0 < low <= high):
            raise ValueError(f"rho_bounds: got {self.rho_bounds!r}, needs (low, high) with 0 < low <= high")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The names of the settings (what ``solve_admm`` takes as overrides)."""
        return tuple(field.name for field in dataclasses.fields(cls))

    def replace(self, **overrides: Any) -> "AdmmSettings":
        """A copy with ``overrides`` (checked, with the name of an unknown setting)."""
        unknown = sorted(set(overrides) - set(self.names()))
        if unknown:
            raise TypeError(f"solve_admm: unexpected keyword {unknown}: not settings of the ADMM, which takes "
                            f"{list(self.names())} and warm_start, dtype, backend, device, prepared")
        return dataclasses.replace(self, **overrides) if overrides else self

    def for_device(self, device_name: str) -> "AdmmSettings":
        """These settings for iterations on ``device_name`` (an engine's ``'cpu'`` or
        ``'cuda:0'``): ``polish=None`` becomes False on a CUDA device, True elsewhere."""
        if self.polish is not None:
            return self
        return dataclasses.replace(self, polish=not device_name.startswith("cuda"))

    @property
    def feasibility_tol(self) -> float:
        """The largest violation of the returned weight at which the run may stop."""
        return self.feasibility_factor * self.tol

    @property
    def eps_abs(self) -> float:
        """The absolute tolerance per entry, in units of the scaled data."""
        return self.tol * self.abs_tol_factor


def resolve_dtype(dtype: Any) -> np.dtype | None:
    """``float32`` or ``float64`` as a numpy dtype (numpy or torch spelling); None stays None."""
    if dtype is None:
        return None
    if type(dtype).__module__ == "torch":  # torch.float32 / torch.float64, read without importing torch
        dtype = str(dtype).replace("torch.", "")
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype: got {dtype!r}, needs float32 or float64") from exc
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype: got {dtype}, needs float32 or float64")
    return dtype
