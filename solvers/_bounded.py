"""The program restricted to a support with its inactive bounds as inequalities (ReLU layers).

For one neuron, with ``M`` the rows ``Omega_m`` and columns ``S_m`` of the scaled input,
``E`` its inactive rows on the same columns, ``h`` their bounds (0, or the cascade's
``V``) and ``c = w sigma`` the signed l1 weights, polishing needs the optimum of

.. math::

    \\min_\\theta c^T \\theta \\quad \\text{s.t.} \\quad \\|M\\theta - y\\|^2 \\le \\varepsilon^2,
    \\quad E\\theta \\le h, \\quad \\sigma_j \\theta_j \\ge 0

(one ball per neuron, or one over the layer: then the sum of the neurons' residuals). Its
KKT conditions say that for the ball's step ``t = 1 / (2 lambda)`` the weights solve the
quadratic program

.. math::

    \\theta(t) = \\arg\\min_\\theta \\tfrac12 \\theta^T G \\theta - (b - t c)^T \\theta
    \\quad \\text{s.t.} \\quad E\\theta \\le h, \\; \\sigma_j \\theta_j \\ge 0

(``G = M^T M``, ``b = M^T y``), and ``t`` is the root of ``f(t) = ||M theta(t) - y||^2 =
epsilon^2``. ``f`` is continuous and nondecreasing; while the active bounds stay the same,
``f(t) = a + gamma t^2`` with ``gamma = ||P c~||^2`` (``c~ = L^{-1} c``, ``G = L L^T``,
``P`` the projection onto the null space of the active rows of ``F = E L^{-T}``), so a
Newton step in ``t^2`` is exact once the active set has settled; a bracket keeps it safe.

Each quadratic program is the projection of ``theta_u = G^{-1} (b - t c)`` onto the bounds
in the metric ``G``, a least-distance program (:mod:`solvers._ldp`, warm-started from the
bounds active at the previous ``t`` and round). The bounds' multipliers come with it, so
the certificate of :mod:`solvers._polish` checks the answer against the full program.

While its active bounds stay, a neuron's answer moves on a line in ``t``: once an answer
is confirmed, the segment of ``t`` on which that holds is found by a ratio test
(:mod:`solvers._segments`), and the root search reads the answer off it at any step
inside, solving again only the neurons whose segment ends before the step. The search
starts from a first guess of ``t`` when the polish has one (the ADMM's duals,
:meth:`solvers._polisher.Polisher.attempt`), else from the step that meets the budget
with no bound active.
"""
from __future__ import annotations

import numpy as np

from ._lapack import cho_solve_lower, cholesky_lower, solve_lower, solve_lower_transposed
from ._ldp import _answer, _bound_gradients, _candidate_rows, _dual_qp
from ._restricted import Work
from ._segments import Segment, make_segment, segment_products

__all__ = ["bounded_restricted", "mend_bounded", "first_round_flops"]

_ROOT_STEPS = 40  # evaluations of f(t) at most per round
_ROOT_TOL = 0.1  # t is taken once f(t) is within this times tol below the budget (a gap of about as much)
_ROOT_ROUNDING = 1e-9  # f(t) this far above the budget counts as on it (far below any tol of the certificate)
_INFEASIBLE = 1e-10  # NNLS residual below which the bounds admit no point
_CONFIRM_ROUNDS = 4  # batched checks of the neurons' answers before the kernel checks its own
# one neuron's solve at one t, in flops of a large product (fitted to the timed attempts
# of eight of the suite's ReLU programs, whose time the model puts at 0.65-1.26 of what
# two runs measured): a fixed part (Python, dispatch) ...
_CALL_COST = 5e6
_BOUND_COST = 1e4  # ... a part per sample bound (the kernel's per-bound arrays and checks) ...
_UNKNOWN_COST = 5e5  # ... per unknown ...
_WARM_COST = 300.0  # ... and a part that grows with the warm start's bounds: per unit of size^2 (k + 1)
_SCALAR_COST = 30.0  # a flop of the compiled least-distance loops, in flops of a large product (see Work)
_READ_COST = 3e5  # an answer read off its segment (solvers._segments): a few small array operations


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
        # a tiny ridge keeps G definite when a support column is (nearly) zero on the active rows
        G[np.diag_indices(k)] += 1e-10 * max(float(G.diagonal().max(initial=0.0)), 1e-300)
        self.G, self.b, self.y_sq = G, moments.moment[columns, m], float(moments.y_sq[m])
        self.linear = weights[columns] * signs
        self.L = np.ascontiguousarray(cholesky_lower(G))
        work.solve(k, 3)
        self.rows = (np.empty(0, dtype=np.int64) if moments.active is None  # a linear layer: no bound on its rows
                     else moments.active_rows(m, active=False))
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

    def follow(self, values: np.ndarray, slopes: np.ndarray) -> None:
        """Find the segment of the last answer (a confirmed one) from ``values = Xa theta``
        and ``slopes = Xa slope`` (every sample; :func:`_follow`)."""
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


