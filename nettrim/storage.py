"""How a pruned model is laid out in its file: sparse weights as a bitmask and their
nonzero values, and the width of every layer, so that a model with neurons removed can be
rebuilt from its architecture.

A weight tensor of ``n`` entries of ``b`` bytes with ``k`` nonzeros takes ``n b`` bytes
dense and

.. math::  \\lceil n / 8 \\rceil + k b

as a bitmask (one bit per entry, row-major, ``numpy.packbits`` order) followed by its
nonzero values in the same order; it is stored that way whenever that is smaller (for
float32, below 31/32 of the entries nonzero). Both parts are ordinary safetensors
tensors, ``KEY.__mask__`` (uint8) and ``KEY.__values__``, with the shapes of the packed
tensors in the file's metadata; :func:`unpack` gives back the dense tensors exactly.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .layers import CONVOLUTIONS
from .surgery import replace_module, resized

__all__ = ["pack", "unpack", "stored_nbytes", "layer_widths", "rebuild", "PACKED_KEY", "WIDTHS_KEY"]

PACKED_KEY = "nettrim_packed"  # metadata: JSON {key: shape} of the tensors stored as mask + values
WIDTHS_KEY = "nettrim_widths"  # metadata: JSON {module: {size attribute: value}}
_MASK, _VALUES = ".__mask__", ".__values__"
_WIDTH_ATTRIBUTES = {nn.Linear: ("in_features", "out_features"),
                     CONVOLUTIONS: ("in_channels", "out_channels"),
                     nn.modules.batchnorm._NormBase: ("num_features",)}


def _packed_nbytes(tensor: torch.Tensor) -> int:
    return math.ceil(tensor.numel() / 8) + int(torch.count_nonzero(tensor)) * tensor.element_size()


def _packable(tensor: torch.Tensor) -> bool:
    return tensor.dim() >= 2 and tensor.is_floating_point() and \
        _packed_nbytes(tensor) < tensor.numel() * tensor.element_size()


def stored_nbytes(tensor: torch.Tensor) -> int:
    """Bytes ``tensor``'s data takes in a saved file: packed or dense, whichever is smaller."""
    return _packed_nbytes(tensor) if _packable(tensor) else tensor.numel() * tensor.element_size()


def pack(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """The tensors to write, and the shapes of those stored as bitmask + values."""
    stored: dict[str, torch.Tensor] = {}
    packed: dict[str, list[int]] = {}
    for key, tensor in state.items():
        if not _packable(tensor):
            stored[key] = tensor
            continue
        flat = tensor.reshape(-1)
        nonzero = flat != 0
        stored[key + _MASK] = torch.from_numpy(np.packbits(nonzero.numpy()))
        stored[key + _VALUES] = flat[nonzero].contiguous()
        packed[key] = list(tensor.shape)
    return stored, packed


def unpack(stored: dict[str, torch.Tensor], packed: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """The dense tensors of a file (the inverse of :func:`pack`)."""
    state = {key: tensor for key, tensor in stored.items() if not key.endswith((_MASK, _VALUES))}
    for key, shape in packed.items():
        try:
            bits, values = stored[key + _MASK], stored[key + _VALUES]
        except KeyError as exc:
            raise ValueError(f"{key}: the file lists it as packed but lacks {exc.args[0]!r}; the file is damaged") from exc
        n = math.prod(shape)
        nonzero = torch.from_numpy(np.unpackbits(bits.numpy(), count=n).astype(bool))
        if int(nonzero.sum()) != values.numel():
            raise ValueError(f"{key}: its mask has {int(nonzero.sum())} nonzeros and {values.numel()} values; "
                             "the file is damaged")
        dense = torch.zeros(n, dtype=values.dtype)
        dense[nonzero] = values
        state[key] = dense.reshape(shape)
    return state


def layer_widths(model: nn.Module) -> dict[str, dict[str, int]]:
    """The sizes of every ``Linear``, convolution and BatchNorm of ``model`` (what a file
    needs to rebuild a model whose neurons or channels were removed)."""
    widths = {}
    for name, module in model.named_modules():
        for kind, attributes in _WIDTH_ATTRIBUTES.items():
            if isinstance(module, kind):
                widths[name] = {attribute: int(getattr(module, attribute)) for attribute in attributes}
    return widths


def rebuild(model: nn.Module, widths: dict[str, dict[str, int]]) -> nn.Module:
    """Give the modules of a freshly built ``model`` the sizes of ``widths`` (in place):
    each module whose size differs is replaced by one of the same class and settings with
    the recorded sizes. Returns ``model``."""
    modules = dict(model.named_modules())
    missing = [name for name in widths if name not in modules]
    if missing:
        raise ValueError(f"model: the file has layers {missing[:5]} that the model does not; build the "
                         "architecture the file was saved from")
    for name, sizes in widths.items():
        module = modules[name]
        if any(getattr(module, attribute, value) != value for attribute, value in sizes.items()):
            replace_module(model, name, resized(module, sizes))
    return model
