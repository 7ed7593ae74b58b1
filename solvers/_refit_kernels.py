"""Compiled kernels of the ReLU-aware refit (:mod:`solvers.refit`).

The refit's semismooth Newton method works on a chunk of neurons at once: responses
``z`` (``c x n_samples``, one row per neuron) and, per neuron, normal equations padded to
the chunk's width. Two of its steps are loops over neurons or single passes over ``z``
that numpy can only do with a Python loop or several temporaries:

- :func:`_objectives`: every neuron's ``f`` at ``z + length * dz`` in one pass,
  ``f = sum_{p in Omega} (z_p - y_p)^2 + sum_{p not in Omega} max(z_p - v_p, 0)^2``;
- :func:`_layer_objectives`: every neuron's ``f`` at a layer's pre-activations ``X W^T``
  (``n_samples x n_out``, as BLAS gives them) plus the bias, in one pass over them
  (:func:`solvers.refit.refit_objective`);
- :func:`_advance`: the accepted steps taken (``z += length * dz``) and each neuron's rows
  there (active, or inactive above the bound), compared with those its Newton point was
  fitted on;
- :func:`_add_rows`: the normal equations of each neuron's inactive rows above their bound,
  added to its padded system (at each Newton step);
- :func:`_dense_rows`: neurons' coefficients scattered into dense rows of weights;
- :func:`_padded_supports`: a chunk's supports as rows of input indices, padded to one width;
- :func:`_support_response`: the responses of neurons whose supports are narrow, from
  their support columns alone (a dense product with the whole input costs ``n_in`` per
  sample and neuron, this ``|S_m|``);
- :func:`_read_off`: a neuron's equations on a support, copied out of those formed on a
  wider one (into its padded system);
- :func:`_equations`: a neuron's normal equations on its active rows, in one call without
  the GIL: its support columns of the transposed input gathered at those rows, then BLAS's
  symmetric rank-k update and matrix-vector product (:func:`._lapack.gram_into`, half the
  work of a general product, which is what a compiled ``B @ B.T`` calls); for a neuron
  active on most rows, the same over its inactive rows, taken from the layer's equations
  over every row;
- :func:`_ridged_solve`: every neuron's Newton point from its padded system, ridged, by a
  Cholesky factorisation (:func:`._lapack.solve_spd`: half the operations of the LU
  factorisation of a batched ``np.linalg.solve``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._lapack import gram_into, product_into, solve_spd

__all__ = ["_add_rows", "_advance", "_dense_rows", "_equations", "_layer_objectives", "_objectives", "_padded_supports",
           "_read_off", "_ridge_into", "_ridged_solve", "_support_response"]

_SAMPLE_TILE = 512  # samples per pass of _support_response: the input's columns at them stay in the cache


@njit(cache=True, nogil=True)
def _objectives(z, index, dz, length, y, v, active):
    """``f`` of neuron ``index[i]`` at ``z[index[i]] + length[i] * dz[i]`` for each ``i``
    (at ``z[index[i]]`` when ``length`` is empty): the squared error to ``y`` where
    ``active``, the squared excess over ``v`` elsewhere.

    Both residuals are computed at every row and one is selected (no branch on the row's
    activity, which the processor would mispredict on about half the rows); each neuron's
    sum runs over its rows in order, as a loop with a branch would."""
    values = np.zeros(index.size)
    stepped = length.size > 0
    for i in range(index.size):
        m = index[i]
        scale = length[i] if stepped else 0.0
        total = 0.0
        for p in range(z.shape[1]):
            point = z[m, p] + scale * dz[i, p] if stepped else z[m, p]
            total += _squared_residual(point, y[m, p], v[m, p], active[m, p])
        values[i] = total
    return values


@njit(cache=True, nogil=True, inline="always")
def _squared_residual(point, target, bound, active):
    """``(point - target)^2`` where ``active``, else ``max(point - bound, 0)^2``, without a branch."""
    error = point - target
    excess = point - bound
    excess = 0.0 if excess <= 0.0 else excess  # NaN stays NaN, as max(excess, 0) keeps it
    residual = error if active else excess
    return residual * residual


@njit(cache=True, nogil=True)
def _layer_objectives(products, y, bias, upper, relu):
    """``f_m`` of every neuron ``m`` at ``z = products[:, m] + bias[m]`` (``bias`` empty: no
    bias): ``sum_p (z_p - y_pm)^2`` over the rows where ``y_pm > 0`` plus
    ``sum_p max(z_p - v_pm, 0)^2`` over the others, ``v = upper`` (empty: 0); without
    ``relu``, ``sum_p (z_p - y_pm)^2`` over every row. The arrays are ``n_samples x n_out``,
    read row after row (one pass over row-major arrays), each entry's residual selected
    without a branch (:func:`_squared_residual`)."""
    n_samples, n_out = products.shape
    values = np.zeros(n_out)
    shifted, bounded = bias.size > 0, upper.size > 0
    for p in range(n_samples):
        for m in range(n_out):
            z = products[p, m] + bias[m] if shifted else products[p, m]
            target = y[p, m]
            values[m] += _squared_residual(z, target, upper[p, m] if bounded else 0.0, not relu or target > 0.0)
    return values


@njit(cache=True, nogil=True)
def _advance(z, running, move, dz, active, v, rows):
    """Move neuron ``m = running[i]`` to ``z[m] + move[i] * dz[i]`` (in place; where
    ``move[i]`` is 0 it stays) and set ``rows[i]`` to its rows there: active, or above
    their bound ``v``. Returns, per ``i``, whether those are the rows ``rows[i]`` held.
    The step and the rows are two branch-free passes over the neuron's row of ``z``."""
    same = np.ones(running.size, dtype=np.bool_)
    for i in range(running.size):
        m = running[i]
        step = move[i]
        if step != 0.0:
            for p in range(z.shape[1]):
                z[m, p] += step * dz[i, p]
        changed = False
        for p in range(z.shape[1]):
            now = active[m, p] | (z[m, p] > v[m, p])
            changed |= now != rows[i, p]
            rows[i, p] = now
        same[i] = not changed
    return same