def _confirm(neurons, indices, Xa, t, group, results, work) -> str | None:
    """Check the unconfirmed answers of ``neurons[indices]`` against every bound, one product
    for all of them, and solve again those where a bound should enter (from the bounds
    with the largest gradients), until none should; the last of ``_CONFIRM_ROUNDS`` rounds
    has the kernel confirm its own answers. Returns why the attempt stops, or None."""
    indices = [m for m in indices if isinstance(neurons[m], _Neuron)]
    for round_index in range(_CONFIRM_ROUNDS):
        if not indices:
            return None
        directions = [neurons[m].direction() for m in indices]
        W = np.zeros((Xa.shape[1], len(indices)))
        for j, (m, (w, _)) in enumerate(zip(indices, directions)):
            W[neurons[m].columns, j] = w
        products = Xa @ W
        work.product(Xa.shape[0], Xa.shape[1], len(indices))
        indices = [m for j, (m, (w, bias)) in enumerate(zip(indices, directions))
                   if neurons[m].violated(products[:, j], w, bias)]
        for m in indices:
            results[m] = neurons[m].at(float(t[group[m]]), work, confirm=round_index == _CONFIRM_ROUNDS - 1)
            if results[m] is None:
                return neurons[m].why
    return None


def _follow(neurons, indices, Xa, work) -> None:
    """The segments of the answers just solved and confirmed for ``neurons[indices]``
    (:mod:`solvers._segments`): their sample bounds along each line, one product for all."""
    fresh = [m for m in indices if isinstance(neurons[m], _Neuron) and neurons[m].fresh is not None
             and neurons[m].fresh[2][3]]  # dependent passive rows: no segment
    if not fresh:
        return
    products = segment_products(Xa, [neurons[m].columns for m in fresh], [neurons[m].fresh[1] for m in fresh],
                                [neurons[m].fresh[2][0] for m in fresh])
    work.product(Xa.shape[0], Xa.shape[1], 2 * len(fresh))
    for j, m in enumerate(fresh):
        neurons[m].follow(products[:, j], products[:, len(fresh) + j])


def _first_candidates(neurons, Xa, t, group, work) -> None:
    """Candidates for the neurons that start with none (no bound active before): the bounds
    that their unbounded fits ``theta_u(t)`` violate most (``w = theta_u``, ``rho_k = -1``
    with no passive bound), priced for all of them in one product."""
    fresh = [m for m, neuron in enumerate(neurons)
             if isinstance(neuron, _Neuron) and neuron.candidates.size == 0 and neuron.order.size == 0]
    if not fresh:
        return
    W = np.zeros((Xa.shape[1], len(fresh)))
    for j, m in enumerate(fresh):
        W[neurons[m].columns, j] = neurons[m].theta_b - float(t[group[m]]) * neurons[m].theta_c
    products = Xa @ W
    work.product(Xa.shape[0], Xa.shape[1], len(fresh))
    for j, m in enumerate(fresh):
        neurons[m].violated(products[:, j], W[neurons[m].columns, j], -1.0)


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

    def at(self, t: float, work: Work, confirm: bool = True):
        if not self.feasible:
            self.why = "the bounds admit no point on the support"
            return None
        return self.theta.copy(), np.zeros(self.rows.size), 0.0, 0.0


def _step(t, f, gamma, budget, low, high, zero_tried):
    """The next ``t`` of a group: the Newton step in ``t^2`` (exact while the active bounds
    stay), kept inside the bracket ``(low, high)``; else its geometric middle, ``t = 0``
    (which decides whether the budget can be met at all) when nothing below is known, or a
    factor 4 out of a one-sided bracket."""
    a = f - gamma * t * t
    newton = np.sqrt((budget - a) / gamma) if gamma > 0 and budget > a else np.nan
    if low < newton < high:
        return newton
    if np.isfinite(high):
        if low > 0:
            return np.sqrt(low * high)
        return high / 4.0 if zero_tried else 0.0
    return 4.0 * max(t, low, 1e-300)


