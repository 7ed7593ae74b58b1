"""Activation recorder: each prunable layer's input and pre-activation on calibration data.

>>> records = nettrim.record(model, calib)                    # doctest: +SKIP
>>> rec = records["features.0"]; rec.input.shape, rec.relu     # doctest: +SKIP

Forward hooks on every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` (or the ones named) copy the layer's
input while the model runs in eval mode under ``torch.no_grad()``; the hooks are always
removed. The pre-activation is computed from that input and the (BatchNorm-folded) weights,
so that it is exactly the quantity the layer program reconstructs.
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from solvers._blocks import row_blocks

from .calibration import calibration_batches, check_max_positions, row_cap
from .layers import LayerHandle
from .prunable import layer_handles, left_dense
from .store import ActivationStore

__all__ = ["LayerRecord", "record", "record_layers", "calibration_batches", "capture_inputs", "layer_handles",
           "left_dense"]

logger = logging.getLogger(__name__)


@dataclass
class LayerRecord:
    """One layer's signals on the calibration data.

    Attributes
    ----------
    name : str
        Qualified module name (as in ``model.named_modules()``).
    kind : {'linear', 'conv1d', 'conv2d', 'conv3d'}
    shape : tuple of int
        Shape of the module's weight.
    input : Tensor, shape (n_samples, n_in)
        The layer input, one row per sample (``Linear``) or per output position of an image
        (a convolution: im2col patches, ``n_in = C_in * prod(kernel_size)``), in the model's dtype.
    pre_activation : Tensor, shape (n_samples, n_out), float64
        ``input @ weight.T + bias``: the layer's output, after the folded BatchNorm if any.
    relu : bool
        Whether a ReLU follows the layer.
    weight : Tensor, shape (n_out, n_in), float64
        The layer's weight as a matrix, with the BatchNorm folded in.
    bias : Tensor, shape (n_out,), float64, or None
        The folded bias (None when the layer has none and no BatchNorm shift).
    batchnorm : str or None
        Name of the folded BatchNorm.
    n_rows_total : int
        Rows the calibration data gives this layer before subsampling.
    rows : ndarray of int or None
        Indices of the rows kept when ``max_positions`` subsampled them (sorted), else None.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    input: torch.Tensor
    pre_activation: torch.Tensor
    relu: bool
    weight: torch.Tensor
    bias: torch.Tensor | None
    batchnorm: str | None
    n_rows_total: int
    rows: np.ndarray | None = None

    @property
    def output(self) -> torch.Tensor:
        """The layer's target: ``relu(pre_activation)`` with a ReLU, else the pre-activation."""
        return torch.clamp_min(self.pre_activation, 0.0) if self.relu else self.pre_activation

    @property
    def n_samples(self) -> int:
        return int(self.input.shape[0])

    @property
    def n_in(self) -> int:
        return int(self.input.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])

    def __repr__(self) -> str:
        return (f"LayerRecord({self.name!r}, {self.kind}, shape={self.shape}, "
                f"n_samples={self.n_samples}, relu={self.relu}, batchnorm={self.batchnorm!r})")


