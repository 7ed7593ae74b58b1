"""The method protocol: what every pruning method declares, and the solver a layer method gets.

A method is a :class:`Method`: its ``name``, its ``scope`` (``"layer"``: one layer at a
time, through the pipeline's steps; ``"network"``: the whole model in one piece, like
CaP), whether it ``needs_sparsity``, whether it solves a budget program (then a layer may
be split by neuron), whether it uses the solver, and an options dataclass whose fields
are its options and whose ``__post_init__`` checks them. The pipeline, the CLI's choices
and ``--method-options``, resumability and split eligibility are all read from it.

A layer method's function has the signature
``prune_layer(task, *, sparsity, [solver,] **options) -> LayerOutcome``; a network
method's ``prune_network(model, calib, *, sparsity, options, layers, max_positions, seed,
progress) -> PruneResult``. Adding a method is a module with its function, its options
and its ``METHOD``, and one entry in :mod:`nettrim.registry`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from solvers import AdmmSettings, LayerProblem, Solution, solve, solve_at_sparsity

from ..types import LayerOutcome, LayerTask

__all__ = ["Method", "NoOptions", "LayerSolver", "require_sparsity", "LayerTask", "LayerOutcome"]

SCOPES = ("layer", "network")


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that takes none."""


def require_sparsity(name: str, sparsity: Any) -> None:
    """The error of a method that needs a target sparsity and was given none."""
    if sparsity is None:
        raise ValueError(f"method {name!r} needs sparsity= (the fraction of weights to remove)")


@dataclass(frozen=True)
class Method:
    """A pruning method, as the pipeline and the CLI see it.

    Attributes
    ----------
    name : str
    scope : {'layer', 'network'}
    run : callable
        ``prune_layer`` (layer scope) or ``prune_network`` (network scope).
    options : type
        A dataclass of the method's options (its defaults are the method's); constructing
        it checks them.
    needs_sparsity : bool
        Whether the method prunes to a target ``sparsity`` only (no budget program).
    budget_program : bool
        Whether it solves the budget program, so that each neuron can get its own budget
        (``split='neuron'``).
    uses_solver : bool
        Whether ``run`` takes the layer's :class:`LayerSolver`.
    shares_sparsity : bool
        Whether a network target ``sparsity`` is shared out among the layers by error by
        default (``PruneConfig(allocate='auto')``), instead of taken by every layer.
    """

    name: str
    scope: str
    run: Callable[..., Any]
    options: type = NoOptions
    needs_sparsity: bool = True
    budget_program: bool = False
    uses_solver: bool = False
    shares_sparsity: bool = False

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope: got {self.scope!r}, needs one of {SCOPES}")
        if self.shares_sparsity and self.scope != "layer":
            raise ValueError(f"shares_sparsity: method {self.name!r} has scope {self.scope!r}; only layer methods "
                             "have a sparsity to share out among the layers")

    @property
    def resumable(self) -> bool:
        """Whether a run keeps finished layers in a work directory (layer methods only)."""
        return self.scope == "layer"

    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)]

    def parse_options(self, given: Any) -> Any:
        """The options object for ``given`` (None, a mapping, or the options object itself)."""
        if isinstance(given, self.options):
            return given
        if given is None:
            return self.options()
        if not isinstance(given, Mapping):
            raise TypeError(f"method_options: got {type(given).__name__}, needs a dict")
        allowed = self.option_names()
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise ValueError(f"method_options: {unknown} are not options of method {self.name!r}; "
                             f"it takes {allowed or 'none'}")
        return self.options(**given)

    def check_target(self, sparsity: Any) -> None:
        """The error of a method that needs a sparsity and was given none."""
        if self.needs_sparsity:
            require_sparsity(self.name, sparsity)

    def prune_layer(self, task: LayerTask, sparsity: float | None, solver: "LayerSolver", options: Any
                    ) -> LayerOutcome:
        """Run a layer method on one task."""
        kwargs = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        if self.uses_solver:
            kwargs["solver"] = solver
        return self.run(task, sparsity=sparsity, **kwargs)


@dataclass(frozen=True)
class LayerSolver:
    """The solver a layer method calls: a name of :data:`solvers.METHODS` and its options,
    fixed for the layer (its dtype, and for a block of neurons the prepared input).

    ``options`` go to :func:`solvers.solve` as they are; :meth:`solve` adds the warm start
    and an iteration cap for one call.
    """

    name: str = "admm"
    options: Mapping[str, Any] = field(default_factory=dict)

    def settings(self) -> AdmmSettings:
        """The ADMM settings the options amount to (the solver's defaults elsewhere)."""
        base = self.options.get("settings") or AdmmSettings()
        return base.replace(**{key: value for key, value in self.options.items() if key in AdmmSettings.names()})

    @property
    def tol(self) -> float:
        return self.settings().tol

    @property
    def max_iter(self) -> int:
        return self.settings().max_iter

    def with_options(self, **options: Any) -> "LayerSolver":
        return dataclasses.replace(self, options={**self.options, **options})

    def for_task(self, task: LayerTask) -> "LayerSolver":
        """The ADMM iterates in the precision of the layer's input unless told otherwise."""
        if self.name != "admm" or "dtype" in self.options:
            return self
        return self.with_options(dtype=np.asarray(task.X).dtype)

    def at_sparsity(self, problem_at: Callable[[float], LayerProblem], sparsity: float, epsilon: float, *,
                    warm_start: Any = None, **path_options: Any) -> Solution:
        """:func:`solvers.path.solve_at_sparsity` with this solver (the ADMM warm-started)."""
        options = dict(self.options)
        if self.name == "admm":
            options = {"warm_start": warm_start, **options}
        return solve_at_sparsity(problem_at, sparsity, epsilon, method=self.name, **path_options, **options)

    def solve(self, problem: LayerProblem, *, warm_start: Any = None, max_iter: int | None = None) -> Solution:
        options = dict(self.options)
        if self.name == "admm":
            options = {"warm_start": warm_start, **options}
            if max_iter is not None:
                options["max_iter"] = max_iter
        return solve(problem, method=self.name, **options)
