"""A prunable layer as a matrix: its input patches, its (BatchNorm-folded) weights, and
writing pruned weights back into the modules.

A ``Linear`` layer is already ``Z = X W^T + b``. A convolution (``Conv1d``, ``Conv2d``,
``Conv3d``) is the same product on its im2col patches: each output position is one row of
``X`` (``C_in * k_1 * ... * k_d`` entries, channel-major, matching
``conv.weight.reshape(C_out, -1)``), each output channel one column of ``Z``.

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

__all__ = ["CONVOLUTIONS", "LayerHandle", "layer_kind", "patches", "n_patches"]


CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _padded(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` with a batch dimension and the convolution's padding applied."""
    if x.dim() == len(conv.kernel_size) + 1:
        x = x.unsqueeze(0)
    pad = conv._reversed_padding_repeated_twice
    if any(pad):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, list(pad), mode=mode)
    return x


def _positions(conv: nn.Module, padded_sizes) -> list[int]:
    """The output's length along each spatial dimension, from the padded input's lengths."""
    return [(size - (kernel - 1) * dilation - 1) // stride + 1 for size, kernel, dilation, stride
            in zip(padded_sizes, conv.kernel_size, conv.dilation, conv.stride)]


def n_patches(conv: nn.Module, x: torch.Tensor) -> int:
    """How many rows :func:`patches` gives for ``x``, without forming them."""
    n_spatial = len(conv.kernel_size)
    batch = 1 if x.dim() == n_spatial + 1 else x.shape[0]
    pad = conv._reversed_padding_repeated_twice  # (last dimension's two sides, ..., first's)
    sizes = [size + pad[2 * (n_spatial - 1 - axis)] + pad[2 * (n_spatial - 1 - axis) + 1]
             for axis, size in enumerate(x.shape[-n_spatial:])]
    return int(batch * torch.Size(_positions(conv, sizes)).numel())


def patches(conv: nn.Module, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """im2col rows of a convolution's input (``Conv1d``, ``Conv2d`` or ``Conv3d``).

    Parameters
    ----------
    conv : nn.Conv1d, nn.Conv2d or nn.Conv3d
        With ``groups == 1``.
    x : Tensor, shape (N, C_in, *spatial) or (C_in, *spatial)
    index : Tensor of int, optional
        Only these rows (ascending or not; a recorder's subset of the positions): gathered
        from the padded input, the others never formed.

    Returns
    -------
    Tensor, shape (N * P, C_in * prod(kernel_size)), or (len(index), ...)
        ``P`` is the number of output positions. Row ``n * P + p`` is the patch under
        output position ``p`` (row-major over the output's spatial dimensions) of input
        ``n``: ``conv(x)[n, :, position p] = W @ row + b`` with
        ``W = conv.weight.reshape(C_out, -1)``.

    Notes
    -----
    After padding, each spatial dimension ``i`` is cut into windows of length
    ``(k_i - 1) d_i + 1`` every ``s_i`` entries (``Tensor.unfold``), of which every
    ``d_i``-th entry is kept (dilation ``d_i``, stride ``s_i``). With ``index``, row
    ``n * P + p`` is gathered directly: input ``n``, every channel, and along dimension ``i``
    the entries ``o_i s_i + j d_i`` (``j < k_i``) for the output position ``(o_1, ..., o_d)``
    that ``p`` unravels to.
    """
    x = _padded(conv, x)
    n_spatial = len(conv.kernel_size)
    if index is not None:
        return _gathered(conv, x, torch.as_tensor(index, dtype=torch.long, device=x.device))
    if n_spatial == 2:  # the fused im2col of torch for the common case
        columns = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=0, stride=conv.stride)
        return columns.transpose(1, 2).reshape(-1, columns.shape[1])
    for axis, (size, dilation, stride) in enumerate(zip(conv.kernel_size, conv.dilation, conv.stride)):
        x = x.unfold(2 + axis, (size - 1) * dilation + 1, stride)[..., ::dilation]
    # (N, C, O_1..O_d, k_1..k_d) -> (N, O_1..O_d, C, k_1..k_d)
    order = [0, *range(2, 2 + n_spatial), 1, *range(2 + n_spatial, 2 + 2 * n_spatial)]
    x = x.permute(order)
    n_in = x.shape[1 + n_spatial:].numel()
    return x.reshape(-1, n_in)


