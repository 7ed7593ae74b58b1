"""Structured Net-Trim (``method='nettrim-group'``): whole neurons and channels removed.

A neuron (channel) of a producer layer is an input group of the layer that reads it (its
consumer): the consumer's columns for that neuron (one column after a ``Linear``, ``H*W``
after a flattened map, ``k*k`` patch columns of a convolution). Removing the group
removes the neuron, its BatchNorm entries and the consumer's columns
(:mod:`nettrim.surgery`): the model comes out physically smaller. Two targets:

``epsilon=`` (the convex program, the guarantee). Each consumer ``c`` solves the group
program on the original signals,

.. math::  \\min_{W, b} \\sum_j \\|W_{:, G_j}\\|_F \\quad \\text{s.t.} \\quad
    \\|(X W^T + b - Y)_\\Omega\\|_F \\le \\epsilon \\|Y\\|_F, \\quad (X W^T + b)_{\\Omega^c} \\le 0

(the layer program with the sum of the group norms in place of the ℓ1 norm;
:class:`solvers.LayerProblem` with ``group_size``). The original weights are feasible, so
the program always has an answer; the groups it sets to zero are the producer's neurons
to remove. The kept columns are then refitted by the ReLU-aware fit
(:func:`solvers.refit.relu_refit`), started from the program's answer, which can only
lower the error: every consumer keeps ``||relu(X W^T + b) - Y|| <= epsilon ||Y||`` on the
original signals (or ``||X W^T + b - Y||`` for a layer without ReLU).

``sparsity=`` (a fraction of each producer's neurons to remove, as CaP's). The neurons are
chosen backwards, from the last producer to the first, so that a layer is asked to keep
only the outputs that survive the next cut: for a consumer whose own neurons ``R`` are
kept, the groups are chosen to reconstruct ``X W_R^T`` (its surviving pre-activations on
the original input) by greedy backward elimination (:func:`nettrim.cap.greedy_keep`) and
then single swaps that lower that error further (:func:`solvers.exchange.exchange`). Then
every layer from the first consumer on is refitted in execution order, on the pruned
network's input, towards the original network's output (the cascade: each layer corrects
the error upstream), by the ReLU-aware fit (least squares for a layer without ReLU).

The group program as a selector at a target (the groups of largest norm along a path in
``epsilon``) was tried in a probe and chose worse neurons than the greedy elimination.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from solvers import LayerProblem, solve
from solvers.exchange import centred, exchange, group_columns
from solvers.refit import relu_refit

from .cap import greedy_keep, layer_reports
from .graph import Follower, analyse, links
from .measure import network_outputs, output_error
from .methods.base import LayerTask, Method
from .methods.nettrim import prune_layer as nettrim_layer
from .record import LayerRecord, calibration_batches, capture_inputs, layer_handles, record_layers
from .result import PruneResult
from .surgery import keep_batchnorm_channels, keep_inputs, keep_outputs, replace_module

__all__ = ["GroupOptions", "prune_network", "METHOD"]

logger = logging.getLogger(__name__)

UNITS = ("neurons", "weights", "flops")


@dataclass(frozen=True)
class GroupOptions:
    """Options of ``method='nettrim-group'``.

    Attributes
    ----------
    swaps : int, default 2
        With ``sparsity=``: at most this many sweeps of single swaps after the greedy
        elimination (0: greedy alone).
    ridge : float, default 1e-8
        Ridge on the input covariance of the selection, relative to its mean diagonal.
    unit : {'neurons', 'weights', 'flops'}, default 'neurons'
        What ``sparsity=`` is a fraction of: every producer's neurons (as CaP's); or the
        weights, or the multiply-adds of one input, of all the prunable layers, reached
        by removing one fraction of every producer's neurons, the one whose count comes
        closest.
    at_most : bool, default False
        With ``unit='weights'`` or ``'flops'``: the fraction whose count comes closest
        without keeping more than ``1 - sparsity`` of them (neurons come whole, so the
        closest count may lie above the target).
    weight_sparsity : float, optional
        With ``sparsity=``: structured, then unstructured, in one run. After the neurons
        are removed, every layer (in order, on the pruned network's input, towards the
        original network's output) loses this fraction of its remaining weights by
        Net-Trim at a target sparsity (greedy OBS supports, the ReLU-aware fit) instead of
        being refitted whole.
    """

    swaps: int = 2
    ridge: float = 1e-8
    unit: str = "neurons"
    weight_sparsity: float | None = None
    at_most: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.swaps, int) or isinstance(self.swaps, bool) or self.swaps < 0:
            raise ValueError(f"swaps: got {self.swaps!r}, needs an integer >= 0")
        if not isinstance(self.ridge, (int, float)) or isinstance(self.ridge, bool) or not self.ridge >= 0:
            raise ValueError(f"ridge: got {self.ridge!r}, needs a number >= 0")
        if self.weight_sparsity is not None and (not isinstance(self.weight_sparsity, (int, float))
                                                 or isinstance(self.weight_sparsity, bool)
                                                 or not 0 < self.weight_sparsity < 1):
            raise ValueError(f"weight_sparsity: got {self.weight_sparsity!r}, needs a fraction of weights in (0, 1)")
        if self.unit not in UNITS:
            raise ValueError(f"unit: got {self.unit!r}, needs one of {UNITS}")
        if not isinstance(self.at_most, bool):
            raise ValueError(f"at_most: got {self.at_most!r}, needs True or False")

    def check(self, sparsity: Any, layers: Any) -> None:
        """The errors of a target the method cannot run with."""
        if layers is not None:
            raise ValueError("method 'nettrim-group' works on the whole network; layers= is not supported")
        if isinstance(sparsity, Mapping):
            raise ValueError("method 'nettrim-group': sparsity is one fraction of neurons for every layer, not a dict")
        if self.weight_sparsity is not None and sparsity is None:
            raise ValueError("method 'nettrim-group': weight_sparsity follows a target sparsity= of neurons; give "
                             "sparsity= too")


@dataclass
class _Link:
    producer: str
    consumer: str
    batchnorms: tuple[str, ...]
    n_neurons: int
    per_group: int


def _resolve_links(model: nn.Module, order: Sequence[str], records: dict) -> list[_Link]:
    """The producer -> consumer links of ``model`` whose consumer reads a whole number of
    columns per producer neuron, in execution order."""
    found = links(model)
    resolved = []
    for name in order:
        if name not in found:
            continue
        link = found[name]
        n_neurons = model.get_submodule(name).weight.shape[0]
        n_in = records[link.consumer].weight.shape[1]
        if n_in % n_neurons:
            logger.warning("nettrim-group: %s has %d inputs for the %d neurons of %s; left as it is",
                           link.consumer, n_in, n_neurons, name)
            continue
        resolved.append(_Link(name, link.consumer, tuple(link.batchnorms), n_neurons, n_in // n_neurons))
    if not resolved:
        raise ValueError("method 'nettrim-group': no layer feeds exactly one other Linear/ConvNd through ReLU, "
                         "BatchNorm, pooling or flatten; there are no neurons it can remove")
    return resolved


def _target(record: Any) -> np.ndarray:
    pre = record.pre_activation.numpy()
    return np.maximum(pre, 0.0) if record.relu else pre


def _kept_share(chain: list[_Link], records: dict, fraction: float, unit: str, n_inputs: int) -> float:
    """The share of the prunable layers' weights (or multiply-adds) left when ``fraction``
    of every producer's neurons is removed."""
    kept_out = {link.producer: _n_keep(link.n_neurons, fraction) for link in chain}
    feeds = {link.consumer: link for link in chain}
    total = kept = 0.0
    for name, record in records.items():
        n_out, n_in = record.weight.shape
        per_input = record.n_rows_total / n_inputs if unit == "flops" else 1.0
        total += n_out * n_in * per_input
        columns = kept_out[feeds[name].producer] * feeds[name].per_group if name in feeds else n_in
        kept += kept_out.get(name, n_out) * columns * per_input
    return kept / total


def _neuron_fraction(chain: list[_Link], records: dict, sparsity: float, unit: str, n_inputs: int,
                     at_most: bool = False) -> float:
    """The fraction of every producer's neurons whose removal leaves the share of weights or
    multiply-adds nearest to ``1 - sparsity`` (bisection: the share falls as the fraction grows);
    ``at_most``: the nearest at or below it."""
    if unit == "neurons":
        return sparsity
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        if _kept_share(chain, records, middle, unit, n_inputs) > 1.0 - sparsity:
            low = middle
        else:
            high = middle

    def miss(f: float) -> float:
        return abs(_kept_share(chain, records, f, unit, n_inputs) - (1.0 - sparsity))

    fraction = high if at_most else min((low, high), key=miss)
    logger.info("nettrim-group: %.1f%% of the %s removed by removing %.1f%% of every producer's neurons "
                "(%.1f%% of them kept)", 100 * sparsity, unit, 100 * fraction,
                100 * _kept_share(chain, records, fraction, unit, n_inputs))
    return fraction


def _n_keep(n_neurons: int, fraction: float) -> int:
    return max(1, n_neurons - int(round(fraction * n_neurons)))


def _choose_by_sparsity(chain: list[_Link], records: dict, sparsity: float, options: GroupOptions
                        ) -> dict[str, np.ndarray]:
    """Kept neurons of every producer, chosen from the last link to the first."""
    kept: dict[str, np.ndarray] = {}
    for link in reversed(chain):
        record = records[link.consumer]
        X = record.input.double().numpy()
        rows = kept.get(link.consumer, np.arange(record.weight.shape[0]))
        weight = record.weight.numpy()[rows]
        n_keep = _n_keep(link.n_neurons, sparsity)
        moments = centred(X)  # the elimination's and the swaps' alike
        greedy, _, _ = greedy_keep(X, weight, None, link.per_group, n_keep, options.ridge, centred=moments)
        if options.swaps:
            choice, before, after = exchange(X, X @ weight.T, greedy, link.per_group, sweeps=options.swaps,
                                             ridge=options.ridge, centred=moments)
            logger.info("nettrim-group: %s keeps %d of %d neurons; swaps lowered the error of %s by %.1f%%",
                        link.producer, n_keep, link.n_neurons, link.consumer,
                        100 * (1 - after / before) if before > 0 else 0.0)
        else:
            choice = greedy
        kept[link.producer] = np.asarray(choice, dtype=np.int64)
    return kept


def _choose_by_budget(chain: list[_Link], records: dict, epsilon: float, solver_options: Mapping[str, Any]
                      ) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray | None, int]]]:
    """Kept neurons of every producer from its consumer's group program on the original signals."""
    settings = {"tol": 1e-4, "max_iter": 20_000, **solver_options}
    kept, answers = {}, {}
    for link in chain:
        record = records[link.consumer]
        Y = _target(record)
        problem = LayerProblem(record.input.double().numpy(), Y, epsilon * float(np.linalg.norm(Y)),
                               relu=record.relu, fit_bias=record.bias is not None, group_size=link.per_group)
        bias = None if record.bias is None else record.bias.numpy()
        solution = solve(problem, warm_start=(record.weight.numpy(), bias), **settings)
        norms = problem.group_norms(solution.weight)
        choice = np.flatnonzero(norms > 0)
        if choice.size == 0:  # the zero weights meet the budget; keep the strongest neuron
            choice = np.array([int(np.argmax(problem.group_norms(record.weight.numpy())))])
            logger.warning("nettrim-group: the group program of %s keeps no input; one neuron of %s is kept",
                           link.consumer, link.producer)
        kept[link.producer] = choice
        answers[link.consumer] = (solution.weight, solution.bias, solution.iterations)
        logger.info("nettrim-group: %s keeps %d of %d neurons (group program of %s: %s, %d iterations)",
                    link.producer, choice.size, link.n_neurons, link.consumer, solution.status, solution.iterations)
    return kept, answers


