"""How much the next layer reads each neuron: the weights of Net-Trim's per-neuron choices.

The neurons of a layer do not matter alike downstream. When a layer's output reaches
exactly one prunable consumer through channel-wise operations (ReLU, BatchNorm, dropout,
max pooling, flatten; :func:`nettrim.graph.links`), an error ``E_m`` on neuron ``m``'s
output (a column of samples, or a channel's positions) moves the consumer's
pre-activation by ``E_m`` times the consumer's weights on the inputs it reads from ``m``,
``W_c[:, J_m]``: one column for a Linear after a Linear, the kernel taps of channel ``m``
for a convolution, its ``H*W`` positions for a Linear after a flatten. For errors
uncorrelated across neurons and positions, the consumer's squared error is then, in
expectation, ``sum_m c_m ||E_m||^2`` with

.. math::  c_m = \\|W_c[:, J_m]\\|_F^2,

scaled here to mean 1 over the layer's neurons (the consumer's BatchNorm folded in). A
layer with no single consumer (the last one, a residual branch) gets none: every neuron
counts alike. Net-Trim's default at a target sparsity weights each neuron's fitted error
by ``c_m`` when it allots the removals and chooses the rows
(:mod:`nettrim.methods.nettrim`), so a neuron the consumer barely reads gives up weights
first; the network target is shared out on error curves weighted the same way
(:mod:`nettrim.allocation`), so a layer's share follows the error it passes on.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from torch import nn

from .graph import links
from .record import LayerRecord

__all__ = ["consumer_importance"]

logger = logging.getLogger(__name__)


def consumer_importance(model: nn.Module, records: Mapping[str, LayerRecord]) -> dict[str, np.ndarray]:
    """``c_m`` (module docstring) of every recorded layer whose output one recorded layer
    consumes: layer name to an ``(n_out,)`` array of mean 1. Layers left out: no single
    consumer, a consumer that is not recorded, one whose inputs are not a whole number per
    neuron, one that reads none of them (all zero weights), or a model ``torch.fx`` cannot
    trace (then none)."""
    try:
        found = links(model)
    except ValueError as exc:
        logger.info("consumer weights: none (%s)", exc)
        return {}
    importance = {}
    for producer, link in found.items():
        if producer not in records or link.consumer not in records:
            continue
        n_neurons = records[producer].weight.shape[0]
        weight = records[link.consumer].weight  # (n_out, n_in): the inputs of a neuron are adjacent
        if weight.shape[1] % n_neurons:
            continue
        squares = weight.double().pow(2).sum(dim=0).reshape(n_neurons, -1).sum(dim=1).numpy()
        mean = float(squares.mean())
        if mean > 0:
            importance[producer] = squares / mean
    return importance
