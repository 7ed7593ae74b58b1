"""When a polishing attempt (:func:`solvers._polish.polish`) gives up, and how much work
it may take: its rounds' relative duality gaps and the changes they ask for, judged
after each round.

An attempt gives up before a round when no round found a restricted solution after
``_STALL_ROUNDS`` rounds or its work is spent; after a round that did not certify, when
its first round left a gap above ``_FIRST_GAP``, when the gap fell by less than
``_GAP_FACTOR`` over ``_GAP_ROUNDS`` rounds (a round with bounds), or when after
``_STALL_ROUNDS`` rounds more than ``_STALL_FRACTION`` of the first round's changes are
left. A gap that stalls within ``_REFINE_GAP`` times ``tol`` is measured again with
better multipliers for the few neurons holding it; an attempt that, at its last round's
rate, would certify within ``_EXTENSION`` times its limit may take that much work.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ._polish import _Round
    from ._restricted import Work

_STALL_ROUNDS = 4  # after this many rounds, stop unless the changes needed fell below ...
_STALL_FRACTION = 0.25  # ... this fraction of the first round's
_GAP_ROUNDS = 1  # a ReLU attempt gives up when its duality gap fell by less than ...
_GAP_FACTOR = 0.8  # ... this factor over this many rounds
_FIRST_GAP = 0.75  # ... or when its first round leaves a larger gap (the support is far from the optimum's)
_EXTENSION = 2.0  # a ReLU attempt expected to certify within this many times its limit may go on past it
_REFINE_GAP = 30.0  # a round whose duality gap stalls within this many times tol is measured again


class _Progress:
    """How an attempt of :func:`solvers._polish.polish` is going, round by round: why the last round
    failed (``reason``), the rounds' duality gaps and changes asked for, the best lower
    bound of the optimum, and the work it may take (``limit``: ``flops_limit``, or more
    for a ReLU attempt expected to certify soon, :func:`_extended_limit`)."""

    def __init__(self, tol: float, flops_limit: float) -> None:
        self.tol, self.flops_limit, self.limit = tol, flops_limit, flops_limit
        self.reason, self.dual_bound, self.gaps, self.counts = "no round", -np.inf, [], []
        self.first_count: int | None = None  # changes asked for by the first completed round
        self.round_start = 0.0  # the work done when the current round started

    def stop_before(self, round_index: int, flops: float) -> str | None:
        """Why the attempt gives up before its next round, which starts at ``flops`` of its
        work (None: it goes on): no restricted solution after several rounds, or the work
        allowed is spent (the first round always runs)."""
        self.round_start = flops
        if round_index >= _STALL_ROUNDS and self.first_count is None:
            return self.reason + " (no restricted solution after several rounds)"
        if round_index > 0 and flops > self.limit:
            return f"{self.reason} (its share of the work is spent)"
        return None

    def judge(self, round_: _Round, bounded: bool, work: Work) -> None:
        """The round's duality gap and the best lower bound so far (:func:`_judged`)."""
        self.dual_bound = _judged(round_, bounded, self.dual_bound, self.gaps, self.tol, work, self.limit)

    def stop_after(self, round_: _Round, round_index: int, bounded: bool, work: Work) -> str | None:
        """Why the attempt gives up after a round that did not certify (None: it goes on,
        and the round's failure becomes ``reason``): the gap stalls (:func:`_gap_stop`, a
        round with bounds) or the active set is not settling (:func:`_settling_stop`)."""
        if bounded:
            self.counts.append(round_.count)
            self.limit = _extended_limit(self.gaps, self.counts, self.tol, work.flops, work.flops - self.round_start,
                                         self.flops_limit)
        round_.log(round_index, work.flops)
        self.first_count = round_.count if self.first_count is None else self.first_count
        stop = ((_gap_stop(self.gaps, self.tol) if bounded else None)
                or _settling_stop(round_index, self.first_count, round_.count))
        if stop is None:
            self.reason = round_.reason
        return stop