def _cut(model: nn.Module, chain: list[_Link], kept: dict[str, np.ndarray]) -> None:
    """Remove the neurons not kept: producer rows, BatchNorm channels, consumer columns."""
    for link in chain:
        keep = torch.as_tensor(kept[link.producer], dtype=torch.long)
        replace_module(model, link.producer, keep_outputs(model.get_submodule(link.producer), keep))
        for name in link.batchnorms:
            replace_module(model, name, keep_batchnorm_channels(model.get_submodule(name), keep))
        consumer = model.get_submodule(link.consumer)
        per_channel = link.per_group if isinstance(consumer, nn.Linear) else 1
        replace_module(model, link.consumer, keep_inputs(consumer, keep, per_channel))


def _write(handle: Any, relu: bool, X: np.ndarray, Y: np.ndarray, weight: np.ndarray, bias: np.ndarray | None
           ) -> float:
    """Write folded weights into ``handle``'s layer; the relative error of its output on ``X``."""
    handle.write(torch.as_tensor(weight), None if bias is None else torch.as_tensor(bias))
    Z = X @ weight.T + (0.0 if bias is None else bias)
    output = np.maximum(Z, 0.0) if relu else Z
    return float(np.linalg.norm(output - Y) / max(np.linalg.norm(Y), 1e-300))


