"""The ReLU-aware refit: the best weights on a fixed support, with a certified error.

For a ReLU layer with original output ``Y`` (``Omega = {Y > 0}``, the active entries), an
input ``X`` and a support ``S_m`` for each output neuron ``m``, the refit solves, neuron
by neuron, over the weights on ``S_m`` and a free bias,

.. math::

    \\min_{w, b} \\; f(w, b) = \\sum_{p \\in \\Omega_m} (z_p - y_p)^2
        + \\sum_{p \\notin \\Omega_m} \\max(z_p - v_p, 0)^2, \\qquad z = X_{:, S_m} w + b

with ``v = 0`` (or a given bound ``V``, as the cascade program's). Each term is convex
and continuously differentiable, so ``f`` is convex with a piecewise-linear gradient.

With ``v = 0`` and ``y >= 0``: on ``Omega``, ``|relu(z) - y| <= |z - y|``; off ``Omega``,
``relu(z) = max(z, 0)``. Hence ``||relu(X W^T + b) - Y||_F^2 <= sum_m f_m``: the square root
of the objective is a certified bound of the layer's post-ReLU error
(:func:`certified_error`). A Net-Trim answer at budget ``epsilon`` (on original signals) has
``f <= epsilon^2``; started from it, the refit can only lower ``f``, so it keeps the
program's guarantee ``||relu(X W^T + b) - Y|| <= epsilon``. A layer without ReLU is refitted
by least squares on every row.

The solver is a semismooth Newton method: with the rows ``R = Omega ∪ {p : z_p > v_p}``
of the current point, the quadratic model is least squares on ``R`` towards
``t = y`` (active) or ``v`` (inactive), solved through the normal equations on the
support; a backtracking line search on ``f`` keeps every step a descent, and the method
stops when the rows no longer change (the point then minimises ``f`` exactly) or the
relative decrease of ``f`` falls below ``tol`` (or below round-off, ``1e-14`` of the larger
of ``||y||^2`` and ``f`` at the start); a step that does not lower ``f`` is not taken.
Neurons are processed in chunks of similar support width, all the neurons of a chunk
together: the responses are one dense product with the whole input (the sum of the
support columns, by a compiled kernel, for a chunk whose supports are narrow), each neuron's
normal equations on its active rows are formed once (from its support's rows of the
transposed input; for a neuron active on most rows, as the layer's Gram matrix over every
row less its inactive rows', where that counts fewer operations), each step adds the few
inactive rows above their bound (both by a compiled kernel, one BLAS product per neuron,
:mod:`solvers._refit_kernels`, which also evaluates ``f`` and takes the step in one pass
each), and the systems, padded to the chunk's width, are solved
by their Cholesky factorisations in one compiled pass (LU where round-off leaves a ridged
system indefinite). The chunks are independent: they are shared out over
the cores, in Python threads with BLAS on one thread each (:mod:`solvers._threads`; the
chunks cut smaller where one would hold more than a core's share of the work), which on
the benchmark suite's layers is faster than one chunk at a time with BLAS on every core.
Refits of the same layer on supports inside one support (a greedy path's nested
supports, or several candidates' within their union) can share those equations: formed
once on that support (:func:`active_systems`), each refit reads its own off them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ._refit_kernels import (_add_rows, _advance, _dense_rows, _equations, _layer_objectives, _objectives,
                             _padded_supports, _read_off, _ridge_into, _ridged_solve, _support_response)
from ._threads import blas_threads, map_threads

__all__ = ["RefitResult", "ActiveSystems", "active_systems", "SYSTEMS_BYTES", "MAX_STEPS", "relu_refit",
           "refit_objective", "certified_error"]

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 256 * 2**20  # the per-row arrays and padded systems of one chunk of neurons stay below this
_RIDGE = 1e-12  # relative to the mean diagonal of a Gram matrix: keeps a collinear support solvable
_BACKTRACKS = 30
_NO_STEP, _NO_LENGTH = np.zeros((0, 0)), np.zeros(0)  # an objective at z itself, no step
_NO_LAYER = np.zeros((0, 0))  # the layer's equations, for a neuron that does not read them
_ROUNDING = 1e-14  # a decrease of f below this much of max(||y||^2, f at the start) is round-off, not progress
_NARROW = 8  # a chunk whose supports hold at most 1/_NARROW of the inputs sums their columns for its responses
SYSTEMS_BYTES = 2**30  # active_systems forms no more than this
MAX_STEPS = 50  # relu_refit's Newton steps at most by default: enough for its fits to converge


@dataclass
class RefitResult:
    """Weights refitted on their supports.

    Attributes
    ----------
    weight : ndarray (n_out, n_in)
        Zero off the supports.
    bias : ndarray (n_out,) or None
    objective : ndarray (n_out,)
        ``f_m`` at the answer (with the ``v`` of the fit).
    steps : int
        Newton steps of the slowest chunk.
    converged : bool
        Every neuron stopped with its rows settled or its decrease below ``tol``.
    info : dict
    """

    weight: np.ndarray
    bias: np.ndarray | None
    objective: np.ndarray
    steps: int
    converged: bool
    info: dict = field(default_factory=dict)


@dataclass
class ActiveSystems:
    """Every neuron's normal equations on its active rows over a support (:func:`active_systems`):
    refits of the same ``X`` and ``Y`` on supports inside it read theirs off these.

    Attributes
    ----------
    columns : list of ndarray
        Neuron ``m``'s support ``S_m`` (column indices, ascending).
    gram : list of ndarray
        ``[X, 1]_{Omega_m S_m}^T [X, 1]_{Omega_m S_m}`` (the column of 1s last, when the bias is fitted).
    rhs : list of ndarray
        ``[X, 1]_{Omega_m S_m}^T y_{Omega_m}``.
    """

    columns: list[np.ndarray]
    gram: list[np.ndarray]
    rhs: list[np.ndarray]

    def restricted(self, m: int, columns: np.ndarray, fit_bias: bool) -> tuple[np.ndarray, np.ndarray]:
        """Neuron ``m``'s equations on ``columns`` (ascending, inside ``S_m``), and the bias."""
        size = columns.size + fit_bias
        gram, rhs = np.empty((size, size)), np.empty(size)
        self.read(m, columns, fit_bias, gram, rhs, columns.size)
        return gram, rhs

    def read(self, m: int, columns: np.ndarray, fit_bias: bool, gram: np.ndarray, rhs: np.ndarray, at: int) -> None:
        """Neuron ``m``'s equations on ``columns`` (ascending, inside ``S_m``) written into
        ``gram`` and ``rhs`` (a padded system: ``columns[i]`` at position ``i``, the bias at
        ``at``; the other entries left as they are)."""
        columns = np.asarray(columns, dtype=np.int64)
        if not _read_off(self.columns[m], columns, self.gram[m], self.rhs[m], fit_bias, gram, rhs, at):
            raise ValueError(f"systems: neuron {m}'s support is not inside the one the systems were formed on; "
                             f"form them (active_systems) on a support that holds every one refitted with them")

    def subset(self, neurons: np.ndarray) -> ActiveSystems:
        """The equations of the neurons ``neurons`` (indices), in that order (no copy)."""
        return ActiveSystems([self.columns[m] for m in neurons], [self.gram[m] for m in neurons],
                             [self.rhs[m] for m in neurons])

    def narrowed(self, support: np.ndarray, fit_bias: bool) -> ActiveSystems:
        """The equations on ``support`` (``(n_out, n_in)`` of bool, each row inside its
        neuron's ``S_m``), read off these."""
        columns = [np.flatnonzero(row) for row in np.asarray(support, dtype=bool)]
        parts = [self.restricted(m, held, fit_bias) for m, held in enumerate(columns)]
        return ActiveSystems(columns, [gram for gram, _ in parts], [rhs for _, rhs in parts])


