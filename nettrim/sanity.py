"""Settings that would surprise a user: a layer budget so large that the layer can lose
every weight, and convolutions solved on every row their data gives.

With all weights zero a layer outputs its bias alone: a constant per neuron. When that
constant already meets the layer's program, the ℓ1 program's answer is ``W = 0`` and the
layer is pruned to nothing -- almost never what a user meant by a relative ``epsilon``.
:func:`zero_weights_error` gives the least error of such a constant answer, so the pipeline
can name the layer before solving it.

For a neuron ``m`` with a ReLU, active rows ``A = {i : y_im > 0}`` and inactive rows bounded
by ``u_im`` (0 on original signals, the cascade bound otherwise), the best constant is

.. math::  b_m = \\min\\Bigl(\\tfrac{1}{|A|}\\sum_{i \\in A} y_{im},\\;
           \\min_{i \\notin A} u_{im}\\Bigr), \\qquad
           e_m^2 = \\sum_{i \\in A} (b_m - y_{im})^2,

the minimiser of a convex quadratic in one variable under an upper bound. Without a ReLU
it is the column mean, and without a bias ``b_m = 0`` (infeasible when some ``u_im < 0``).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .types import LayerTask

__all__ = ["zero_weights_error", "zero_weights_feasible", "suggest_sampling"]

logger = logging.getLogger(__name__)


def zero_weights_error(task: LayerTask) -> float:
    """The least ``||Ẑ - Y||`` over the active entries (all, without a ReLU) with ``W = 0``.

    Returns
    -------
    float
        The error of the best constant answer (``inf`` when no constant meets the
        inactive bounds).
    """
    Y = np.asarray(task.Y, dtype=np.float64)
    fit_bias = task.bias is not None
    if not task.relu:
        centre = Y.mean(axis=0) if fit_bias else 0.0
        return float(np.linalg.norm(Y - centre))
    active = Y > 0
    bound = np.zeros_like(Y) if task.upper is None else np.asarray(task.upper, dtype=np.float64)
    ceiling = np.where(active, np.inf, bound).min(axis=0)  # the inactive bound each neuron's constant obeys
    if fit_bias:
        n_active = active.sum(axis=0)
        mean = np.where(active, Y, 0.0).sum(axis=0) / np.maximum(n_active, 1)
        constant = np.minimum(mean, ceiling)  # a neuron without active rows has no residual
    else:
        if (ceiling < 0).any():
            return float("inf")
        constant = np.zeros(Y.shape[1])
    residual = np.where(active, constant - Y, 0.0)
    return float(np.linalg.norm(residual))


def zero_weights_feasible(task: LayerTask) -> bool:
    """Whether ``W = 0`` (with the best bias, if the layer has one) meets the layer's budget."""
    return zero_weights_error(task) <= task.layer_budget


# a convolution program with more rows than this, unsampled, gets a word about max_positions
_MANY_ROWS = 50_000


def suggest_sampling(records: dict[str, Any], max_positions: int | str | None) -> None:
    """One warning when convolutions are solved on every output position of every input
    (``records``: layer name to :class:`~nettrim.record.LayerRecord`)."""
    if max_positions is not None:
        return
    large = {name: rec.n_samples for name, rec in records.items()
             if rec.kind != "linear" and rec.n_samples > _MANY_ROWS}
    if large:
        listed = ", ".join(f"{name} ({rows:,})" for name, rows in large.items())
        logger.warning("convolution programs with one row per output position of every input: %s. "
                       "The default max_positions='auto' samples max(10,000, 16 x n_in) of them and is usually "
                       "several times faster for the same accuracy; the report's samples column shows the rows used",
                       listed)