def _refit(handle: Any, relu: bool, X: np.ndarray, Y: np.ndarray, start: tuple[np.ndarray, np.ndarray | None],
           weight_sparsity: float | None = None) -> float:
    """Refit ``handle``'s layer on ``X`` towards ``Y`` on every column (the ReLU-aware fit), or,
    with ``weight_sparsity``, prune it by Net-Trim at that target (supports by greedy OBS, the
    same fit on them); write it back and return the relative error of its output."""
    if weight_sparsity is None:
        support = np.ones((Y.shape[1], X.shape[1]), dtype=bool)
        fit = relu_refit(X, Y, support, relu=relu, fit_bias=start[1] is not None, weight=start[0], bias=start[1])
        return _write(handle, relu, X, Y, fit.weight, fit.bias)
    task = LayerTask(handle.name, X, Y, relu, start[0], start[1], budget=float("nan"))
    outcome = nettrim_layer(task, sparsity=weight_sparsity)
    return _write(handle, relu, X, Y, outcome.weight, outcome.bias)


def _rows_kept(name: str, records: dict, kept: dict[str, np.ndarray]) -> np.ndarray:
    return kept.get(name, np.arange(records[name].weight.shape[0]))


def _refit_budget(model: nn.Module, chain: list[_Link], records: dict, kept: dict[str, np.ndarray],
                  answers: dict, followers: dict[str, Follower]) -> dict[str, float]:
    """Each consumer refitted on the original signals, on its kept columns, from its program's
    answer (``followers``: :func:`~nettrim.graph.analyse` of the model before the cut, the
    same layers)."""
    handles = layer_handles(model, None, followers, warn=False)  # the user was warned when the prune began
    errors = {}
    for link in chain:
        record = records[link.consumer]
        rows = _rows_kept(link.consumer, records, kept)
        columns = group_columns(kept[link.producer], link.per_group)
        weight, bias, _ = answers[link.consumer]
        X = record.input.double().numpy()[:, columns]
        start = (weight[np.ix_(rows, columns)], None if bias is None else bias[rows])
        handle, relu = handles[link.consumer]
        errors[link.consumer] = _refit(handle, relu, X, _target(record)[:, rows], start)
    return errors


