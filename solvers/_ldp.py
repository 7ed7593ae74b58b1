"""The least-distance program of one neuron, by non-negative least squares (compiled).

A ReLU layer's restricted program (:mod:`solvers._bounded`) needs, for one neuron and a
step ``t``, the projection of ``theta_u`` in the metric ``G = L L^T`` onto the bounds
``E theta <= h``. With ``u = L^T (theta - theta_u)`` this is the least-distance program

.. math::

    \\min_u \\tfrac12 \\|u\\|^2 \\quad \\text{s.t.} \\quad F u \\le r, \\qquad
    F = E L^{-T}, \\quad r = h - E \\theta_u

which Lawson and Hanson reduce to non-negative least squares: ``min ||C^T mu - e||`` over
``mu >= 0`` with one row ``C_i = [-F_i, -r_i]`` per bound and ``e`` the last unit vector.
With the residual ``rho = C^T mu - e`` and ``s = -rho_k > 0``, the point is
``u = rho_{:k} / s`` and the bounds' multipliers are ``mu / s``; ``rho = 0`` means the
bounds admit no point. A bound enters while its gradient ``-C_i rho`` is positive, which
is ``s (E_i theta - h_i)``: it enters exactly when the current point violates it, so the
method is a dual active-set method, and the bounds that enter are the active ones,
usually far fewer than the samples.

:func:`_dual_qp` never forms ``C``: a bound's row ``F_i`` is solved when it enters. The
gradients that price the bounds are ``E_i w + h_i rho_k`` for one direction ``w``
(:func:`_direction`): a product with the samples for all of them (:func:`_price_all`), or
with the gathered rows of the likeliest few (:func:`_candidate_rows`). The passive rows'
Gram matrix is held as a Cholesky factor, extended by a row when a bound enters
(:func:`_append`) and updated by a rank-one step when one leaves (:func:`_delete`). At
the end of a call the factor of the passive rows' ``F F^T`` (their part that does not
depend on ``theta_u``) is kept, so that the next call's warm start is one rank-one update
of it (:func:`_warm_start`), and the answer's curvature is two triangular solves with it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._triangular import _backward, _downdate, _forward, _positive_solve, _rank_one_update

__all__ = ["_answer", "_bound_gradients", "_candidate_rows", "_dual_qp"]


@njit(cache=True, nogil=True)
def _bound_row(Xa, rows, cols, positions, signs, i):
    """Row ``E_i`` of the bounds on the support: sample ``rows[i]``, or after the samples the
    sign bound ``-sigma_j theta_j <= 0`` of support position ``positions[i - n_rows]``."""
    E = np.zeros(cols.size)
    _fill_bound_row(E, Xa, rows, cols, positions, signs, i)
    return E


@njit(cache=True, nogil=True)
def _fill_bound_row(E, Xa, rows, cols, positions, signs, i):
    """Write row ``E_i`` (:func:`_bound_row`) into ``E``, which holds zeros."""
    if i < rows.size:
        for j in range(cols.size):
            E[j] = Xa[rows[i], cols[j]]
    else:
        E[positions[i - rows.size]] = -signs[i - rows.size]


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def _fit(Cp, R, size):
    """The least-squares coefficients of ``min ||Cp^T z - e||`` (``e`` the last unit
    vector): ``R R^T z = Cp e``."""
    y = _forward(R, Cp[:size, -1].copy())
    return _backward(R, y)


@njit(cache=True, nogil=True)
def _delete(Cp, R, order, size, j):
    """Remove passive row ``j`` from ``Cp``, ``order`` and the factor ``R`` (in place).

    The rows before ``j`` keep their factor. With ``T`` the trailing factor (rows and
    columns after ``j``) and ``x`` the column ``j`` below the diagonal, the trailing Gram
    matrix without row ``j`` is ``T T^T + x x^T``: its factor is ``T`` after a rank-one
    update (:func:`_rank_one_update`). Returns the new size."""
    _rank_one_update(R, j + 1, size, R[j + 1:size, j].copy())
    for p in range(j, size - 1):
        Cp[p] = Cp[p + 1]
        order[p] = order[p + 1]
        for q in range(j):
            R[p, q] = R[p + 1, q]
        for q in range(j, p + 1):
            R[p, q] = R[p + 1, q + 1]
    return size - 1


@njit(cache=True, nogil=True)
def _drop(Cp, R, order, size, keep):
    """Remove the passive rows where ``keep`` is False; the new size."""
    for j in range(size - 1, -1, -1):
        if not keep[j]:
            size = _delete(Cp, R, order, size, j)
    return size


@njit(cache=True, nogil=True)
def _direction(L, theta_u, residual):
    """``w = L^{-T} rho_{:k} - rho_k theta_u``: a bound's gradient is ``E_i w + h_i rho_k``."""
    k = theta_u.size
    return _backward(L, residual[:k]) - residual[k] * theta_u


