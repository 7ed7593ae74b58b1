"""Where and in what pieces the layer solves run: whole layers, or blocks of neurons.

:func:`submit` hands one layer to an executor (:mod:`nettrim.executors`) and gives back a
future of ``(LayerOutcome, seconds)``, the seconds measured where the solve ran. A layer
with per-neuron budgets, on an executor with several workers, is cut into as many blocks
of output neurons as there are workers; the blocks share the layer's input, scaled and
factored once (:class:`solvers.admm.PreparedInput`), and come back as one future
(:class:`_Blocks`) whose outcome is the blocks' rows put together, with the violation
measured on the whole layer.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .executors import Executor
from .methods import LayerSolver, Method
from .types import LayerOutcome, LayerTask

__all__ = ["submit"]

Run = Callable[[Method, LayerTask, Any, LayerSolver, Any], LayerOutcome]


def _timed(run: Run, *args: Any) -> tuple[LayerOutcome, float]:
    """``run(*args)`` and the seconds it took (measured where it runs)."""
    started = time.perf_counter()
    return run(*args), time.perf_counter() - started


def _timed_block(run: Run, method: Method, task: LayerTask, index: np.ndarray, prepared: Any,
                 sparsity: float | None, solver: LayerSolver, options: Any) -> tuple[LayerOutcome, float]:
    """:func:`_timed` on the neurons ``index`` of ``task`` (cut where it runs, so that a
    task sent once to a worker serves every block), with the layer's ``prepared`` input
    (scaled and factored once for all blocks, and, like the task, sent to a worker once)."""
    if prepared is not None:
        solver = solver.with_options(prepared=prepared)
    return _timed(run, method, task.neurons(index), sparsity, solver, options)


def _prepared_input(task: LayerTask, solver: LayerSolver) -> Any:
    """The layer input scaled and factored once for its blocks (ADMM on numba/numpy), or None."""
    if solver.name != "admm" or solver.options.get("backend", "numba") == "torch":
        return None
    from solvers.admm import PreparedInput

    return PreparedInput(task.X, fit_bias=task.bias is not None, dtype=solver.options.get("dtype", task.X.dtype),
                         settings=solver.settings())


class _Blocks:
    """The blocks of neurons of one layer, solved apart, seen as one future."""

    def __init__(self, task: LayerTask, parts: list[tuple[np.ndarray, Any]]) -> None:
        self.task, self.parts = task, parts

    def done(self) -> bool:
        return all(future.done() for _, future in self.parts)

    def cancelled(self) -> bool:
        return any(future.cancelled() for _, future in self.parts)

    def exception(self) -> BaseException | None:
        return next((exc for exc in (future.exception() for _, future in self.parts) if exc is not None), None)

    def result(self) -> tuple[LayerOutcome, float]:
        """The layer's outcome: the blocks' rows put together, its violation measured on the
        whole layer, the wall time of the slowest block."""
        from solvers import LayerProblem

        task = self.task
        results = [(index, future.result()) for index, future in self.parts]
        weight = np.zeros(task.weight.shape, dtype=results[0][1][0].weight.dtype)
        bias = None if task.bias is None else np.zeros(task.bias.shape, dtype=weight.dtype)
        for index, (outcome, _) in results:
            weight[index] = outcome.weight
            if bias is not None:
                bias[index] = outcome.bias
        outcomes = [outcome for _, (outcome, _) in results]
        statuses = [outcome.status for outcome in outcomes]
        status = next((status for status in statuses if status not in ("optimal", "done")), statuses[0])
        problem = LayerProblem(task.X, task.Y, task.budget, relu=task.relu, upper=task.upper,
                               fit_bias=task.bias is not None)
        seconds = [elapsed for _, (_, elapsed) in results]
        info = {"per_neuron": True, "blocks": len(results), "block_seconds": sum(seconds),
                "factored_once": all(o.info.get("prepared", False) for o in outcomes),
                "primal_residual": max(o.info.get("primal_residual", float("nan")) for o in outcomes),
                "dual_residual": max(o.info.get("dual_residual", float("nan")) for o in outcomes)}
        merged = LayerOutcome(weight, bias, epsilon=task.layer_budget, status=status,
                              iterations=max(outcome.iterations for outcome in outcomes),
                              violation=problem.violation(weight, bias), info=info)
        return merged, max(seconds)


def submit(runner: Executor, run: Run, method: Method, task: LayerTask, sparsity: float | None,
           solver: LayerSolver, options: Any, split: bool) -> Any:
    """Send one layer to ``runner``: whole, or (``split``, per-neuron budgets) in one block
    of neurons per worker. Returns a future of ``(LayerOutcome, seconds)``."""
    blocks = min(runner.n_workers, task.weight.shape[0]) if split else 1
    if blocks == 1:
        return runner.submit(_timed, run, method, task, sparsity, solver, options)
    prepared = _prepared_input(task, solver)
    return _Blocks(task, [(index, runner.submit(_timed_block, run, method, task, index, prepared, sparsity, solver,
                                                options))
                          for index in np.array_split(np.arange(task.weight.shape[0]), blocks)])
