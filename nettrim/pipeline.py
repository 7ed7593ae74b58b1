"""The network-level loop: record, build each layer's program for the mode, prune, write back.

Modes (``../shared/DESIGN.md`` §1):

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
"""
from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from solvers import METHODS as SOLVERS

from .methods import NETWORK_METHODS, LayerOutcome, LayerTask, check_method_options, get_method
from .methods import cap
from .graph import analyse
from .record import (LayerRecord, calibration_batches, capture_inputs, check_max_positions, layer_handles,
                     left_dense, record_layers)
from .result import LayerReport, PruneResult
from .executors import open_executor
from .store import ActivationStore
from .workdir import WorkDir, fingerprint

__all__ = ["prune", "MODES"]

logger = logging.getLogger(__name__)

MODES = ("cascade", "parallel")
# Each layer's budget met within 5 tol = 0.5%: ample for pruning, and 3-5x fewer ADMM
# iterations on hidden layers than the solver's own default (1e-4).
ADMM_DEFAULTS = {"tol": 1e-3}
_BLOCK_ROWS = 16384  # rows of the float64 products formed at once
_REJECT_FACTOR = 10.0  # a result whose violation exceeds this times tol is not accepted by default


def _check_settings(method: str, mode: str, epsilon: float, gamma: float, sparsity: Any, solver: str,
                    solver_options: Any) -> None:
    get_method(method)
    if mode not in MODES:
        raise ValueError(f"mode: got {mode!r}, needs one of {MODES}")
    if solver not in SOLVERS:
        raise ValueError(f"solver: got {solver!r}, needs one of {SOLVERS}")
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not math.isfinite(epsilon) \
            or epsilon < 0:
        raise ValueError(f"epsilon: got {epsilon!r}, needs a finite number >= 0 (relative to ||Y_l||_F, "
                         "e.g. 0.05)")
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not math.isfinite(gamma) or gamma < 1:
        raise ValueError(f"gamma: got {gamma!r}, needs a finite number >= 1 (cascade slack; 1.1 is usual)")
    if isinstance(sparsity, Mapping):  # per layer: 0 leaves a layer as it is
        for name, value in sparsity.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise ValueError(f"sparsity[{name!r}]: got {value!r}, needs a fraction of weights to remove "
                                 "in [0, 1)")
    elif sparsity is not None and (not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool)
                                   or not 0 < sparsity < 1):
        raise ValueError(f"sparsity: got {sparsity!r}, needs a fraction of weights to remove in (0, 1)")
    if solver_options is not None and not isinstance(solver_options, Mapping):
        raise TypeError(f"solver_options: got {type(solver_options).__name__}, needs a dict")


def _layer_sparsity(sparsity: Any, name: str) -> float | None:
    if isinstance(sparsity, Mapping):
        return sparsity.get(name)
    return sparsity


def _relative(diff: torch.Tensor, reference: torch.Tensor) -> float:
    norm = float(torch.linalg.vector_norm(reference))
    value = float(torch.linalg.vector_norm(diff))
    return value / norm if norm > 0 else value


def _network_outputs(model: nn.Module, batches: Sequence[torch.Tensor]) -> torch.Tensor | None:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters()), torch.get_default_dtype())
    outputs = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                out = model(x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype))
                if not isinstance(out, torch.Tensor):
                    return None
                outputs.append(out.detach().double().cpu().reshape(len(out), -1))
    finally:
        model.train(was_training)
    return torch.cat(outputs)


def _output_error(model: nn.Module, batches: Sequence[torch.Tensor], reference: torch.Tensor | None) -> float | None:
    """Relative error of ``model``'s outputs against ``reference`` (None without a reference)."""
    if reference is None:
        return None
    outputs = _network_outputs(model, batches)
    return None if outputs is None else _relative(outputs - reference, reference)