def _refit_cascade(model: nn.Module, batches: Sequence[torch.Tensor], order: Sequence[str], records: dict,
                   kept: dict[str, np.ndarray], first: str, max_positions: int | str | None, seed: int,
                   weight_sparsity: float | None, bar: Any, followers: dict[str, Follower]) -> dict[str, float]:
    """Every layer from ``first`` on (every layer, with ``weight_sparsity``) refitted, in order,
    on the pruned network's input towards the original network's output (``followers``:
    :func:`~nettrim.graph.analyse` of the model before the cut, the same layers)."""
    handles = layer_handles(model, None, followers, warn=False)  # the user was warned when the prune began
    errors = {}
    for name in order[0 if weight_sparsity is not None else order.index(first):]:
        handle, relu = handles[name]
        X = capture_inputs(model, batches, {name: handle}, max_positions=max_positions, seed=seed,
                           stop_early=True)[name][0].double().numpy()
        rows = _rows_kept(name, records, kept)
        weight, bias = handle.folded()
        start = (weight.numpy(), None if bias is None else bias.numpy())
        errors[name] = _refit(handle, relu, X, _target(records[name])[:, rows], start, weight_sparsity)
        bar.update(1)
    return errors


def _check_reference(reference_outputs: Any, n_calibration: int) -> None:
    """Refuse ``reference_outputs`` that cannot be the model's outputs on the calibration
    data (:func:`nettrim.measure.network_outputs`: one flattened row per input), before any
    work is done."""
    if reference_outputs is None:
        return
    if not isinstance(reference_outputs, torch.Tensor) or reference_outputs.dim() != 2 \
            or reference_outputs.shape[0] != n_calibration:
        raise ValueError(f"reference_outputs: got {type(reference_outputs).__name__} of shape "
                         f"{tuple(getattr(reference_outputs, 'shape', ()))}, needs the model's outputs on calib, one "
                         f"flattened row per input ({n_calibration} rows: nettrim.measure.network_outputs), or None "
                         f"to compute them here")


