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

Each quadratic program is a least-distance program: with ``u = L^T theta - L^{-1} q``,
``q = b - t c``, it reads ``min ||u||^2 / 2`` s.t. ``F u <= r`` with ``r = h - E G^{-1} q``,
which Lawson and Hanson solve by non-negative least squares on ``[-F, -r]^T`` (a column per
bound; the columns that enter are the active bounds, usually fewer than the unknowns).
The bounds' multipliers come with it, so the certificate of :mod:`solvers._polish` checks
the answer against the full program.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._restricted import Work

__all__ = ["bounded_restricted"]

_ROOT_STEPS = 40  # evaluations of f(t) at most per round
_ROOT_TOL = 0.1  # t is taken once f(t) is within this times tol below the budget (a gap of about as much)
_INFEASIBLE = 1e-10  # NNLS residual below which the bounds admit no point
_SCALAR_COST = 30.0  # a flop of the compiled least-distance loops, in flops of a large product (see Work)


@njit(cache=True)
def _forward(L, b):
    """``L^{-1} b`` for a lower triangular ``L`` (its leading ``b.size`` rows and columns)."""
    x = np.empty(b.size)
    for j in range(b.size):
        value = b[j]
        for l in range(j):
            value -= L[j, l] * x[l]
        x[j] = value / L[j, j]
    return x


@njit(cache=True)
def _backward(L, b):
    """``L^{-T} b`` for a lower triangular ``L`` (its leading ``b.size`` rows and columns)."""
    x = np.empty(b.size)
    for j in range(b.size - 1, -1, -1):
        value = b[j]
        for l in range(j + 1, b.size):
            value -= L[l, j] * x[l]
        x[j] = value / L[j, j]
    return x


@njit(cache=True)
def _bound_row(Xa, rows, cols, positions, signs, i):
    """Row ``E_i`` of the bounds on the support: sample ``rows[i]``, or after the samples the
    sign bound ``-sigma_j theta_j <= 0`` of support position ``positions[i - n_rows]``."""
    E = np.zeros(cols.size)
    if i < rows.size:
        for j in range(cols.size):
            E[j] = Xa[rows[i], cols[j]]
    else:
        E[positions[i - rows.size]] = -signs[i - rows.size]
    return E


@njit(cache=True)
def _append(Cp, R, size, row):
    """Add ``row`` to the passive rows ``Cp[:size]`` and to the lower Cholesky factor ``R``
    of their Gram matrix ``Cp Cp^T`` (in place). Returns the new size; the old one when
    ``row`` is (numerically) a combination of the passive rows."""
    line = np.empty(size)
    for j in range(size):
        line[j] = (np.dot(Cp[j], row) - np.dot(R[j, :j], line[:j])) / R[j, j]
    square = np.dot(row, row)
    pivot = square - np.dot(line, line)
    if pivot <= 1e-12 * square:
        return size
    Cp[size] = row
    R[size, :size] = line
    R[size, size] = np.sqrt(pivot)
    return size + 1


@njit(cache=True)
def _fit(Cp, R, size):
    """The least-squares coefficients of ``min ||Cp^T z - e||`` (``e`` the last unit
    vector): ``R R^T z = Cp e``."""
    y = _forward(R, Cp[:size, -1].copy())
    return _backward(R, y)


@njit(cache=True)
def _drop(Cp, R, order, size, keep):
    """Refactor without the passive rows where ``keep`` is False; the new size."""
    kept_rows, kept_order = Cp[:size][keep].copy(), order[:size][keep].copy()
    new_size = 0
    for j in range(kept_order.size):
        grown = _append(Cp, R, new_size, kept_rows[j])
        if grown > new_size:
            order[new_size] = kept_order[j]
        new_size = grown
    return new_size


@njit(cache=True)
def _gradients(Xa, rows, h, cols, positions, signs, L, theta_u, residual, indices):
    """The gradients ``-C_i (C_P^T mu_P - e)`` of the bounds ``indices`` and the scale each
    is compared with. For a bound, ``gradient = s (E_i theta - h_i)`` with ``s > 0``: it is
    positive exactly where the current point violates the bound."""
    k = cols.size
    w = _backward(L, residual[:k]) - residual[k] * theta_u
    w_norm = np.sqrt(np.dot(w, w))
    gradient, scale = np.empty(indices.size), np.empty(indices.size)
    for position in range(indices.size):
        i = indices[position]
        if i < rows.size:  # a sample: read in place, no copy of the row
            value, square, row = 0.0, 0.0, rows[i]
            for j in range(k):
                x = Xa[row, cols[j]]
                value += x * w[j]
                square += x * x
            gradient[position] = value + h[i] * residual[k]
            scale[position] = np.sqrt(square) * w_norm + abs(h[i] * residual[k])
        else:  # the sign bound of one weight
            j = positions[i - rows.size]
            gradient[position] = -signs[i - rows.size] * w[j]
            scale[position] = w_norm
    return gradient, scale