def _task(rec: LayerRecord, X: torch.Tensor, mode: str, epsilon: float, gamma: float,
          input_changed: bool, per_neuron: bool = False) -> LayerTask:
    """The layer program for the mode (see the module docstring).

    With ``per_neuron`` every output neuron gets its own budget, ``epsilon ||Y_m||`` on
    original signals and ``sqrt(gamma) e_m`` in cascade mode; the squares add up to the
    layer budget of the same mode, so the layer guarantee is kept.
    """
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
    for start in range(0, X.shape[0], _BLOCK_ROWS):  # float64 temporaries of a block of rows only
        rows = slice(start, start + _BLOCK_ROWS)
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


def _errors(rec: LayerRecord, X: torch.Tensor, weight: np.ndarray, bias: np.ndarray | None) -> tuple[float, float]:
    """Relative errors of the layer's pre-activation and output, ``_BLOCK_ROWS`` rows at a time."""
    weight_t = torch.from_numpy(np.asarray(weight, dtype=np.float64)).T
    sums = torch.zeros(4, dtype=torch.float64)  # ||dZ||^2, ||Z||^2, ||dY||^2, ||Y||^2
    for start in range(0, X.shape[0], _BLOCK_ROWS):
        rows = slice(start, start + _BLOCK_ROWS)
        pre = X[rows].double() @ weight_t
        if bias is not None:
            pre += torch.from_numpy(np.asarray(bias, dtype=np.float64))
        reference = rec.pre_activation[rows]
        out, target = (torch.clamp_min(pre, 0.0), torch.clamp_min(reference, 0.0)) if rec.relu else (pre, reference)
        sums += torch.stack([((pre - reference) ** 2).sum(), (reference ** 2).sum(),
                             ((out - target) ** 2).sum(), (target ** 2).sum()])
    roots = sums.sqrt().tolist()
    return (roots[0] / roots[1] if roots[1] > 0 else roots[0]), (roots[2] / roots[3] if roots[3] > 0 else roots[2])


def _run_method(prune_layer, task: LayerTask, sparsity: float | None, solver: str,
                options: dict[str, Any], method_options: Mapping[str, Any]) -> LayerOutcome:
    """One layer through the method; a per-layer sparsity of 0 leaves the layer as it is."""
    if sparsity == 0:
        return LayerOutcome(task.weight.copy(), None if task.bias is None else task.bias.copy(),
                            epsilon=float("nan"), status="skipped")
    options = dict(options)
    if solver == "admm":  # iterate in the model's precision unless told otherwise
        options.setdefault("dtype", task.X.dtype)
    return prune_layer(task, sparsity=sparsity, solver=solver, solver_options=options, **method_options)


def _unconverged(outcome: LayerOutcome, options: Mapping[str, Any]) -> bool:
    """A solved layer that misses its program by more than the solver's tolerance allows."""
    if outcome.status in ("optimal", "done", "skipped") or math.isnan(outcome.violation):
        return False
    return outcome.violation > _REJECT_FACTOR * float(options.get("tol", 1e-4))


def _keep_original(task: LayerTask, rejected: LayerOutcome) -> LayerOutcome:
    """The original weights in place of a result that misses its program (they meet the
    mode's budget by construction: violation 0)."""
    info = {**rejected.info, "solver_status": rejected.status, "rejected_violation": rejected.violation,
            "rejected_nnz": int(np.count_nonzero(rejected.weight))}
    return LayerOutcome(task.weight.copy(), None if task.bias is None else task.bias.copy(), epsilon=rejected.epsilon,
                        status=f"kept original ({rejected.status})", iterations=rejected.iterations,
                        violation=0.0, info=info)


def _timed(run: Any, *args: Any) -> tuple[LayerOutcome, float]:
    """``run(*args)`` and the seconds it took (measured where it runs)."""
    started = time.perf_counter()
    return run(*args), time.perf_counter() - started