@njit(cache=True, nogil=True)
def _add_rows(XT, index, columns, sizes, rows, active, v, gram, rhs, width, fit_bias):
    """Add to the padded system ``gram[i]``, ``rhs[i]`` of neuron ``m = index[i]`` the normal
    equations of its inactive rows ``R`` among ``rows[i]`` (``rows[i] & ~active[m]``, the
    rows above their bound): ``B B^T`` and ``B t`` with ``B = [X_{R, S_m}, 1]^T`` (the row
    of 1s when ``fit_bias``, at position ``width``) and ``t = v[m, R]``, their bound.
    ``XT`` is the transposed input (C-ordered: a support column's samples are contiguous);
    ``columns[m, :sizes[m]]`` is the support ``S_m``. One BLAS product per neuron, on its
    gathered rows."""
    for i in range(index.size):
        m = index[i]
        count = 0
        for p in range(active.shape[1]):
            if rows[i, p] and not active[m, p]:
                count += 1
        if count == 0:
            continue
        chosen = np.empty(count, dtype=np.int64)
        count = 0
        for p in range(active.shape[1]):
            if rows[i, p] and not active[m, p]:
                chosen[count] = p
                count += 1
        k = sizes[m]
        n_cols = k + 1 if fit_bias else k
        block = np.empty((n_cols, chosen.size))
        for j in range(k):
            column = XT[columns[m, j]]
            for r in range(chosen.size):
                block[j, r] = column[chosen[r]]
        if fit_bias:
            block[k] = 1.0
        values = np.empty(chosen.size)
        for r in range(chosen.size):
            values[r] = v[m, chosen[r]]
        products = block @ block.T
        moments = block @ values
        for a in range(n_cols):
            slot = a if a < k else width
            rhs[i, slot] += moments[a]
            for b in range(n_cols):
                gram[i, slot, b if b < k else width] += products[a, b]


