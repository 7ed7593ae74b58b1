"""Net-Trim's default at a high target: whole neurons out, when that errs less.

At a network target of :data:`NEURONS_FROM` (90%) of the weights and above, the default
(``method="nettrim"``, one ``sparsity`` fraction shared out among the layers) also prunes
the network with structured Net-Trim (:mod:`nettrim.structured`, ``unit="weights"``: the
neurons removed are counted in weights) at the same target and keeps the answer with the
lower output error on the calibration data, provided it keeps no more weights (within
:data:`WEIGHT_SLACK`). Neurons come whole, so the count of weights nearest the target may
lie above it: where that answer errs less but keeps too many, the next count of neurons
down (the nearest at or below the target) is pruned instead. Removing a neuron also
empties its consumers' columns, which an unstructured support chosen layer by layer does
not find; on over-parameterised MLPs at 90-95% that halves the output error or better
(``benchmarks/compare_methods.py``).

Where whole neurons err about as much as the weight-level answer (within the share
:data:`MIX_BAND` of its error, less or more), a mix is tried as well: whole neurons removed
until ``(1 - sparsity) ** MIX_SPLIT`` of the weights are left, then the same share of every
remaining layer's weights by Net-Trim at a target sparsity, in the structured prune's
cascade towards the original output (``weight_sparsity`` of :mod:`nettrim.structured`), so
that ``1 - sparsity`` is kept in all. The lowest output error of the two or three answers
is kept. The mix lies between the two ways of removing weights, and on the benchmark
suite (``nettrim-group+weights`` in ``benchmarks/compare_methods.py``, 90% and 95% on the
five models whose layers all take part) it was the lowest only where the two erred
nearly alike: on the MNIST-1D CNN at 95%, whole neurons 0.5% below the weight-level
answer (the mix 11% below both; once the per-neuron start was capped,
:data:`.methods._relu_obs.STEP`, it erred 5% above whole neurons there), and at 90%, with
that cap, whole neurons 2.5% above it (the mix 1.1% below it). Where
whole neurons erred more by 6% or more (up to 3.7 times as much) the mix erred more than
the weight-level answer; where they erred 15% and 41% less (the digits MLP at 90% and
95%), it erred more than either. So it is computed only where the two are within a
tenth of each other (the dearest part of the trial: a structured prune, then a Net-Trim
prune of every remaining layer), :data:`MIX_BAND` = 0.1, between the 2.5% where it won
and the 6% and 15% where it lost.

The structured answer comes back in the original architecture: the removed neurons' rows
and biases are zero, their consumers' columns are zero, the kept weights and BatchNorm
channels are those of the smaller model, so the network computes what the smaller one
does and keeps its shapes (:func:`expand`).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import PruneConfig
from .graph import links
from .record import LayerRecord
from .result import PruneResult

__all__ = ["NEURONS_FROM", "WEIGHT_SLACK", "MIX_SPLIT", "MIX_BAND", "applies", "expand", "prefer_neurons"]

logger = logging.getLogger(__name__)

NEURONS_FROM = 0.9  # the network targets at which the structured answer is also tried
WEIGHT_SLACK = 0.01  # it may keep this share more weights than the unstructured answer
MIX_SPLIT = 0.5  # the mix: whole neurons keep (1 - sparsity) ** MIX_SPLIT of the weights, then weights the rest
MIX_BAND = 0.1  # the mix is tried where whole neurons' error is within this share of the weight-level error


def applies(config: PruneConfig) -> bool:
    """Whether ``config`` is the default at a high network target: Net-Trim with OBS supports
    (``neurons`` not turned off), cascade, one fraction of at least :data:`NEURONS_FROM`
    shared out among every layer, no refit."""
    options = config.method_options
    return (config.method == "nettrim" and config.mode == "cascade" and isinstance(config.sparsity, float)
            and config.sparsity >= NEURONS_FROM and config.allocation is not None and config.layers is None
            and config.refit is None and options.neurons and options.support == "obs" and not options.refit)


def _index_sets(original: nn.Module, structured: PruneResult, found: dict[str, Any]
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per module, the original indices of its kept outputs (producers and their BatchNorms)
    and of its kept inputs (consumers: every column of a kept neuron); ``found`` is
    :func:`~nettrim.graph.links` of ``original``."""
    rows: dict[str, np.ndarray] = {}
    columns: dict[str, np.ndarray] = {}
    for name, report in structured.layers.items():
        kept = report.info.get("kept_neurons")
        if kept is None:
            continue
        kept = np.asarray(kept, dtype=np.int64)
        link = found[name]
        rows[name] = kept
        for batchnorm in link.batchnorms:
            rows[batchnorm] = kept
        consumer = original.get_submodule(link.consumer)
        per_group = consumer.weight.shape[1] // original.get_submodule(name).weight.shape[0] \
            if isinstance(consumer, nn.Linear) else 1
        columns[link.consumer] = (kept[:, None] * per_group + np.arange(per_group)).reshape(-1)
    return rows, columns


