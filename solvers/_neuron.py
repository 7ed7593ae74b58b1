"""One neuron's restricted program on a fixed support, at any step ``t`` of the ball
(the unit of :mod:`solvers._bounded`), and the cost model of solving it.

:class:`_Neuron` holds what does not depend on ``t`` (the Cholesky factor of ``G``, the
unbounded fits ``G^{-1} b`` and ``G^{-1} c``, the neuron's inactive rows and their
bounds) and solves the quadratic program at a step by the compiled least-distance kernel
(:mod:`solvers._ldp`), warm-started from the bounds active at its previous call, or
reads the answer off the segment of its last confirmed one (:mod:`solvers._segments`).
:class:`_Idle` is a neuron with no active sample. Work is counted in floating-point
operations of a fixed model (:class:`solvers._restricted.Work`), never by a clock.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._lapack import cho_solve_lower, cholesky_lower, solve_lower, solve_lower_transposed
from ._ldp import _answer, _bound_gradients, _candidate_rows, _dual_qp
from ._restricted import Work
from ._segments import Segment, make_segment
from ._threads import blas_threads, deal, map_threads

__all__ = ["first_round_flops", "each_neuron"]

_INFEASIBLE = 1e-10  # NNLS residual below which the bounds admit no point
_RIDGE = 1e-10  # G's ridge, relative to its largest diagonal entry: keeps a (nearly) zero column definite ...
# ... and the ridge of a neuron with more unknowns than active rows, whose G is singular: the
# quadratic program's answer then jumps in t (a face of the bounds to another), and with the
# tiny ridge the root search of the ball's step bisects to the jump for all its steps and
# ends off the budget. This ridge makes the answer move continuously over a window of t the
# search can land in; it only picks among (nearly) equivalent answers, and the certificate of
# the full program (solvers._polish) judges the result as before.
_RANK_DEFICIENT_RIDGE = 1e-6
# one neuron's solve at one t, in flops of a large product (fitted to the timed attempts
# of eight of the suite's ReLU programs, whose time the model puts at 0.65-1.26 of what
# two runs measured): a fixed part (Python, dispatch) ...
_CALL_COST = 5e6
_BOUND_COST = 1e4  # ... a part per sample bound (the kernel's per-bound arrays and checks) ...
_UNKNOWN_COST = 5e5  # ... per unknown ...
_WARM_COST = 300.0  # ... and a part that grows with the warm start's bounds: per unit of size^2 (k + 1)
_SCALAR_COST = 30.0  # a flop of the compiled least-distance loops, in flops of a large product (see Work)
_READ_COST = 3e5  # an answer read off its segment (solvers._segments): a few small array operations
# a pass over neurons whose mean size (unknowns^2 x sample bounds) is below this runs in the
# caller's thread: such neurons' calls are mostly Python, which threads cannot overlap (on the
# suite's ReLU programs, threads lost up to 15% below it and gained up to 30% above)
_THREAD_SIZE = 1e6


class _Neuron:
    """One neuron's restricted program on a fixed support, solved for any step ``t``.

    Formed once per round: the Cholesky factor ``L`` of ``G`` and the unbounded solutions
    ``G^{-1} b`` and ``G^{-1} c``; the bounds are read from ``Xa`` as they are needed.
    :meth:`at` solves the quadratic program at ``t``, warm-started from the bounds active
    at the previous call.
    """

    def __init__(self, moments, Xa, V, columns, signs, weights, m, work, squares) -> None:
        self.columns, self.m = columns.astype(np.int64), m
        self.Xa = Xa  # C-contiguous float64 (one compiled signature of the kernels)
        k = columns.size
        G = moments.neuron(m, columns, work)
        fitted_rows = Xa.shape[0] if moments.active is None else moments.rows_of(m).size
        ridge = _RANK_DEFICIENT_RIDGE if k > fitted_rows else _RIDGE
        G[np.diag_indices(k)] += ridge * max(float(G.diagonal().max(initial=0.0)), 1e-300)
        self.G, self.b, self.y_sq = G, moments.moment[columns, m], float(moments.y_sq[m])
        self.linear = weights[columns] * signs
        self.L = np.ascontiguousarray(cholesky_lower(G))
        work.solve(k, 3)
        self.rows = (np.empty(0, dtype=np.int64) if moments.active is None  # a linear layer: no bound on its rows
                     else moments.rows_of(m, active=False))
        self.h = np.zeros(self.rows.size) if V is None else np.ascontiguousarray(V[self.rows, m])
        self.norms = np.sqrt(squares[self.rows])  # ||E_i||: sum_j Xa[i, j]^2 over the support
        self.positions = np.flatnonzero(weights[columns] > 0).astype(np.int64)  # the weights' sign bounds
        self.signs = np.ascontiguousarray(signs[self.positions], dtype=np.float64)
        self.theta_b = cho_solve_lower(self.L, self.b)
        self.theta_c = cho_solve_lower(self.L, self.linear)
        self.c_tilde = solve_lower(self.L, self.linear)
        # the warm start of the next call: the active bounds, their rows of -F, the candidates
        self.order, self.F_passive, self.S = np.empty(0, dtype=np.int64), np.empty((0, k)), np.empty((0, 0))
        self.use_candidates(np.empty(0, dtype=np.int64))
        # the last solve's answer until its segment is known, the segment (solvers._segments),
        # and whether the last call read its answer off the segment
        self.fresh: tuple | None = None
        self.segment: Segment | None = None
        self.predicted = False

    @property
    def size(self) -> float:
        """``k^2 r`` for ``k`` unknowns and ``r`` sample bounds: how the compiled work of a
        call grows, what :func:`each_neuron` shares the calls out by."""
        return float(self.columns.size) ** 2 * self.rows.size

    def use_candidates(self, candidates: np.ndarray) -> None:
        """The bounds the next call prices first, with their rows gathered once (kept while
        they stay the candidates)."""
        self.candidates = candidates
        self.candidate_rows = _candidate_rows(self.Xa, self.norms, self.rows, self.h, self.columns, self.positions,
                                              self.signs, candidates)

    def at(self, t: float, work: Work, confirm: bool = True):
        """``(theta, multipliers, f, gamma)`` at ``t``, or None when the bounds admit no point.

        ``multipliers`` are those of the sample bounds in the quadratic program (``t`` times
        the program's); ``f = ||M theta - y||^2`` and ``gamma`` its curvature in ``t^2``
        while the active bounds stay. With ``confirm`` False a warm-started call stops once
        none of its candidate bounds enters; :func:`_confirm` then checks every bound.
        On the segment of the last confirmed answer (:meth:`follow`) the answer is read
        off it instead (``predicted`` True): exact, and checked against every bound.
        """
        self.predicted = self.segment is not None and self.segment.holds(t)
        if self.predicted:
            work.flops += _READ_COST
            return self.segment.at(t)
        k = self.columns.size
        theta_u = self.theta_b - t * self.theta_c
        warm = self.order.size
        mu, residual, order, F_passive, S, self.candidates, self.candidate_rows, passes = _dual_qp(
            self.Xa, self.norms, self.rows, self.h, self.columns, self.positions, self.signs, self.L, theta_u,
            self.order, self.F_passive, self.S, self.candidates, self.candidate_rows, confirm)
        self.order, self.F_passive, self.S, self.residual, self.theta_u = order, F_passive, S, residual, theta_u
        # a call's own cost, and a part that grows with its warm start (fitted: the warm
        # start is one rank-one update of the kept factor, but the call's rows and checks
        # grow alike); per entering bound: the candidates' product (8 (k + 1) rows), and
        # compiled scalar loops (its row's solve, the factor's update, the fit: about 3 k^2
        # at _SCALAR_COST); a full pass is a product with every sample
        entered = max(order.size - warm, 0) + 1
        work.flops += (_CALL_COST + _BOUND_COST * self.rows.size + _UNKNOWN_COST * k
                       + _WARM_COST * warm**2 * (k + 1) + 2.0 * k * entered * (8.0 * (k + 1) + 3.0 * _SCALAR_COST * k)
                       + passes * 2.0 * self.Xa.shape[0] * self.Xa.shape[1])
        ok, theta, multipliers, f, gamma, motion = _answer(mu, residual, order, F_passive, S, self.rows.size,
                                                           self.positions, self.L, self.G, self.b, self.y_sq,
                                                           theta_u, self.c_tilde, _INFEASIBLE)
        self.segment = None
        if not ok:
            self.fresh = None
            self.why = "the bounds admit no point on the support"
            return None
        self.fresh = (t, theta, motion, f, gamma, order)
        return theta, multipliers, f, gamma

    @property
    def line(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(theta, slope)`` of the last solve's answer on its support, while its segment
        is still to be found (:meth:`follow`); None when there is none to find (no fresh
        answer, or dependent passive rows: the multipliers are not unique)."""
        if self.fresh is None or not self.fresh[2][3]:
            return None
        return self.fresh[1], self.fresh[2][0]

    def follow(self, values: np.ndarray, slopes: np.ndarray) -> None:
        """Find the segment of the last answer (a confirmed one, whose :attr:`line` is not
        None) from ``values = Xa theta`` and ``slopes = Xa slope`` (every sample;
        :func:`solvers._bounded._follow`)."""
        t, theta, motion, f, gamma, order = self.fresh
        self.segment = make_segment(t, theta, motion, f, gamma, order, values[self.rows] - self.h,
                                    slopes[self.rows], self.positions, self.signs, self.rows.size)
        self.fresh = None

    def direction(self) -> tuple[np.ndarray, float]:
        """``(w, rho_k)`` of the last call: a sample bound's gradient is ``E_i w + h_i rho_k``."""
        k = self.columns.size
        w = solve_lower_transposed(self.L, self.residual[:k]) - self.residual[k] * self.theta_u
        return w, float(self.residual[k])

    def violated(self, products: np.ndarray, w: np.ndarray, bias: float) -> bool:
        """Whether a bound outside the last answer's passive set should enter, from
        ``products = Xa w_full`` (every sample); if so its candidates become the bounds with
        the largest gradients (the same test and choice as the kernel's full pass)."""
        gradient, scale = _bound_gradients(products, self.norms, self.rows, self.h, self.positions, self.signs, w,
                                           bias)
        entering = gradient > 1e-10 * scale
        entering[self.order] = False
        if not entering.any():
            return False
        count = min(8 * (self.columns.size + 1), gradient.size)
        self.use_candidates(np.argpartition(-gradient, count - 1)[:count])  # the largest, in any order
        return True


class _Idle:
    """A neuron with no active sample: no ball, only its bounds. Zero weights are optimal
    when they are feasible: an unpenalised bias (if any) at the lowest bound, at most 0."""

    def __init__(self, Xa, V, columns, weights, m) -> None:
        self.columns, self.rows = columns, np.arange(Xa.shape[0])
        self.theta_b, self.c_tilde, self.y_sq, self.b = (np.zeros(columns.size), np.zeros(columns.size), 0.0,
                                                          np.zeros(columns.size))
        lowest = 0.0 if V is None else min(0.0, float(V[:, m].min()))
        self.theta = np.zeros(columns.size)
        free = np.flatnonzero(weights[columns] == 0)  # the bias column: a constant
        self.feasible = lowest >= 0.0 or free.size > 0
        if free.size and lowest < 0.0:
            self.theta[free[0]] = lowest / float(Xa[0, columns[free[0]]])

    size = 0.0

    def at(self, t: float, work: Work, confirm: bool = True):
        if not self.feasible:
            self.why = "the bounds admit no point on the support"
            return None
        return self.theta.copy(), np.zeros(self.rows.size), 0.0, 0.0


def each_neuron(call: Callable[[int, Work], Any], indices: Sequence[int], sizes: Sequence[float]) -> list[tuple]:
    """``[(call(m, own), own.flops) for m in indices]``, each neuron's call with a
    :class:`~solvers._restricted.Work` of its own, in the order of ``indices``.

    The neurons' programs are independent, so the calls are shared out over the cores
    (:func:`solvers._threads.map_threads`, in hands of about equal total ``sizes``) when
    their mean size (``k^2 r``, :attr:`_Neuron.size`) says the compiled kernels, which
    release the GIL, do most of their work (``_THREAD_SIZE``). Each call's arithmetic,
    and so its answer and its counted work, is the same in whichever thread it runs (BLAS
    on one thread there), and the caller adds the counts up in the neurons' order: every
    decision taken on the work (the attempt's share, :mod:`solvers._polisher`) is the
    one a single thread takes.
    """
    indices = list(indices)

    def run(positions) -> list[tuple]:
        done = []
        for position in positions:
            own = Work()
            done.append((position, call(indices[position], own), own.flops))
        return done

    if len(indices) < 2 or float(np.mean(sizes)) < _THREAD_SIZE:
        return [(result, flops) for _, result, flops in run(range(len(indices)))]
    results: list[tuple] = [()] * len(indices)
    for hand in map_threads(run, deal(sizes, 2 * blas_threads())):
        for position, result, flops in hand:
            results[position] = (result, flops)
    return results


def first_round_flops(active: np.ndarray, support: np.ndarray, entering: np.ndarray) -> float:
    """The cost model's estimate of a first round from ``support``: per neuron with ``k``
    unknowns, ``r`` inactive samples and ``b`` of them that the iterate's response already
    puts at or above their bound, about ``min(b, k) + 1`` bounds enter, each priced among
    ``8 (k + 1)`` candidates (a product) and factored in (about ``3 k^2`` at
    ``_SCALAR_COST``, see :meth:`_Neuron.at`), and a few passes over the bounds
    (``4 r k``); a few evaluations of ``t``, each at a call's own cost per neuron and a
    warm start of about half the entering bounds.

    The bounds that enter are those the restricted answer would leave: near the iterate,
    mostly those its response leaves already (the random MLP's wide layers of
    ``benchmarks/solver_convergence.py``: 27 of 1,473 per neuron at iteration 50, 275
    unknowns, where counting every unknown as entering put a first round at 18 times
    what it took)."""
    k = support.sum(axis=0).astype(float)
    rows = (~active).sum(axis=0).astype(float)
    bounds = np.minimum(np.asarray(entering, dtype=float), k) + 1.0
    return 3.0 * float(np.sum(_CALL_COST + _BOUND_COST * rows + _UNKNOWN_COST * k
                              + _WARM_COST * (bounds / 2.0) ** 2 * (k + 1.0)
                              + 2.0 * k * bounds * (8.0 * (k + 1.0) + 3.0 * _SCALAR_COST * k) + 4.0 * rows * k))