@njit(cache=True, nogil=True)
def _equations(XT, y, active, columns, fit_bias, complement, layer_gram, layer_rhs, m):
    """Neuron ``m``'s normal equations on its active rows ``Omega`` (``active``) over its
    support ``S = columns``: ``(gram, rhs) = (B B^T, B y_Omega)`` with ``B = [X, 1]_{Omega, S}^T``,
    its support columns of the transposed input ``XT`` gathered at those rows (a row of 1s
    last when ``fit_bias``), multiplied by BLAS. With ``complement``, ``B`` is gathered at
    the inactive rows instead, and the equations are the layer's over every row
    (``layer_gram = [X, 1]^T [X, 1]``, column ``m`` of ``layer_rhs = [X, 1]^T Y``) less those."""
    n_in, size = XT.shape[0], columns.size
    n_rows = 0
    for p in range(active.size):
        n_rows += active[p] != complement
    rows = np.empty(n_rows, dtype=np.int64)
    n_rows = 0
    for p in range(active.size):
        if active[p] != complement:
            rows[n_rows] = p
            n_rows += 1
    width = size + 1 if fit_bias else size
    block, target = np.empty((width, n_rows)), np.empty(n_rows)
    for j in range(size):
        column = XT[columns[j]]
        for r in range(n_rows):
            block[j, r] = column[rows[r]]
    if fit_bias:
        block[size] = 1.0
    for r in range(n_rows):
        target[r] = y[rows[r]]
    gram, rhs = np.zeros((width, width)), np.zeros(width)
    gram_into(block, gram)
    product_into(block, target, rhs)
    if complement:
        for a in range(width):
            row = layer_gram[columns[a] if a < size else n_in]
            for b in range(width):
                gram[a, b] = row[columns[b] if b < size else n_in] - gram[a, b]
            rhs[a] = layer_rhs[columns[a] if a < size else n_in, m] - rhs[a]
    return gram, rhs


@njit(cache=True, nogil=True)
def _support_response(XT, index, columns, sizes, theta, width, fit_bias):
    """``z_i = X_{:, S_m} theta_i[:|S_m|] + b_i`` for neuron ``m = index[i]`` (``c x n_samples``):
    a sum of its support columns of the transposed input ``XT`` (``columns[m, :sizes[m]]``),
    the bias ``theta[i, width]`` when ``fit_bias``.

    The samples are taken :data:`_SAMPLE_TILE` at a time for every neuron, so that the
    input's columns are read from the cache while every neuron sums them, and a neuron's
    columns four at a time (one load and store of ``z`` per four columns). Each entry is
    summed in the order of the columns, the bias first."""
    n_samples = XT.shape[1]
    z = np.empty((index.size, n_samples))
    for start in range(0, n_samples, _SAMPLE_TILE):
        stop = min(start + _SAMPLE_TILE, n_samples)
        for i in range(index.size):
            m = index[i]
            row = z[i, start:stop]
            row[:] = theta[i, width] if fit_bias else 0.0
            j = 0
            while j + 4 <= sizes[m]:
                w0, w1, w2, w3 = theta[i, j], theta[i, j + 1], theta[i, j + 2], theta[i, j + 3]
                x0, x1 = XT[columns[m, j], start:stop], XT[columns[m, j + 1], start:stop]
                x2, x3 = XT[columns[m, j + 2], start:stop], XT[columns[m, j + 3], start:stop]
                for p in range(row.size):
                    row[p] = (((row[p] + w0 * x0[p]) + w1 * x1[p]) + w2 * x2[p]) + w3 * x3[p]
                j += 4
            for k in range(j, sizes[m]):
                weight, column = theta[i, k], XT[columns[m, k], start:stop]
                for p in range(row.size):
                    row[p] += weight * column[p]
    return z