def expand(original: nn.Module, structured: PruneResult, found: dict[str, Any] | None = None) -> nn.Module:
    """A copy of ``original`` that computes what ``structured.model`` (neurons removed)
    computes: the smaller model's tensors at their original indices; a removed neuron's
    weights and bias zero (its BatchNorm channel kept as it was: nothing reads it), its
    consumers' columns zero. ``found``: ``links(original)``, when the caller has it."""
    rows, columns = _index_sets(original, structured, links(original) if found is None else found)
    full = copy.deepcopy(original)
    small = dict(structured.model.named_modules())
    with torch.no_grad():
        for name, module in full.named_modules():
            if name not in rows and name not in columns:
                continue
            smaller = small[name]
            is_batchnorm = isinstance(module, nn.modules.batchnorm._NormBase)
            for key, target in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                value = getattr(smaller, key)
                if target.dim() == 0:  # BatchNorm's num_batches_tracked
                    target.copy_(value)
                    continue
                index: list[Any] = [torch.arange(n, device=target.device) for n in target.shape[:2]]
                if name in rows:
                    index[0] = torch.as_tensor(rows[name], device=target.device)
                if name in columns and target.dim() > 1:
                    index[1] = torch.as_tensor(columns[name], device=target.device)
                if not is_batchnorm:
                    target.zero_()
                grid = torch.meshgrid(*index, indexing="ij") if len(index) == 2 else index
                target[tuple(grid)] = value.to(target)
    return full


def _structured(model: nn.Module, calib: Any, config: PruneConfig, records: Mapping[str, LayerRecord] | None,
                reference_outputs: torch.Tensor | None, sparsity: float, weight_sparsity: float | None,
                at_most: bool = False) -> PruneResult | None:
    """Structured Net-Trim of ``model`` removing ``sparsity`` of the weights as whole neurons
    (then ``weight_sparsity`` of every remaining layer's weights), or None (logged) where it
    cannot or did not run. ``at_most``: the count of neurons nearest the target without
    keeping more weights (``GroupOptions.at_most``)."""
    from .structured import GroupOptions, prune_network

    try:
        return prune_network(model, calib, sparsity=sparsity, epsilon=config.epsilon,
                             options=GroupOptions(unit="weights", weight_sparsity=weight_sparsity, at_most=at_most),
                             solver_options=config.solver_options, max_positions=config.max_positions,
                             seed=config.seed, progress=config.progress, records=records,
                             reference_outputs=reference_outputs)
    except ValueError as exc:  # no neuron can be removed (no producer -> consumer link)
        logger.info("nettrim: no structured answer to compare (%s)", exc)
    except Exception as exc:  # the weight-level answer is complete: a failed alternative must not lose it
        logger.warning("nettrim: the structured answer failed (%s: %s); the weight-level answer is kept",
                       type(exc).__name__, exc)
    return None


def _within_slack(answer: PruneResult, result: PruneResult) -> bool:
    """Whether ``answer`` keeps no more weights than the weight-level ``result``, within
    :data:`WEIGHT_SLACK` (neurons come whole: a count of them may overshoot the target)."""
    return answer.nnz_after <= (1.0 + WEIGHT_SLACK) * result.nnz_after


def _errs_less(answer: PruneResult, other: PruneResult) -> bool:
    return (answer.output_error is not None and other.output_error is not None
            and answer.output_error < other.output_error)


def _beats(answer: PruneResult | None, other: PruneResult, result: PruneResult) -> bool:
    """Whether ``answer`` errs less than ``other`` on the same layers and keeps no more weights
    than the weight-level ``result`` (:func:`_within_slack`)."""
    return (answer is not None and set(answer.layers) == set(result.layers) and _errs_less(answer, other)
            and _within_slack(answer, result))


