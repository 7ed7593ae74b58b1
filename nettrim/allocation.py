"""Sparsity across the network: one target for the whole network, shared out by error.

One fraction for every layer hurts where a layer is small or carries much of the signal
(the first convolution of a CNN: 144 weights). With ``allocate="error"`` a network target
``sparsity`` is shared out as follows:

1. :func:`error_curves`: on the original signals (what every layer's program sees in
   parallel mode), each layer is pruned at the sparsities of :data:`GRID` by greedy L-OBS and
   refitted by the ReLU-aware fit (:func:`solvers.refit.relu_refit`); its certified
   error, relative to ``||Y_l||_F``, is the curve ``e_l(s)``.
2. :func:`allocate`: the sparsities ``s_l`` that minimise ``sum_l e_l(s_l)^2`` (``e_l^2``
   interpolated linearly between the grid's points) while the network keeps at most the
   target number of weights, by a Lagrange multiplier on the weights kept, bisected.

The pruning then runs with the per-layer sparsities (any layer method, either mode).
The curves cost one greedy L-OBS pass per layer to the grid's last sparsity (the weights
at every point of the grid are read off the one pass, :func:`.methods.lobs.prune_path`) and
``len(GRID) - 1`` refits of the network.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from .modes import layer_task
from .record import LayerRecord

__all__ = ["GRID", "ALLOCATIONS", "error_curves", "allocate"]

logger = logging.getLogger(__name__)

ALLOCATIONS = ("auto", None, "error")
GRID = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
_STEP = 0.005  # the sparsities allocate() chooses from: multiples of this up to the grid's last point


def error_curves(records: Mapping[str, LayerRecord], grid: tuple[float, ...] = GRID) -> dict[str, np.ndarray]:
    """``e_l(s)`` at the sparsities of ``grid`` for every recorded layer (``e_l(0) = 0``)."""
    from solvers.refit import relu_refit

    from .methods.lobs import prune_path

    curves = {}
    for name, rec in records.items():
        task = layer_task(rec, rec.input, "parallel", 0.0, 1.0, False)
        scale = max(task.scale, 1e-300)
        errors = [0.0] * sum(sparsity == 0 for sparsity in grid)
        for weight, bias in prune_path(task, [sparsity for sparsity in grid if sparsity > 0]):
            fitted = relu_refit(task.X, task.Y, weight != 0, relu=task.relu, fit_bias=task.bias is not None,
                                weight=weight, bias=bias)
            errors.append(float(np.sqrt(fitted.objective.sum())) / scale)
        curves[name] = np.array(errors)
        logger.info("allocation: %s errors %s at sparsities %s", name, np.round(curves[name], 4).tolist(), list(grid))
    return curves


def allocate(curves: Mapping[str, np.ndarray], sizes: Mapping[str, int], sparsity: float,
             grid: tuple[float, ...] = GRID) -> dict[str, float]:
    """Per-layer sparsities that keep at most ``(1 - sparsity)`` of the network's weights
    (``sizes``: weights per layer) with the least ``sum_l e_l(s_l)^2``.

    For a multiplier ``lam``, each layer independently takes the ``s`` minimising
    ``e_l(s)^2 + lam * n_l * (1 - s) / N``; the weights kept fall as ``lam`` grows, and
    ``lam`` is bisected until they meet the target.
    """
    if not 0 < sparsity < 1:
        raise ValueError(f"sparsity: got {sparsity!r}, needs a fraction in (0, 1) for the whole network")
    grid = np.asarray(grid, dtype=float)
    if sparsity > grid[-1]:
        raise ValueError(f"sparsity: got {sparsity!r}; allocate='error' shares out at most {grid[-1]}")
    choices = np.arange(0.0, grid[-1] + _STEP / 2, _STEP)
    squared = {name: np.interp(choices, grid, np.asarray(curve) ** 2) for name, curve in curves.items()}
    total = float(sum(sizes[name] for name in curves))
    target = (1.0 - sparsity) * total

    def pick(lam: float) -> dict[str, float]:
        return {name: round(float(choices[np.argmin(values + lam * sizes[name] * (1.0 - choices) / total)]), 6)
                for name, values in squared.items()}

    def kept(chosen: dict[str, float]) -> float:
        return sum(sizes[name] * (1.0 - s) for name, s in chosen.items())

    low, high = 0.0, 1.0
    while kept(pick(high)) > target:  # grow until the target is met (every layer at the grid's end at worst)
        high *= 4.0
        if high > 1e12:
            break
    for _ in range(200):
        middle = 0.5 * (low + high)
        if kept(pick(middle)) > target:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * high:
            break
    return _top_up(pick(high), squared, sizes, choices, target)


def _top_up(chosen: dict[str, float], squared: Mapping[str, np.ndarray], sizes: Mapping[str, int],
            choices: np.ndarray, target: float) -> dict[str, float]:
    """Spend the weights the multiplier's answer leaves unused (its answers jump between
    the grid's points): one step of ``_STEP`` at a time, to the layer whose error falls
    most per weight added, while the network stays within its target."""
    index = {name: int(round(share / _STEP)) for name, share in chosen.items()}
    spare = target - sum(sizes[name] * (1.0 - choices[i]) for name, i in index.items())
    while True:
        best, best_gain = None, 0.0
        for name, i in index.items():
            added = sizes[name] * _STEP
            if i == 0 or added > spare:
                continue
            gain = (squared[name][i] - squared[name][i - 1]) / added
            if gain > best_gain:
                best, best_gain = name, gain
        if best is None:
            return {name: round(float(choices[i]), 6) for name, i in index.items()}
        index[best] -= 1
        spare -= sizes[best] * _STEP
