"""Compensation-aware pruning (CaP; Xie et al., "Pruning with Compensation", 2021).

CaP removes whole neurons (channels) of a layer and refits the NEXT layer on the inputs
that remain. For the consumer layer with input ``X`` (mean ``mu``, centred covariance
``C``), weight ``W`` and bias ``b``, keeping the input columns ``K`` gives the
least-squares compensation (bias corrected, from the first two moments only)

.. math::  W'_K = W C_{:, K} C_{KK}^{-1}, \\qquad b' = b + \\mu (W - W')^T

with error ``tr((W - W') C (W - W')^T)``. The neurons to keep are chosen greedily by
that compensated error: backward elimination, removing at each step the neuron (group of
columns ``G``) whose removal costs least, ``tr(W'_G (P_GG)^{-1} W'_G^T)`` with
``P = C_KK^{-1}``, then updating ``W'`` and ``P`` by the block OBS formulas.

CaP is a network-scope method (:data:`METHOD`): :func:`prune_network` takes the model,
the calibration data and the settings it uses, and :func:`cut_network`
walks the producer -> consumer links of the model in order, cuts the producer (and the
BatchNorms between) down to the kept neurons, and replaces the consumer by a smaller
refitted one: the pruned model is physically smaller. It lives beside
:mod:`nettrim.surgery`, whose cuts it makes.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from solvers.exchange import Centred, centred, solve_blocks

from ._cap_kernels import _remove_column
from .graph import links
from .layers import LayerHandle, layer_kind
from .measure import classification_accuracy, network_outputs, output_error
from .methods.base import Method
from .record import calibration_batches, capture_inputs, layer_handles
from .result import PruneResult
from .surgery import keep_batchnorm_channels, keep_inputs, keep_outputs, replace_module
from .types import LayerReport

__all__ = ["compensate", "greedy_keep", "cut_network", "prune_network", "layer_reports", "CapOptions", "METHOD"]

logger = logging.getLogger(__name__)


def _moments(X: np.ndarray, ridge: float, given: Centred | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ``X``'s columns and their covariance (with the ridge); ``given``:
    :func:`solvers.exchange.centred` of ``X``, made before."""
    given = centred(X) if given is None else given.of(X)
    C = given.gram / given.X.shape[0]
    C[np.diag_indices_from(C)] += ridge * max(float(np.mean(np.diag(C))), 1e-300)
    return given.mean, C


