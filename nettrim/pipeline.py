"""The network-level loop: :func:`prune` as a short loop over small, named steps.

For a layer method, :func:`prune` runs

1. :func:`record_run`: copy the model, find its layers, open the work directory and the
   activation store, record every layer's input and pre-activation, weigh each layer's
   neurons by how much the next layer reads them (:mod:`nettrim.consumers`) (and, with
   ``allocate='error'``, share the network's sparsity out among the layers);
2. per layer, in the order they run: :func:`build_task` (the layer program of the mode,
   :mod:`nettrim.modes`, on the original or the pruned network's input), then the solve
   (:func:`_run_method`, sent to the executor by :mod:`nettrim.schedule`);
3. per finished layer, :func:`finish_layer`: :func:`accept` (a result that misses its
   program gives way to the original weights), :func:`refit` (``refit='relu'``: the
   ReLU-aware fit on the support), :func:`write_back`, :func:`layer_report` and
   :func:`persist` (the work directory);
4. :func:`assemble`: the parallel mode's weights written back, the network's output
   error, the :class:`~nettrim.result.PruneResult`.

A network method (CaP) runs in one piece (``Method.run``). The settings are one
:class:`~nettrim.config.PruneConfig`.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import neuron_choice, schedule
from .calibration import calibration_batches
from .config import PruneConfig
from .consumers import consumer_importance
from .executors import Executor, open_executor
from .graph import analyse
from .layers import LayerHandle
from .measure import layer_errors, network_outputs, output_error
from .methods import LayerSolver, Method
from .modes import MODES, layer_task
from .prunable import layer_handles, left_dense
from .record import LayerRecord, capture_inputs, record_layers
from .result import PruneResult
from .sanity import suggest_sampling, zero_weights_error, zero_weights_feasible
from .store import ActivationStore
from .types import SETTLED, SKIPPED, LayerOutcome, LayerReport, LayerTask, is_kept_original, kept_original
from .workdir import WorkDir, fingerprint

__all__ = ["prune", "MODES", "PruneInterrupted"]

logger = logging.getLogger(__name__)

_REJECT_FACTOR = 10.0  # a result whose violation exceeds this times tol is not accepted by default


class PruneInterrupted(KeyboardInterrupt):
    """Ctrl-C (or another KeyboardInterrupt) during :func:`prune`, after ``finished`` of
    ``total`` layers; with a ``work_dir`` they are kept there and ``resume=True`` goes on."""

    def __init__(self, finished: int, total: int, work_dir: Any = None) -> None:
        self.finished, self.total, self.work_dir = finished, total, work_dir
        where = (f", kept in {work_dir}; prune(..., work_dir={str(work_dir)!r}, resume=True) goes on from there"
                 if work_dir is not None else "")
        super().__init__(f"interrupted with {finished} of {total} layers finished{where}")


@dataclass
class _Run:
    """The state of one prune: the pruned copy, its layers and their records, where
    finished layers go, and what has been reported so far."""

    config: PruneConfig
    pruned: nn.Module
    batches: list[torch.Tensor]
    handles: dict[str, tuple[LayerHandle, bool]]
    dense: dict[str, str]
    records: dict[str, LayerRecord]
    store: ActivationStore
    work_dir: WorkDir | None
    reference_out: torch.Tensor | None
    restored: dict[str, tuple[LayerOutcome, LayerReport]]
    importance: dict[str, np.ndarray]
    reports: dict[str, LayerReport] = field(default_factory=dict)
    outcomes: dict[str, LayerOutcome] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds of the phases (PruneResult.timings)

    def close(self) -> None:
        self.records.clear()  # drop the mapped arrays before their files go
        self.store.close()


@dataclass
class _Pending:
    """A layer sent to the executor, with what its report needs."""

    index: int
    name: str
    task: LayerTask
    X: torch.Tensor
    future: Any
    prepared_seconds: float


# ------------------------------------------------------------------------ steps
def record_run(model: nn.Module, calib: Any, config: PruneConfig) -> _Run:
    """Step 1: the pruned copy, its layers, the work directory, the recorded signals."""
    started = time.perf_counter()
    batches = calibration_batches(calib)
    pruned = copy.deepcopy(model)
    followers = analyse(pruned)
    dense = left_dense(pruned, config.layers, followers)
    found = layer_handles(pruned, config.layers, followers)
    if isinstance(config.sparsity, dict) and set(config.sparsity) - set(found):
        raise ValueError(f"sparsity: names {sorted(set(config.sparsity) - set(found))} are not among the layers "
                         f"being pruned {list(found)}")
    work_dir = None
    if config.work_dir is not None:
        work_dir = WorkDir(config.work_dir, fingerprint(model, batches, config.run_settings(found)),
                           resume=config.resume)
    store = ActivationStore(config.store, config.memory_budget, config.store_dir)
    try:
        records = record_layers(pruned, batches, found, max_positions=config.max_positions, seed=config.seed,
                                store=store)
    except BaseException:
        store.close()
        raise
    if store.on_disk:
        logger.info("activations: %s", store)
    suggest_sampling(records, config.max_positions)
    importance = consumer_importance(pruned, records)
    reference_out = network_outputs(pruned, batches)
    timings = {"record": time.perf_counter() - started}
    if config.allocation is not None:
        started = time.perf_counter()
        config = _allocated(config, records, importance)
        timings["share_out"] = time.perf_counter() - started
    restored = work_dir.finished(list(records)) if work_dir is not None and config.resume else {}
    if restored:
        logger.info("resuming from %s: %d of %d layers already finished", config.work_dir, len(restored),
                    len(records))
    return _Run(config, pruned, batches, found, dense, records, store, work_dir, reference_out, restored, importance,
                timings=timings)


def _allocated(config: PruneConfig, records: dict[str, LayerRecord],
               importance: dict[str, np.ndarray]) -> PruneConfig:
    """Step 1b (``allocate='error'``, Net-Trim's ``'auto'``): the network target shared out
    among the layers, each neuron's error weighted by how much the next layer reads it."""
    from .allocation import share_out

    shares = share_out(records, float(config.sparsity), importance=importance)
    logger.info("sparsity %s shared out by error: %s", config.sparsity,
                ", ".join(f"{name} {share:.3f}" for name, share in shares.items()))
    return config.replace(sparsity=shares, allocate=None)


def build_task(run: _Run, name: str) -> tuple[LayerTask, torch.Tensor]:
    """Step 2: the layer program of the mode, and the input it is solved on."""
    config, rec = run.config, run.records[name]
    if config.mode == "cascade":
        handle = run.handles[name][0]
        X = capture_inputs(run.pruned, run.batches, {name: handle}, max_positions=config.max_positions,
                           seed=config.seed, stop_early=True)[name][0]
        changed = not torch.equal(X, rec.input)
    else:
        X, changed = rec.input, False
    task = layer_task(rec, X, config.mode, config.epsilon, config.gamma, changed, per_neuron=config.split == "neuron")
    task = replace(task, importance=run.importance.get(name))
    if config.method_spec.budget_program and config.layer_sparsity(name) is None and zero_weights_feasible(task):
        logger.warning("layer %r: its bias alone meets the budget %.4g (%.4f of ||Y||; the best error with zero "
                       "weights is %.4g), so it may lose every weight; lower epsilon to keep it",
                       name, task.layer_budget, task.layer_budget / max(task.scale, 1e-300),
                       zero_weights_error(task))
    return task, X


def _run_method(method: Method, task: LayerTask, sparsity: float | None, solver: LayerSolver,
                options: Any) -> LayerOutcome:
    """Step 3, the solve: one layer through the method (where the executor runs it); a
    per-layer sparsity of 0 leaves the layer as it is."""
    if sparsity == 0:
        return LayerOutcome.unchanged(task)
    return method.prune_layer(task, sparsity, solver.for_task(task), options)


def accept(outcome: LayerOutcome, task: LayerTask, sparsity: float | None, config: PruneConfig) -> LayerOutcome:
    """Step 4: a result that misses its program by more than the solver's tolerance allows
    (``_REJECT_FACTOR`` times ``tol``) gives way to the original weights, which meet the
    mode's budget by construction (violation 0) -- unless ``accept_infeasible``, or the
    layer had a target sparsity."""
    if sparsity is not None or config.accept_infeasible or outcome.status in SETTLED \
            or math.isnan(outcome.violation):
        return outcome
    if outcome.violation <= _REJECT_FACTOR * config.layer_solver.tol:
        return outcome
    info = {**outcome.info, "solver_status": outcome.status, "rejected_violation": outcome.violation,
            "rejected_nnz": int((outcome.weight != 0).sum())}
    return LayerOutcome.unchanged(task, status=kept_original(outcome.status), epsilon=outcome.epsilon,
                                  iterations=outcome.iterations, violation=0.0, info=info)


def refit(outcome: LayerOutcome, task: LayerTask, config: PruneConfig) -> LayerOutcome:
    """Step 4b (``refit='relu'``): each neuron refitted on the support the method chose,
    towards the original output on the input the layer was solved on, active entries
    matched and inactive ones kept at or below 0 (:func:`solvers.refit.relu_refit`,
    started from the method's answer, so its certified error can only go down). The
    violation is then that of the refitted weights for the layer's program."""
    if config.refit is None or outcome.status == SKIPPED:
        return outcome
    from solvers import LayerProblem
    from solvers.refit import relu_refit

    fitted = relu_refit(task.X, task.Y, outcome.weight != 0, relu=task.relu, fit_bias=task.bias is not None,
                        weight=outcome.weight, bias=outcome.bias)
    weight = fitted.weight.astype(outcome.weight.dtype)
    bias = None if fitted.bias is None else fitted.bias.astype(outcome.weight.dtype)
    violation = outcome.violation
    if not math.isnan(outcome.epsilon):
        violation = LayerProblem(task.X, task.Y, task.budget, relu=task.relu, upper=task.upper,
                                 fit_bias=task.bias is not None).violation(weight, bias)
    info = {**outcome.info, "refit": config.refit, "refit_steps": fitted.steps, "refit_converged": fitted.converged,
            "violation_before_refit": outcome.violation}
    return LayerOutcome(weight, bias, epsilon=outcome.epsilon, status=outcome.status, iterations=outcome.iterations,
                        violation=violation, info=info)


def write_back(handle: LayerHandle, outcome: LayerOutcome) -> None:
    """Step 5: the layer's weights into the pruned copy (the BatchNorm unfolded)."""
    handle.write(torch.from_numpy(outcome.weight), None if outcome.bias is None else torch.from_numpy(outcome.bias))


def layer_report(rec: LayerRecord, task: LayerTask, X: torch.Tensor, outcome: LayerOutcome, method: str,
                 seconds: float) -> LayerReport:
    """Step 6: what happened to the layer, its errors measured on the input it was solved on."""
    return LayerReport.from_outcome(
        outcome, name=rec.name, kind=rec.kind, shape=rec.shape, relu=rec.relu, n_samples=rec.n_samples,
        nnz_before=int(torch.count_nonzero(rec.weight)), scale=task.scale,
        errors=layer_errors(rec, X, outcome.weight, outcome.bias), seconds=seconds, method=method,
        n_rows_total=rec.n_rows_total)


def persist(run: _Run, index: int, outcome: LayerOutcome, report: LayerReport) -> None:
    """Step 7: the finished layer kept in the work directory (if any) and in the run."""
    run.reports[report.name], run.outcomes[report.name] = report, outcome
    if run.work_dir is not None:
        run.work_dir.save(index, outcome, report)


def _log_layer(rec: LayerRecord, report: LayerReport, outcome: LayerOutcome) -> None:
    logger.info("%s: kept %.1f%% of %s, epsilon %.4g (rel %.4f), %s after %d iterations, %.2fs",
                rec.name, 100 * report.kept, "x".join(map(str, rec.shape)), report.epsilon,
                report.epsilon_rel, outcome.status, outcome.iterations, report.seconds)
    if report.nnz_after == 0 and report.nnz_before > 0:
        logger.warning("layer %r is pruned to nothing: every weight is zero, the layer outputs its bias alone",
                       rec.name)
    if is_kept_original(outcome.status):
        logger.warning("layer %r: the solver did not meet the layer's program (%s, violation %.2e); "
                       "the layer keeps its original weights (accept_infeasible=True keeps the "
                       "result instead)", rec.name, outcome.info["solver_status"], outcome.info["rejected_violation"])
    elif outcome.status not in SETTLED:
        logger.warning("layer %r: solver ended with status %r (violation %.2e); its result is "
                       "kept, check the report", rec.name, outcome.status, outcome.violation)


def finish_layer(run: _Run, item: _Pending) -> LayerReport:
    """Steps 4-7 for a layer whose solve is done (the refit, if any, after the accept)."""
    config, rec = run.config, run.records[item.name]
    handle = run.handles[item.name][0]
    outcome, solve_seconds = item.future.result()
    outcome = accept(outcome, item.task, config.layer_sparsity(item.name), config)
    outcome = refit(outcome, item.task, config)
    if config.mode == "cascade":  # the next layers see this one pruned
        write_back(handle, outcome)
    if handle.activation:
        outcome.info["activation"] = handle.activation
    report = layer_report(rec, item.task, item.X, outcome, config.method, item.prepared_seconds + solve_seconds)
    persist(run, item.index, outcome, report)
    _log_layer(rec, report, outcome)
    run.store.drop_resident()
    return report


def assemble(run: _Run, seconds: float) -> PruneResult:
    """Step 8: the parallel mode's weights written back, the output error, the result."""
    config = run.config
    if config.mode == "parallel":  # every layer was solved on original signals: write them all now
        for name, outcome in run.outcomes.items():
            write_back(run.handles[name][0], outcome)
    error = output_error(run.pruned, run.batches, run.reference_out)
    # a method's parts of a layer (info["seconds_<part>"]), summed per part over the layers solved in
    # this run (a resumed run's restored layers were timed by the run that solved them)
    for name, report in run.reports.items():
        if name in run.restored:
            continue
        for key, value in report.info.items():
            if key.startswith("seconds_"):
                run.timings[key] = run.timings.get(key, 0.0) + float(value)
    result = PruneResult(model=run.pruned, layers=run.reports, method=config.method, mode=config.mode,
                         epsilon=float(config.epsilon), gamma=float(config.gamma),
                         sparsity=dict(config.sparsity) if isinstance(config.sparsity, dict) else config.sparsity,
                         n_calibration=sum(int(x.shape[0]) for x in run.batches), output_error=error,
                         seconds=seconds, left_dense=run.dense, timings=dict(run.timings))
    logger.info("pruned %d layers in %s mode: %.1f%% of the weights kept, output error %s, %.2fs",
                len(run.reports), config.mode, 100 * result.kept, error, result.seconds)
    return result


# ------------------------------------------------------------------------ the loop
def _solve_layers(run: _Run, runner: Executor, bar: Any) -> None:
    """Steps 2-7 over the layers; in parallel mode on an executor the solves run side by side."""
    config, method, solver = run.config, run.config.method_spec, run.config.layer_solver
    pending: list[_Pending] = []

    def finish(item: _Pending) -> None:
        report = finish_layer(run, item)
        bar.update(1)
        bar.set_postfix_str(f"{item.name} kept {report.kept:.1%} {report.status} {report.iterations} it")

    try:
        for index, (name, rec) in enumerate(run.records.items()):
            started = time.perf_counter()
            if name in run.restored:
                outcome, run.reports[name] = run.restored[name]
                run.outcomes[name] = outcome
                if config.mode == "cascade":
                    write_back(run.handles[name][0], outcome)
                bar.update(1)
                continue
            bar.set_postfix_str(f"{name} {rec.n_samples}x{rec.n_in}x{rec.n_out}")
            task, X = build_task(run, name)
            run.store.drop_resident()  # the task holds what the solve needs
            prepared_seconds = time.perf_counter() - started  # the solve is timed where it runs
            future = schedule.submit(runner, _run_method, method, task, config.layer_sparsity(name), solver,
                                     config.method_options, split=config.split == "neuron")
            pending.append(_Pending(index, name, task, X, future, prepared_seconds))
            if config.mode == "cascade" or config.executor is None:  # the next layer needs this one / no gain
                finish(pending.pop())
                runner.release()
        while pending:
            finish(pending.pop(0))
    except KeyboardInterrupt:
        for item in pending:  # keep what the workers had finished
            if item.future.done() and not item.future.cancelled() and item.future.exception() is None:
                finish(item)
        raise PruneInterrupted(len(run.reports), len(run.records), config.work_dir) from None


def prune(model: nn.Module, calib: Any, config: PruneConfig | None = None, **overrides: Any) -> PruneResult:
    """Prune a trained network layer by layer.

    Parameters
    ----------
    model : nn.Module
        The trained network (``nn.Sequential`` or any ``torch.fx``-traceable model). It is
        not modified: the pruned network is a copy.
    calib : Tensor, ndarray or iterable of batches
        Calibration inputs (a tensor, or batches ``x`` / ``(x, y)`` as a DataLoader yields).
    config : PruneConfig, optional
        The settings (:class:`~nettrim.config.PruneConfig`, whose attributes are
        documented there); default ``PruneConfig()``.
    **overrides
        Fields of the config to set or change, e.g. ``method="lobs", sparsity=0.8``,
        ``mode="parallel"``, ``epsilon=0.05``, ``gamma=1.1``, ``layers=[...]``,
        ``solver_options={"tol": 1e-4}``, ``method_options={"refit": True}``,
        ``work_dir=...``, ``resume=True``, ``executor="processes"``, ``split="neuron"``,
        ``store="disk"``, ``max_positions=...``, ``progress=False``.

    Returns
    -------
    PruneResult

    Raises
    ------
    PruneInterrupted
        On Ctrl-C; with a ``work_dir`` the finished layers are kept there and
        ``resume=True`` goes on from the first unfinished one (bit-identical weights).
    """
    if config is not None and not isinstance(config, PruneConfig):
        raise TypeError(f"config: got {type(config).__name__}, needs a nettrim.PruneConfig (or keywords)")
    config = (PruneConfig() if config is None else config).replace(**overrides)
    method = config.method_spec
    if method.scope == "network":
        budget = {"epsilon": config.epsilon, "solver_options": config.solver_options} if method.budget_program else {}
        return method.run(model, calib, sparsity=config.sparsity, options=config.method_options, layers=config.layers,
                          max_positions=config.max_positions, seed=config.seed, progress=config.progress, **budget)
    started = time.perf_counter()
    run = record_run(model, calib, config)
    runner = open_executor(config.executor)
    if config.executor is not None:
        logger.info("layers solved on %s", runner.description)
    bar = tqdm(total=len(run.records), desc=f"{config.method} {config.mode}", unit="layer",
               disable=not config.progress, leave=False)
    try:
        try:
            solving = time.perf_counter()
            _solve_layers(run, runner, bar)
            run.timings["layers"] = time.perf_counter() - solving
        finally:
            bar.close()
            runner.close()
        result = assemble(run, time.perf_counter() - started)
        if neuron_choice.applies(config):  # the structured prune reads the signals and outputs recorded here
            result = neuron_choice.prefer_neurons(result, model, calib, config, records=run.records,
                                                  reference_outputs=run.reference_out)
    finally:
        run.close()
    return result

