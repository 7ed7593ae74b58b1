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

The neurons are independent at a given ``t``: forming their programs, solving them and
checking their answers against the bounds are passes over neurons, shared out over the
cores when the neurons are large (:func:`solvers._neuron.each_neuron`), their work
counted per neuron and added up in order, as one thread would.
"""
from __future__ import annotations

import numpy as np

from ._lapack import solve_lower
from ._neuron import _Idle, _Neuron, each_neuron
from ._restricted import Work
from ._segments import segment_products

__all__ = ["bounded_restricted", "mend_bounded"]

_ROOT_STEPS = 40  # evaluations of f(t) at most per round
_ROOT_TOL = 0.1  # t is taken once f(t) is within this times tol below the budget (a gap of about as much)
_ROOT_ROUNDING = 1e-9  # f(t) this far above the budget counts as on it (far below any tol of the certificate)
_BRACKET_FLOOR = 1e-12  # a bracket of t narrower than this (relative) holds a jump of f, not a root
_CONFIRM_ROUNDS = 4  # batched checks of the neurons' answers before the kernel checks its own


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
        checked = each_neuron(lambda j, own: neurons[indices[j]].violated(products[:, j], *directions[j]),
                              range(len(indices)), [neurons[m].size for m in indices])
        indices = [m for m, (violated, _) in zip(indices, checked) if violated]
        last = round_index == _CONFIRM_ROUNDS - 1
        answers = each_neuron(lambda m, own: neurons[m].at(float(t[group[m]]), own, confirm=last), indices,
                              [neurons[m].size for m in indices])
        for m, (results[m], flops) in zip(indices, answers):
            work.flops += flops
            if results[m] is None:
                return neurons[m].why
    return None


def _follow(neurons, indices, Xa, work) -> None:
    """The segments of the answers just solved and confirmed for ``neurons[indices]``
    (:mod:`solvers._segments`): their sample bounds along each line, one product for all."""
    fresh = [m for m in indices if isinstance(neurons[m], _Neuron) and neurons[m].line is not None]
    if not fresh:
        return
    lines = [neurons[m].line for m in fresh]
    products = segment_products(Xa, [neurons[m].columns for m in fresh], [theta for theta, _ in lines],
                                [slope for _, slope in lines])
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
    each_neuron(lambda j, own: neurons[fresh[j]].violated(products[:, j], W[neurons[fresh[j]].columns, j], -1.0),
                range(len(fresh)), [neurons[m].size for m in fresh])


def _on_budget(f: np.ndarray, budget: np.ndarray, tol: float) -> np.ndarray:
    """Where ``f(t)`` is taken as the root: within the budget (to round-off, ``_ROOT_ROUNDING``
    above it: a Newton step aims at the budget itself) and the ball nearly tight (at most
    ``_ROOT_TOL * tol`` below it)."""
    return (f <= budget * (1.0 + _ROOT_ROUNDING)) & (f >= budget * (1.0 - _ROOT_TOL * tol))


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
    stay, else formed (warm-started from the bounds active before on the same samples),
    the neurons to form shared out over the cores (:func:`solvers._neuron.each_neuron`)."""
    n_cols, n_out = support.shape
    supports = [np.flatnonzero(support[:, m]) for m in range(n_out)]
    keys = [(columns.tobytes(), signs[columns, m].tobytes()) for m, columns in enumerate(supports)]
    forming = [m for m in range(n_out) if m not in cache or cache[m][0] != keys[m]]
    idle = {m for m in forming if moments.active is not None and not moments.active[:, m].any()}  # no ball
    busy = [m for m in forming if m not in idle]
    squares = None
    if busy:  # the bounds' row norms of every neuron formed this round: one product
        squares = (Xa * Xa) @ support.astype(np.float64)
        work.product(Xa.shape[0], n_cols, n_out)
        moments.prepare([(m, supports[m].size) for m in busy])
    for m in sorted(idle):
        cache[m] = (keys[m], _Idle(Xa, V, supports[m], weights, m))

    def form(m: int, own: Work) -> _Neuron:
        columns = supports[m]
        neuron = _Neuron(moments, Xa, V, columns, signs[columns, m], weights, m, own, squares[:, m])
        if m in cache:  # the same samples' bounds: start from those active before (rows of F change)
            before = cache[m][1]
            neuron.order = before.order[before.order < before.rows.size]
            rows = neuron.Xa[neuron.rows[neuron.order]][:, neuron.columns]
            neuron.F_passive = -solve_lower(neuron.L, rows.T).T  # C-ordered (LAPACK's answer is Fortran's)
            neuron.use_candidates(before.candidates[before.candidates < before.rows.size])
        return neuron

    bounds = [0 if moments.active is None else moments.rows_of(m, active=False).size for m in busy]
    sizes = [float(supports[m].size) ** 2 * count for m, count in zip(busy, bounds)]
    for m, (neuron, flops) in zip(busy, each_neuron(form, busy, sizes)):
        cache[m] = (keys[m], neuron)
        work.flops += flops
    return [cache[m][1] for m in range(n_out)]


def bounded_restricted(moments, Xa, V, epsilon, support, signs, weights, work, cache, tol,
                       flops_limit=np.inf):
    """Optimum of the program restricted to ``support`` (its signs kept) with every inactive
    bound an inequality.

    Returns ``("ok", Theta, nu, inverse_steps)`` like :func:`solvers._restricted.restricted`
    (``nu`` the bounds' multipliers per sample, ``inverse_steps = 1 / t``; weights that the
    sign bounds hold at zero are exact zeros), ``("budget", neurons)`` when their supports
    cannot meet the budget (for a layer ball: the neurons furthest from ``Y``), or
    ``("stop", why)`` when the attempt cannot go on: a neuron's bounds admit no point on
    its support, ``work`` went past ``flops_limit`` (checked after each neuron), or the
    bracket of ``t`` closed on a jump of ``f`` (:data:`_BRACKET_FLOOR`). ``cache`` keeps
    each neuron's program (and active bounds) between rounds while its support and signs
    stay. The neurons' answers at each ``t`` are checked against every bound together
    (:func:`_confirm`); the bounds' row norms and first candidates are priced at once.
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
        answers = each_neuron(lambda m, own: neurons[m].at(float(t[group[m]]), own, confirm=False), solved,
                              [neurons[m].size for m in solved])
        for m, (results[m], flops) in zip(solved, answers):  # as one thread would: the work added in order
            work.flops += flops
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
        met = _on_budget(f, budget, tol)
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
            if 0.0 < low[g] and np.isfinite(high[g]) and high[g] - low[g] <= _BRACKET_FLOOR * high[g]:
                return "stop", f"the ball's step has no root on the support (its answers jump at t = {high[g]:.6g})"
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