@njit(cache=True, nogil=True)
def _price_all(Xa, norms, rows, h, cols, positions, signs, w, bias):
    """The gradients of every bound and their scales (:func:`_bound_gradients`), the
    samples' products by one product with ``Xa``."""
    w_full = np.zeros(Xa.shape[1])
    for j in range(cols.size):
        w_full[cols[j]] = w[j]
    return _bound_gradients(Xa @ w_full, norms, rows, h, positions, signs, w, bias)


@njit(cache=True, nogil=True)
def _bound_gradients(products, norms, rows, h, positions, signs, w, bias):
    """The gradients ``-C_i (C_P^T mu_P - e)`` of every bound and the scale each is compared
    with, for the direction ``w`` and ``bias = rho_k`` (:func:`_direction`), from
    ``products = Xa w`` (every sample). A bound's gradient is ``s (E_i theta - h_i)`` with
    ``s > 0``: positive exactly where the current point violates it."""
    w_norm = np.sqrt(np.dot(w, w))
    n_bounds = rows.size + positions.size
    gradient, scale = np.empty(n_bounds), np.empty(n_bounds)
    for i in range(rows.size):
        gradient[i] = products[rows[i]] + h[i] * bias
        scale[i] = norms[i] * w_norm + abs(h[i] * bias)
    for position in range(positions.size):
        gradient[rows.size + position] = -signs[position] * w[positions[position]]
        scale[rows.size + position] = w_norm
    return gradient, scale


@njit(cache=True, nogil=True)
def _candidate_rows(Xa, norms, rows, h, cols, positions, signs, candidates):
    """The rows ``E_i``, bounds and row norms of the bounds ``candidates``, gathered once so
    that pricing them is one product."""
    E = np.zeros((candidates.size, cols.size))
    bounds, row_norms = np.zeros(candidates.size), np.ones(candidates.size)
    for position in range(candidates.size):
        i = candidates[position]
        _fill_bound_row(E[position], Xa, rows, cols, positions, signs, i)
        if i < rows.size:
            bounds[position], row_norms[position] = h[i], norms[i]
    return E, bounds, row_norms


@njit(cache=True, nogil=True)
def _ldp_row(Xa, rows, h, cols, positions, signs, theta_u, i, F_row):
    """Bound ``i``'s row ``C_i = [-F_i, -r_i]``, from ``-F_i`` (``F_row``) and
    ``r_i = h_i - E_i theta_u``."""
    k = cols.size
    E = _bound_row(Xa, rows, cols, positions, signs, i)
    row = np.empty(k + 1)
    row[:k] = F_row
    row[k] = -((h[i] if i < rows.size else 0.0) - np.dot(E, theta_u))
    return row


@njit(cache=True, nogil=True)
def _settle(Cp, R, order, mu, size, skipped):
    """Lawson-Hanson's inner loop after a bound entered: while the passive rows' fit has a
    non-positive coefficient, step ``mu`` towards the fit as far as it stays non-negative
    and drop the rows that reach zero (``skipped`` bounds become eligible again). Sets
    ``mu`` to the final fit; returns the new size."""
    for _inner in range(Cp.shape[0] + 2):
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
    return size


@njit(cache=True, nogil=True)
def _entering(indices, gradient, scale, passive, skipped):
    """The bound among ``indices`` (neither passive nor skipped) with the largest gradient
    above its round-off scale; -1 when none."""
    best, value = -1, 0.0
    for position in range(indices.size):
        i = indices[position]
        if not passive[i] and not skipped[i] and gradient[position] > max(1e-10 * scale[position], value):
            best, value = i, gradient[position]
    return best


