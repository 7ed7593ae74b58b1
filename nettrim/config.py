"""The settings of a prune, in one object, checked once.

>>> config = PruneConfig(method="lobs", sparsity=0.8)            # doctest: +SKIP
>>> nettrim.prune(model, calib, config)                           # doctest: +SKIP
>>> nettrim.prune(model, calib, config, mode="parallel")          # an override  # doctest: +SKIP
>>> nettrim.prune(model, calib, method="lobs", sparsity=0.8)      # the same as keywords  # doctest: +SKIP

:class:`PruneConfig` groups the target (``epsilon`` / ``sparsity`` / ``gamma`` / ``mode``,
``layers``), the method and its options, the solver and its options, sampling
(``max_positions``, ``seed``), execution (``executor``, ``split``, ``progress``) and
storage (``store``, ``memory_budget``, ``store_dir``, ``work_dir``, ``resume``). The
fields marked ``run=True`` decide the weights; the resume fingerprint of a work directory
is made of them (:meth:`PruneConfig.run_settings`).
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from solvers import METHODS as SOLVERS

from .allocation import ALLOCATIONS, GRID
from .calibration import check_max_positions
from .methods import LayerSolver, Method
from .registry import METHODS, get_method
from .modes import MODES
from .store import STORES, parse_size

__all__ = ["PruneConfig", "PRUNE_SOLVER_DEFAULTS", "REFITS"]

REFITS = (None, "relu")

# The pipeline's own solver defaults (the solver's are in solvers.AdmmSettings): each layer's
# budget met within 5 tol = 0.5% is ample for pruning, and takes 3-5x fewer ADMM iterations
# on hidden layers than the solver's default tol of 1e-4.
PRUNE_SOLVER_DEFAULTS: dict[str, dict[str, Any]] = {"admm": {"tol": 1e-3}, "cvxpy": {}}


def _run(default: Any = None, **kwargs: Any) -> Any:
    """A field that decides the pruned weights (part of the resume fingerprint)."""
    return field(default=default, metadata={"run": True}, **kwargs)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class PruneConfig:
    """Everything :func:`nettrim.prune` is told, validated when it is made.

    Attributes
    ----------
    method : str, default 'nettrim'
        A name of :data:`nettrim.METHODS`.
    mode : {'cascade', 'parallel'}, default 'cascade'
        How the layer programs are set up (:mod:`nettrim.modes`).
    epsilon : float, default 0.05
        Relative budget of each layer: ``epsilon_l = epsilon ||Y_l||_F`` on original signals.
    gamma : float, default 1.1
        Cascade slack ``>= 1``.
    sparsity : float or dict, optional
        Fraction of each layer's weights to remove instead of a budget (a dict: per layer,
        0 leaves a layer as it is). Required by methods other than ``'nettrim'``.
    layers : sequence of str, optional
        Qualified names of the layers to prune (default all).
    method_options : dict or the method's options object, optional
        Checked against the method's options (``Method.options``); stored as that object.
    refit : {None, 'relu'}, default None
        ``'relu'``: after the method, every layer is refitted on the support it chose,
        towards the original layer output on the input it was solved on (the pruned
        network's in cascade mode), active entries matched and inactive ones kept at or
        below 0 (:mod:`solvers.refit`). Layer methods only.
    allocate : {'auto', None, 'error'}, default 'auto'
        ``'error'``: ``sparsity`` (a fraction) is one target for the whole network, shared
        out among the layers by their error curves (:mod:`nettrim.allocation`; layer
        methods only). None: that fraction of every layer. ``'auto'``: ``'error'`` for
        the methods that share a network target by default (``Method.shares_sparsity``:
        Net-Trim) when ``sparsity`` is one fraction, None otherwise (the baselines as
        published). :attr:`allocation` is what it comes to.
    solver : {'admm', 'cvxpy'}, default 'admm'
    solver_options : dict, optional
        Options of :func:`solvers.solve`, on top of :data:`PRUNE_SOLVER_DEFAULTS`
        (:attr:`layer_solver` puts the two together).
    accept_infeasible : bool, default False
        Keep a layer's result even when its solve missed the program (default: the layer
        keeps its original weights).
    max_positions : int, 'auto' or None, default 'auto'
        At most this many rows per layer (a seeded subset). ``'auto'``: a convolution's
        program gets ``max(10_000, 16 * n_in)`` of its rows (one per output position of
        every input), a ``Linear``'s every row; an integer caps every layer; None keeps
        every row.
    seed : int, default 0
    executor : None, 'processes', dask.distributed.Client or str, optional
        Where the layer solves run (:mod:`nettrim.executors`).
    split : {None, 'neuron'}, default None
        One budget per output neuron (methods with a budget program, no ``sparsity``).
    progress : bool, default True
        Show a progress bar.
    store : {'memory', 'disk'}, default 'memory'
        Where the recorded activations are kept (:mod:`nettrim.store`).
    memory_budget : int or str, optional
        With ``store='disk'``: bytes kept in memory before the rest goes to disk.
    store_dir : str or PathLike, optional
        With ``store='disk'``: the directory of the files.
    work_dir : str or PathLike, optional
        Where every finished layer is kept (:mod:`nettrim.workdir`); layer methods only.
    resume : bool, default False
        Take up the finished layers of ``work_dir``.
    """

    method: str = _run("nettrim")
    mode: str = _run("cascade")
    epsilon: float = _run(0.05)
    gamma: float = _run(1.1)
    sparsity: float | Mapping[str, float] | None = _run(None)
    layers: tuple[str, ...] | None = None
    method_options: Any = _run(None)
    refit: str | None = _run(None)
    allocate: str | None = _run("auto")
    solver: str = _run("admm")
    solver_options: Mapping[str, Any] = _run(None)
    accept_infeasible: bool = _run(False)
    max_positions: int | str | None = _run("auto")
    seed: int = _run(0)
    split: str | None = _run(None)
    executor: Any = None
    progress: bool = True
    store: str = "memory"
    memory_budget: int | str | None = None
    store_dir: str | os.PathLike | None = None
    work_dir: str | os.PathLike | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        method = get_method(self.method)
        self._check_target()
        if self.solver not in SOLVERS:
            raise ValueError(f"solver: got {self.solver!r}, needs one of {SOLVERS}")
        if self.solver_options is not None and not isinstance(self.solver_options, Mapping):
            raise TypeError(f"solver_options: got {type(self.solver_options).__name__}, needs a dict")
        self._set("solver_options", dict(self.solver_options or {}))
        self._set("method_options", method.parse_options(self.method_options))
        if isinstance(self.sparsity, Mapping):
            self._set("sparsity", dict(self.sparsity))
        if self.layers is not None and not isinstance(self.layers, str):
            self._set("layers", tuple(self.layers))
        check_max_positions(self.max_positions)
        if self.refit not in REFITS:
            raise ValueError(f"refit: got {self.refit!r}, needs one of {REFITS}")
        if self.refit is not None and method.scope == "network":
            raise ValueError(f"refit: method {method.name!r} refits the next layer itself; leave refit out")
        if self.allocate not in ALLOCATIONS:
            raise ValueError(f"allocate: got {self.allocate!r}, needs one of {ALLOCATIONS}")
        if self.allocate == "error" and (method.scope == "network" or not _is_number(self.sparsity)):
            raise ValueError("allocate='error' shares one network target sparsity= (a fraction) among the layers "
                             "of a layer method; give sparsity=0.9, not a dict or None")
        if self.allocation == "error" and self.sparsity > GRID[-1]:  # before the recording, not after it
            raise ValueError(f"sparsity: got {self.sparsity!r}; allocate={self.allocate!r} shares a network target "
                             f"out among the layers up to {GRID[-1]}; for {self.sparsity!r} of every layer pass "
                             "allocate=None (CLI: --allocate none)")
        self._check_execution(method)
        method.check_target(self.sparsity)
        if method.budget_program and self.sparsity is None and self.epsilon >= 1:
            raise ValueError(f"epsilon: got {self.epsilon!r}; it is relative to each layer's ||Y_l||_F, and at 1 or "
                             "above the zero weights meet the budget of every layer solved on original signals, "
                             "so the network would be pruned away. Use a value below 1 (0.01 to 0.3 is usual), or sparsity= for a "
                             "fraction of weights to remove")

    @property
    def allocation(self) -> str | None:
        """What ``allocate`` comes to for this method and target: ``'error'`` or None."""
        if self.allocate != "auto":
            return self.allocate
        return "error" if get_method(self.method).shares_sparsity and _is_number(self.sparsity) else None

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalising a frozen field, in __post_init__ only

    def _check_target(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: got {self.mode!r}, needs one of {MODES}")
        epsilon, gamma, sparsity = self.epsilon, self.gamma, self.sparsity
        if not _is_number(epsilon) or not math.isfinite(epsilon) or epsilon < 0:
            raise ValueError(f"epsilon: got {epsilon!r}, needs a finite number >= 0 (relative to ||Y_l||_F, "
                             "e.g. 0.05)")
        if not _is_number(gamma) or not math.isfinite(gamma) or gamma < 1:
            raise ValueError(f"gamma: got {gamma!r}, needs a finite number >= 1 (cascade slack; 1.1 is usual)")
        if isinstance(sparsity, Mapping):  # per layer: 0 leaves a layer as it is
            for name, value in sparsity.items():
                if not _is_number(value) or not 0 <= value < 1:
                    raise ValueError(f"sparsity[{name!r}]: got {value!r}, needs a fraction of weights to remove "
                                     "in [0, 1)")
        elif sparsity is not None and (not _is_number(sparsity) or not 0 < sparsity < 1):
            raise ValueError(f"sparsity: got {sparsity!r}, needs a fraction of weights to remove in (0, 1)")

    def _check_execution(self, method: Method) -> None:
        if self.split not in (None, "neuron"):
            raise ValueError(f"split: got {self.split!r}, needs None (one budget per layer) or 'neuron' "
                             "(one per neuron)")
        if self.split == "neuron" and (not method.budget_program or self.sparsity is not None):
            budget_methods = " or ".join(f"method={m.name!r}" for m in METHODS.values()
                                      if m.budget_program and m.scope == "layer")
            raise ValueError(f"split='neuron' gives each neuron a share of the budget epsilon: it needs "
                             f"{budget_methods} and no sparsity=")
        if self.resume and self.work_dir is None:
            raise ValueError("resume=True needs work_dir=, the directory the interrupted run kept its layers in")
        if self.store not in STORES:
            raise ValueError(f"store: got {self.store!r}, needs one of {STORES}")
        if self.store == "memory" and (self.memory_budget is not None or self.store_dir is not None):
            raise ValueError("memory_budget and store_dir apply to store='disk' only")
        if self.memory_budget is not None:
            parse_size(self.memory_budget)
        if method.scope == "network":
            if self.split is not None:
                raise ValueError(f"split: method {method.name!r} gives each layer one budget; leave split out")
            if self.store != "memory":
                raise ValueError(f"store: method {method.name!r} works on the whole network and keeps its "
                                 "statistics in memory; leave store out")
            if self.work_dir is not None:
                raise ValueError(f"work_dir: method {method.name!r} removes neurons across the whole network in "
                                 "one piece and cannot be resumed; leave work_dir out")

    # ------------------------------------------------------------------ use
    @property
    def method_spec(self) -> Method:
        """The :class:`~nettrim.methods.Method` named by ``method``."""
        return get_method(self.method)

    @property
    def layer_solver(self) -> LayerSolver:
        """The solver every layer method gets: ``solver`` with the pipeline's defaults and
        ``solver_options`` on top."""
        return LayerSolver(self.solver, {**PRUNE_SOLVER_DEFAULTS[self.solver], **self.solver_options})

    def replace(self, **overrides: Any) -> "PruneConfig":
        """A new config with ``overrides`` (checked again; an unknown name is a TypeError)."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"prune() got an unexpected keyword argument {unknown[0]!r}; PruneConfig has "
                            f"{[f.name for f in dataclasses.fields(self)]}")
        if "method" in overrides and "method_options" not in overrides:  # options belong to their method
            overrides["method_options"] = None
        return dataclasses.replace(self, **overrides) if overrides else self

    def layer_sparsity(self, name: str) -> float | None:
        """The target sparsity of one layer (None: solve at the budget)."""
        if isinstance(self.sparsity, Mapping):
            return self.sparsity.get(name)
        return self.sparsity

    def run_settings(self, layers: Sequence[str]) -> dict[str, Any]:
        """The settings that decide the weights, for the resume fingerprint (``layers``: the
        layers actually pruned)."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("run")}
        options = settings["method_options"]
        settings["method_options"] = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        settings["layers"] = list(layers)
        settings["solver_options"] = dict(self.layer_solver.options)
        return settings
