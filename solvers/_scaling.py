"""The ADMM's data as it iterates on them: scaled, centred, with the bias as a column.

The data are scaled first (``X, Y, V, epsilon`` divided by one constant, which leaves
``W`` unchanged) so that the largest diagonal entry of ``X^T X`` is
``settings.gram_target``; this balances the two constraints of the split. With a fitted,
free bias the input is also centred (an exact change of variables,
``X W^T + b = (X - mean) W^T + (b + W mean)``); the constant stays that of the uncentred
``X`` (at most ``settings.offset_scale_cap`` times that of the centred one). The bias
column gets the same norm as the others, so one unit of its coefficient is
``bias_unit`` units of bias.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._factor import NUMPY_OPS, Factor
from ._screening import dead_inputs, kept_columns
from .problem import LayerProblem
from .settings import AdmmSettings, resolve_dtype

__all__ = ["PreparedInput", "ScaledData", "scaled_input", "centers"]

_SCALING_FIELDS = ("center", "offset_scale_cap", "gram_target", "screen")


def centers(fit_bias: bool, penalize_bias: bool, settings: AdmmSettings) -> bool:
    """Whether the input is centred: only when the bias absorbs the shift at no cost."""
    return settings.center and fit_bias and not penalize_bias


def scaled_input(X: np.ndarray, fit_bias: bool, dtype: np.dtype, settings: AdmmSettings,
                 center: bool = False) -> tuple[np.ndarray, float, float, np.ndarray | None]:
    """``Xa = [(X - mean) / scale, c 1]`` and ``(Xa, scale, bias_unit, mean)``.

    ``scale`` makes the largest diagonal entry of the Gram matrix of ``X`` (uncentred)
    ``settings.gram_target``; ``c`` gives the bias column the same norm, and
    ``bias_unit = scale * c``. ``center=True`` subtracts the column means (computed in
    float64; ``mean`` is None otherwise): with a fitted, unpenalised bias this leaves
    ``W`` and the objective unchanged and removes the one large eigenvalue that the
    common mean of non-negative (ReLU) inputs puts into ``X^T X``. The scale stays that
    of the uncentred columns, which keeps the balance of the split's two constraints as
    it was without centring (the centred columns' own scale took up to 1.13x more
    iterations on the layers of ``benchmarks/rho_rule.py``), capped at
    ``settings.offset_scale_cap`` times the centred scale so that a large constant offset
    cannot shrink the centred data without bound.
    """
    n_samples, n_in = X.shape
    Xa = np.empty((n_samples, n_in + fit_bias), dtype=dtype)
    Xa[:, :n_in] = X
    largest_diag = float(np.max(np.einsum("pi,pi->i", Xa[:, :n_in], Xa[:, :n_in], dtype=np.float64)))
    mean = None
    if center:
        mean = np.mean(X, axis=0, dtype=np.float64)
        Xa[:, :n_in] -= mean.astype(dtype)
        centred_diag = float(np.max(np.einsum("pi,pi->i", Xa[:, :n_in], Xa[:, :n_in], dtype=np.float64)))
        largest_diag = min(largest_diag, settings.offset_scale_cap**2 * centred_diag)
    scale = float(np.sqrt(largest_diag / settings.gram_target)) if largest_diag > 0 else 1.0
    Xa[:, :n_in] /= dtype.type(scale)
    bias_column = np.sqrt(settings.gram_target / n_samples)
    if fit_bias:
        Xa[:, n_in] = bias_column
    return Xa, scale, scale * bias_column, mean


class PreparedInput:
    """A layer input scaled and factored once, for several programs that share it.

    The programs of blocks of output neurons with per-neuron budgets share ``X``: the
    scaled (and centred) input ``Xa`` and the factored weight-step operator
    ``(Xa^T Xa + I)^{-1}`` depend on ``X``, on how the bias enters (fitted, penalised) and
    on the scaling settings only, so they are computed once here and passed to
    :func:`solvers.admm.solve_admm` as ``prepared=`` for each block (numba and numpy
    backends). Picklable, so an executor can send it to its workers once.

    Parameters
    ----------
    X : array_like, shape (n_samples, n_in)
    fit_bias : bool, default True
    penalize_bias : bool, default False
        As in the problems it will serve (an unpenalised fitted bias lets ``X`` be centred).
    dtype : float32 or float64, default float64
        The precision of the iterations it will serve.
    settings : AdmmSettings, optional
        The settings of the solves it will serve (their scaling and screening fields matter).
    group_size : int, optional
        The group size of the programs it will serve (screening drops whole groups).

    Attributes
    ----------
    dead : ndarray of bool, shape (n_in,)
        The inputs screened out (:mod:`solvers._screening`; none unless ``settings.screen``):
        ``Xa`` and the factor are those of the other inputs.
    """

    def __init__(self, X: Any, *, fit_bias: bool = True, penalize_bias: bool = False,
                 dtype: Any = np.float64, settings: AdmmSettings | None = None,
                 group_size: int | None = None) -> None:
        dtype = resolve_dtype(dtype)
        settings = AdmmSettings() if settings is None else settings
        X = np.asarray(X)
        self.shape, self.fit_bias, self.penalize_bias, self.dtype = X.shape, bool(fit_bias), bool(penalize_bias), dtype
        self.group_size = group_size
        self.scaling = tuple(getattr(settings, name) for name in _SCALING_FIELDS)
        self.dead = (dead_inputs(X, self.fit_bias, self.penalize_bias, group_size) if settings.screen
                     else np.zeros(X.shape[1], dtype=bool))
        if self.dead.any():
            X = X[:, kept_columns(self.dead, group_size)]
        self.Xa, self.scale, self.bias_unit, self.mean = scaled_input(
            X, self.fit_bias, dtype, settings, center=centers(self.fit_bias, self.penalize_bias, settings))
        self.factor = Factor(self.Xa, NUMPY_OPS)

    @property
    def nbytes(self) -> int:
        return int(self.Xa.nbytes + self.factor.inverse.nbytes)

    def check(self, problem: LayerProblem, dtype: np.dtype, settings: AdmmSettings) -> None:
        """A ValueError unless this input is the problem's, in the precision and scaling asked for."""
        if (problem.X.shape != self.shape or problem.fit_bias != self.fit_bias
                or problem.penalize_bias != self.penalize_bias or dtype != self.dtype
                or problem.group_size != self.group_size):
            raise ValueError(f"prepared: built for X of shape {self.shape}, fit_bias={self.fit_bias}, "
                             f"penalize_bias={self.penalize_bias}, group_size={self.group_size}, {self.dtype}; "
                             f"the problem has {problem.X.shape}, fit_bias={problem.fit_bias}, "
                             f"penalize_bias={problem.penalize_bias}, group_size={problem.group_size}, {dtype}")
        wanted = tuple(getattr(settings, name) for name in _SCALING_FIELDS)
        if wanted != self.scaling:
            raise ValueError(f"prepared: built with {dict(zip(_SCALING_FIELDS, self.scaling))}; the solve asks for "
                             f"{dict(zip(_SCALING_FIELDS, wanted))}")


class ScaledData:
    """The problem's data as the iterations use them (copies: the problem is never written).

    ``Xa`` (scaled, centred when ``mean`` is not None, with the bias column), ``Y``, ``V``
    and ``epsilon`` divided by ``scale``; ``bias_unit`` converts the bias coefficient
    back. From ``prepared`` when given (its ``Xa`` and factor are shared).
    """

    def __init__(self, problem: LayerProblem, dtype: np.dtype, settings: AdmmSettings,
                 prepared: PreparedInput | None = None) -> None:
        if prepared is None:
            self.Xa, self.scale, self.bias_unit, self.mean = scaled_input(
                problem.X, problem.fit_bias, dtype, settings,
                center=centers(problem.fit_bias, problem.penalize_bias, settings))
        else:
            self.Xa, self.scale, self.bias_unit, self.mean = (prepared.Xa, prepared.scale, prepared.bias_unit,
                                                              prepared.mean)
        self.Y = (problem.Y / self.scale).astype(dtype)
        self.V = None if problem.upper is None else (problem.upper / self.scale).astype(dtype)
        self.epsilon = problem.epsilon / self.scale