def _row_subset(name: str, n_total: int, max_positions: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of the rows kept for a layer: a seeded choice depending only on
    the layer name, the number of rows and the seed (so the pruned and the original
    network keep the same rows)."""
    if max_positions is None or n_total <= max_positions:
        return None
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return np.sort(rng.choice(n_total, size=max_positions, replace=False))


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for param in model.parameters():
        return param.device, param.dtype
    return torch.device("cpu"), torch.get_default_dtype()


class _Enough(Exception):
    """Raised by a hook to end a forward pass once every wanted input is captured."""


class _Capture:
    """Forward hooks that copy the rows of each named layer's input, batch after batch.

    With ``stop_early`` the forward pass of a batch is cut short once every named layer
    has run (the rest of the network is not needed), which makes the cascade mode's
    per-layer passes cheaper the earlier the layer sits.
    """

    def __init__(self, handles: dict[str, LayerHandle], n_inputs: int, max_positions: int | str | None,
                 seed: int, stop_early: bool = False, store: ActivationStore | None = None) -> None:
        self.handles = handles
        self.store = ActivationStore() if store is None else store
        self.stop_early = stop_early
        self.n_inputs = n_inputs
        self.max_positions = max_positions
        self.seed = seed
        self.sinks = {name: self.store.sink(f"{name}.input") for name in handles}
        self.subset: dict[str, np.ndarray | None] = {}
        self.n_total: dict[str, int] = {}
        self.offset = {name: 0 for name in handles}
        self.calls = {name: 0 for name in handles}
        self.order: list[str] = []
        self.batch_size = 0

    def hook(self, name: str):
        def on_forward(module: nn.Module, inputs: tuple, output: Any) -> None:
            self.calls[name] += 1
            if self.calls[name] > 1:
                raise RuntimeError(
                    f"layer {name!r} runs more than once per forward pass (shared weights); "
                    "Net-Trim prunes one use of a layer: leave it out with layers=[...]")
            if name not in self.order:
                self.order.append(name)
            handle, x = self.handles[name], inputs[0].detach()
            n_rows = handle.n_rows(x)
            if name not in self.n_total:
                per_input, rest = divmod(n_rows, self.batch_size)
                if rest:
                    raise RuntimeError(
                        f"layer {name!r}: {n_rows} input rows for a batch of {self.batch_size} "
                        "inputs; the recorder needs the same number of rows for every input")
                self.n_total[name] = per_input * self.n_inputs
                cap = row_cap(self.max_positions, int(np.prod(handle.shape[1:])), handle.kind)
                self.subset[name] = _row_subset(name, self.n_total[name], cap, self.seed)
            start = self.offset[name]
            self.offset[name] += n_rows
            subset = self.subset[name]
            if subset is None:
                rows = handle.rows(x)
            else:  # only the sampled rows are formed (a convolution's patches: gathered)
                lo, hi = np.searchsorted(subset, [start, start + n_rows])
                rows = handle.rows(x, torch.from_numpy(subset[lo:hi] - start))
            self.sinks[name].append(rows)
            if self.stop_early and all(self.calls.values()):
                raise _Enough
        return on_forward

    def run(self, model: nn.Module, batches: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        device, dtype = _model_device_dtype(model)
        hooks = [handle.module.register_forward_hook(self.hook(name)) for name, handle in self.handles.items()]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for index, x in enumerate(batches):
                    self.batch_size = int(x.shape[0])
                    self.calls = dict.fromkeys(self.calls, 0)
                    shape = tuple(x.shape)
                    x = x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)
                    try:
                        model(x)
                    except _Enough:
                        pass
                    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                        if any(f"layer {name!r}" in str(exc) for name in self.handles):
                            raise  # our own message, from a hook
                        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        raise ValueError(f"calib: the model fails on batch {index} of shape {shape} "
                                         f"({type(exc).__name__}: {first_line}); check that the calibration "
                                         "inputs have the shape the model expects") from exc
        finally:
            for hook in hooks:
                hook.remove()
            model.train(was_training)
        missing = [name for name in self.handles if not self.sinks[name].rows]
        if missing:
            raise RuntimeError(f"layers {missing} never ran during the forward pass; "
                               "leave them out with layers=[...]")
        return {name: self.sinks[name].finish() for name in self.order}


def capture_inputs(model: nn.Module, batches: Sequence[torch.Tensor], handles: dict[str, LayerHandle],
                   *, max_positions: int | str | None = None, seed: int = 0, stop_early: bool = False,
                   store: ActivationStore | None = None) -> dict[str, tuple[torch.Tensor, int, np.ndarray | None]]:
    """Rows of the named layers' inputs in one pass over the batches, in execution order.

    ``stop_early`` ends each forward pass once every named layer has run (the layers
    after them are not run, so a layer used twice is not detected). ``store`` says where
    the rows go (default: memory).

    Returns
    -------
    dict
        Name to ``(rows, n_rows_total, kept_row_indices or None)``.
    """
    n_inputs = sum(int(x.shape[0]) for x in batches)
    capture = _Capture(handles, n_inputs, max_positions, seed, stop_early, store)
    rows = capture.run(model, batches)
    return {name: (rows[name], capture.n_total[name], capture.subset[name]) for name in rows}


def record(
    model: nn.Module,
    calib: Any,
    *,
    layers: Sequence[str] | None = None,
    max_positions: int | str | None = None,
    seed: int = 0,
) -> dict[str, LayerRecord]:
    """Record every prunable layer's input and pre-activation on calibration data.

    Parameters
    ----------
    model : nn.Module
        An ``nn.Sequential`` or any model ``torch.fx`` can trace (for the ReLU detection;
        other models are recorded with every layer treated as linear). It is run in eval
        mode under ``torch.no_grad()`` and its training flag is restored afterwards.
    calib : Tensor, ndarray or iterable of batches
        Calibration inputs: a tensor, or batches ``x`` / ``(x, y)`` as a DataLoader yields.
    layers : list of str, optional
        Qualified names of the ``nn.Linear`` / ``nn.ConvNd`` modules to record (default all).
    max_positions : int, 'auto' or None, default None
        At most this many rows per layer: when the calibration data gives a layer more rows
        (samples times output positions, for a convolution), a seeded random subset is kept.
        ``'auto'`` samples the convolutions as :func:`nettrim.prune` does by default
        (:func:`nettrim.calibration.row_cap`); None records every row.
    seed : int, default 0
        Seed of that subset.

    Returns
    -------
    dict
        Layer name to :class:`LayerRecord`, in the order the layers run.
    """
    check_max_positions(max_positions)
    batches = calibration_batches(calib)
    return record_layers(model, batches, layer_handles(model, layers), max_positions=max_positions, seed=seed)


def record_layers(model: nn.Module, batches: Sequence[torch.Tensor], found: dict[str, tuple[LayerHandle, bool]],
                  *, max_positions: int | None = None, seed: int = 0,
                  store: ActivationStore | None = None) -> dict[str, LayerRecord]:
    """:func:`record` for layers already resolved by :func:`layer_handles`.

    The pre-activations are computed a block of rows at a time (:mod:`solvers._blocks`) into the ``store``
    (memory by default), so a store on disk never holds a whole layer in memory.
    """
    store = ActivationStore() if store is None else store
    handles = {name: handle for name, (handle, _) in found.items()}
    captured = capture_inputs(model, batches, handles, max_positions=max_positions, seed=seed, store=store)
    records = {}
    for name, (rows, n_total, subset) in captured.items():
        handle, relu = found[name]
        weight, bias = handle.folded()
        if not torch.isfinite(weight).all() or (bias is not None and not torch.isfinite(bias).all()):
            raise ValueError(f"layer {name!r}: its weights hold NaN or Inf; check the checkpoint")
        sink = store.sink(f"{name}.pre_activation")
        for block_rows in row_blocks(rows.shape[0]):
            block = rows[block_rows]
            if not torch.isfinite(block).all():
                raise ValueError(f"layer {name!r}: its input holds NaN or Inf on the calibration data (an earlier "
                                 "layer overflows or has non-finite weights); check the checkpoint and the "
                                 "inputs' scale")
            pre_block = block.double() @ weight.T
            if bias is not None:
                pre_block += bias
            sink.append(pre_block, copy=False)
        pre = sink.finish()
        records[name] = LayerRecord(name=name, kind=handle.kind, shape=handle.shape, input=rows,
                                    pre_activation=pre, relu=relu, weight=weight, bias=bias,
                                    batchnorm=handle.batchnorm_name, n_rows_total=n_total, rows=subset)
    store.drop_resident()  # the checks above read every mapped row
    logger.info("recorded %d layers on %d calibration inputs", len(records), sum(len(x) for x in batches))
    return records