@njit(cache=True)
def _dual_qp(Xa, rows, h, cols, positions, signs, L, theta_u, warm_order, warm_F, candidates):
    """The least-distance program of one neuron by Lawson-Hanson non-negative least squares.

    Bound ``i`` is the row ``C_i = [-F_i, -r_i]`` with ``F_i = (L^{-1} E_i^T)^T`` and
    ``r_i = h_i - E_i theta_u``; ``min ||C^T mu - e||, mu >= 0`` is solved without forming
    ``C``: a bound's row is made when it enters, and the gradients that decide which enters
    are those of :func:`_gradients`, priced among ``candidates`` (the bounds nearest to
    entering at the last full pass) and confirmed by a full pass over all of them at the
    end. The passive rows' least-squares fit is a Cholesky factor of their Gram matrix,
    extended as a bound enters and refactored when one leaves.

    The warm start is the previous call's passive bounds ``warm_order`` with their rows
    ``-F`` (``warm_F``), which do not depend on ``theta_u``.

    Returns ``(mu, residual, order, F_rows, candidates)``: ``residual = C_P^T mu_P - e``;
    with ``s = -residual[k] > 0`` the point is ``u = residual[:k] / s`` and the bounds'
    multipliers are ``mu / s``; ``order`` the passive bounds and ``F_rows`` their ``-F``.
    """
    k = cols.size
    width = k + 1
    n_bounds = rows.size + positions.size
    Cp = np.zeros((width, width))
    R = np.zeros((width, width))
    order = np.empty(width, dtype=np.int64)
    size = 0
    mu = np.zeros(n_bounds)

    def row_of(i, F_row):
        E = _bound_row(Xa, rows, cols, positions, signs, i)
        row = np.empty(width)
        row[:k] = F_row
        row[k] = -((h[i] if i < rows.size else 0.0) - np.dot(E, theta_u))
        return row

    for position in range(warm_order.size):  # warm start: the fit on the given rows ...
        if size < width:
            grown = _append(Cp, R, size, row_of(warm_order[position], warm_F[position]))
            if grown > size:
                order[size] = warm_order[position]
            size = grown
    for _ in range(width + 1):  # ... less those it makes non-positive
        if size == 0:
            break
        z = _fit(Cp, R, size)
        if np.all(z > 0):
            for j in range(size):
                mu[order[j]] = z[j]
            break
        size = _drop(Cp, R, order, size, z > 0)
    residual = Cp[:size].T @ mu[order[:size]]
    residual[k] -= 1.0
    skipped = np.zeros(n_bounds, dtype=np.bool_)
    everything = np.arange(n_bounds)
    for _ in range(4 * width + 10):
        if size == width:
            break
        best = -1
        for full_pass in range(2):  # the candidates first; a full pass when none enters
            indices = everything if full_pass else candidates
            gradient, scale = _gradients(Xa, rows, h, cols, positions, signs, L, theta_u, residual, indices)
            passive = np.zeros(n_bounds, dtype=np.bool_)
            passive[order[:size]] = True
            value = 0.0
            for position in range(indices.size):
                i = indices[position]
                if (not passive[i] and not skipped[i] and gradient[position] > 1e-10 * scale[position]
                        and gradient[position] > value):
                    best, value = i, gradient[position]
            if full_pass:
                candidates = indices[np.argsort(-gradient)[: 8 * width]]
            if best >= 0:
                break
        if best < 0:
            break
        grown = _append(Cp, R, size, row_of(best, -_forward(L, _bound_row(Xa, rows, cols, positions, signs, best))))
        if grown == size:  # dependent on the passive rows: not a direction
            skipped[best] = True
            continue
        order[size] = best
        size = grown
        for _inner in range(width + 2):
            z = _fit(Cp, R, size)
            if np.all(z > 0):
                for j in range(size):
                    mu[order[j]] = z[j]
                break
            step = 1.0
            for j in range(size):
                if z[j] <= 0:
                    current = mu[order[j]]
                    step = min(step, current / (current - z[j]) if current - z[j] > 0 else 0.0)
            keep = np.ones(size, dtype=np.bool_)
            for j in range(size):
                i = order[j]
                mu[i] += step * (z[j] - mu[i])
                if mu[i] <= 1e-15 * max(1.0, abs(z[j])):
                    mu[i] = 0.0
                    keep[j] = False
            size = _drop(Cp, R, order, size, keep)
            skipped[:] = False
        residual = Cp[:size].T @ mu[order[:size]]
        residual[k] -= 1.0
    return mu, residual, order[:size].copy(), Cp[:size, :k].copy(), candidates


