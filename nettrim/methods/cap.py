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

The network-level driver (:func:`prune_network`) walks the producer -> consumer links of
the model in order, cuts the producer (and the BatchNorms between) down to the kept
neurons, and replaces the consumer by a smaller refitted one: the pruned model is
physically smaller.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..graph import links
from ..layers import LayerHandle
from ..record import capture_inputs
from ..surgery import keep_batchnorm_channels, keep_inputs, keep_outputs, replace_module

__all__ = ["compensate", "greedy_keep", "prune_network"]

logger = logging.getLogger(__name__)


def _moments(X: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    centred = X - mean
    C = centred.T @ centred / X.shape[0]
    C[np.diag_indices_from(C)] += ridge * max(float(np.mean(np.diag(C))), 1e-300)
    return mean, C


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
                ridge: float = 1e-8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep ``n_keep`` groups of ``per_group`` consecutive input columns, greedily.

    Returns the kept group indices (sorted), the compensated weight (zero on removed
    columns) and bias.
    """
    mean, C = _moments(X, ridge)
    W = np.asarray(weight, dtype=np.float64).copy()
    P = np.linalg.inv(C)
    P = (P + P.T) / 2
    n_groups = W.shape[1] // per_group
    alive = list(range(n_groups))
    original = np.asarray(weight, dtype=np.float64)
    while len(alive) > n_keep:
        costs = []
        for g in alive:
            G = slice(g * per_group, (g + 1) * per_group)
            block = P[G, G]
            costs.append(float(np.sum(np.linalg.solve(block, W[:, G].T) * W[:, G].T)))
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
            bn.running_mean.sub_(full_bias.to(bn.running_mean.dtype))
        full_bias = None
    new_consumer = keep_inputs(old_consumer, keep, per_group if isinstance(old_consumer, nn.Linear) else 1,
                               weight=full_weight, bias=full_bias)
    replace_module(model, consumer, new_consumer)


def prune_network(model: nn.Module, batches: Sequence[torch.Tensor], order: Sequence[str],
                  consumer_batchnorms: dict[str, str | None], *, sparsity: float | None,
                  accuracy_floor: float | None = None, validation: tuple[torch.Tensor, torch.Tensor] | None = None,
                  accuracy: Callable[[nn.Module, torch.Tensor, torch.Tensor], float] | None = None,
                  ridge: float = 1e-8, max_positions: int | None = None, seed: int = 0,
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
        Fraction of each producer's neurons to remove.
    accuracy_floor : float, optional
        Instead of ``sparsity``: for producer ``i`` of ``P``, the largest removal whose
        validation accuracy stays at or above ``a_0 - (i + 1) / P * (a_0 - accuracy_floor)``
        (``a_0`` the dense accuracy), found by binary search: the threshold steps down
        linearly over the layers.
    validation : (x, y), optional
        Validation inputs and labels for ``accuracy_floor``.

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
        raise ValueError("method 'cap': no layer feeds exactly one other Linear/Conv2d through ReLU, BatchNorm, "
                         "pooling or flatten; there are no neurons it can remove")
    if accuracy_floor is not None:
        if validation is None or accuracy is None:
            raise ValueError("method 'cap': accuracy_floor needs validation=(x, y)")
        dense_accuracy = accuracy(model, *validation)
    outcome: dict[str, dict[str, Any]] = {}
    for index, producer in enumerate(producers):
        started = time.perf_counter()
        link = link_map[producer]
        consumer_layer = model.get_submodule(link.consumer)
        handle = LayerHandle(link.consumer, consumer_layer)
        X = capture_inputs(model, batches, {link.consumer: handle}, max_positions=max_positions, seed=seed,
                           stop_early=True)[link.consumer][0].double().numpy()
        weight = _matrix(consumer_layer)
        bias = None if consumer_layer.bias is None else consumer_layer.bias.detach().double().numpy()
        n_neurons = model.get_submodule(producer).weight.shape[0]
        if weight.shape[1] % n_neurons:
            logger.warning("cap: %s has %d inputs for the %d neurons of %s; left as it is", link.consumer,
                           weight.shape[1], n_neurons, producer)
            continue
        per_group = weight.shape[1] // n_neurons

        def cut_copy(n_keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return greedy_keep(X, weight, bias, per_group, n_keep, ridge)

        if accuracy_floor is None:
            n_keep = max(1, n_neurons - int(round(sparsity * n_neurons)))
            kept, new_weight, new_bias = cut_copy(n_keep)
        else:
            threshold = dense_accuracy - (index + 1) / len(producers) * (dense_accuracy - accuracy_floor)
            low, high = 1, n_neurons  # the smallest n_keep known good is high
            best = None
            while low < high:
                middle = (low + high) // 2
                trial = cut_copy(middle)
                candidate = copy.deepcopy(model)
                _cut(candidate, producer, link.consumer, link.batchnorms,
                     consumer_batchnorms.get(link.consumer), trial[0], per_group, trial[1], trial[2])
                if accuracy(candidate, *validation) >= threshold:
                    high, best = middle, trial
                else:
                    low = middle + 1
            kept, new_weight, new_bias = best if best is not None and len(best[0]) == high else cut_copy(high)
        Z = X @ weight.T + (0.0 if bias is None else bias)
        Z_new = X @ new_weight.T + new_bias
        error = float(np.linalg.norm(Z_new - Z) / max(np.linalg.norm(Z), 1e-300))
        _cut(model, producer, link.consumer, link.batchnorms, consumer_batchnorms.get(link.consumer),
             kept, per_group, new_weight, new_bias)
        outcome[producer] = {"consumer": link.consumer, "neurons_before": n_neurons, "neurons_after": len(kept),
                             "kept": [int(k) for k in kept], "error": error,
                             "seconds": time.perf_counter() - started}
        logger.info("cap: %s keeps %d of %d neurons; %s refitted, relative error %.4f", producer, len(kept),
                    n_neurons, link.consumer, error)
        if progress is not None:
            progress(producer)
    return outcome
