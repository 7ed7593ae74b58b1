"""The arithmetic of the modes: the layer program each mode sets up.

- ``"parallel"``: every layer is solved on the ORIGINAL network's signals, with
  ``epsilon_l = epsilon * ||Y_l||_F`` and inactive entries kept at or below 0. The layers
  are independent.
- ``"cascade"``: layers are solved in the order they run, each on the input the PRUNED
  network gives it (``X̂``), against the original target ``Y_l``. The inactive entries are
  bounded by ``V = X̂ W_l^T + b_l`` and the budget is ``epsilon_l^2 = gamma * e_l^2`` with
  ``e_l`` the error the original weights make on the pruned input (over the active
  entries, or everywhere for a layer without ReLU), so the original weights stay feasible.
  A layer whose input is unchanged by the pruning so far (the first one) gets
  ``epsilon * ||Y_l||_F`` as in parallel mode.

With per-neuron budgets (``split='neuron'``) every output neuron gets its own,
``epsilon ||Y_m||`` on original signals and ``sqrt(gamma) e_m`` in cascade mode; their
squares add up to the layer budget of the same mode, so the layer guarantee is kept.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from solvers._blocks import row_blocks

from .record import LayerRecord
from .types import LayerTask

__all__ = ["MODES", "layer_task"]

MODES = ("cascade", "parallel")


def layer_task(rec: LayerRecord, X: torch.Tensor, mode: str, epsilon: float, gamma: float,
               input_changed: bool, per_neuron: bool = False) -> LayerTask:
    """The layer program of ``mode`` for the layer recorded in ``rec``, on the input ``X``
    (the original one, or the pruned network's in cascade mode; ``input_changed`` tells
    whether it differs from the original)."""
    Y = rec.output
    weight = rec.weight.numpy()
    bias = None if rec.bias is None else rec.bias.numpy()

    def norm(values: torch.Tensor) -> float | np.ndarray:
        if per_neuron:
            return torch.linalg.vector_norm(values, dim=0).numpy()
        return float(torch.linalg.vector_norm(values))

    if mode == "parallel" or not input_changed:
        return LayerTask(rec.name, X.numpy(), Y.numpy(), rec.relu, weight, bias, budget=epsilon * norm(Y))
    response = torch.empty(Y.shape, dtype=torch.float64)
    squares = torch.zeros(Y.shape[1], dtype=torch.float64)
    for rows in row_blocks(X.shape[0]):  # float64 temporaries of a block of rows only
        torch.matmul(X[rows].double(), rec.weight.T, out=response[rows])
        if rec.bias is not None:
            response[rows] += rec.bias
        residual = response[rows] - Y[rows]
        if rec.relu:
            residual[Y[rows] <= 0] = 0.0
        squares += (residual * residual).sum(dim=0)
    error = squares.sqrt().numpy() if per_neuron else float(squares.sum().sqrt())
    upper = response.numpy() if rec.relu else None
    return LayerTask(rec.name, X.numpy(), Y.numpy(), rec.relu, weight, bias, budget=math.sqrt(gamma) * error,
                     floor=error, upper=upper)
