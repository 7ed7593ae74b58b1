"""Sparsity across the network: one target for the whole network, shared out by error.

One fraction for every layer hurts where a layer is small or carries much of the signal
(the first convolution of a CNN: 144 weights). With ``allocate="error"`` a network target
``sparsity`` is shared out as follows:

1. :class:`ErrorCurves`: on the original signals (what every layer's program sees in
   parallel mode), each layer is pruned to every point of :data:`GRID` by L-OBS as
   released, in one pass (:func:`.methods.lobs.prune_path` with ``order="ranked"``): each
   row removes its weights in the order of their costs at the start, compensated with the
   fixed inverse Hessian, ``O(n_out n^2)`` for the whole path instead of greedy
   removal's ``O(n_out n^3)``. The fit that follows moves the weights on the support,
   and the curves only need to rank the layers: on the benchmark suite, against the
   greedy path, the shares moved at 11 of the 24 points from 70% up of
   ``benchmarks/compare_methods.py`` (the default's run) and the default's output error
   fell at 8 of them and rose at 3, for a greedy pass less per layer (the one the layer's
   own pruning makes anyway). The error of a
   layer at ``s``, ``e_l(s)``, is the
   square root of the ReLU-aware objective (:func:`solvers.refit.refit_objective`, a
   certified bound of the post-ReLU error), relative to ``||Y_l||_F``, of those weights
   after the ReLU-aware fit (:func:`solvers.refit.relu_refit`) on their support. Where
   the next layer is known, each neuron's objective counts as much as that layer reads
   the neuron (``importance``, :mod:`nettrim.consumers`, mean 1): the error the layer
   passes on, not its own.
2. :func:`allocate`: the sparsities ``s_l`` that minimise ``sum_l e_l(s_l)^2`` (``e_l^2``
   interpolated linearly between the grid's points) while the network keeps at most the
   target number of weights, by a Lagrange multiplier on the weights kept, bisected.

The fits are the expensive part, and only the points next to each layer's share decide
the answer, so :func:`share_out` fits where it matters: it allocates first with the
error of the path's weights as they are (one product per point, no fit), then fits each
layer at the grid point at or above its share (the first point above 0 for a layer left
dense; on a point, that point and the next one up), scales the unfitted points of its
curve by the fitted-over-unfitted ratio of the nearest fitted ones (interpolated between
them), and allocates again; a layer whose share moves is fitted at its new point too,
until no share moves to an unfitted one (at most :data:`_ROUNDS` rounds). The points
below a share are left to the scaled curve: their supports are the widest, so their fits
the dearest. On the benchmark suite the shares are those of fitting every point at 19 of
30 targets on every row (at all 30 with a greedy path, whose unfitted errors lie nearer
the fitted ones), the allocation's objective within 1.09× of theirs at all but one
(``benchmarks/allocation_fits.py``).

Each fit stops after :data:`FIT_STEPS` Newton steps of the ReLU-aware fit: the curves
only rank the layers, and the first steps take most of a fit's decrease, while a neuron
slow to settle its active rows can take tens of steps for the last fraction of a percent.
Each step is a descent from the path's weights, so a fitted point's error stays a
certified bound, between the converged fit's and the unfitted one. On the benchmark
suite the shares are those of fits run to convergence at 29 of the 30 targets, in a
median 0.83 of their time (0.61 against 0.83 s on the VGG-style CNN).

The points a layer fits at once share the work: the path's supports are nested, so each
neuron's normal equations are formed once, on the widest point's support, and every
point's fit reads its own off them (:func:`solvers.refit.active_systems`).

The curves are measured on a subset of each layer's rows, evenly spaced over its
calibration rows (the path's Hessian, the errors and the fits alike): the shares depend
on the curves' shape, not on their last digits, while the Hessian and the fits cost in
proportion to the rows (a convolution is recorded at 10,000 rows by default). The subset
grows with what a neuron fits: ``ROWS_PER_INPUT * (n_in + 1)`` rows, at least
:data:`ROWS` and at most :data:`ROWS_MAX`, so that a wider layer's fits stay better
determined (a fit with as many weights as rows would read as exact) while a narrow one
is not read at more rows than its curve needs. On the benchmark suite
(``benchmarks/compare_methods.py``, ``benchmarks/allocation_fits.py``) that gave the
shares of every row at most points and took about a tenth off the whole prune against
:data:`ROWS_MAX` rows for every layer. A layer wider than ``ROWS_MAX / ROWS_PER_INPUT``
inputs is read at ``ROWS_MAX`` rows, fewer per weight: its fits cost
``rows * |S|^2`` per neuron, and more rows would make them dearer still.

The pruning then runs with the per-layer sparsities (any layer method, either mode), on
every row.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping

import numpy as np
import torch

from solvers._threads import map_threads

from .modes import layer_task
from .record import LayerRecord
from .types import LayerTask

__all__ = ["GRID", "ROWS", "ROWS_PER_INPUT", "ROWS_MAX", "FIT_STEPS", "ALLOCATIONS", "ErrorCurves", "share_out",
           "allocate"]

logger = logging.getLogger(__name__)

ALLOCATIONS = ("auto", None, "error")
GRID = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
ROWS = 1024  # the fewest rows of a layer's signals the curves are measured on (module docstring) ...
ROWS_PER_INPUT = 4  # ... and this many per weight of a neuron (its inputs and its bias) ...
ROWS_MAX = 4096  # ... up to this many
_ROUNDS = 3  # rounds of fits at the shares' brackets (module docstring)
FIT_STEPS = 2  # Newton steps of a curve's fit (module docstring)
_STEP = 0.005  # the sparsities allocate() chooses from: multiples of this up to the grid's last point


def _counted(value) -> bool:
    """Whether ``value`` is an integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _stored(weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A path point kept for later fits, in float32 (every layer's points are held at once;
    the fit starts from them and works in float64)."""
    return weight.astype(np.float32), (None if bias is None else bias.astype(np.float32))


class ErrorCurves:
    """Every layer's error curve ``e_l(s)`` on :data:`GRID` (module docstring, step 1),
    fitted at the points asked for (:meth:`fit`) and estimated at the others.

    Parameters
    ----------
    records : mapping of layer name to LayerRecord
        The recorded layers (original signals).
    grid : tuple of float
        Sparsities, ascending, starting at 0.
    importance : mapping of layer name to ndarray (n_out,), optional
        Each neuron's weight in its layer's error (:mod:`nettrim.consumers`); a layer
        without one weighs its neurons alike.
    rows, rows_per_input, max_rows : int, default :data:`ROWS`, :data:`ROWS_PER_INPUT`, :data:`ROWS_MAX`
        The rows of each layer's signals the curves are measured on: a layer with more
        than ``rows_per_input * (n_in + 1)``, clipped to ``[rows, max_rows]``, is read
        at that many, evenly spaced over them. ``rows=None``: every row.
    fit_steps : int, default :data:`FIT_STEPS`
        The most Newton steps of each fit (:func:`solvers.refit.relu_refit`'s
        ``max_steps``; its default, :data:`solvers.refit.MAX_STEPS`, fits to convergence).

    The path's weights at every point of the grid are kept for the fits (in float32, about
    ``len(grid) - 1`` copies of the network's weights in 4 bytes each); a layer's signals
    are read from its record when it is measured or fitted, only its rows of them. The
    layers are measured on as many Python threads as BLAS has (each with BLAS on one thread,
    whatever their number: :func:`solvers._threads.map_threads`; taking turns at the
    path's parallel kernel where numba's threading layer cannot run it in several threads
    at once), so as many layers' rows are held at once; their fits run one layer at a
    time, each spread over the threads.

    Attributes
    ----------
    unfitted : dict of name to ndarray
        ``e_l`` of the path's weights as they are, at every point of the grid.
    fitted : dict of name to dict of float to float
        ``e_l`` after the ReLU-aware fit, at the points fitted so far.
    """

    def __init__(self, records: Mapping[str, LayerRecord], grid: tuple[float, ...] = GRID,
                 importance: Mapping[str, np.ndarray] | None = None, rows: int | None = ROWS,
                 rows_per_input: int = ROWS_PER_INPUT, max_rows: int = ROWS_MAX,
                 fit_steps: int = FIT_STEPS) -> None:
        self.grid = tuple(float(s) for s in grid)
        if not self.grid or self.grid[0] != 0.0 or any(b <= a for a, b in zip(self.grid, self.grid[1:])) \
                or self.grid[-1] >= 1.0:
            raise ValueError(f"grid: got {list(grid)}, needs sparsities increasing from 0 and below 1")
        if not (rows is None or (_counted(rows) and rows >= 1)):
            raise ValueError(f"rows: got {rows!r}, needs an integer >= 1, or None for every row")
        if not (_counted(rows_per_input) and rows_per_input >= 0):
            raise ValueError(f"rows_per_input: got {rows_per_input!r}, needs an integer >= 0")
        if not (_counted(max_rows) and max_rows >= (1 if rows is None else rows)):
            raise ValueError(f"max_rows: got {max_rows!r}, needs an integer >= rows ({rows})")
        if not (_counted(fit_steps) and fit_steps >= 1):
            raise ValueError(f"fit_steps: got {fit_steps!r}, needs an integer >= 1")
        self.rows, self.rows_per_input, self.max_rows = rows, int(rows_per_input), int(max_rows)
        self.fit_steps = int(fit_steps)
        self._records = records
        self._importance = {name: np.ones(rec.weight.shape[0]) if importance is None or importance.get(name) is None
                            else np.asarray(importance[name], dtype=np.float64) for name, rec in records.items()}
        dearest = sorted(records, key=self._cost, reverse=True)  # first, as the threads come free
        measured = dict(zip(dearest, map_threads(self._measure, dearest, serial_blas=True)))
        self._scales: dict[str, float] = {name: measured[name][0] for name in records}
        self._paths: dict[str, dict[float, tuple[np.ndarray, np.ndarray | None]]] = {
            name: measured[name][1] for name in records}
        self.unfitted: dict[str, np.ndarray] = {name: measured[name][2] for name in records}
        self.fitted: dict[str, dict[float, float]] = {name: {} for name in records}

    def _cost(self, name: str) -> float:
        """About what :meth:`_measure` costs for layer ``name``: its Hessian and its path, each
        ``(n_in + 1)^2`` per row of signals and per neuron."""
        rec = self._records[name]
        return float(rec.n_in + 1) ** 2 * (self._count(rec) + rec.n_out)

    def _measure(self, name: str) -> tuple[float, dict[float, tuple[np.ndarray, np.ndarray | None]], np.ndarray]:
        """Layer ``name``'s ``||Y||_F`` on its rows, its path's weights at every pruned point of
        the grid, and ``e_l`` of those weights as they are at every point (0 at 0)."""
        from solvers.refit import refit_objective

        from .methods.lobs import prune_path

        task = self._task(name)
        pruned = [s for s in self.grid if s > 0]
        levels = prune_path(task, pruned, order="ranked")  # L-OBS as released (module docstring)
        path = {s: _stored(weight, bias) for s, (weight, bias) in zip(pruned, levels)}
        X, Y = np.asarray(task.X, dtype=np.float64), np.asarray(task.Y, dtype=np.float64)  # once, not per point
        errors = [0.0 if s == 0 else self._error(name, refit_objective(X, Y, *path[s], relu=task.relu), task.scale)
                  for s in self.grid]
        return task.scale, path, np.array(errors)

    def _error(self, name: str, objective: np.ndarray, scale: float | None = None) -> float:
        """``e_l``: the square root of the neurons' objectives, weighted, relative to ``||Y_l||_F``
        (``scale``, when the curves do not hold it yet)."""
        scale = self._scales[name] if scale is None else scale
        return float(np.sqrt(np.dot(objective, self._importance[name]))) / max(scale, 1e-300)

    def _count(self, rec: LayerRecord) -> int:
        """The rows of ``rec``'s signals the curves read: ``rows_per_input * (n_in + 1)``,
        clipped to ``[rows, max_rows]``, or all of them (``rows=None``, or no more than that)."""
        if self.rows is None:
            return rec.n_samples
        return min(rec.n_samples, max(self.rows, self.rows_per_input * (rec.n_in + 1)), self.max_rows)

    def _task(self, name: str) -> LayerTask:
        """Layer ``name``'s signals on :meth:`_count` rows, evenly spaced (only those rows read)."""
        rec = self._records[name]
        count = self._count(rec)
        if count < rec.n_samples:
            rows = np.linspace(0, rec.n_samples - 1, count).round().astype(np.int64)  # distinct: steps above 1
            rows = torch.as_tensor(rows)
            rec = dataclasses.replace(rec, input=rec.input[rows], pre_activation=rec.pre_activation[rows])
        return layer_task(rec, rec.input, "parallel", 0.0, 1.0, False)

    def fit(self, name: str, sparsities: Iterable[float]) -> None:
        """Fit layer ``name``'s path weights at the grid points ``sparsities`` (once each).

        The path's supports are nested, so the neurons' normal equations are formed once,
        on the widest point's support (:func:`solvers.refit.active_systems`), and every
        point's fit reads its own off them (while they fit in :data:`solvers.refit.SYSTEMS_BYTES`)."""
        from solvers.refit import active_systems, relu_refit

        wanted = sorted(s for s in sparsities if s != 0 and s not in self.fitted[name])
        if not wanted:
            return
        task = self._task(name)
        fit_bias = task.bias is not None
        X = np.asfortranarray(task.X, dtype=np.float64)  # what every fit reads, made once (relu_refit)
        Y = np.asfortranarray(task.Y, dtype=np.float64)
        widest = self._paths[name][wanted[0]][0] != 0
        systems = active_systems(X, Y, widest, relu=task.relu, fit_bias=fit_bias) if len(wanted) > 1 else None
        for sparsity in wanted:
            weight, bias = self._paths[name][sparsity]
            support = (weight != 0) & widest  # nested, even where a kept weight is exactly 0
            result = relu_refit(X, Y, support, relu=task.relu, fit_bias=fit_bias,
                                weight=weight, bias=bias, systems=systems, max_steps=self.fit_steps)
            self.fitted[name][sparsity] = self._error(name, result.objective)

    def fit_all(self) -> None:
        """Fit every layer at every point of the grid."""
        for name in self._records:
            self.fit(name, self.grid)

    def curve(self, name: str) -> np.ndarray:
        """``e_l`` on the grid: fitted where fitted; elsewhere the unfitted error times the
        fitted-over-unfitted ratio, interpolated between the fitted points (held beyond
        them; 1 when none is fitted)."""
        unfitted, fitted = self.unfitted[name], self.fitted[name]
        if not fitted:
            return unfitted.copy()
        points = sorted(fitted)
        index = [self.grid.index(s) for s in points]
        ratios = [fitted[s] / unfitted[i] if unfitted[i] > 0 else 1.0 for s, i in zip(points, index)]
        curve = unfitted * np.interp(self.grid, points, ratios)
        curve[index] = [fitted[s] for s in points]
        return curve

    def curves(self) -> dict[str, np.ndarray]:
        """:meth:`curve` of every layer."""
        return {name: self.curve(name) for name in self._records}

    def bracket(self, sparsity: float) -> tuple[float, ...]:
        """The grid points fitted for a share at ``sparsity`` (module docstring): the first
        point at or above it, never 0 (a layer left dense is judged by its first pruned
        point), and, on a point, the next one up too (the slope of going sparser)."""
        grid = np.asarray(self.grid)
        above = min(max(int(np.searchsorted(grid, sparsity - 1e-9)), 1), grid.size - 1)
        on_point = abs(grid[above] - sparsity) <= 1e-9 and above + 1 < grid.size
        return tuple(float(s) for s in grid[above:above + 1 + on_point])


def share_out(records: Mapping[str, LayerRecord], sparsity: float, grid: tuple[float, ...] = GRID,
              curves: ErrorCurves | None = None,
              importance: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """Per-layer sparsities for the network target ``sparsity`` (module docstring): allocated
    on the unfitted curves, then again after each round of fits at the shares' brackets.

    ``curves``: the layers' :class:`ErrorCurves` on ``grid``, to reuse or inspect (made
    here, with ``importance``, when None; the fits made here are added to it).
    """
    curves = ErrorCurves(records, grid, importance) if curves is None else curves
    sizes = {name: rec.weight.numel() for name, rec in records.items()}
    shares = allocate(curves.curves(), sizes, sparsity, grid)
    for _ in range(_ROUNDS):
        wanted = {name: [s for s in curves.bracket(share) if s not in curves.fitted[name]]
                  for name, share in shares.items()}
        wanted = {name: points for name, points in wanted.items() if points}
        if not wanted:
            break
        for name, points in wanted.items():
            curves.fit(name, points)
        shares = allocate(curves.curves(), sizes, sparsity, grid)
    for name in records:
        logger.info("allocation: %s errors %s at sparsities %s (fitted at %s)", name,
                    np.round(curves.curve(name), 4).tolist(), list(grid), sorted(curves.fitted[name]))
    return shares


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