def prune_network(model: nn.Module, calib: Any, *, sparsity: float | None, epsilon: float, options: GroupOptions,
                  solver_options: Mapping[str, Any] | None = None, layers: Sequence[str] | None = None,
                  max_positions: int | str | None = None, seed: int = 0, progress: bool = True,
                  records: Mapping[str, LayerRecord] | None = None,
                  reference_outputs: torch.Tensor | None = None) -> PruneResult:
    """Structured Net-Trim on a copy of ``model`` (module docstring); the model comes out
    physically smaller.

    The signature of a network method (:class:`~nettrim.methods.base.Method` with scope
    ``'network'``): the pipeline passes the fields of its configuration of the same names.
    ``sparsity`` (a fraction of each producer's neurons to remove, or of the weights or
    multiply-adds with ``options.unit``) takes precedence over ``epsilon`` (each
    consumer's budget, relative to its ``||Y||_F``); ``solver_options``
    go to :func:`solvers.solve` for the group programs (default ``tol=1e-4``,
    ``max_iter=20000``). ``records``: every prunable layer of ``model`` already recorded on
    ``calib`` at the same ``max_positions`` and ``seed`` (a prune of the same model that ran
    before, :func:`nettrim.record`), used instead of recording them again;
    ``reference_outputs``: ``model``'s outputs on ``calib``
    (:func:`nettrim.measure.network_outputs`), used instead of computing them again.
    """
    options.check(sparsity, layers)
    started = time.perf_counter()
    batches = calibration_batches(calib)
    n_calibration = sum(int(x.shape[0]) for x in batches)
    _check_reference(reference_outputs, n_calibration)
    pruned = copy.deepcopy(model)
    followers = analyse(pruned)  # the cut keeps every layer and what follows it: traced once
    found = layer_handles(pruned, None, followers)
    if records is None:
        records = record_layers(pruned, batches, found, max_positions=max_positions, seed=seed)
    elif list(records) != list(found):
        raise ValueError(f"records: got the layers {list(records)}, needs every prunable layer of the model in order "
                         f"{list(found)} (or None to record them here)")
    else:
        records = dict(records)
    order = list(records)
    before = {name: (tuple(handle.module.weight.shape), int(torch.count_nonzero(handle.module.weight)))
              for name, (handle, _) in found.items()}
    reference_out = network_outputs(pruned, batches) if reference_outputs is None else reference_outputs
    chain = _resolve_links(pruned, order, records)
    bar = tqdm(total=len(order), desc="nettrim-group", unit="layer", disable=not progress, leave=False)
    try:
        if sparsity is not None:
            fraction = _neuron_fraction(chain, records, sparsity, options.unit, n_calibration, options.at_most)
            kept = _choose_by_sparsity(chain, records, fraction, options)
            _cut(pruned, chain, kept)
            errors = _refit_cascade(pruned, batches, order, records, kept, chain[0].consumer, max_positions, seed,
                                    options.weight_sparsity, bar, followers)
        else:
            kept, answers = _choose_by_budget(chain, records, epsilon, solver_options or {})
            _cut(pruned, chain, kept)
            errors = _refit_budget(pruned, chain, records, kept, answers, followers)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    outcome = {link.producer: {"consumer": link.consumer, "neurons_before": link.n_neurons,
                               "neurons_after": int(kept[link.producer].size),
                               "kept": [int(k) for k in kept[link.producer]],
                               "error": errors[link.consumer], "seconds": seconds / len(chain)}
               for link in chain}
    reports = layer_reports(pruned, order, outcome, before, {name: relu for name, (_, relu) in found.items()},
                            method="nettrim-group")
    result = PruneResult(model=pruned, layers=reports, method="nettrim-group", mode="neurons",
                         epsilon=math.nan if sparsity is not None else epsilon, gamma=math.nan, sparsity=sparsity,
                         n_calibration=n_calibration,
                         output_error=output_error(pruned, batches, reference_out), seconds=seconds)
    logger.info("nettrim-group: %d producers cut down, %.1f%% of the pruned layers' weights kept, output error %s",
                len(chain), 100 * result.kept_pruned, result.output_error)
    return result


METHOD = Method("nettrim-group", "network", prune_network, options=GroupOptions, needs_sparsity=False,
                budget_program=True)
