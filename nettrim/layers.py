"""A prunable layer as a matrix: its input patches, its (BatchNorm-folded) weights, and
writing pruned weights back into the modules.

A ``Linear`` layer is already ``Z = X W^T + b``. A ``Conv2d`` layer is the same product on
its im2col patches: each output position is one row of ``X`` (``C_in * kh * kw`` entries,
channel-major, matching ``conv.weight.reshape(C_out, -1)``), each output channel one
column of ``Z``.

A BatchNorm in eval mode after the layer is ``s * (z - mu) + beta`` per channel with
``s = gamma / sqrt(var + eps)``; folded into the layer it gives

.. math::  W_f = \\operatorname{diag}(s) W, \\qquad b_f = s \\odot (b - \\mu) + \\beta .

Pruned folded weights ``(W_f', b_f')`` are written back without changing the architecture:
``W' = W_f' / s`` into the layer (zero rows where ``s = 0``) and
``beta' = b_f' - s (b - mu)`` into the BatchNorm, so zeros stay exact zeros.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerHandle", "patches"]


def patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """im2col rows of a ``Conv2d`` input.

    Parameters
    ----------
    conv : nn.Conv2d
        With ``groups == 1``.
    x : Tensor, shape (N, C_in, H, W) or (C_in, H, W)

    Returns
    -------
    Tensor, shape (N * H_out * W_out, C_in * kh * kw)
        Row ``n * H_out * W_out + i * W_out + j`` is the patch under output position
        ``(i, j)`` of image ``n``: ``conv(x)[n, :, i, j] = W @ row + b``.
    """
    if x.dim() == 3:
        x = x.unsqueeze(0)
    pad = getattr(conv, "_reversed_padding_repeated_twice", None)
    if pad is None:  # pragma: no cover - every torch>=2.1 Conv2d has it
        ph, pw = conv.padding
        pad = [pw, pw, ph, ph]
    if any(pad):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, list(pad), mode=mode)
    columns = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=0, stride=conv.stride)
    return columns.transpose(1, 2).reshape(-1, columns.shape[1])


@dataclass
class LayerHandle:
    """One prunable layer of a model, with the BatchNorm folded into it if there is one.

    Attributes
    ----------
    name : str
        Qualified module name.
    module : nn.Linear or nn.Conv2d
    batchnorm : nn.BatchNorm1d or nn.BatchNorm2d or None
    batchnorm_name : str or None
    activation : str or None
        A nonlinearity other than ReLU after the layer (it is then pruned as linear).
    """

    name: str
    module: nn.Module
    batchnorm: nn.Module | None = None
    batchnorm_name: str | None = None
    activation: str | None = None

    @property
    def kind(self) -> str:
        return "conv2d" if isinstance(self.module, nn.Conv2d) else "linear"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.module.weight.shape)

    @property
    def has_bias(self) -> bool:
        """Whether a bias can be fitted and written back (layer bias or BatchNorm shift)."""
        return self.module.bias is not None or (self.batchnorm is not None
                                                and self.batchnorm.bias is not None)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's input as the rows of ``X`` (``(n_rows, n_in)``)."""
        if self.kind == "conv2d":
            return patches(self.module, x)
        return x.reshape(-1, x.shape[-1])

    def _bn_scale_shift(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bn = self.batchnorm
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.detach().double()
        shift = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(scale)
        return scale, bn.running_mean.double(), shift

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_f, b_f)`` in float64: weight ``(n_out, n_in)`` and bias ``(n_out,)`` or None."""
        weight = self.module.weight.detach().double().reshape(self.shape[0], -1)
        bias = self.module.bias.detach().double() if self.module.bias is not None else None
        if self.batchnorm is None:
            return weight.clone(), None if bias is None else bias.clone()
        scale, mean, shift = self._bn_scale_shift()
        own = bias if bias is not None else torch.zeros_like(scale)
        return scale[:, None] * weight, scale * (own - mean) + shift

    def write(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Write folded weights ``(n_out, n_in)`` and bias back into the modules, in place."""
        param = self.module.weight
        with torch.no_grad():
            weight = torch.as_tensor(weight, dtype=torch.float64)
            if self.batchnorm is None:
                param.copy_(weight.reshape(param.shape).to(param.dtype))
                if bias is not None:
                    self.module.bias.copy_(torch.as_tensor(bias).to(self.module.bias.dtype))
                return
            scale, mean, shift = self._bn_scale_shift()
            safe = torch.where(scale == 0, torch.ones_like(scale), scale)
            unfolded = torch.where(scale[:, None] == 0, torch.zeros_like(weight), weight / safe[:, None])
            param.copy_(unfolded.reshape(param.shape).to(param.dtype))
            if bias is None:
                return
            bias = torch.as_tensor(bias, dtype=torch.float64)
            own = (self.module.bias.detach().double() if self.module.bias is not None
                   else torch.zeros_like(scale))
            bn = self.batchnorm
            if bn.bias is not None:
                bn.bias.copy_((bias - scale * (own - mean)).to(bn.bias.dtype))
            else:  # no BatchNorm shift: the layer's own bias carries it
                new_own = torch.where(scale == 0, own, (bias - shift) / safe + mean)
                self.module.bias.copy_(new_own.to(self.module.bias.dtype))
