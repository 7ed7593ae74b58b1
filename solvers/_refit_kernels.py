"""Compiled kernels of the ReLU-aware refit (:mod:`solvers.refit`).

The refit's semismooth Newton method works on a chunk of neurons at once: responses
``z`` (``c x n_samples``, one row per neuron) and, per neuron, normal equations padded to
the chunk's width. Two of its steps are loops over neurons or single passes over ``z``
that numpy can only do with a Python loop or several temporaries:

- :func:`_objectives`: every neuron's ``f`` at ``z + length * dz`` in one pass,
  ``f = sum_{p in Omega} (z_p - y_p)^2 + sum_{p not in Omega} max(z_p - v_p, 0)^2``;
- :func:`_add_rows`: the normal equations of chosen rows of each neuron, added to its
  padded system (at each Newton step, the inactive rows above their bound);
- :func:`_gathered`: a neuron's support columns of the transposed input at chosen rows,
  gathered contiguous, for the product that forms its equations on its active rows
  (numpy's ``B @ B.T``, BLAS's symmetric rank-k update: half the work of a general
  product, which is what a compiled ``B @ B.T`` calls).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["_add_rows", "_gathered", "_objectives"]


@njit(cache=True, nogil=True)
def _objectives(z, index, dz, length, y, v, active):
    """``f`` of neuron ``index[i]`` at ``z[index[i]] + length[i] * dz[i]`` for each ``i``
    (at ``z[index[i]]`` when ``length`` is empty): the squared error to ``y`` where
    ``active``, the squared excess over ``v`` elsewhere."""
    values = np.zeros(index.size)
    stepped = length.size > 0
    for i in range(index.size):
        m = index[i]
        total = 0.0
        for p in range(z.shape[1]):
            point = z[m, p] + length[i] * dz[i, p] if stepped else z[m, p]
            if active[m, p]:
                residual = point - y[m, p]
            else:
                residual = max(point - v[m, p], 0.0)
            total += residual * residual
        values[i] = total
    return values


@njit(cache=True, nogil=True)
def _add_rows(XT, index, columns, sizes, extra, target, gram, rhs, width, fit_bias):
    """Add to the padded system ``gram[i]``, ``rhs[i]`` of neuron ``m = index[i]`` the normal
    equations of its rows where ``extra[i]``: ``B B^T`` and ``B t`` with
    ``B = [X_{rows, S_m}, 1]^T`` (the row of 1s when ``fit_bias``, at position ``width``)
    and ``t`` the rows' ``target[m]``. ``XT`` is the transposed input (C-ordered: a
    support column's samples are contiguous); ``columns[m, :sizes[m]]`` is the support
    ``S_m``. One BLAS product per neuron, on its gathered rows."""
    for i in range(index.size):
        rows = np.flatnonzero(extra[i])
        if rows.size == 0:
            continue
        m = index[i]
        k = sizes[m]
        n_cols = k + 1 if fit_bias else k
        block = np.empty((n_cols, rows.size))
        for j in range(k):
            column = XT[columns[m, j]]
            for r in range(rows.size):
                block[j, r] = column[rows[r]]
        if fit_bias:
            block[k] = 1.0
        values = np.empty(rows.size)
        for r in range(rows.size):
            values[r] = target[m, rows[r]]
        products = block @ block.T
        moments = block @ values
        for a in range(n_cols):
            slot = a if a < k else width
            rhs[i, slot] += moments[a]
            for b in range(n_cols):
                gram[i, slot, b if b < k else width] += products[a, b]


@njit(cache=True, nogil=True)
def _gathered(XT, columns, size, rows, fit_bias):
    """``B = [X_{rows, S}, 1]^T`` (``(size + fit_bias) x len(rows)``, C-ordered) for the
    support ``S = columns[:size]``: each support column's samples at ``rows``, then a row
    of 1s when ``fit_bias``."""
    block = np.empty((size + 1 if fit_bias else size, rows.size))
    for j in range(size):
        column = XT[columns[j]]
        for r in range(rows.size):
            block[j, r] = column[rows[r]]
    if fit_bias:
        block[size] = 1.0
    return block