def _timed_block(run: Any, prune_layer: Any, task: LayerTask, index: np.ndarray, prepared: Any,
                 sparsity: float | None, solver: str, options: dict[str, Any], method_options: Mapping[str, Any]
                 ) -> tuple[LayerOutcome, float]:
    """:func:`_timed` on the neurons ``index`` of ``task`` (cut where it runs, so that a
    task sent once to a worker serves every block), with the layer's ``prepared`` input
    (scaled and factored once for all blocks) when there is one."""
    if prepared is not None:
        options = {**options, "prepared": prepared}
    return _timed(run, prune_layer, task.neurons(index), sparsity, solver, options, method_options)


def _prepared_input(task: LayerTask, solver: str, options: Mapping[str, Any]) -> Any:
    """The layer input scaled and factored once for its blocks (ADMM on numba/numpy)."""
    if solver != "admm" or options.get("backend", "numba") == "torch":
        return None
    from solvers.admm import PreparedInput

    return PreparedInput(task.X, fit_bias=task.bias is not None, dtype=options.get("dtype", task.X.dtype))


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


def _log_layer(name: str, rec: LayerRecord, report: LayerReport, outcome: LayerOutcome) -> None:
    logger.info("%s: kept %.1f%% of %s, epsilon %.4g (rel %.4f), %s after %d iterations, %.2fs",
                name, 100 * report.kept, "x".join(map(str, rec.shape)), report.epsilon,
                report.epsilon_rel, outcome.status, outcome.iterations, report.seconds)
    if outcome.status.startswith("kept original"):
        logger.warning("layer %r: the solver did not meet the layer's program (%s, violation %.2e); "
                       "the layer keeps its original weights (accept_infeasible=True keeps the "
                       "result instead)", name, outcome.info["solver_status"], outcome.info["rejected_violation"])
    elif outcome.status not in ("optimal", "done", "skipped"):
        logger.warning("layer %r: solver ended with status %r (violation %.2e); its result is "
                       "kept, check the report", name, outcome.status, outcome.violation)


def _report(rec: LayerRecord, task: LayerTask, X: torch.Tensor, outcome: LayerOutcome, method: str,
            seconds: float) -> LayerReport:
    error_pre, error_out = _errors(rec, X, outcome.weight, outcome.bias)
    scale = task.scale
    return LayerReport(
        name=rec.name, kind=rec.kind, shape=rec.shape, relu=rec.relu, n_samples=rec.n_samples,
        nnz_before=int(torch.count_nonzero(rec.weight)), nnz_after=int(np.count_nonzero(outcome.weight)),
        epsilon=outcome.epsilon, epsilon_rel=outcome.epsilon / scale if scale > 0 else float("nan"),
        error_pre=error_pre, error_out=error_out, iterations=outcome.iterations, status=outcome.status,
        violation=outcome.violation, seconds=seconds, method=method, info=outcome.info)