def _near(answer: PruneResult, result: PruneResult) -> bool:
    """Whether ``answer`` (on the same layers) errs within :data:`MIX_BAND` of the
    weight-level ``result``'s output error, less or more."""
    return (set(answer.layers) == set(result.layers) and answer.output_error is not None
            and result.output_error is not None
            and abs(answer.output_error - result.output_error) <= MIX_BAND * result.output_error)


def _wider(answer: PruneResult, result: PruneResult) -> bool:
    """Whether ``answer`` errs less than the weight-level ``result`` but keeps more weights than
    :func:`_within_slack` allows."""
    return _errs_less(answer, result) and not _within_slack(answer, result)


def prefer_neurons(result: PruneResult, model: nn.Module, calib: Any, config: PruneConfig,
                   records: Mapping[str, LayerRecord] | None = None,
                   reference_outputs: torch.Tensor | None = None) -> PruneResult:
    """``result`` (the default's answer), or a structured answer at the same target when it
    has the lower output error and no more weights (within :data:`WEIGHT_SLACK`), written
    back into the original architecture (:func:`expand`). The structured answers: whole
    neurons alone (at the count of weights nearest the target, or where that errs less but
    keeps too many, at the nearest count at or below it), and, where that one's output
    error is within :data:`MIX_BAND` of ``result``'s, less or more, the mix of
    :data:`MIX_SPLIT` (module docstring). ``records``: the layers of ``model`` as the prune
    recorded them (original signals), and ``reference_outputs`` the original model's
    outputs on ``calib`` (the prune's reference), so the structured prunes do not compute
    them again."""
    try:
        found = links(model)
    except ValueError as exc:
        logger.info("nettrim: no structured answer to compare (%s)", exc)
        return result
    reachable = set(found) | {link.consumer for link in found.values()}
    if not set(result.layers) <= reachable:  # a layer no neuron removal touches (a residual block's, say)
        logger.info("nettrim: no structured answer to compare (%s: no neuron of theirs can be removed)",
                    ", ".join(sorted(set(result.layers) - reachable)))
        return result
    structured = _structured(model, calib, config, records, reference_outputs, config.sparsity, None)
    if structured is None:
        return result
    spent = structured.seconds
    if _wider(structured, result):  # errs less, but the nearest count of neurons keeps too many weights
        fewer = _structured(model, calib, config, records, reference_outputs, config.sparsity, None, True)
        spent += 0.0 if fewer is None else fewer.seconds
        structured = structured if fewer is None else fewer
    best = structured if _beats(structured, result, result) else None
    if _near(structured, result):
        # whole neurons err about as much as weights: fewer of them, with sparse weights, may err less than either
        kept = (1.0 - config.sparsity) ** MIX_SPLIT
        mix = _structured(model, calib, config, records, reference_outputs, 1.0 - kept,
                          1.0 - (1.0 - config.sparsity) / kept)
        spent += 0.0 if mix is None else mix.seconds
        best = mix if _beats(mix, result if best is None else best, result) else best
    seconds = result.seconds + spent
    timings = {**result.timings, "neurons": spent}
    if best is None:
        logger.info("nettrim: kept the weight-level answer (output error %.4g; whole neurons: %.4g with %d weights "
                    "against %d)", result.output_error, structured.output_error, structured.nnz_after,
                    result.nnz_after)
        return dataclasses.replace(result, seconds=seconds, timings=timings)
    full = expand(model, best, found)
    answer = "neurons removed" if best is structured else "neurons removed, then weights"
    layers = {}
    for name, report in result.layers.items():  # the same layers (checked above)
        chosen = best.layers[name]
        info = {key: value for key, value in chosen.info.items() if key != "shape_after"}  # the shapes stay
        info.update(answer=answer, weight_level_error=result.output_error)
        layers[name] = dataclasses.replace(chosen, shape=report.shape, info=info,
                                           nnz_after=int(torch.count_nonzero(full.get_submodule(name).weight)))
    logger.info("nettrim: %s (output error %.4g against %.4g for the weight-level answer)", answer,
                best.output_error, result.output_error)
    return dataclasses.replace(result, model=full, layers=layers, mode="neurons", sparsity=config.sparsity,
                               output_error=best.output_error, seconds=seconds, timings=timings)