@njit(cache=True, nogil=True)
def _read_off(held, columns, gram, rhs, fit_bias, out_gram, out_rhs, at):
    """Copy the equations ``gram``, ``rhs`` formed on the support ``held`` (ascending, the
    bias last when ``fit_bias``) onto ``columns`` (ascending): ``columns[i]``'s entries go
    to position ``i`` of ``out_gram``, ``out_rhs``, the bias's to position ``at``. False,
    with nothing copied, when ``columns`` is not inside ``held``."""
    n = columns.size
    index = np.empty(n + 1, dtype=np.int64)
    j = 0
    for i in range(n):
        while j < held.size and held[j] < columns[i]:
            j += 1
        if j == held.size or held[j] != columns[i]:
            return False
        index[i] = j
    index[n] = held.size
    count = n + 1 if fit_bias else n
    for a in range(count):
        slot = a if a < n else at
        out_rhs[slot] = rhs[index[a]]
        for b in range(count):
            out_gram[slot, b if b < n else at] = gram[index[a], index[b]]
    return True


@njit(cache=True, nogil=True)
def _padded_supports(support, neurons):
    """The supports of ``neurons`` (rows of the boolean ``support``) as input indices,
    ascending, row ``k`` of ``padded`` holding neuron ``neurons[k]``'s ``sizes[k]`` of them
    and zeros after (at least one column)."""
    sizes = np.zeros(neurons.size, dtype=np.int64)
    for k in range(neurons.size):
        for j in range(support.shape[1]):
            sizes[k] += support[neurons[k], j]
    padded = np.zeros((neurons.size, max(sizes.max() if neurons.size else 0, 1)), dtype=np.int64)
    for k in range(neurons.size):
        filled = 0
        for j in range(support.shape[1]):
            if support[neurons[k], j]:
                padded[k, filled] = j
                filled += 1
    return padded, sizes


@njit(cache=True, nogil=True)
def _dense_rows(theta, index, columns, sizes, n_in):
    """Weights ``(len(index), n_in)``, zero off the supports: row ``i`` holds neuron
    ``m = index[i]``'s coefficients ``theta[i, :sizes[m]]`` at its support ``columns[m, :sizes[m]]``."""
    weight = np.zeros((index.size, n_in))
    for i in range(index.size):
        m = index[i]
        for j in range(sizes[m]):
            weight[i, columns[m, j]] = theta[i, j]
    return weight


@njit(cache=True, nogil=True)
def _ridge_into(gram, valid, ridge, out):
    """``out = G + D`` for one padded system: ``D`` adds ``ridge`` times the mean diagonal of
    ``G`` over its ``valid`` entries (at least 1) to those entries, and 1 to the padding."""
    total, count = 0.0, 0
    for j in range(valid.size):
        if valid[j]:
            total += gram[j, j]
            count += 1
    shift = ridge * max(total / max(count, 1), 1.0)
    out[:, :] = gram
    for j in range(valid.size):
        out[j, j] += shift if valid[j] else 1.0


@njit(cache=True, nogil=True)
def _ridged_solve(gram, rhs, valid, ridge):
    """Solve each padded system ``(G_c + D_c) theta_c = b_c`` (:func:`_ridge_into`), the
    padding's right-hand side taken as 0 (so its coefficients are 0). ``gram`` is left as it
    was. Returns the solutions ``(c, width)`` and whether each system was solved: False
    where round-off left ``G_c + D_c`` not positive definite (its row of the solutions then
    0, for the caller to solve otherwise)."""
    n_systems, width = rhs.shape
    theta = np.zeros((n_systems, width))
    solved = np.zeros(n_systems, dtype=np.bool_)
    factor = np.empty((width, width))
    for c in range(n_systems):
        _ridge_into(gram[c], valid[c], ridge, factor)
        for j in range(width):
            if valid[c, j]:
                theta[c, j] = rhs[c, j]
        solved[c] = solve_spd(factor, theta[c])
        if not solved[c]:
            theta[c] = 0.0
    return theta, solved