def prune(
    model: nn.Module,
    calib: Any,
    *,
    method: str = "nettrim",
    mode: str = "cascade",
    epsilon: float = 0.05,
    gamma: float = 1.1,
    sparsity: float | Mapping[str, float] | None = None,
    layers: Sequence[str] | None = None,
    solver: str = "admm",
    solver_options: Mapping[str, Any] | None = None,
    method_options: Mapping[str, Any] | None = None,
    accept_infeasible: bool = False,
    progress: bool = True,
    max_positions: int | None = None,
    seed: int = 0,
    work_dir: str | os.PathLike | None = None,
    resume: bool = False,
    executor: Any = None,
    split: str | None = None,
    store: str = "memory",
    memory_budget: int | str | None = None,
    store_dir: str | os.PathLike | None = None,
) -> PruneResult:
    """Prune a trained network layer by layer.

    Parameters
    ----------
    model : nn.Module
        The trained network (``nn.Sequential`` or any ``torch.fx``-traceable model). It is
        not modified: the pruned network is a copy.
    calib : Tensor, ndarray or iterable of batches
        Calibration inputs (a tensor, or batches ``x`` / ``(x, y)`` as a DataLoader yields).
    method : {'nettrim', 'magnitude', 'lobs', 'sparsegpt', 'cap'}, default 'nettrim'
        ``'nettrim'`` solves the convex program; the others need ``sparsity``. ``'cap'``
        removes whole neurons (``sparsity`` is then the fraction of each layer's neurons,
        or ``method_options={"accuracy_floor": a, "validation": (x, y)}``) and refits the
        next layer; its model is physically smaller.
    mode : {'cascade', 'parallel'}, default 'cascade'
        See :mod:`nettrim.pipeline`.
    epsilon : float, default 0.05
        Relative budget: a layer solved on original signals gets ``epsilon * ||Y_l||_F``.
    gamma : float, default 1.1
        Cascade slack (``>= 1``): ``epsilon_l^2 = gamma * e_l^2`` for the later layers.
    sparsity : float or dict, optional
        Fraction of each layer's weights to remove (or one per layer name). With Net-Trim,
        each layer's ``epsilon`` is then searched so that the result lands within one point
        of the target; ``epsilon`` and ``gamma`` are only the starting point.
    layers : list of str, optional
        The layers to prune (qualified names; default every ``Linear`` and ``Conv2d``).
    solver : {'admm', 'cvxpy'}, default 'admm'
    solver_options : dict, optional
        Passed to :func:`solvers.solve` (``tol``, ``max_iter``, ...). Unless told otherwise
        the ADMM runs with ``tol=1e-3`` (:data:`ADMM_DEFAULTS`; each layer's constraints are
        then met within 0.5% of its budget, ``violation <= 5e-3``) and iterates in the
        model's precision (``dtype`` float32 for a float32 model); objectives and violations
        are always evaluated in float64.
    method_options : dict, optional
        Options of the method: ``refit`` (nettrim), ``faithful``, ``damping`` (lobs),
        ``blocksize``, ``damping`` (sparsegpt), ``accuracy_floor``, ``validation``,
        ``ridge`` (cap).
    accept_infeasible : bool, default False
        With a budget (no ``sparsity``), a layer whose solve ends without meeting its
        program (violation above 10 times the solver's ``tol``) keeps its ORIGINAL weights
        and the report says so (status ``"kept original (max_iter)"``, with the rejected
        violation in ``info``). True keeps such results instead.
    progress : bool, default True
        Show a progress bar over the layers.
    max_positions : int, optional
        At most this many rows per layer program (seeded subsample; see :func:`nettrim.record`).
    seed : int, default 0
        Seed of that subsample.
    work_dir : str or PathLike, optional
        A directory where every layer is kept as soon as it is finished (see
        :mod:`nettrim.workdir`), so that a run that stops (Ctrl-C, a kill, a crash) loses
        at most the layer it was solving. Not for ``method='cap'``.
    resume : bool, default False
        Take up the finished layers found in ``work_dir`` and go on from the first
        unfinished one. The run must have the same model, calibration data and settings
        (checked); the weights are then bit-identical to an uninterrupted run's.
    executor : None, 'processes', dask.distributed.Client or str, optional
        Where the layer solves run (:mod:`nettrim.executors`): in this process (None), a
        local pool of processes, a Dask cluster, or a Dask scheduler address
        (``"tcp://host:8786"``). In parallel mode the layers are solved side by side; in
        cascade mode one after the other (each needs the previous one's weights). The
        weights equal the in-process run's to the solver's tolerance.
    split : {None, 'neuron'}, default None
        ``'neuron'`` gives every output neuron its own budget (``epsilon ||Y_m||`` on
        original signals, ``sqrt(gamma) e_m`` in cascade mode; their squares add up to the
        layer budget, so the layer guarantee holds) and, with an ``executor``, cuts each
        layer into as many blocks of neurons as there are workers, solved side by side
        (in cascade mode too). Net-Trim with a budget only (no ``sparsity``).
    store : {'memory', 'disk'}, default 'memory'
        Where the recorded activations of every layer are kept (:mod:`nettrim.store`).
        ``'disk'``: memory-mapped files, so that only the layer being solved is held in
        memory (calibration sets larger than memory).
    memory_budget : int or str, optional
        With ``store='disk'``: bytes of activations kept in memory before the rest goes to
        disk (``"2GiB"``; default 0, all on disk).
    store_dir : str or PathLike, optional
        With ``store='disk'``: the directory of the files (default: a temporary directory,
        removed when the run ends).

    Returns
    -------
    PruneResult
    """
    _check_settings(method, mode, epsilon, gamma, sparsity, solver, solver_options)
    check_method_options(method, method_options)
    check_max_positions(max_positions)
    if split not in (None, "neuron"):
        raise ValueError(f"split: got {split!r}, needs None (one budget per layer) or 'neuron' (one per neuron)")
    if split == "neuron" and (method != "nettrim" or sparsity is not None):
        raise ValueError("split='neuron' gives each neuron a share of the budget epsilon: it needs method='nettrim' "
                         "and no sparsity=")
    if resume and work_dir is None:
        raise ValueError("resume=True needs work_dir=, the directory the interrupted run kept its layers in")
    if method in NETWORK_METHODS:
        if store != "memory":
            raise ValueError(f"store: method {method!r} keeps its statistics in memory; leave store out")
        if work_dir is not None:
            raise ValueError(f"work_dir: method {method!r} removes neurons across the whole network in one "
                             "piece and cannot be resumed; leave work_dir out")
        return _prune_network(model, calib, method=method, sparsity=sparsity, layers=layers,
                              method_options=dict(method_options or {}), progress=progress,
                              max_positions=max_positions, seed=seed)
    prune_layer = get_method(method)
    options = {**(ADMM_DEFAULTS if solver == "admm" else {}), **(solver_options or {})}
    started = time.perf_counter()
    batches = calibration_batches(calib)
    pruned = copy.deepcopy(model)
    followers = analyse(pruned)
    dense = left_dense(pruned, layers, followers)
    found = layer_handles(pruned, layers, followers)
    if isinstance(sparsity, Mapping) and set(sparsity) - set(found):
        raise ValueError(f"sparsity: names {sorted(set(sparsity) - set(found))} are not among the layers being "
                         f"pruned {list(found)}")
    layer_files = None
    if work_dir is not None:
        settings = {"method": method, "mode": mode, "epsilon": epsilon, "gamma": gamma, "sparsity": sparsity,
                    "layers": list(found), "solver": solver, "solver_options": options,
                    "method_options": method_options or {}, "accept_infeasible": accept_infeasible,
                    "max_positions": max_positions, "seed": seed, "split": split}
        layer_files = WorkDir(work_dir, fingerprint(model, batches, settings), resume=resume)
    activations = ActivationStore(store, memory_budget, store_dir)
    try:
        originals = record_layers(pruned, batches, found, max_positions=max_positions, seed=seed, store=activations)
    except BaseException:
        activations.close()
        raise
    if activations.on_disk:
        logger.info("activations: %s", activations)
    reference_out = _network_outputs(pruned, batches)

    reports: dict[str, LayerReport] = {}
    outcomes = {}
    restored = layer_files.finished(list(originals)) if layer_files is not None and resume else {}
    if restored:
        logger.info("resuming from %s: %d of %d layers already finished", work_dir, len(restored), len(originals))
    runner = open_executor(executor)
    if executor is not None:
        logger.info("layers solved on %s", runner.description)
    bar = tqdm(total=len(originals), desc=f"{method} {mode}", unit="layer", disable=not progress, leave=False)

    def finish(index: int, name: str, task: LayerTask, X: torch.Tensor, future: Any, prepared: float) -> None:
        """Take a layer's outcome: check it, write it (cascade), report, keep it (work_dir)."""
        rec, handle = originals[name], found[name][0]
        outcome, solve_seconds = future.result()
        if _layer_sparsity(sparsity, name) is None and not accept_infeasible and _unconverged(outcome, options):
            outcome = _keep_original(task, outcome)
        if mode == "cascade":  # the next layers see this one pruned
            handle.write(torch.from_numpy(outcome.weight),
                         None if outcome.bias is None else torch.from_numpy(outcome.bias))
        if handle.activation:
            outcome.info["activation"] = handle.activation
        report = _report(rec, task, X, outcome, method, prepared + solve_seconds)
        reports[name], outcomes[name] = report, outcome
        if layer_files is not None:
            layer_files.save(index, outcome, report)
        bar.update(1)
        bar.set_postfix_str(f"{name} kept {report.kept:.1%} {outcome.status} {outcome.iterations} it")
        _log_layer(name, rec, report, outcome)
        activations.drop_resident()

    try:
        pending = []
        for index, (name, rec) in enumerate(originals.items()):
            layer_started = time.perf_counter()
            handle, _ = found[name]
            if name in restored:
                outcome, reports[name] = restored[name]
                outcomes[name] = outcome
                if mode == "cascade":
                    handle.write(torch.from_numpy(outcome.weight),
                                 None if outcome.bias is None else torch.from_numpy(outcome.bias))
                bar.update(1)
                continue
            bar.set_postfix_str(f"{name} {rec.n_samples}x{rec.n_in}x{rec.n_out}")
            if mode == "cascade":
                X = capture_inputs(pruned, batches, {name: handle}, max_positions=max_positions,
                                   seed=seed, stop_early=True)[name][0]
                changed = not torch.equal(X, rec.input)
            else:
                X, changed = rec.input, False
            task = _task(rec, X, mode, epsilon, gamma, changed, per_neuron=split == "neuron")
            activations.drop_resident()  # the task holds what the solve needs
            arguments = (_layer_sparsity(sparsity, name), solver, options, method_options or {})
            prepared_seconds = time.perf_counter() - layer_started  # the solve is timed where it runs
            blocks = min(runner.n_workers, rec.n_out) if split == "neuron" else 1
            if blocks > 1:
                prepared = _prepared_input(task, solver, options)
                future = _Blocks(task, [(index, runner.submit(_timed_block, _run_method, prune_layer, task, index,
                                                              prepared, *arguments))
                                        for index in np.array_split(np.arange(rec.n_out), blocks)])
            else:
                future = runner.submit(_timed, _run_method, prune_layer, task, *arguments)
            pending.append((index, name, task, X, future, prepared_seconds))
            if mode == "cascade" or executor is None:  # the next layer needs this one's weights / nothing to gain
                finish(*pending.pop())
                runner.release()
        while pending:  # parallel mode on an executor: the layers were solved side by side
            finish(*pending.pop(0))
    except KeyboardInterrupt:
        for item in pending:  # keep what the workers had finished
            if item[4].done() and not item[4].cancelled() and item[4].exception() is None:
                finish(*item)
        if layer_files is not None:
            logger.warning("interrupted with %d of %d layers finished, kept in %s; prune(..., work_dir=%r, "
                           "resume=True) goes on from there", len(reports), len(originals), work_dir, str(work_dir),
                           extra={"nettrim_interrupted": True})
        raise
    finally:
        bar.close()
        runner.close()
        originals.clear()  # drop the mapped arrays before their files go
        activations.close()

    if mode == "parallel":  # every layer was solved on original signals: write them all now
        for name, outcome in outcomes.items():
            found[name][0].write(torch.from_numpy(outcome.weight),
                                 None if outcome.bias is None else torch.from_numpy(outcome.bias))

    output_error = _output_error(pruned, batches, reference_out)
    result = PruneResult(model=pruned, layers=reports, method=method, mode=mode, epsilon=float(epsilon),
                         gamma=float(gamma), sparsity=dict(sparsity) if isinstance(sparsity, Mapping) else sparsity,
                         n_calibration=sum(int(x.shape[0]) for x in batches), output_error=output_error,
                         seconds=time.perf_counter() - started, left_dense=dense)
    logger.info("pruned %d layers in %s mode: %.1f%% of the weights kept, output error %s, %.2fs",
                len(reports), mode, 100 * result.kept, output_error, result.seconds)
    return result


