"""Engines: what owns the ADMM's arrays and does its array work.

The iteration of :mod:`solvers.admm` is written once against :class:`Engine`. An engine
holds the scaled data and the factored weight-step operator (:mod:`solvers._factor`) and
gives the iteration the two products, the two fused elementwise steps, the projection of
the starting point, the dual residual's product, the violation check and the transfers to
the host. :class:`NumpyEngine` (``backend="numba"`` or ``"numpy"``) is here;
``solvers._torch_kernels.TorchEngine`` (``backend="torch"``, on ``cpu`` or ``cuda``) is
imported only when asked for, so ``import solvers`` never loads torch.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ._factor import NUMPY_OPS, Factor
from ._kernels import GROUP_WEIGHT_STEP, RESPONSE_STEP, WEIGHT_STEP, project_response
from ._scaling import PreparedInput, ScaledData
from .problem import LayerProblem, relative_excess
from .settings import AdmmSettings

__all__ = ["BACKENDS", "Engine", "NumpyEngine", "make_engine"]

BACKENDS = ("numba", "numpy", "torch")


class Engine(Protocol):
    """The array work of one ADMM solve (see the module docstring).

    ``Xa``, ``Y``, ``V`` (or None), ``epsilon`` are the scaled data; ``tall`` tells which
    side the operator was factored on. Arrays are the engine's own kind (numpy arrays,
    torch tensors); ``host`` and ``stats`` bring them back as numpy arrays.
    """

    device_name: str
    tall: bool

    def asarray(self, array: np.ndarray) -> Any: ...
    def host(self, array: Any) -> np.ndarray: ...
    def vector(self, values: np.ndarray) -> Any: ...
    def stats(self, stats: Any) -> np.ndarray: ...
    def sync(self) -> None: ...
    def empty_like(self, array: Any) -> Any: ...
    def copy(self, array: Any) -> Any: ...

    def ridge(self) -> Any:
        """``(Xa^T Xa + I)^{-1} Xa^T Y``."""

    def response(self, Theta: Any) -> Any:
        """``Xa Theta``."""

    def project(self, R: Any) -> Any:
        """``Pi_C(R)``, a new array."""

    def weight_products(self, B: Any, C: Any, Theta: Any, R: Any, work: Any) -> None:
        """``Theta = (Xa^T Xa + I)^{-1} (Xa^T B + C)``, ``R = Xa Theta``, in place."""

    def response_step(self, R: Any, carry: Any, B: Any, DA: Any, alpha: float, check: bool) -> Any:
        """The fused response-block update (:mod:`solvers._kernels`); statistics on a check."""

    def weight_step(self, Theta: Any, Q: Any, carry: Any, C: Any, threshold: Any, alpha: float, DQ: Any,
                    check: bool) -> Any:
        """The fused weight-block update (:mod:`solvers._kernels`); statistics on a check."""

    def dual_norm(self, DA: Any, DQ: Any) -> float:
        """``||Xa^T DA + DQ||``."""

    def violation(self, Q: Any) -> float:
        """Relative excess of ``Xa Q`` over the scaled constraints."""

    def set_bounds(self, epsilon: np.ndarray, V: np.ndarray | None) -> None:
        """New scaled budget(s) and inactive bound (a path's next program; ``Xa``, ``Y`` stay)."""


class NumpyEngine:
    """:class:`Engine` on numpy arrays (``backend="numba"`` or ``"numpy"``).

    Host arrays are used as they are: ``asarray`` and ``host`` make no copies. ``factor``
    is a :class:`~solvers._factor.Factor` already made for ``Xa`` (a prepared input's),
    or None to factor here.
    """

    device_name = "cpu"

    def __init__(self, Xa: np.ndarray, Y: np.ndarray, V: np.ndarray | None, epsilon: np.ndarray,
                 relu: bool, per_neuron: bool, backend: str, factor: Factor | None = None,
                 groups: tuple[int, int] | None = None) -> None:
        self.Xa, self.Y, self.V, self.epsilon = Xa, Y, V, epsilon
        self.relu, self.per_neuron = relu, per_neuron
        self._response_step, self._weight_step = RESPONSE_STEP[backend], WEIGHT_STEP[backend]
        if groups is not None:  # (group_size, n_grouped rows): the group program's proximal map
            step, (size, n_grouped) = GROUP_WEIGHT_STEP[backend], groups
            self._weight_step = lambda Theta, Q, carry, C, threshold, alpha, DQ, check: step(
                Theta, Q, carry, C, threshold, size, n_grouped, alpha, DQ, check)
        self.factor = Factor(Xa, NUMPY_OPS) if factor is None else factor
        self.tall = self.factor.tall

    def asarray(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array)

    def host(self, array: np.ndarray) -> np.ndarray:
        return array

    def vector(self, values: np.ndarray) -> np.ndarray:
        return values

    def stats(self, stats: np.ndarray) -> np.ndarray:
        return stats

    def sync(self) -> None:
        pass

    def empty_like(self, array: np.ndarray) -> np.ndarray:
        return np.empty_like(array)

    def copy(self, array: np.ndarray) -> np.ndarray:
        return array.copy()

    def ridge(self) -> np.ndarray:
        return np.ascontiguousarray(self.factor.ridge(self.Y), dtype=self.Xa.dtype)

    def response(self, Theta: np.ndarray) -> np.ndarray:
        return self.Xa @ Theta

    def project(self, R: np.ndarray) -> np.ndarray:
        return project_response(R, self.Y, self.V, self.relu, self.epsilon, self.per_neuron)

    def weight_products(self, B, C, Theta, R, work) -> None:
        self.factor.weight_step(B, C, Theta, R, work)

    def response_step(self, R, carry, B, DA, alpha: float, check: bool) -> np.ndarray:
        return self._response_step(R, carry, B, self.Y, self.V, self.relu, self.epsilon, self.per_neuron,
                                   alpha, DA, check)

    def weight_step(self, Theta, Q, carry, C, threshold, alpha: float, DQ, check: bool) -> np.ndarray:
        return self._weight_step(Theta, Q, carry, C, threshold, alpha, DQ, check)

    def dual_norm(self, DA: np.ndarray, DQ: np.ndarray) -> float:
        vector = self.Xa.T @ DA
        vector += DQ
        return float(np.linalg.norm(vector))

    def violation(self, Q: np.ndarray) -> float:
        return relative_excess(self.Xa @ Q, self.Y, self.epsilon, relu=self.relu, upper=self.V)

    def set_bounds(self, epsilon: np.ndarray, V: np.ndarray | None) -> None:
        self.epsilon, self.V = epsilon, V


def make_engine(backend: str, device: Any, dtype: np.dtype | None, problem: LayerProblem,
                 settings: AdmmSettings, prepared: PreparedInput | None = None
                 ) -> tuple[ScaledData, Engine, np.dtype]:
    """The scaled data, the engine that iterates on them, and the dtype in use.

    ``dtype=None`` means float32 for ``backend="torch"`` on a CUDA device and float64
    everywhere else (the prepared input's dtype when one is given).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: got {backend!r}, needs one of {BACKENDS}")
    if backend != "torch":
        if device is not None:
            raise ValueError(f"device: got {device!r}, but only backend='torch' runs on a device "
                             f"(backend={backend!r} runs on the CPU); pass backend='torch' or leave device out")
        if prepared is not None:  # checked against the full problem by solve_admm
            dtype = prepared.dtype if dtype is None else dtype
        dtype = np.dtype(np.float64) if dtype is None else dtype
        data = ScaledData(problem, dtype, settings, prepared)
        return data, NumpyEngine(data.Xa, data.Y, data.V, data.epsilon, problem.relu, problem.per_neuron,
                                 backend, None if prepared is None else prepared.factor, _groups(problem)), dtype
    if prepared is not None:
        raise ValueError("prepared: serves the numba and numpy backends; the torch backend factors on its device")
    try:
        from . import _torch_kernels
    except ImportError as exc:  # pragma: no cover - torch is a dependency of the package
        raise ImportError(f"backend='torch' needs PyTorch ({exc}); install torch or use backend='numba'") from exc
    torch_device = _torch_kernels.resolve_device(device)
    if dtype is None:
        dtype = np.dtype(np.float32 if torch_device.type == "cuda" else np.float64)
    data = ScaledData(problem, dtype, settings)
    return data, _torch_kernels.TorchEngine(data.Xa, data.Y, data.V, data.epsilon, problem.relu,
                                            problem.per_neuron, torch_device, _groups(problem)), dtype


def _groups(problem: LayerProblem) -> tuple[int, int] | None:
    """``(group_size, n_in)`` for the group program (its groups are the first ``n_in`` rows
    of ``Theta``, in blocks), None for the l1 program."""
    return None if problem.group_size is None else (problem.group_size, problem.n_in)