def _judged(round_: _Round, bounded: bool, dual_bound: float, gaps: list[float], tol: float, work: Work,
            flops_limit: float) -> float:
    """Append the round's relative duality gap to ``gaps`` and return the best lower bound
    of the optimum so far: any round's multipliers bound it, and the best one certifies
    later rounds. A round without sign bounds, or one that flipped a sign, has no gap
    (``inf``). A gap that stalls within ``_REFINE_GAP`` times ``tol`` (the attempt would
    give up) is measured again with better multipliers for the few neurons holding it
    (:meth:`_Round.refined_dual_bound`)."""
    if not bounded:
        gaps.append(np.inf)
        return dual_bound
    dual_bound = max(dual_bound, round_.dual_bound())
    gaps.append(np.inf if round_.flipped.any() else round_.gap(dual_bound))
    if tol < gaps[-1] <= _REFINE_GAP * tol and _gap_stop(gaps, tol) is not None:
        dual_bound = max(dual_bound, round_.refined_dual_bound(work, flops_limit))
        gaps[-1] = round_.gap(dual_bound)
    return dual_bound


def _settling_stop(round_index: int, first_count: int, count: int) -> str | None:
    """Why an attempt gives up after a round that asks for ``count`` changes (None: it goes
    on): after ``_STALL_ROUNDS`` rounds, more than ``_STALL_FRACTION`` of the first round's
    are left, so the active set is not settling (the iterate is too far; the ADMM goes on)."""
    if round_index >= _STALL_ROUNDS and count > _STALL_FRACTION * first_count:
        return f"the active set is not settling ({count} changes left of {first_count})"
    return None


def _gap_stop(gaps: list[float], tol: float) -> str | None:
    """Why a ReLU attempt gives up after its rounds' relative duality gaps ``gaps`` (None:
    it goes on): its first round left one above ``_FIRST_GAP``, or the gap fell by less
    than ``_GAP_FACTOR`` over the last ``_GAP_ROUNDS`` rounds."""
    if len(gaps) == 1 and gaps[0] > _FIRST_GAP:
        return f"the first round leaves a duality gap of {gaps[0]:.2g}"
    if len(gaps) > _GAP_ROUNDS and gaps[-1] > _GAP_FACTOR * gaps[-1 - _GAP_ROUNDS]:
        return f"the duality gap stalls at {gaps[-1]:.2g} (tol {tol:.2g})"
    return None


def _extended_limit(gaps: list[float], counts: list[int], tol: float, flops: float, round_flops: float,
                    flops_limit: float) -> float:
    """The work a ReLU attempt may take, given its rounds' duality gaps and changes asked
    for so far: ``_EXTENSION`` times ``flops_limit`` when, at the last round's rate of
    convergence and cost, it would certify within that (an attempt this close is worth
    finishing; rounds vary in cost, so the whole extension is granted), else
    ``flops_limit``. The rounds still needed are the fewer of two projections, each at
    the last round's ratio to the one before: the gap's to ``tol``, and the changes'
    to none (an active-set method ends once its set is right, often sooner than the
    gap's rate says)."""
    needed = [_rounds_to(gaps, tol) if gaps[-1] > tol else 0.0, _rounds_to(counts, 1.0)]
    expected = flops + min(needed) * round_flops
    return _EXTENSION * flops_limit if expected <= _EXTENSION * flops_limit else flops_limit


def _rounds_to(values: list[float], target: float) -> float:
    """Rounds for the last of ``values`` to fall to ``target`` at its last ratio (at least
    one; ``inf`` when it does not fall)."""
    if len(values) < 2 or not 0.0 < values[-1] < values[-2] or not np.isfinite(values[-2]):
        return np.inf
    return max(1.0, np.ceil(np.log(target / values[-1]) / np.log(values[-1] / values[-2]) - 1e-9))