def refit_objective(X: np.ndarray, Y: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *,
                    relu: bool = True, upper: np.ndarray | None = None) -> np.ndarray:
    """``f_m`` of every neuron at ``(weight, bias)`` (float64): squared error on the active
    entries plus the squared excess over ``upper`` (0 when None) on the inactive ones; for a
    layer without ReLU, the squared error on every entry. The products ``X W^T`` by BLAS,
    the rest in one compiled pass over them (:func:`._refit_kernels._layer_objectives`)."""
    Z = np.asarray(X, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T
    Y = np.asarray(Y)
    shift = np.zeros(0) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
    if Y.shape != Z.shape or (bias is not None and shift.size != Z.shape[1]):  # the compiled pass reads them unchecked
        raise ValueError(f"Y: got shape {Y.shape} and bias {None if bias is None else shift.shape} for X "
                         f"{np.shape(X)} and weight {np.shape(weight)}; needs Y (n_samples, n_out) and bias (n_out,)")
    bound = np.zeros((0, 0)) if upper is None or not relu else \
        np.ascontiguousarray(np.broadcast_to(np.asarray(upper, dtype=np.float64), Z.shape))
    return _layer_objectives(np.ascontiguousarray(Z), np.ascontiguousarray(Y, dtype=np.float64), shift, bound, relu)


def certified_error(X: np.ndarray, Y: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *,
                    relu: bool = True) -> float:
    """``sqrt(sum_m f_m)`` with ``v = 0``: an upper bound of ``||relu(X W^T + b) - Y||_F``
    (of ``||X W^T + b - Y||_F``, exactly, for a layer without ReLU)."""
    return float(np.sqrt(np.sum(refit_objective(X, Y, weight, bias, relu=relu))))


def _chunks(support: np.ndarray, n_samples: int) -> list[np.ndarray]:
    """Neuron indices in chunks whose per-row arrays (about eight of ``n_samples`` floats per
    neuron) and padded systems fit in ``_CHUNK_BYTES``, neurons of similar support size
    together: a chunk's systems are padded to its widest support, so a chunk ends where the
    width would grow by more than a quarter."""
    sizes = support.sum(axis=1)
    chunks, current = [], []
    for m in np.argsort(sizes, kind="stable"):  # ascending: the last neuron sets the width
        wider = current and int(sizes[m]) + 1 > 1.25 * (int(sizes[current[0]]) + 1) + 4
        if current and (wider or (len(current) + 1) * (8 * n_samples + (int(sizes[m]) + 1) ** 2) * 8 > _CHUNK_BYTES):
            chunks.append(np.array(current))
            current = []
        current.append(m)
    if current:
        chunks.append(np.array(current))
    return chunks


def _spread(chunks: list[np.ndarray], support: np.ndarray, parts: int) -> list[np.ndarray]:
    """``chunks`` cut so that none costs more than a ``parts``-th of them all (a chunk's
    normal matrices cost about ``len(chunk) * (width + 1)^2``), dearest first: the order
    in which threads should take them (:func:`._threads.map_threads`). One part: as given."""
    if parts <= 1 or not chunks:
        return chunks
    widths = support.sum(axis=1)

    def cost(neurons: np.ndarray) -> int:
        return len(neurons) * (int(widths[neurons].max()) + 1) ** 2

    share = sum(cost(neurons) for neurons in chunks) / parts
    pieces = [piece for neurons in chunks
              for piece in np.array_split(neurons, min(len(neurons), max(1, int(np.ceil(cost(neurons) / share)))))]
    return sorted(pieces, key=cost, reverse=True)


def _shared_chunks(support: np.ndarray, n_samples: int) -> list[np.ndarray]:
    """The chunks of :func:`_chunks`, cut and ordered for the threads (:func:`_spread`)."""
    return _spread(_chunks(support, n_samples), support, blas_threads())


@dataclass
class _LayerGram:
    """The layer's Gram matrix over every row, from which neurons active on most rows form
    their equations by subtracting their inactive rows (:func:`_layer_gram`).

    Attributes
    ----------
    gram : ndarray (n_in + fit_bias, n_in + fit_bias)
        ``[X, 1]^T [X, 1]`` (the column of 1s last, when the bias is fitted).
    rhs : ndarray (n_in + fit_bias, n_out)
        ``[X, 1]^T y_m`` in the columns of the neurons that use it (the others unset).
    uses : ndarray (n_out,) of bool
        The neurons that form their equations from it (:func:`_layer_gram`).
    """

    gram: np.ndarray
    rhs: np.ndarray
    uses: np.ndarray


def _layer_gram(XT: np.ndarray, YT: np.ndarray, support: np.ndarray, relu: bool, fit_bias: bool) -> _LayerGram | None:
    """The layer's Gram matrix, for the neurons active on most rows. Neuron ``m``'s
    active-row equations cost ``(|S_m| + 1)^2 |Omega_m|`` multiply-adds formed from its
    active rows, and ``(|S_m| + 1)^2 |Omega_m^c|`` as ``[X, 1]_{:, S_m}^T [X, 1]_{:, S_m}``
    (read off the layer's Gram matrix) minus its inactive rows' ones, plus
    ``(n_in + 1) n_samples`` for its ``[X, 1]^T y_m``. The neurons for which the second way
    counts fewer (every neuron of a layer without ReLU, which has no inactive row) take it
    where together they save more than the Gram matrix costs (``(n_in + 1)^2 n_samples``,
    as L-OBS's Hessian), formed once; otherwise None, and every neuron gathers its
    active rows. Either way gives the same equations to round-off."""
    n_in, n_samples = XT.shape
    widths = support.sum(axis=1, dtype=np.int64) + fit_bias
    active = np.count_nonzero(YT > 0, axis=1) if relu else np.full(YT.shape[0], n_samples)
    saved = widths.astype(np.float64) ** 2 * (2 * active - n_samples) - float(n_in + fit_bias) * n_samples
    uses = saved > 0
    if np.sum(saved[uses]) <= float(n_in + fit_bias) ** 2 * n_samples:
        return None
    gram = np.empty((n_in + fit_bias, n_in + fit_bias))
    rhs = np.empty((n_in + fit_bias, YT.shape[0]))
    targets = YT[uses]
    gram[:n_in, :n_in] = XT @ XT.T
    rhs[:n_in, uses] = XT @ targets.T
    if fit_bias:  # the column of 1s, without a copy of X to hold it
        gram[n_in, :n_in] = gram[:n_in, n_in] = XT.sum(axis=1)
        gram[n_in, n_in] = n_samples
        rhs[n_in, uses] = targets.sum(axis=1)
    return _LayerGram(gram, rhs, uses)


class _Chunk:
    """The refit of a chunk of neurons.

    Responses are dense products with the whole input (``X W^T + b``: BLAS, no gathering),
    or sums of the support columns where the supports are narrow (:meth:`response`).
    The normal equations of neuron ``k`` on its support ``S_k`` are formed from its active
    rows once (``X_{Omega,S}^T X_{Omega,S}``, from the transposed input's rows ``S_k``), and
    each Newton step adds the few inactive rows whose response exceeds their bound; the
    systems, padded to one width, are solved by Cholesky factorisations in one compiled
    pass (:func:`._refit_kernels._ridged_solve`).
    """

    def __init__(self, XT: np.ndarray, YT: np.ndarray, VT: np.ndarray | None, support: np.ndarray,
                 neurons: np.ndarray, relu: bool, fit_bias: bool, systems: ActiveSystems | None = None,
                 layer: _LayerGram | None = None) -> None:
        self.XT, self.neurons, self.relu, self.fit_bias = XT, neurons, relu, fit_bias
        self.systems, self.layer = systems, layer
        self.padded, self.sizes = _padded_supports(support, neurons)  # the supports, for the kernels
        width = int(self.sizes.max(initial=0))
        self.width, n_cols = width, width + fit_bias
        self.valid = np.arange(n_cols) < self.sizes[:, None]
        if fit_bias:
            self.valid[:, width] = True
        self.y = YT[neurons]  # (chunk, n_samples): the transposed arrays' rows, contiguous
        self.active = self.y > 0 if relu else np.ones_like(self.y, dtype=bool)
        self.v = np.zeros(self.y.shape) if VT is None else VT[neurons]  # the inactive rows' bound
        self._system: tuple[np.ndarray, np.ndarray] | None = None

    def columns(self, k: int) -> np.ndarray:
        """Neuron ``k``'s support ``S_k`` (ascending input indices)."""
        return self.padded[k, :self.sizes[k]]

    def equations(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Neuron ``k``'s normal equations on its active rows: ``B B^T`` and ``B y`` with
        ``B = [X, 1]_{Omega, S}^T`` gathered (BLAS's syrk), or, for a neuron that uses the
        layer's Gram matrix, that matrix's ``S`` rows and columns minus the same over its
        inactive rows (the bias last, when fitted); one compiled call
        (:func:`._refit_kernels._equations`), which holds no GIL."""
        m = self.neurons[k]
        if self.layer is not None and self.layer.uses[m]:
            return _equations(self.XT, self.y[k], self.active[k], self.columns(k), self.fit_bias, True,
                              self.layer.gram, self.layer.rhs, m)
        return _equations(self.XT, self.y[k], self.active[k], self.columns(k), self.fit_bias, False, _NO_LAYER,
                          _NO_LAYER, m)

    def _active_system(self) -> tuple[np.ndarray, np.ndarray]:
        """``X_{Omega,S}^T X_{Omega,S}`` and ``X_{Omega,S}^T y_Omega`` of every neuron, formed
        once (read off ``systems`` when given)."""
        if self._system is None:
            n_cols = self.valid.shape[1]
            gram = np.zeros((self.neurons.size, n_cols, n_cols))
            rhs = np.zeros((self.neurons.size, n_cols))
            if self.systems is None:  # formed (then put into the padded system, the bias at width)
                for k in range(self.neurons.size):
                    _read_off(self.columns(k), self.columns(k), *self.equations(k), self.fit_bias, gram[k], rhs[k],
                              self.width)
            else:
                for k, m in enumerate(self.neurons):
                    self.systems.read(m, self.columns(k), self.fit_bias, gram[k], rhs[k], self.width)
            self._system = gram, rhs
        return self._system

    def dense(self, theta: np.ndarray, neurons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights ``(c, n_in)`` and biases ``(c,)`` of the chunk's ``neurons`` from their coefficients."""
        weight = _dense_rows(np.ascontiguousarray(theta), np.asarray(neurons, dtype=np.int64), self.padded, self.sizes,
                             self.XT.shape[0])
        bias = theta[:, self.width] if self.fit_bias else np.zeros(neurons.size)
        return weight, bias

    def response(self, theta: np.ndarray, neurons: np.ndarray | None = None) -> np.ndarray:
        """``z`` of the chunk's ``neurons`` at their coefficients ``theta`` (C-ordered: a
        neuron's responses are a row): one dense product with the whole input, or, where the
        supports hold at most ``1/_NARROW`` of the inputs, the sum of their columns (a dense
        product would spend most of its work on zeros)."""
        neurons = np.arange(self.neurons.size) if neurons is None else neurons
        if (self.width + 1) * _NARROW <= self.XT.shape[0]:
            return _support_response(self.XT, neurons, self.padded, self.sizes, np.ascontiguousarray(theta),
                                     self.width, self.fit_bias)
        weight, bias = self.dense(theta, neurons)
        return weight @ self.XT + bias[:, None]

    def objective(self, z: np.ndarray, neurons: np.ndarray | None = None, dz: np.ndarray | None = None,
                  length: np.ndarray | None = None) -> np.ndarray:
        """``f`` of the chunk's ``neurons`` (all by default) at ``z[neurons]``, or at
        ``z[neurons] + length[:, None] * dz`` (a step; ``dz`` a row per neuron of ``neurons``)."""
        neurons = np.arange(self.neurons.size) if neurons is None else neurons
        if dz is None:
            dz, length = _NO_STEP, _NO_LENGTH
        return _objectives(z, neurons, dz, length, self.y, self.v, self.active)

    def rows(self, z: np.ndarray, neurons: np.ndarray | slice = slice(None)) -> np.ndarray:
        return self.active[neurons] | (z > self.v[neurons])

    def newton_point(self, rows: np.ndarray, neurons: np.ndarray | None = None) -> np.ndarray:
        """The least-squares fit on ``rows`` (the active ones and some inactive ones) towards
        ``y`` on the active rows and the bound ``v`` on the others, for the chunk's ``neurons``."""
        index = np.arange(self.neurons.size) if neurons is None else neurons
        gram_active, rhs_active = self._active_system()
        gram, rhs = gram_active[index], rhs_active[index]  # copies (an index array), which the rows are added to
        _add_rows(self.XT, index, self.padded, self.sizes, rows, self.active, self.v, gram, rhs, self.width,
                  self.fit_bias)
        valid = self.valid[index]
        theta, solved = _ridged_solve(gram, rhs, valid, _RIDGE)  # Cholesky, system by system
        if not solved.all():  # round-off left a ridged system indefinite: LU for those
            failed = np.flatnonzero(~solved)
            ridged = np.empty_like(gram[failed])
            for k, c in enumerate(failed):
                _ridge_into(gram[c], valid[c], _RIDGE, ridged[k])  # the same systems Cholesky was given
            theta[failed] = np.linalg.solve(ridged, np.where(valid[failed], rhs[failed], 0.0)[:, :, None])[:, :, 0]
        return theta

    def start(self, weight: np.ndarray | None, bias: np.ndarray | None) -> np.ndarray:
        if weight is None:
            return self.newton_point(self.active)  # least squares on the active rows
        theta = np.zeros(self.valid.shape)
        held = np.take_along_axis(weight[self.neurons], self.padded[:, :self.width], axis=1)
        theta[:, :self.width] = np.where(self.valid[:, :self.width], held, 0.0)
        if bias is not None and self.fit_bias:
            theta[:, self.width] = bias[self.neurons]
        return theta

    def weights(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        weight, bias = self.dense(theta, np.arange(self.neurons.size))
        return weight, (bias if self.fit_bias else None)


def _descend(chunk: _Chunk, theta: np.ndarray, tol: float, max_steps: int) -> tuple[np.ndarray, int, bool]:
    """Semismooth Newton with backtracking on ``f``; the neurons still running move together."""
    z = chunk.response(theta)
    value = chunk.objective(z)
    negligible = _ROUNDING * np.maximum(np.einsum("cp,cp->c", chunk.y, chunk.y), value)  # f's round-off level
    running = np.arange(theta.shape[0])
    rows = chunk.rows(z)  # the running neurons' rows: active, or inactive above their bound
    step_count = 0
    for step_count in range(1, max_steps + 1):
        direction = chunk.newton_point(rows, running) - theta[running]
        dz = chunk.response(direction, running)
        length = np.ones(running.size)
        trial = chunk.objective(z, running, dz, length)
        for _ in range(_BACKTRACKS):  # halve where f did not decrease
            worse = trial > value[running]
            if not worse.any():
                break
            length[worse] *= 0.5
            trial[worse] = chunk.objective(z, running[worse], dz[worse], length[worse])
        accepted = trial < value[running]  # a step that does not lower f is not taken (a dead neuron keeps its weights)
        move = np.where(accepted, length, 0.0)
        theta[running] += move[:, None] * direction
        settled = _advance(z, running, move, dz, chunk.active, chunk.v, rows) & (length == 1.0)  # z moved, rows new
        small = value[running] - np.minimum(trial, value[running]) <= tol * value[running] + negligible[running]
        value[running] = np.minimum(trial, value[running])
        going = ~(settled | small | ~accepted)
        running, rows = running[going], rows[going]
        if running.size == 0:
            return theta, step_count, True
    return theta, step_count, False


def _transposed(X: np.ndarray, Y: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``X^T`` and ``Y^T`` in float64, C-ordered (a chunk's neurons and support columns are
    their rows), and ``support`` as booleans, the shapes checked. Each is made in one pass,
    and an ``X`` or ``Y`` already in float64 and column-major order (``np.asfortranarray(X,
    dtype=np.float64)``, which a caller refitting one layer several times makes once) is
    read without a copy."""
    X, Y = np.asarray(X), np.asarray(Y)
    support = np.asarray(support, dtype=bool)
    if support.ndim != 2 or X.ndim != 2 or X.shape[1] != support.shape[1] or Y.shape != (X.shape[0], support.shape[0]):
        raise ValueError(f"support: got shape {support.shape} for X {X.shape} and Y {Y.shape}; needs (n_out, n_in)")
    return (np.ascontiguousarray(X.T, dtype=np.float64), np.ascontiguousarray(Y.T, dtype=np.float64), support)


def relu_refit(X: np.ndarray, Y: np.ndarray, support: np.ndarray, *, relu: bool = True,
               upper: np.ndarray | None = None, fit_bias: bool = True, weight: np.ndarray | None = None,
               bias: np.ndarray | None = None, tol: float = 1e-10, max_steps: int = MAX_STEPS,
               systems: ActiveSystems | None = None) -> RefitResult:
    """Refit every neuron on its support (module docstring).

    Parameters
    ----------
    X : ndarray (n_samples, n_in)
        The input the layer is fitted on (the pruned network's, in cascade mode). Read
        transposed, in float64: one copy, none where ``X`` is already float64 in
        column-major order (``np.asfortranarray(X, dtype=np.float64)``, made once by a
        caller that refits one layer several times).
    Y : ndarray (n_samples, n_out)
        The original layer's output (``relu(Z)`` for a ReLU layer); ``Y > 0`` is ``Omega``.
        Read transposed, as ``X`` is.
    support : ndarray (n_out, n_in) of bool
        The entries each neuron may use.
    relu : bool, default True
        False: least squares on every row (a layer without ReLU).
    upper : ndarray (n_samples, n_out), optional
        The bound ``v`` of the inactive entries (default 0, which makes the objective a
        certified bound of the post-ReLU error).
    fit_bias : bool, default True
        Fit a free bias per neuron.
    weight, bias : ndarray, optional
        The starting point (e.g. the method's answer; restricted to ``support``). Default:
        least squares on the active rows.
    tol : float, default 1e-10
        A neuron stops once a step lowers its ``f`` by less than ``tol`` relative.
    max_steps : int, default :data:`MAX_STEPS`
    systems : ActiveSystems, optional
        The active rows' normal equations (:func:`active_systems`) of the same ``X``, ``Y``
        and ``relu`` on a support that holds this one: read off instead of formed again.

    Returns
    -------
    RefitResult
    """
    XT, YT, support = _transposed(X, Y, support)
    n_out, n_in = support.shape
    V = None if upper is None or not relu else np.asarray(upper, dtype=np.float64)
    new_weight = np.zeros((n_out, n_in))
    new_bias = np.zeros(n_out) if fit_bias else None
    objective = np.zeros(n_out)
    VT = None if V is None else np.ascontiguousarray(V.T)
    weight = None if weight is None else np.asarray(weight, dtype=np.float64)
    bias = None if bias is None else np.asarray(bias, dtype=np.float64)

    layer = None if systems is not None else _layer_gram(XT, YT, support, relu, fit_bias)

    def fit(neurons: np.ndarray) -> tuple[int, bool]:
        chunk = _Chunk(XT, YT, VT, support, neurons, relu, fit_bias, systems, layer)
        theta = chunk.start(weight, bias)
        if relu:
            theta, used, done = _descend(chunk, theta, tol, max_steps)
        else:  # least squares on every row: one Newton point
            theta, used, done = chunk.newton_point(chunk.active), 1, True
        new_weight[neurons], chunk_bias = chunk.weights(theta)
        if fit_bias:
            new_bias[neurons] = chunk_bias
        objective[neurons] = chunk.objective(chunk.response(theta))
        return used, done

    outcomes = map_threads(fit, _shared_chunks(support, XT.shape[1]))
    steps = max((used for used, _ in outcomes), default=0)
    converged = all(done for _, done in outcomes)
    if not converged:
        logger.info("relu_refit: some neurons still decreasing after %d steps", max_steps)
    return RefitResult(new_weight, new_bias, objective, steps, converged)


def active_systems(X: np.ndarray, Y: np.ndarray, support: np.ndarray, *, relu: bool = True,
                   fit_bias: bool = True, max_bytes: int | None = None) -> ActiveSystems | None:
    """Every neuron's normal equations on its active rows over ``support``, formed once for
    the refits (:func:`relu_refit`, ``systems=``) on supports inside it.

    They take ``8 * sum_m (|S_m| + 1)^2`` bytes; beyond ``max_bytes`` (default :data:`SYSTEMS_BYTES`)
    None is returned and each refit forms its own. The other arguments are :func:`relu_refit`'s.
    """
    needed = 8 * int(np.sum((np.asarray(support, dtype=bool).sum(axis=1, dtype=np.int64) + 1) ** 2))
    if needed > (SYSTEMS_BYTES if max_bytes is None else max_bytes):
        return None
    XT, YT, support = _transposed(X, Y, support)
    n_out = support.shape[0]
    systems = ActiveSystems([np.empty(0, dtype=np.int64)] * n_out, [np.empty((0, 0))] * n_out, [np.empty(0)] * n_out)

    layer = _layer_gram(XT, YT, support, relu, fit_bias)

    def form(neurons: np.ndarray) -> None:
        chunk = _Chunk(XT, YT, None, support, neurons, relu, fit_bias, layer=layer)
        for k, m in enumerate(neurons):
            systems.columns[m] = chunk.columns(k)
            systems.gram[m], systems.rhs[m] = chunk.equations(k)

    map_threads(form, _shared_chunks(support, XT.shape[1]))
    return systems
