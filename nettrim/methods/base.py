"""What a pruning method receives for one layer and what it gives back.

Every method has one signature, ``prune_layer(task, *, sparsity, solver, solver_options)
-> LayerOutcome``; the pipeline (:mod:`nettrim.pipeline`) builds the task from the recorded
signals and the mode, and writes the outcome back into the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LayerTask", "LayerOutcome"]


@dataclass
class LayerTask:
    """One layer's reconstruction problem, as the mode defines it.

    Attributes
    ----------
    name : str
        Qualified layer name (for messages).
    X : ndarray, shape (n_samples, n_in)
        The input the layer is solved on: the original network's (parallel mode, and the
        first layer in cascade mode) or the pruned network's (cascade mode).
    Y : ndarray, shape (n_samples, n_out), float64
        The original layer's output: ``relu(Z)`` with a ReLU, else ``Z``.
    relu : bool
        Whether a ReLU follows the layer.
    weight : ndarray, shape (n_out, n_in), float64
        The original (BatchNorm-folded) weight.
    bias : ndarray, shape (n_out,), float64, or None
        The original folded bias; None when the layer can have no bias.
    budget : float or ndarray, shape (n_out,)
        The absolute ``epsilon`` the mode gives this layer (one per output neuron when the
        layer is split by neuron).
    floor : float or ndarray, shape (n_out,)
        The smallest ``epsilon`` at which the original weights are feasible: 0 on original
        signals, the error they carry on the pruned input in cascade mode.
    upper : ndarray, shape (n_samples, n_out), or None
        Upper bound on inactive entries (cascade mode), None for 0.
    """

    name: str
    X: np.ndarray
    Y: np.ndarray
    relu: bool
    weight: np.ndarray
    bias: np.ndarray | None
    budget: float | np.ndarray
    floor: float | np.ndarray = 0.0
    upper: np.ndarray | None = None

    @property
    def scale(self) -> float:
        """``||Y||_F``, the unit of the relative ``epsilon``."""
        return float(np.linalg.norm(self.Y))

    @property
    def per_neuron(self) -> bool:
        """Whether each output neuron has its own budget."""
        return np.ndim(self.budget) == 1

    @property
    def layer_budget(self) -> float:
        """The layer's budget: ``budget``, or ``sqrt(sum budget_m^2)`` for per-neuron budgets."""
        return float(np.sqrt(np.sum(np.square(self.budget))))

    def neurons(self, index: np.ndarray) -> "LayerTask":
        """The same program restricted to the output neurons ``index`` (per-neuron budgets:
        the neurons' programs are independent)."""
        if not self.per_neuron:
            raise ValueError(f"layer {self.name!r}: only a layer with per-neuron budgets splits into neurons")

        def rows(value):
            return value[index] if np.ndim(value) == 1 else value

        return LayerTask(self.name, self.X, self.Y[:, index], self.relu, self.weight[index],
                         None if self.bias is None else self.bias[index], budget=self.budget[index],
                         floor=rows(self.floor), upper=None if self.upper is None else self.upper[:, index])


@dataclass
class LayerOutcome:
    """A method's answer for one layer.

    Attributes
    ----------
    weight : ndarray, shape (n_out, n_in)
        Pruned weight with exact zeros.
    bias : ndarray, shape (n_out,), or None
    epsilon : float
        The absolute budget the answer was computed for (NaN for methods without one).
    status : str
        ``"optimal"``, ``"max_iter"``, ... for solved programs, ``"done"`` for direct methods.
    iterations : int
    violation : float
        Relative excess over the layer program's constraints at ``epsilon`` (NaN when the
        method has no program).
    info : dict
        Method-specific details.
    """

    weight: np.ndarray
    bias: np.ndarray | None
    epsilon: float
    status: str
    iterations: int = 0
    violation: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict)