def compensate(X: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, keep_columns: np.ndarray,
               ridge: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares refit of a consumer on the columns ``keep_columns`` of its input.

    Returns the full-size weight (zero on the removed columns) and the corrected bias.
    """
    mean, C = _moments(X, ridge)
    W = np.asarray(weight, dtype=np.float64)
    keep = np.asarray(keep_columns)
    new = np.zeros_like(W)
    new[:, keep] = np.linalg.solve(C[np.ix_(keep, keep)], C[keep] @ W.T).T
    b = np.zeros(W.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    return new, b + mean @ (W - new).T


def greedy_keep(X: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, per_group: int, n_keep: int,
                ridge: float = 1e-8, centred: Centred | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep ``n_keep`` groups of ``per_group`` consecutive input columns, greedily.

    ``centred``: :func:`solvers.exchange.centred` of ``X``, when the caller has it. Returns
    the kept group indices (sorted), the compensated weight (zero on removed columns) and
    bias.
    """
    mean, C = _moments(X, ridge, centred)
    P = np.linalg.inv(C)
    P = (P + P.T) / 2
    original = np.asarray(weight, dtype=np.float64)
    if per_group == 1:  # single columns (module docstring of ._cap_kernels)
        return _greedy_keep_columns(P, n_keep, mean, original, bias)
    W = original.copy()
    alive = list(range(W.shape[1] // per_group))
    offsets = np.arange(per_group)
    while len(alive) > n_keep:
        # each alive group's removal cost tr(W_G P_GG^{-1} W_G^T), all groups in one batched solve
        columns = np.asarray(alive)[:, None] * per_group + offsets  # (n_alive, per_group)
        blocks = P[columns[:, :, None], columns[:, None, :]]
        W_t = np.ascontiguousarray(W[:, columns].transpose(1, 2, 0))  # (n_alive, per_group, n_out)
        costs = np.sum(solve_blocks(blocks, W_t) * W_t, axis=(1, 2))
        g = alive.pop(int(np.argmin(costs)))
        G = slice(g * per_group, (g + 1) * per_group)
        inverse_block = np.linalg.inv(P[G, G])
        W -= W[:, G] @ inverse_block @ P[G, :]
        P -= P[:, G] @ inverse_block @ P[G, :]
        W[:, G] = 0.0
        P[G, :] = 0.0
        P[:, G] = 0.0
    b = np.zeros(W.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    return np.array(sorted(alive)), W, b + mean @ (original - W).T


def _greedy_keep_columns(P: np.ndarray, n_keep: int, mean: np.ndarray, original: np.ndarray,
                         bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`greedy_keep` with groups of one column: the blocks of ``P`` are its diagonal, a
    column's cost is ``||W_g||^2 / P_gg``, and each removal a rank-one update
    (:func:`._cap_kernels._remove_column`, ``W`` held transposed), the same numbers."""
    WT = np.array(original.T, order="C")  # always a copy: updated in place, the caller's weight untouched
    alive = list(range(WT.shape[0]))
    while len(alive) > n_keep:
        kept = WT[alive]  # (n_alive, n_out)
        costs = np.sum(kept * (1.0 / P.diagonal()[alive])[:, None] * kept, axis=1)
        g = alive.pop(int(np.argmin(costs)))
        _remove_column(WT, P, g, 1.0 / P[g, g])  # 1 / P_gg: what LAPACK's inverse gives for one
    b = np.zeros(WT.shape[1]) if bias is None else np.asarray(bias, dtype=np.float64)
    return np.array(sorted(alive)), WT.T.copy(), b + mean @ (original - WT.T).T


def _matrix(layer: nn.Module) -> np.ndarray:
    return layer.weight.detach().double().reshape(layer.weight.shape[0], -1).cpu().numpy()


def _cut(model: nn.Module, producer: str, consumer: str, batchnorms: Sequence[str], consumer_bn: str | None,
         kept: np.ndarray, per_group: int, weight: np.ndarray, bias: np.ndarray) -> None:
    """Replace the producer, its BatchNorms and the consumer by their cut-down versions."""
    keep = torch.as_tensor(kept, dtype=torch.long)
    old_consumer = model.get_submodule(consumer)
    replace_module(model, producer, keep_outputs(model.get_submodule(producer), keep))
    for name in batchnorms:
        replace_module(model, name, keep_batchnorm_channels(model.get_submodule(name), keep))
    full_weight = torch.as_tensor(weight, dtype=old_consumer.weight.dtype).reshape(old_consumer.weight.shape)
    full_bias = torch.as_tensor(bias, dtype=old_consumer.weight.dtype)
    if old_consumer.bias is None and consumer_bn is not None:
        # no bias to correct: shift the BatchNorm's running mean instead (BN(y + d) = BN'(y))
        bn = model.get_submodule(consumer_bn)
        with torch.no_grad():
            bn.running_mean.sub_(full_bias.to(bn.running_mean))
        full_bias = None
    new_consumer = keep_inputs(old_consumer, keep, per_group if isinstance(old_consumer, nn.Linear) else 1,
                               weight=full_weight, bias=full_bias)
    replace_module(model, consumer, new_consumer)


@dataclass(frozen=True)
class CapOptions:
    """Options of ``method='cap'``.

    Attributes
    ----------
    accuracy_floor : float, optional
        Instead of ``sparsity``: for producer ``i`` of ``P``, the largest removal whose
        validation accuracy stays at or above ``a_0 - (i + 1) / P * (a_0 - accuracy_floor)``
        (``a_0`` the dense accuracy), found by binary search.
    validation : (x, y), optional
        Validation inputs and labels for ``accuracy_floor``.
    ridge : float, default 1e-8
        Ridge on the input covariance, relative to its mean diagonal.
    accuracy : callable, optional
        ``accuracy(model, x, y) -> float``, what ``accuracy_floor`` is measured with
        (default: :func:`classification_accuracy`, top-1).
    """

    accuracy_floor: float | None = None
    validation: tuple[torch.Tensor, torch.Tensor] | None = None
    ridge: float = 1e-8
    accuracy: Callable[[nn.Module, torch.Tensor, torch.Tensor], float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ridge, (int, float)) or isinstance(self.ridge, bool) or not self.ridge >= 0:
            raise ValueError(f"ridge: got {self.ridge!r}, needs a number >= 0")
        if self.accuracy is not None and not callable(self.accuracy):
            raise ValueError(f"accuracy: got {self.accuracy!r}, needs a callable accuracy(model, x, y)")

    def check(self, sparsity: Any, layers: Any) -> None:
        """The errors of a target CaP cannot run with."""
        if layers is not None:
            raise ValueError("method 'cap' works on the whole network; layers= is not supported")
        if isinstance(sparsity, Mapping):
            raise ValueError("method 'cap': sparsity is one fraction of neurons for every layer, not a dict")
        if (sparsity is None) == (self.accuracy_floor is None):
            raise ValueError("method 'cap' needs sparsity= (fraction of neurons to remove) or "
                             "method_options={'accuracy_floor': a, 'validation': (x, y)}, one of the two")


def _keep_by_accuracy(model: nn.Module, producer: str, link: Any, consumer_bn: str | None, n_neurons: int,
                      cut_copy: Callable[[int], tuple], per_group: int, threshold: float, options: CapOptions,
                      accuracy: Callable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fewest neurons whose cut keeps the validation accuracy at ``threshold``, by binary search."""
    low, high = 1, n_neurons  # the smallest n_keep known good is high
    best = None
    while low < high:
        middle = (low + high) // 2
        trial = cut_copy(middle)
        candidate = copy.deepcopy(model)
        _cut(candidate, producer, link.consumer, link.batchnorms, consumer_bn, trial[0], per_group, trial[1],
             trial[2])
        if accuracy(candidate, *options.validation) >= threshold:
            high, best = middle, trial
        else:
            low = middle + 1
    return best if best is not None and len(best[0]) == high else cut_copy(high)


def cut_network(model: nn.Module, batches: Sequence[torch.Tensor], order: Sequence[str],
                consumer_batchnorms: dict[str, str | None], *, sparsity: float | None, options: CapOptions,
                max_positions: int | str | None = None, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Remove neurons from every producer layer of ``model`` (in place), in ``order``.

    Parameters
    ----------
    model : nn.Module
        The copy to cut down.
    batches : list of Tensor
        Calibration inputs.
    order : list of str
        Prunable layers in the order they run.
    consumer_batchnorms : dict
        For each layer, the BatchNorm folded after it (or None): a consumer without bias
        gets its correction through that BatchNorm's running mean.
    sparsity : float or None
        Fraction of each producer's neurons to remove (or ``options.accuracy_floor``).
    options : CapOptions

    Returns
    -------
    dict
        Per producer: ``consumer``, ``neurons_before``, ``neurons_after``, ``kept`` (indices of
        the kept neurons), ``error`` (relative error of the consumer's pre-activation after
        compensation), ``seconds``.
    """
    link_map = links(model)
    producers = [name for name in order if name in link_map]
    if not producers:
        raise ValueError("method 'cap': no layer feeds exactly one other Linear/ConvNd through ReLU, BatchNorm, "
                         "pooling or flatten; there are no neurons it can remove")
    accuracy = options.accuracy or classification_accuracy
    if options.accuracy_floor is not None:
        if options.validation is None:
            raise ValueError("method 'cap': accuracy_floor needs validation=(x, y)")
        dense_accuracy = accuracy(model, *options.validation)
    outcome: dict[str, dict[str, Any]] = {}
    for index, producer in enumerate(producers):
        started = time.perf_counter()
        link = link_map[producer]
        consumer_layer = model.get_submodule(link.consumer)
        X = capture_inputs(model, batches, {link.consumer: LayerHandle(link.consumer, consumer_layer)},
                           max_positions=max_positions, seed=seed, stop_early=True)[link.consumer][0].double().numpy()
        weight = _matrix(consumer_layer)
        bias = None if consumer_layer.bias is None else consumer_layer.bias.detach().double().cpu().numpy()
        n_neurons = model.get_submodule(producer).weight.shape[0]
        if weight.shape[1] % n_neurons:
            logger.warning("cap: %s has %d inputs for the %d neurons of %s; left as it is", link.consumer,
                           weight.shape[1], n_neurons, producer)
            continue
        per_group = weight.shape[1] // n_neurons

        def cut_copy(n_keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return greedy_keep(X, weight, bias, per_group, n_keep, options.ridge)

        consumer_bn = consumer_batchnorms.get(link.consumer)
        if options.accuracy_floor is None:
            kept, new_weight, new_bias = cut_copy(max(1, n_neurons - int(round(sparsity * n_neurons))))
        else:
            threshold = dense_accuracy - (index + 1) / len(producers) * (dense_accuracy - options.accuracy_floor)
            kept, new_weight, new_bias = _keep_by_accuracy(model, producer, link, consumer_bn, n_neurons, cut_copy,
                                                           per_group, threshold, options, accuracy)
        Z = X @ weight.T + (0.0 if bias is None else bias)
        error = float(np.linalg.norm(X @ new_weight.T + new_bias - Z) / max(np.linalg.norm(Z), 1e-300))
        _cut(model, producer, link.consumer, link.batchnorms, consumer_bn, kept, per_group, new_weight, new_bias)
        outcome[producer] = {"consumer": link.consumer, "neurons_before": n_neurons, "neurons_after": len(kept),
                             "kept": [int(k) for k in kept], "error": error,
                             "seconds": time.perf_counter() - started}
        logger.info("cap: %s keeps %d of %d neurons; %s refitted, relative error %.4f", producer, len(kept),
                    n_neurons, link.consumer, error)
        if progress is not None:
            progress(producer)
    return outcome


def layer_reports(model: nn.Module, order: Sequence[str], outcome: dict[str, dict[str, Any]],
                  before: dict[str, tuple[tuple[int, ...], int]], relu: dict[str, bool],
                  method: str = "cap") -> dict[str, LayerReport]:
    """A report for every layer whose neurons were removed or that was refitted for them
    (shapes as they were; ``shape_after`` in ``info``), from ``outcome``: per producer its
    ``consumer``, ``neurons_before``, ``neurons_after``, ``kept``, ``error`` (the
    consumer's relative error) and ``seconds``."""
    modules = dict(model.named_modules())
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
            name=name, kind=layer_kind(modules[name]), shape=shape,
            relu=relu[name], n_samples=0, nnz_before=nnz_before, nnz_after=int(torch.count_nonzero(weight)),
            epsilon=float("nan"), epsilon_rel=float("nan"), error_pre=error, error_out=error, iterations=0,
            status="done", violation=float("nan"), seconds=seconds, method=method, info=info)
    return reports


def prune_network(model: nn.Module, calib: Any, *, sparsity: float | None, options: CapOptions,
                  layers: Sequence[str] | None = None, max_positions: int | str | None = None, seed: int = 0,
                  progress: bool = True) -> PruneResult:
    """CaP on a copy of ``model``: whole neurons removed, the model comes out physically smaller.

    The signature of a network method (:class:`~nettrim.methods.base.Method` with scope
    ``'network'``): the pipeline passes the fields of its configuration of the same names.
    """
    options.check(sparsity, layers)
    started = time.perf_counter()
    batches = calibration_batches(calib)
    pruned = copy.deepcopy(model)
    found = layer_handles(pruned, None)
    handles = {name: handle for name, (handle, _) in found.items()}
    order = list(capture_inputs(pruned, batches[:1], handles, max_positions=1))
    before = {name: (tuple(handle.module.weight.shape), int(torch.count_nonzero(handle.module.weight)))
              for name, handle in handles.items()}
    reference_out = network_outputs(pruned, batches)
    bar = tqdm(total=len(order), desc="cap", unit="layer", disable=not progress, leave=False)
    try:
        outcome = cut_network(pruned, batches, order, {name: handle.batchnorm_name for name, handle in handles.items()},
                              sparsity=sparsity, options=options, max_positions=max_positions, seed=seed,
                              progress=lambda name: bar.update(1))
    finally:
        bar.close()
    reports = layer_reports(pruned, order, outcome, before, {name: relu for name, (_, relu) in found.items()})
    error = output_error(pruned, batches, reference_out)
    result = PruneResult(model=pruned, layers=reports, method="cap", mode="neurons", epsilon=math.nan,
                         gamma=math.nan, sparsity=sparsity if sparsity is not None else
                         {"accuracy_floor": options.accuracy_floor},
                         n_calibration=sum(int(x.shape[0]) for x in batches), output_error=error,
                         seconds=time.perf_counter() - started)
    logger.info("cap: %d layers cut down, %.1f%% of their weights kept, output error %s", len(reports),
                100 * result.kept, error)
    return result


METHOD = Method("cap", "network", prune_network, options=CapOptions, needs_sparsity=False)