@njit(cache=True, nogil=True)
def _warm_start(Cp, R, order, mu, Xa, rows, h, cols, positions, signs, theta_u, warm_order, warm_F, warm_S):
    """Put the warm start's bounds ``warm_order`` (their rows ``-F``: ``warm_F``) into the
    passive rows ``Cp`` and their factor ``R``, and their fit into ``mu``, less the rows
    the fit makes non-positive (in place); the new size.

    Only the rows' last entries ``-r_i`` depend on ``theta_u``: ``Cp Cp^T = F F^T + r r^T``,
    so with ``warm_S``, the factor of ``F F^T`` (the previous call's), ``R`` is one rank-one
    update of it (``O(size^2)``). Without it (a 0 x 0 ``warm_S``) the rows are added one
    by one (``O(size^2 k)``), less those that depend on the others."""
    k = cols.size
    if warm_S.shape[0] != warm_order.size or warm_order.size > Cp.shape[0]:
        size = 0
        for position in range(warm_order.size):
            if size < Cp.shape[0]:
                grown = _append(Cp, R, size, _ldp_row(Xa, rows, h, cols, positions, signs, theta_u,
                                                      warm_order[position], warm_F[position]))
                if grown > size:
                    order[size] = warm_order[position]
                size = grown
    else:
        size = warm_order.size
        for j in range(size):
            Cp[j] = _ldp_row(Xa, rows, h, cols, positions, signs, theta_u, warm_order[j], warm_F[j])
            order[j] = warm_order[j]
            R[j, :j + 1] = warm_S[j, :j + 1]
        _rank_one_update(R, 0, size, Cp[:size, k].copy())
    for _ in range(Cp.shape[0] + 1):
        if size == 0:
            break
        z = _fit(Cp, R, size)
        if np.all(z > 0):
            for j in range(size):
                mu[order[j]] = z[j]
            break
        size = _drop(Cp, R, order, size, z > 0)
    return size


@njit(cache=True, nogil=True)
def _dual_qp(Xa, norms, rows, h, cols, positions, signs, L, theta_u, warm_order, warm_F, warm_S, candidates,
             candidate_rows, confirm):
    """The least-distance program of one neuron by Lawson-Hanson non-negative least squares.

    Bound ``i`` is the row ``C_i = [-F_i, -r_i]`` with ``F_i = (L^{-1} E_i^T)^T`` and
    ``r_i = h_i - E_i theta_u``; ``min ||C^T mu - e||, mu >= 0`` is solved without forming
    ``C``: a bound's row is made when it enters, and the bound that enters is the one with
    the largest gradient among ``candidates`` (the bounds nearest to entering at the last
    full pass), or among all of them (a full pass) when no candidate qualifies; the end is
    confirmed by a full pass. ``norms`` are the sample bounds' row norms
    (``||E_i||``), the scale that tells a gradient from round-off.

    The warm start is the previous call's passive bounds ``warm_order`` with their rows
    ``-F`` (``warm_F``), which do not depend on ``theta_u``, and the factor of ``F F^T``
    (``warm_S``; 0 x 0 when not known: :func:`_warm_start`). ``candidate_rows`` are the
    candidates' rows, bounds and row norms (:func:`_candidate_rows`), kept by the caller
    while the candidates stay.

    With ``confirm`` False the end is not confirmed when candidates were given: the method
    stops once none of them enters, and the caller prices every bound (for many neurons
    in one product) and calls again, warm-started, if one should enter.

    Returns ``(mu, residual, order, F_rows, S, candidates, candidate_rows, passes)``:
    ``residual = C_P^T mu_P - e``; with ``s = -residual[k] > 0`` the point is
    ``u = residual[:k] / s`` and the bounds' multipliers are ``mu / s``; ``order`` the
    passive bounds, ``F_rows`` their ``-F`` and ``S`` the factor of ``F F^T`` (the passive
    rows' factor downdated by ``r r^T``; 0 x 0 where ``F F^T`` is singular at round-off);
    the candidates of the last full pass (or those given) with their rows; ``passes`` the
    full passes made.
    The iterations are capped (a few per unknown); the certificate of the polish judges
    the answer either way.
    """
    k = cols.size
    width = k + 1
    n_bounds = rows.size + positions.size
    Cp = np.zeros((width, width))
    R = np.zeros((width, width))
    order = np.empty(width, dtype=np.int64)
    mu = np.zeros(n_bounds)
    size = _warm_start(Cp, R, order, mu, Xa, rows, h, cols, positions, signs, theta_u, warm_order, warm_F, warm_S)
    residual = Cp[:size].T @ mu[order[:size]]
    residual[k] -= 1.0
    skipped = np.zeros(n_bounds, dtype=np.bool_)
    passes = 0
    E_candidates, h_candidates, norm_candidates = candidate_rows
    for _ in range(4 * width + 10):
        if size == width:
            break
        passive = np.zeros(n_bounds, dtype=np.bool_)
        passive[order[:size]] = True
        w, bias = _direction(L, theta_u, residual), residual[k]
        best = -1
        if candidates.size:  # the candidates first, one product; a full pass when none enters
            w_norm = np.sqrt(np.dot(w, w))
            best = _entering(candidates, E_candidates @ w + h_candidates * bias,
                             norm_candidates * w_norm + np.abs(h_candidates * bias), passive, skipped)
        if best < 0 and candidates.size and not confirm:
            break  # the caller confirms the answer (one product for many neurons)
        if best < 0:
            passes += 1
            gradient, scale = _price_all(Xa, norms, rows, h, cols, positions, signs, w, bias)
            best = _entering(np.arange(n_bounds), gradient, scale, passive, skipped)
            candidates = np.argsort(-gradient)[: 8 * width]
            E_candidates, h_candidates, norm_candidates = _candidate_rows(Xa, norms, rows, h, cols, positions,
                                                                          signs, candidates)
        if best < 0:
            break
        F_row = -_forward(L, _bound_row(Xa, rows, cols, positions, signs, best))
        grown = _append(Cp, R, size, _ldp_row(Xa, rows, h, cols, positions, signs, theta_u, best, F_row))
        if grown == size:  # dependent on the passive rows: not a direction
            skipped[best] = True
            continue
        order[size] = best
        size = grown
        size = _settle(Cp, R, order, mu, size, skipped)
        residual = Cp[:size].T @ mu[order[:size]]
        residual[k] -= 1.0
    factored, S = _downdate(R, size, Cp[:size, k].copy())
    return (mu, residual, order[:size].copy(), Cp[:size, :k].copy(), S if factored else np.empty((0, 0)),
            candidates, (E_candidates, h_candidates, norm_candidates), passes)