def _gathered(conv: nn.Module, padded: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of :func:`patches` from the padded input (its Notes), by one gather
    from the contiguous input: each entry's flat position is the sum of its sample's,
    channel's and, along each spatial dimension, ``(o_i s_i + j d_i)`` times that
    dimension's stride."""
    n_spatial = len(conv.kernel_size)
    padded = padded.contiguous()
    positions = _positions(conv, padded.shape[2:])
    per_input = torch.Size(positions).numel()
    strides, device = padded.stride(), padded.device
    sample, position = index // per_input, index % per_input
    unravelled = []
    for size in reversed(positions):
        unravelled.append(position % size)
        position = position // size
    # (rows, 1, ...) + (1, channels, ...) + one axis per kernel dimension: (rows, channels, k_1, ..., k_d)
    shape = [index.numel(), 1] + [1] * n_spatial
    flat = (sample * strides[0]).reshape(shape)
    flat = flat + (torch.arange(padded.shape[1], device=device) * strides[1]).reshape([1, -1] + [1] * n_spatial)
    for axis, (start, kernel, dilation, stride) in enumerate(zip(reversed(unravelled), conv.kernel_size,
                                                                 conv.dilation, conv.stride)):
        along = start[:, None] * stride + torch.arange(kernel, device=device)[None, :] * dilation
        axis_shape = [index.numel(), 1] + [1] * n_spatial
        axis_shape[2 + axis] = kernel
        flat = flat + (along * strides[2 + axis]).reshape(axis_shape)
    return padded.reshape(-1)[flat.reshape(index.numel(), -1)]


def _host(tensor: torch.Tensor) -> torch.Tensor:
    """A float64 copy on the host (the folding algebra and the solvers' side of a model that
    may live on a GPU)."""
    return tensor.detach().to(device="cpu", dtype=torch.float64)


def layer_kind(module: nn.Module) -> str:
    """``"linear"``, ``"conv1d"``, ``"conv2d"`` or ``"conv3d"``: what the report calls a layer."""
    for conv in CONVOLUTIONS:
        if isinstance(module, conv):
            return conv.__name__.lower()
    return "linear"


@dataclass
class LayerHandle:
    """One prunable layer of a model, with the BatchNorm folded into it if there is one.

    Attributes
    ----------
    name : str
        Qualified module name.
    module : nn.Linear, nn.Conv1d, nn.Conv2d or nn.Conv3d
    batchnorm : nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d or None
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
        """``"linear"``, ``"conv1d"``, ``"conv2d"`` or ``"conv3d"``."""
        return layer_kind(self.module)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.module.weight.shape)

    @property
    def has_bias(self) -> bool:
        """Whether a bias can be fitted and written back (layer bias or BatchNorm shift)."""
        return self.module.bias is not None or (self.batchnorm is not None
                                                and self.batchnorm.bias is not None)

    def rows(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's input as the rows of ``X`` (``(n_rows, n_in)``), or only the rows ``index``."""
        if isinstance(self.module, CONVOLUTIONS):
            return patches(self.module, x, index)
        rows = x.reshape(-1, x.shape[-1])
        return rows if index is None else rows[torch.as_tensor(index, dtype=torch.long, device=rows.device)]

    def n_rows(self, x: torch.Tensor) -> int:
        """How many rows :meth:`rows` gives for ``x``, without forming them."""
        if isinstance(self.module, CONVOLUTIONS):
            return n_patches(self.module, x)
        return x.numel() // x.shape[-1]

    def _bn_scale_shift(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bn = self.batchnorm
        scale = torch.rsqrt(_host(bn.running_var) + bn.eps)
        if bn.weight is not None:
            scale = scale * _host(bn.weight)
        shift = _host(bn.bias) if bn.bias is not None else torch.zeros_like(scale)
        return scale, _host(bn.running_mean), shift

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_f, b_f)`` in float64 on the host, wherever the model lives: weight
        ``(n_out, n_in)`` and bias ``(n_out,)`` or None."""
        weight = _host(self.module.weight).reshape(self.shape[0], -1)
        bias = _host(self.module.bias) if self.module.bias is not None else None
        if self.batchnorm is None:
            return weight.clone(), None if bias is None else bias.clone()
        scale, mean, shift = self._bn_scale_shift()
        own = bias if bias is not None else torch.zeros_like(scale)
        return scale[:, None] * weight, scale * (own - mean) + shift

    def write(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Write folded weights ``(n_out, n_in)`` and bias (host or device tensors, or arrays)
        back into the modules, in place, on the modules' device and in their dtype."""
        param = self.module.weight
        with torch.no_grad():
            weight = _host(torch.as_tensor(weight))
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
            bias = _host(torch.as_tensor(bias))
            own = _host(self.module.bias) if self.module.bias is not None else torch.zeros_like(scale)
            bn = self.batchnorm
            if bn.bias is not None:
                bn.bias.copy_((bias - scale * (own - mean)).to(bn.bias.dtype))
            else:  # no BatchNorm shift: the layer's own bias carries it
                new_own = torch.where(scale == 0, own, (bias - shift) / safe + mean)
                self.module.bias.copy_(new_own.to(self.module.bias.dtype))
