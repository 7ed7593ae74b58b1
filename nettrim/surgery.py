"""Physically removing neurons and channels: smaller modules in place of the old ones.

Removing neuron (channel) ``c`` of a producer layer deletes row ``c`` of its weight and
bias, channel ``c`` of the BatchNorms after it, and the inputs of the consumer that come
from it: input channel ``c`` of a convolution, or features ``c*r .. c*r + r - 1`` of a
``Linear`` (``r = 1`` after a ``Linear``, ``r = H*W`` after a flattened ``C x H x W``
map, ``r = L`` after a flattened ``C x L`` one).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import CONVOLUTIONS

__all__ = ["replace_module", "keep_outputs", "keep_inputs", "keep_batchnorm_channels", "resized"]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` is."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _like(module: nn.Module, new: nn.Module) -> nn.Module:
    param = module.weight
    return new.to(device=param.device, dtype=param.dtype)


def _conv_like(layer: nn.Module, in_channels: int, out_channels: int, bias: bool) -> nn.Module:
    """A convolution of ``layer``'s class and geometry with other channel counts."""
    return type(layer)(in_channels, out_channels, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                       dilation=layer.dilation, bias=bias, padding_mode=layer.padding_mode)


def keep_outputs(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A copy of a ``Linear``/``ConvNd`` with only the outputs ``keep`` (sorted indices)."""
    n_keep = int(keep.numel())
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, n_keep, bias=layer.bias is not None)
    else:
        new = _conv_like(layer, layer.in_channels, n_keep, layer.bias is not None)
    new = _like(layer, new)
    with torch.no_grad():
        new.weight.copy_(layer.weight[keep])
        if layer.bias is not None:
            new.bias.copy_(layer.bias[keep])
    return new


def keep_inputs(layer: nn.Module, keep_channels: torch.Tensor, per_channel: int,
                weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> nn.Module:
    """A copy of a ``Linear``/``ConvNd`` reading only the producer channels ``keep_channels``.

    ``weight``/``bias`` (full-size, optional) replace the layer's own values first, e.g. a
    refitted weight whose removed inputs are zero.
    """
    weight = layer.weight.detach() if weight is None else weight
    bias = (layer.bias.detach() if layer.bias is not None else None) if bias is None else bias
    if isinstance(layer, nn.Linear):
        columns = (keep_channels[:, None] * per_channel + torch.arange(per_channel)).reshape(-1)
        new = nn.Linear(int(columns.numel()), layer.out_features, bias=bias is not None)
        kept_weight = weight[:, columns]
    else:
        new = _conv_like(layer, int(keep_channels.numel()), layer.out_channels, bias is not None)
        kept_weight = weight[:, keep_channels]
    new = _like(layer, new)
    with torch.no_grad():
        new.weight.copy_(kept_weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def keep_batchnorm_channels(bn: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A copy of a ``BatchNorm1d``/``2d``/``3d`` with only the channels ``keep``."""
    new = type(bn)(int(keep.numel()), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats)
    reference = bn.running_mean if bn.running_mean is not None else bn.weight
    if reference is not None:
        new = new.to(device=reference.device, dtype=reference.dtype)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight[keep])
            new.bias.copy_(bn.bias[keep])
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[keep])
            new.running_var.copy_(bn.running_var[keep])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    new.train(bn.training)
    return new


def resized(module: nn.Module, sizes: dict[str, int]) -> nn.Module:
    """A fresh module of ``module``'s class and settings with other sizes (``in_features`` /
    ``out_features``, ``in_channels`` / ``out_channels`` or ``num_features``), for loading
    the weights of a model whose neurons were removed; its values are to be loaded."""
    bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Linear):
        new = nn.Linear(sizes["in_features"], sizes["out_features"], bias=bias)
    elif isinstance(module, CONVOLUTIONS):
        new = _conv_like(module, sizes["in_channels"], sizes["out_channels"], bias)
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        new = type(module)(sizes["num_features"], eps=module.eps, momentum=module.momentum, affine=module.affine,
                           track_running_stats=module.track_running_stats)
    else:
        raise ValueError(f"cannot resize a {type(module).__name__}")
    reference = next(iter(module.parameters()), None)
    if reference is not None:
        new = new.to(device=reference.device, dtype=reference.dtype)
    new.train(module.training)
    return new
