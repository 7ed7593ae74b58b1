"""Magnitude pruning: keep the largest ``|w|`` of each layer, change nothing else."""
from __future__ import annotations

import numpy as np

from .base import LayerOutcome, LayerTask, Method, require_sparsity

__all__ = ["prune_layer", "keep_largest", "METHOD"]


def keep_largest(weight: np.ndarray, n_keep: int) -> np.ndarray:
    """``weight`` with all but its ``n_keep`` largest-magnitude entries set to 0.

    Ties are broken by position (stable sort), so the result is deterministic.
    """
    flat = np.abs(weight).ravel()
    pruned = np.zeros_like(weight)
    if n_keep > 0:
        keep = np.argsort(-flat, kind="stable")[:n_keep]
        pruned.ravel()[keep] = weight.ravel()[keep]
    return pruned


def prune_layer(task: LayerTask, *, sparsity: float | None) -> LayerOutcome:
    """Remove the ``sparsity`` fraction of the layer's weights with the smallest ``|w|``."""
    require_sparsity("magnitude", sparsity)
    n_keep = int(round((1.0 - sparsity) * task.weight.size))
    weight = keep_largest(task.weight, n_keep)
    bias = None if task.bias is None else task.bias.copy()
    return LayerOutcome(weight=weight, bias=bias, epsilon=float("nan"), status="done")


METHOD = Method("magnitude", "layer", prune_layer)