class _Neuron:
    """One neuron's restricted program on a fixed support, solved for any step ``t``.

    Formed once per round: the Cholesky factor ``L`` of ``G`` and the unbounded solutions
    ``G^{-1} b`` and ``G^{-1} c``; the bounds are read from ``Xa`` as they are needed.
    :meth:`at` solves the quadratic program at ``t``, warm-started from the bounds active
    at the previous call.
    """

    def __init__(self, moments, Xa, V, columns, signs, weights, m, work) -> None:
        from scipy import linalg

        self.columns, self.m = columns.astype(np.int64), m
        self.Xa = Xa  # C-contiguous float64 (one compiled signature of the kernels)
        k = columns.size
        G = moments.neuron(m, columns, work)
        # a tiny ridge keeps G definite when a support column is (nearly) zero on the active rows
        G = G + (1e-10 * max(float(np.max(np.diag(G), initial=0.0)), 1e-300)) * np.eye(k)
        self.G, self.b, self.y_sq = G, moments.moment[columns, m], float(moments.y_sq[m])
        self.linear = weights[columns] * signs
        self.L = np.ascontiguousarray(linalg.cholesky(G, lower=True))
        work.solve(k, 3)
        self.rows = np.flatnonzero(~moments.active[:, m]).astype(np.int64)
        self.h = np.zeros(self.rows.size) if V is None else np.ascontiguousarray(V[self.rows, m])
        self.positions = np.flatnonzero(weights[columns] > 0).astype(np.int64)  # the weights' sign bounds
        self.signs = np.ascontiguousarray(signs[self.positions], dtype=np.float64)
        self.theta_b = linalg.cho_solve((self.L, True), self.b)
        self.theta_c = linalg.cho_solve((self.L, True), self.linear)
        self.c_tilde = linalg.solve_triangular(self.L, self.linear, lower=True)
        # the warm start of the next call: the active bounds, their rows of -F, the candidates
        self.order, self.F_passive = np.empty(0, dtype=np.int64), np.empty((0, k))
        self.candidates = np.empty(0, dtype=np.int64)

    def at(self, t: float, work: Work):
        """``(theta, multipliers, f, gamma)`` at ``t``, or None when the bounds admit no point.

        ``multipliers`` are those of the sample bounds in the quadratic program (``t`` times
        the program's); ``f = ||M theta - y||^2`` and ``gamma`` its curvature in ``t^2``
        while the active bounds stay.
        """
        from scipy import linalg

        k = self.columns.size
        theta_u = self.theta_b - t * self.theta_c
        warm = self.order.size
        mu, residual, order, F_passive, self.candidates = _dual_qp(
            self.Xa, self.rows, self.h, self.columns, self.positions, self.signs, self.L, theta_u, self.order,
            self.F_passive, self.candidates)
        self.order, self.F_passive = order, F_passive
        # two passes over the bounds, and per entering bound a pass over the candidates and its
        # row's solve; compiled scalar loops, counted at _SCALAR_COST flops of a large product
        entered = max(order.size - warm, 0) + 1
        work.flops += _SCALAR_COST * 2.0 * k * (2.0 * (self.rows.size + self.positions.size)
                                                + entered * (8.0 * (k + 1) + k))
        scale = -residual[k]
        if not (np.linalg.norm(residual) > _INFEASIBLE and scale > 0):
            return None
        multipliers = mu / scale
        theta = theta_u + linalg.solve_triangular(self.L.T, residual[:k] / scale, lower=False)
        held = self.positions[order[order >= self.rows.size] - self.rows.size]  # sign bounds at zero
        theta[held] = 0.0
        f = max(float(theta @ self.G @ theta - 2.0 * self.b @ theta + self.y_sq), 0.0)
        projected = self.c_tilde
        if order.size:  # the part of c~ outside the span of the active rows of F
            F_active = F_passive
            try:
                factor = linalg.cho_factor(F_active @ F_active.T, lower=True, check_finite=False)
                coefficients = linalg.cho_solve(factor, F_active @ projected, check_finite=False)
            except linalg.LinAlgError:
                coefficients = np.linalg.lstsq(F_active.T, projected, rcond=None)[0]
            projected = projected - F_active.T @ coefficients
        return theta, multipliers[: self.rows.size], f, float(projected @ projected)


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

    def at(self, t: float, work: Work):
        if not self.feasible:
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