def _formed_neurons(moments, Xa, V, support, signs, weights, work, cache) -> list:
    """Each neuron's program on its support: from ``cache`` while its support and signs
    stay, else formed (warm-started from the bounds active before on the same samples)."""
    n_cols, n_out = support.shape
    neurons, squares = [], None
    for m in range(n_out):
        columns = np.flatnonzero(support[:, m])
        key = (columns.tobytes(), signs[columns, m].tobytes())
        if m not in cache or cache[m][0] != key:
            if moments.active is not None and not moments.active[:, m].any():  # no ball: only bounds
                cache[m] = (key, _Idle(Xa, V, columns, weights, m))
                neurons.append(cache[m][1])
                continue
            if squares is None:  # the bounds' row norms of every neuron formed this round: one product
                squares = (Xa * Xa) @ support.astype(np.float64)
                work.product(Xa.shape[0], n_cols, n_out)
            neuron = _Neuron(moments, Xa, V, columns, signs[columns, m], weights, m, work, squares[:, m])
            if m in cache:  # the same samples' bounds: start from those active before (rows of F change)
                before = cache[m][1]
                neuron.order = before.order[before.order < before.rows.size]
                rows = neuron.Xa[neuron.rows[neuron.order]][:, neuron.columns]
                neuron.F_passive = -solve_lower(neuron.L, rows.T).T  # C-ordered (LAPACK's answer is Fortran's)
                neuron.use_candidates(before.candidates[before.candidates < before.rows.size])
            cache[m] = (key, neuron)
        neurons.append(cache[m][1])
    return neurons


def bounded_restricted(moments, Xa, V, epsilon, support, signs, weights, work, cache, tol,
                       flops_limit=np.inf):
    """Optimum of the program restricted to ``support`` (its signs kept) with every inactive
    bound an inequality.

    Returns ``("ok", Theta, nu, inverse_steps)`` like :func:`solvers._restricted.restricted`
    (``nu`` the bounds' multipliers per sample, ``inverse_steps = 1 / t``; weights that the
    sign bounds hold at zero are exact zeros), ``("budget", neurons)`` when their supports
    cannot meet the budget (for a layer ball: the neurons furthest from ``Y``), or
    ``("stop", why)`` when the attempt cannot go on: a neuron's bounds admit no point on
    its support, or ``work`` went past ``flops_limit`` (checked after each neuron).
    ``cache`` keeps each neuron's program (and active bounds) between rounds while its
    support and signs stay. The neurons' answers at each ``t`` are checked against every
    bound together (:func:`_confirm`), and the bounds' row norms and first candidates are
    priced for all neurons at once.
    """
    n_cols, n_out = support.shape
    per_neuron = epsilon.ndim == 1
    group = np.arange(n_out) if per_neuron else np.zeros(n_out, dtype=int)
    budget = epsilon**2 if per_neuron else np.array([float(epsilon) ** 2])
    neurons = _formed_neurons(moments, Xa, V, support, signs, weights, work, cache)
    # start: the step that meets the budget when no bound is active
    unbounded_f = np.array([max(n.y_sq - n.b @ n.theta_b, 0.0) for n in neurons])
    unbounded_gamma = np.array([n.c_tilde @ n.c_tilde for n in neurons])
    f_sum = np.bincount(group, unbounded_f, minlength=budget.size)
    gamma_sum = np.bincount(group, unbounded_gamma, minlength=budget.size)
    t = np.where((gamma_sum > 0) & (budget > f_sum), np.sqrt(np.maximum(budget - f_sum, 0.0) /
                                                               np.maximum(gamma_sum, 1e-300)), 1.0)
    if "t" in cache:  # the previous round's steps: close once the support settles
        t = cache["t"].copy()
    elif "start" in cache:  # a first guess (the ADMM's duals), where it gives one
        t = np.where(np.isfinite(cache["start"]), cache["start"], t)
    _first_candidates(neurons, Xa, t, group, work)
    low, high = np.zeros(budget.size), np.full(budget.size, np.inf)
    results = [None] * n_out
    pending, zero_tried = np.ones(budget.size, dtype=bool), np.zeros(budget.size, dtype=bool)
    for _ in range(_ROOT_STEPS):
        solved = np.flatnonzero(pending[group])
        for m in solved:
            results[m] = neurons[m].at(float(t[group[m]]), work, confirm=False)
            if results[m] is None:
                return "stop", neurons[m].why
            if work.flops > flops_limit:
                return "stop", "its share of the work is spent"
        solved = [m for m in solved if isinstance(neurons[m], _Neuron) and not neurons[m].predicted]
        why = _confirm(neurons, solved, Xa, t, group, results, work)
        if why is not None:
            return "stop", why
        _follow(neurons, solved, Xa, work)
        f = np.bincount(group, [r[2] for r in results], minlength=budget.size)
        gamma = np.bincount(group, [r[3] for r in results], minlength=budget.size)
        # feasible (to round-off: a Newton step aims at the budget itself), and the ball nearly tight
        met = (f <= budget * (1.0 + _ROOT_ROUNDING)) & (f >= budget * (1.0 - _ROOT_TOL * tol))
        unreachable = (t == 0.0) & (f > budget)
        if unreachable.any():
            return "budget", _over_budget(unreachable, group, results, per_neuron, n_out)
        pending &= ~met & ~((gamma == 0) & (f <= budget))  # no penalised weight: the ball does not bind
        if not pending.any():
            break
        zero_tried |= t == 0.0
        for g in np.flatnonzero(pending):
            if f[g] < budget[g]:
                low[g] = max(low[g], t[g])
            else:
                high[g] = min(high[g], t[g])
            t[g] = _step(t[g], f[g], gamma[g], budget[g], low[g], high[g], zero_tried[g])
    cache["t"] = t.copy()
    Theta = np.zeros((n_cols, n_out))
    nu = np.zeros((Xa.shape[0], n_out))
    inverse_steps = np.zeros(n_out)
    for m, (neuron, (theta, multipliers, _, _)) in enumerate(zip(neurons, results)):
        step = float(t[group[m]])
        theta = np.where((theta * signs[neuron.columns, m] > 0) | (weights[neuron.columns] == 0), theta, 0.0)
        Theta[neuron.columns, m] = theta
        inverse_steps[m] = 1.0 / step if step > 0 else 0.0
        nu[neuron.rows, m] = multipliers * inverse_steps[m]
    return "ok", Theta, nu, inverse_steps


