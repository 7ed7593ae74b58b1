"""The types every part of the pipeline shares: a layer's task, a method's outcome, the
layer's report, and the statuses they carry.

This module sits below everything else in :mod:`nettrim` (it imports numpy and the
solvers' :class:`~solvers.Solution` only). A layer's answer travels as one chain:
the solver's :class:`~solvers.Solution` becomes a method's :class:`LayerOutcome`
(:meth:`LayerOutcome.from_solution`), and the outcome, measured against the original
layer, becomes its :class:`LayerReport` (:meth:`LayerReport.from_outcome`), which also
restores the outcome of a resumed layer (:meth:`LayerReport.outcome`).

Statuses: ``"optimal"`` (the program was met), ``"done"`` (a direct method),
``"skipped"`` (a per-layer sparsity of 0), ``"max_iter"`` and other solver statuses, and
``"kept original (...)"`` for a layer whose result missed its program and was replaced
by the original weights.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from solvers import Solution

__all__ = ["LayerTask", "LayerOutcome", "LayerReport", "SETTLED", "SKIPPED", "kept_original", "is_kept_original"]

SKIPPED = "skipped"
SETTLED = ("optimal", "done", SKIPPED)  # statuses of a layer that met its program, or had none to meet
_KEPT_ORIGINAL = "kept original"


def kept_original(solver_status: str) -> str:
    """The status of a layer that keeps its original weights after the solver ended with ``solver_status``."""
    return f"{_KEPT_ORIGINAL} ({solver_status})"


def is_kept_original(status: str) -> bool:
    return status.startswith(_KEPT_ORIGINAL)


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
    importance : ndarray, shape (n_out,), or None
        How much the next layer reads each output neuron, mean 1
        (:func:`nettrim.consumers.consumer_importance`); None: every neuron alike.
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
    importance: np.ndarray | None = None

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

    @classmethod
    def from_solution(cls, solution: Solution, epsilon: float | np.ndarray) -> "LayerOutcome":
        """A solve as a method's answer; per-neuron budgets are reported by their layer total."""
        info = dict(solution.info)
        info.update(primal_residual=solution.primal_residual, dual_residual=solution.dual_residual,
                    solve_time=solution.solve_time)
        if np.ndim(epsilon) == 1:
            info["per_neuron"] = True
            epsilon = np.sqrt(np.sum(np.square(epsilon)))
        return cls(weight=solution.weight, bias=solution.bias, epsilon=float(epsilon), status=solution.status,
                   iterations=solution.iterations, violation=solution.violation, info=info)

    @classmethod
    def unchanged(cls, task: LayerTask, status: str = SKIPPED, **fields: Any) -> "LayerOutcome":
        """The task's original weights (copies) as an outcome."""
        fields.setdefault("epsilon", float("nan"))
        return cls(task.weight.copy(), None if task.bias is None else task.bias.copy(), status=status, **fields)




@dataclass
class LayerReport:
    """What happened to one layer.

    Attributes
    ----------
    name, kind : str
        Qualified module name; ``"linear"``, ``"conv1d"``, ``"conv2d"`` or ``"conv3d"``.
    shape : tuple of int
        Shape of the module's weight.
    relu : bool
        Whether the layer was pruned with the ReLU program.
    n_samples : int
        Rows of the layer program (samples, times output positions for a convolution).
    n_rows_total : int
        Rows the calibration data gave the layer; more than ``n_samples`` when
        ``max_positions`` sampled them (0 when not recorded).
    nnz_before, nnz_after : int
        Nonzero weights before and after (the bias is not counted).
    epsilon : float
        Absolute budget the layer was solved with (NaN for methods without one).
    epsilon_rel : float
        ``epsilon / ||Y||_F``.
    error_pre, error_out : float
        Relative error of the layer's pre-activation and of its output (after the ReLU, if
        any) against the original layer's, on the input the layer was solved on:
        ``||Ẑ - Z||_F / ||Z||_F`` and ``||Ŷ - Y||_F / ||Y||_F``.
    iterations : int
        Solver iterations (summed over the solves of a sparsity search).
    status : str
        Solver status (``"optimal"``, ``"max_iter"``, ...; ``"done"`` for direct methods).
    violation : float
        Relative excess of the result over its program's constraints (0 when feasible).
    seconds : float
        Wall time of the layer (its solves and the signals it needed).
    method : str
    info : dict
        Solver details (``rho``, ``polished``, ``path`` of a target reached by the ℓ1 path, ...).
    certified_error : float
        ``sqrt(sum_active (ẑ - y)^2 + sum_inactive max(ẑ, 0)^2) / ||Y||_F``: the objective of
        the ReLU-aware fit, an upper bound of ``error_out`` that needs no ReLU to evaluate
        (equal to ``error_out`` for a layer without ReLU).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    relu: bool
    n_samples: int
    nnz_before: int
    nnz_after: int
    epsilon: float
    epsilon_rel: float
    error_pre: float
    error_out: float
    iterations: int
    status: str
    violation: float
    seconds: float
    method: str
    info: dict[str, Any] = field(default_factory=dict)
    certified_error: float = float("nan")
    n_rows_total: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def kept(self) -> float:
        """Fraction of the layer's weights that are nonzero after pruning."""
        return self.nnz_after / self.size

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        data["kept"] = self.kept
        data["info"] = {key: value for key, value in self.info.items()
                        if isinstance(value, (int, float, str, bool)) or value is None}
        return data

    @classmethod
    def from_outcome(cls, outcome: LayerOutcome, *, name: str, kind: str, shape: tuple[int, ...], relu: bool,
                     n_samples: int, nnz_before: int, scale: float, errors: tuple[float, float, float],
                     seconds: float, method: str, n_rows_total: int = 0) -> "LayerReport":
        """The report of a layer whose answer is ``outcome``; ``scale`` is ``||Y||_F`` and
        ``errors`` the relative errors of its pre-activation and output and its certified error."""
        return cls(name=name, kind=kind, shape=shape, relu=relu, n_samples=n_samples, nnz_before=nnz_before,
                   nnz_after=int(np.count_nonzero(outcome.weight)), epsilon=outcome.epsilon,
                   epsilon_rel=outcome.epsilon / scale if scale > 0 else float("nan"), error_pre=errors[0],
                   error_out=errors[1], iterations=outcome.iterations, status=outcome.status,
                   violation=outcome.violation, seconds=seconds, method=method, info=outcome.info,
                   certified_error=errors[2], n_rows_total=n_rows_total)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LayerReport":
        """The inverse of :meth:`to_dict`."""
        data = {key: value for key, value in data.items() if key != "kept"}
        data["shape"] = tuple(data["shape"])
        return cls(**data)

    def outcome(self, weight: np.ndarray, bias: np.ndarray | None) -> LayerOutcome:
        """The outcome this report was made from, given its weights (a resumed layer)."""
        return LayerOutcome(weight, bias, epsilon=self.epsilon, status=self.status, iterations=self.iterations,
                            violation=self.violation, info=self.info)
