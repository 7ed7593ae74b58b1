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

:func:`_dual_qp` never forms ``C``: a bound's row ``F_i`` is solved when it enters, and
the gradients that price the bounds are read from the samples in place
(:func:`_gradients`).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["_dual_qp"]


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
    The iterations are capped (a few per unknown); the certificate of the polish judges
    the answer either way.
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