def first_round_flops(active, support) -> float:
    """The cost model's estimate of a first round from ``support``: per neuron with ``k``
    unknowns and ``r`` inactive samples, about ``k`` bounds enter, each priced among
    ``8 (k + 1)`` candidates (a product) and factored in (about ``3 k^2`` at
    ``_SCALAR_COST``, see :meth:`_Neuron.at`), and a few passes over the bounds
    (``4 r k``); a few evaluations of ``t``, each at a call's own cost per neuron and a
    warm start of about ``k / 2`` bounds."""
    k = support.sum(axis=0).astype(float)
    rows = (~active).sum(axis=0).astype(float)
    return 3.0 * float(np.sum(_CALL_COST + _BOUND_COST * rows + _UNKNOWN_COST * k
                              + _WARM_COST * (k / 2.0) ** 2 * (k + 1.0)
                              + 2.0 * k * k * (8.0 * (k + 1.0) + 3.0 * _SCALAR_COST * k) + 4.0 * rows * k))


def _over_budget(groups, group, results, per_neuron, n_out):
    """The neurons to mend when ``groups`` cannot meet their budgets: every neuron of a
    neuron's own ball; for the layer ball, the quarter furthest from ``Y``."""
    neurons = np.flatnonzero(groups[group])
    if per_neuron:
        return list(neurons)
    f = np.array([r[2] if r is not None else 0.0 for r in results])
    worst = np.argsort(-f)[: max(1, n_out // 4)]
    return list(worst[f[worst] > 0])


def mend_bounded(outcome, moments, cache, support, signs) -> tuple[bool, str]:
    """Change the restricted program after :func:`bounded_restricted` found no answer (in
    place): neurons whose supports cannot meet the budget gain the off-support columns most
    correlated with the residual of their unbounded fit (a tenth of the support, at least
    two); a ``("stop", why)`` outcome stops the attempt. Returns whether polishing must
    stop, and why the round failed."""
    from ._restricted import _correlated_columns

    kind, neurons = outcome
    if kind == "stop":
        return True, neurons  # why it stopped
    added_any = False
    for m in neurons:
        neuron = cache[m][1]
        fit = np.zeros(support.shape[0])
        fit[neuron.columns] = neuron.theta_b
        count = max(2, int(0.1 * neuron.columns.size))
        added, added_signs = _correlated_columns(moments, support, fit, m, count)
        support[added, m] = True
        signs[added, m] = added_signs
        added_any |= added.size > 0
    return not added_any, "the support cannot meet the budget"
