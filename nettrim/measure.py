"""How far a pruned layer and a pruned network are from the original: the report's errors.

``error_pre`` and ``error_out`` of a layer (:func:`layer_errors`) compare its
pre-activation and output with the original layer's on the input it was solved on; the
network's ``output_error`` (:func:`output_error`) compares the outputs of the pruned and
the original model on the calibration data. All relative Frobenius norms, accumulated in
float64 over row blocks. :func:`classification_accuracy` is the top-1 accuracy the examples
and CaP's ``accuracy_floor`` use by default.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from solvers._blocks import row_blocks

from .record import LayerRecord

__all__ = ["layer_errors", "network_outputs", "output_error", "classification_accuracy"]


def _relative(diff: torch.Tensor, reference: torch.Tensor) -> float:
    norm = float(torch.linalg.vector_norm(reference))
    value = float(torch.linalg.vector_norm(diff))
    return value / norm if norm > 0 else value


def layer_errors(rec: LayerRecord, X: torch.Tensor, weight: np.ndarray, bias: np.ndarray | None
                 ) -> tuple[float, float, float]:
    """Relative errors ``||Ẑ - Z|| / ||Z||`` and ``||Ŷ - Y|| / ||Y||`` of the layer's
    pre-activation and output (after its ReLU, if any) with ``weight`` and ``bias`` on ``X``,
    and the certified error ``sqrt(sum_active (ẑ - y)^2 + sum_inactive max(ẑ, 0)^2) / ||Y||``
    (:func:`solvers.refit.certified_error`), which bounds the second from above."""
    weight_t = torch.from_numpy(np.asarray(weight, dtype=np.float64)).T
    sums = torch.zeros(5, dtype=torch.float64)  # ||dZ||^2, ||Z||^2, ||dY||^2, ||Y||^2, certified^2
    for rows in row_blocks(X.shape[0]):
        pre = X[rows].double() @ weight_t
        if bias is not None:
            pre += torch.from_numpy(np.asarray(bias, dtype=np.float64))
        reference = rec.pre_activation[rows]
        out, target = (torch.clamp_min(pre, 0.0), torch.clamp_min(reference, 0.0)) if rec.relu else (pre, reference)
        bound = torch.where(target > 0, pre - target, torch.clamp_min(pre, 0.0)) if rec.relu else pre - reference
        sums += torch.stack([((pre - reference) ** 2).sum(), (reference ** 2).sum(),
                             ((out - target) ** 2).sum(), (target ** 2).sum(), (bound ** 2).sum()])
    roots = sums.sqrt().tolist()

    def relative(value: float, norm: float) -> float:
        return value / norm if norm > 0 else value

    return relative(roots[0], roots[1]), relative(roots[2], roots[3]), relative(roots[4], roots[3])


def network_outputs(model: nn.Module, batches: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The model's outputs on ``batches``, flattened per input, float64 (None when the
    output is not a tensor)."""
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


def output_error(model: nn.Module, batches: Sequence[torch.Tensor], reference: torch.Tensor | None) -> float | None:
    """Relative error of ``model``'s outputs against ``reference`` (None without a reference)."""
    if reference is None:
        return None
    outputs = network_outputs(model, batches)
    return None if outputs is None else _relative(outputs - reference, reference)


def classification_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of correctly classified inputs (top-1; eval mode, no gradients): the count of
    them over ``len(y)``, in float64, so that equal counts give equal fractions."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        correct = int((model(x).argmax(dim=1) == y).sum())
    model.train(was_training)
    return correct / int(y.numel())