def _prune_network(model: nn.Module, calib: Any, *, method: str, sparsity: Any, layers: Sequence[str] | None,
                   method_options: dict[str, Any], progress: bool, max_positions: int | None,
                   seed: int) -> PruneResult:
    """Methods that remove whole neurons (CaP): the model comes out physically smaller."""
    from .examples import accuracy

    if layers is not None:
        raise ValueError(f"method {method!r} works on the whole network; layers= is not supported")
    if isinstance(sparsity, Mapping):
        raise ValueError(f"method {method!r}: sparsity is one fraction of neurons for every layer, not a dict")
    if (sparsity is None) == ("accuracy_floor" not in method_options):
        raise ValueError(f"method {method!r} needs sparsity= (fraction of neurons to remove) or "
                         "method_options={'accuracy_floor': a, 'validation': (x, y)}, one of the two")
    started = time.perf_counter()
    batches = calibration_batches(calib)
    pruned = copy.deepcopy(model)
    found = layer_handles(pruned, None)
    handles = {name: handle for name, (handle, _) in found.items()}
    order = list(capture_inputs(pruned, batches[:1], handles, max_positions=1))
    before = {name: (tuple(handle.module.weight.shape), int(torch.count_nonzero(handle.module.weight)))
              for name, handle in handles.items()}
    reference_out = _network_outputs(pruned, batches)
    bar = tqdm(total=len(order), desc=f"{method}", unit="layer", disable=not progress, leave=False)
    try:
        outcome = cap.prune_network(
            pruned, batches, order, {name: handle.batchnorm_name for name, handle in handles.items()},
            sparsity=sparsity, accuracy_floor=method_options.get("accuracy_floor"),
            validation=method_options.get("validation"), accuracy=accuracy,
            ridge=method_options.get("ridge", 1e-8), max_positions=max_positions, seed=seed,
            progress=lambda name: bar.update(1))
    finally:
        bar.close()
    modules = dict(pruned.named_modules())
    consumers = {info["consumer"]: producer for producer, info in outcome.items()}
    reports: dict[str, LayerReport] = {}
    for name in order:
        if name not in outcome and name not in consumers:
            continue
        shape, nnz_before = before[name]
        weight = modules[name].weight
        info: dict[str, Any] = {"shape_after": "x".join(map(str, weight.shape))}
        error = float("nan")
        if name in outcome:
            info.update(neurons_before=outcome[name]["neurons_before"], neurons_after=outcome[name]["neurons_after"],
                        kept_neurons=outcome[name]["kept"])
        if name in consumers:
            error = outcome[consumers[name]]["error"]
            info["refitted_for"] = consumers[name]
        seconds = outcome[name]["seconds"] if name in outcome else 0.0
        reports[name] = LayerReport(
            name=name, kind="conv2d" if isinstance(modules[name], nn.Conv2d) else "linear", shape=shape,
            relu=found[name][1], n_samples=0, nnz_before=nnz_before, nnz_after=int(torch.count_nonzero(weight)),
            epsilon=float("nan"), epsilon_rel=float("nan"), error_pre=error, error_out=error, iterations=0,
            status="done", violation=float("nan"), seconds=seconds, method=method, info=info)
    output_error = _output_error(pruned, batches, reference_out)
    result = PruneResult(model=pruned, layers=reports, method=method, mode="neurons", epsilon=float("nan"),
                         gamma=float("nan"), sparsity=sparsity if sparsity is not None else
                         {"accuracy_floor": method_options["accuracy_floor"]},
                         n_calibration=sum(int(x.shape[0]) for x in batches), output_error=output_error,
                         seconds=time.perf_counter() - started)
    logger.info("%s: %d layers cut down, %.1f%% of their weights kept, output error %s", method, len(reports),
                100 * result.kept, output_error)
    return result