def bounded_restricted(moments, Xa, V, epsilon, support, signs, weights, work, cache, tol):
    """Optimum of the program restricted to ``support`` (its signs kept) with every inactive
    bound an inequality.

    Returns ``("ok", Theta, nu, inverse_steps)`` like :func:`solvers._restricted.restricted`
    (``nu`` the bounds' multipliers per sample, ``inverse_steps = 1 / t``; weights that the
    sign bounds hold at zero are exact zeros), ``("kkt", neurons)`` when those neurons'
    bounds admit no point on their support, or ``("budget", neurons)`` when their supports
    cannot meet the budget (for a layer ball: the neurons furthest from ``Y``). ``cache``
    keeps each neuron's program (and active bounds) between rounds while its support and
    signs stay.
    """
    from scipy import linalg

    n_cols, n_out = support.shape
    per_neuron = epsilon.ndim == 1
    group = np.arange(n_out) if per_neuron else np.zeros(n_out, dtype=int)
    budget = epsilon**2 if per_neuron else np.array([float(epsilon) ** 2])
    neurons = []
    for m in range(n_out):
        columns = np.flatnonzero(support[:, m])
        key = (columns.tobytes(), signs[columns, m].tobytes())
        if m not in cache or cache[m][0] != key:
            if not moments.active[:, m].any():  # no ball: only bounds
                cache[m] = (key, _Idle(Xa, V, columns, weights, m))
                neurons.append(cache[m][1])
                continue
            neuron = _Neuron(moments, Xa, V, columns, signs[columns, m], weights, m, work)
            if m in cache:  # the same samples' bounds: start from those active before (rows of F change)
                before = cache[m][1]
                neuron.order = before.order[before.order < before.rows.size]
                neuron.F_passive = -linalg.solve_triangular(
                    neuron.L, neuron.Xa[np.ix_(neuron.rows[neuron.order], neuron.columns)].T, lower=True).T.copy()
                neuron.candidates = before.candidates[before.candidates < before.rows.size]
            cache[m] = (key, neuron)
        neurons.append(cache[m][1])
    # start: the step that meets the budget when no bound is active
    unbounded_f = np.array([max(n.y_sq - n.b @ n.theta_b, 0.0) for n in neurons])
    unbounded_gamma = np.array([n.c_tilde @ n.c_tilde for n in neurons])
    f_sum = np.bincount(group, unbounded_f, minlength=budget.size)
    gamma_sum = np.bincount(group, unbounded_gamma, minlength=budget.size)
    t = np.where((gamma_sum > 0) & (budget > f_sum), np.sqrt(np.maximum(budget - f_sum, 0.0) /
                                                               np.maximum(gamma_sum, 1e-300)), 1.0)
    if "t" in cache:  # the previous round's steps: close once the support settles
        t = cache["t"].copy()
    low, high = np.zeros(budget.size), np.full(budget.size, np.inf)
    results = [None] * n_out
    pending, zero_tried = np.ones(budget.size, dtype=bool), np.zeros(budget.size, dtype=bool)
    for _ in range(_ROOT_STEPS):
        failed = []
        for m in np.flatnonzero(pending[group]):
            results[m] = neurons[m].at(float(t[group[m]]), work)
            if results[m] is None:
                failed.append(m)
        if failed:
            return "kkt", failed
        f = np.bincount(group, [r[2] for r in results], minlength=budget.size)
        gamma = np.bincount(group, [r[3] for r in results], minlength=budget.size)
        met = (f <= budget) & (f >= budget * (1.0 - _ROOT_TOL * tol))  # feasible, and the ball nearly tight
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


def _over_budget(groups, group, results, per_neuron, n_out):
    """The neurons to mend when ``groups`` cannot meet their budgets: every neuron of a
    neuron's own ball; for the layer ball, the quarter furthest from ``Y``."""
    neurons = np.flatnonzero(groups[group])
    if per_neuron:
        return list(neurons)
    f = np.array([r[2] if r is not None else 0.0 for r in results])
    worst = np.argsort(-f)[: max(1, n_out // 4)]
    return list(worst[f[worst] > 0])


def mend_budget(moments, cache, support, signs, neurons) -> bool:
    """Give ``neurons``, whose supports cannot meet the budget, the off-support columns most
    correlated with the residual of their unbounded fit (a tenth of the support, at least
    two; in place). Returns False when no column is left to add."""
    from ._restricted import _correlated_columns

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
    return added_any