@njit(cache=True, nogil=True)
def _answer(mu, residual, order, F_rows, S, n_rows, positions, L, G, b, y_sq, theta_u, c_tilde, infeasible):
    """The restricted quadratic program's answer from its least-distance program's
    (:func:`_dual_qp`): ``(ok, theta, multipliers, f, gamma, motion)``.

    With ``s = -residual[k]``: ``theta = theta_u + L^{-T} residual[:k] / s`` (the weights
    whose sign bounds are passive exactly 0), the sample bounds' multipliers ``mu / s``,
    ``f = theta^T G theta - 2 b^T theta + ||y||^2`` (``||M theta - y||^2``) and
    ``gamma = ||P c~||^2``, ``P`` the projection onto the null space of the passive rows
    ``F`` (``F_rows`` holds ``-F``; the sign does not matter; ``S`` the factor of ``F F^T``
    when known, else 0 x 0). ``ok`` is False when the
    residual's norm is at most ``infeasible`` or ``s <= 0``: the bounds admit no point.

    ``motion = (slope, nu, nu_slope, unique)`` says how the answer moves with ``t`` while
    the passive bounds stay passive: ``theta(t') = theta + (t' - t) slope`` with
    ``slope = -L^{-T} P c~``, and the passive bounds' multipliers (in the order of
    ``order``) ``nu + (t' - t) nu_slope`` with ``nu_slope = -(F F^T)^{-1} F c~``; both
    follow from the equality-constrained program on the passive bounds, whose answer is
    affine in ``t``. ``unique`` is False when the passive rows are dependent (the
    multipliers are then not unique and ``nu_slope`` is one least-squares choice).
    """
    k = theta_u.size
    scale = -residual[k]
    if not (np.sqrt(np.dot(residual, residual)) > infeasible and scale > 0):
        return False, theta_u, mu[:n_rows], 0.0, 0.0, (np.zeros(k), np.zeros(order.size), np.zeros(order.size), False)
    theta = theta_u + _backward(L, residual[:k] / scale)
    for j in range(order.size):
        if order[j] >= n_rows:
            theta[positions[order[j] - n_rows]] = 0.0
    f = max(np.dot(theta, G @ theta) - 2.0 * np.dot(b, theta) + y_sq, 0.0)
    projected = c_tilde
    coefficients = np.zeros(order.size)
    unique = True
    if order.size:
        if S.shape[0] == order.size:  # the factor of F F^T that _dual_qp kept
            solved, coefficients = True, _backward(S, _forward(S, F_rows @ c_tilde))
        else:
            solved, coefficients = _positive_solve(F_rows @ F_rows.T, F_rows @ c_tilde)
        if not solved:  # dependent rows: the least-squares coefficients
            coefficients = np.linalg.lstsq(F_rows.T, c_tilde)[0]
            unique = False
        projected = c_tilde - F_rows.T @ coefficients
    slope = -_backward(L, projected)
    nu = np.empty(order.size)
    for j in range(order.size):
        nu[j] = mu[order[j]] / scale
        if order[j] >= n_rows:  # a weight held at zero stays there
            slope[positions[order[j] - n_rows]] = 0.0
    motion = (slope, nu, coefficients, unique)  # F_rows = -F: the coefficients are -(F F^T)^{-1} F c~
    return True, theta, mu[:n_rows] / scale, f, np.dot(projected, projected), motion
