"""Which layers of a model the Net-Trim program prunes, and which it leaves dense.

:func:`layer_handles` resolves the layers to prune (all ``nn.Linear`` and ``nn.Conv1d/2d/3d``,
or the ones named) with whether a ReLU follows each and the BatchNorm folded into it;
:func:`left_dense` lists the layers with weights that the program does not cover, with
the reason (both read the traced graph of :mod:`nettrim.graph`).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn

from .graph import PRUNABLE, Follower, analyse
from .layers import LayerHandle

__all__ = ["layer_handles", "left_dense", "weight_modules", "NOT_SELECTED"]

NOT_SELECTED = "not among the layers pruned"

logger = logging.getLogger(__name__)

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def _own_weights(module: nn.Module) -> list[nn.Parameter]:
    return [parameter for parameter in module.parameters(recurse=False) if parameter.dim() >= 2]


def weight_modules(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Every module with a weight matrix of its own (2 or more dimensions; normalisation
    layers' scales are vectors and biases do not count), with those weights: what the
    "kept" figures of a report count."""
    found = {}
    for name, module in model.named_modules():
        weights = _own_weights(module)
        if weights and not isinstance(module, _NORMS):
            found[name] = weights
    return found


def left_dense(model: nn.Module, layers: Sequence[str] | None = None,
               followers: dict[str, Follower] | None = None) -> dict[str, str]:
    """Layers with weights that the program does not cover, each with the reason.

    They are left dense (and listed in the report): a grouped convolution, a layer called
    more than once per forward pass (shared weights), and, when ``layers`` is None, any
    other module with a weight matrix of its own (recurrent layers, transposed
    convolutions, embeddings, attention...).
    """
    modules = dict(model.named_modules())
    followers = analyse(model) if followers is None else followers
    names = list(modules) if layers is None else [name for name in layers if name in modules]
    found: dict[str, str] = {}
    for name in names:
        module = modules[name]
        if isinstance(module, PRUNABLE):
            if getattr(module, "groups", 1) != 1:
                found[name] = f"grouped convolution (groups={module.groups})"
            elif followers.get(name, Follower(relu=False)).calls > 1:
                found[name] = (f"called {followers[name].calls} times per forward pass (shared weights)")
        elif layers is None and not isinstance(module, _NORMS) and _own_weights(module):
            found[name] = f"{type(module).__name__} is not covered by the program (Linear and Conv1d/2d/3d are)"
    return found


def layer_handles(model: nn.Module, layers: Sequence[str] | None = None,
                  followers: dict[str, Follower] | None = None, *,
                  warn: bool = True) -> dict[str, tuple[LayerHandle, bool]]:
    """The prunable layers of ``model`` (all, or the ones named) with whether a ReLU follows.

    The layers :func:`left_dense` lists are left out, with one warning each (when
    ``layers`` is None, that includes the modules of other types with weights), and a
    layer followed by another nonlinearity than ReLU is warned of. ``warn=False`` leaves
    the warnings out: for a caller that finds the handles of a model again (the same
    layers, cut smaller) after the user has been warned once.

    Returns
    -------
    dict
        Name to ``(LayerHandle, relu)``, in the order of ``model.named_modules()``.
    """
    modules = dict(model.named_modules())
    prunable = [name for name, module in modules.items() if isinstance(module, PRUNABLE)]
    if layers is None:
        names = prunable
    else:
        if isinstance(layers, str):
            raise TypeError(f"layers: got the string {layers!r}, needs a list of layer names")
        names = list(layers)
        unknown = [name for name in names if name not in modules]
        if unknown:
            raise ValueError(f"layers: no module named {unknown} in the model; prunable layers are {prunable}")
        wrong = [name for name in names if name not in prunable]
        if wrong:
            raise ValueError(f"layers: {wrong} are not nn.Linear or nn.Conv1d/2d/3d; prunable layers are {prunable}")
    if not names:
        raise ValueError("model: has no nn.Linear or nn.Conv1d/2d/3d layer to prune")
    followers = analyse(model) if followers is None else followers
    dense = left_dense(model, layers, followers)
    if warn:
        for name, reason in dense.items():
            logger.warning("layer %r is left dense: %s", name, reason)
    dense = {name: reason for name, reason in dense.items() if name in names}
    if len(dense) == len(names):
        raise ValueError(f"model: none of its layers can be pruned ({'; '.join(f'{n}: {r}' for n, r in dense.items())})")
    found = {}
    for name in names:
        if name in dense:
            continue
        module = modules[name]
        follower = followers.get(name, Follower(relu=False))
        if name not in followers:
            logger.info("layer %r is not called in the traced forward pass", name)
        if follower.activation and warn:
            logger.warning("layer %r is followed by %s, not a ReLU: it is pruned as a linear layer (its "
                           "pre-activation kept within epsilon)", name, follower.activation)
        bn_name = follower.batchnorm
        bn = modules[bn_name] if bn_name else None
        if bn is not None and bn.running_var is None:
            raise ValueError(f"layer {name!r}: BatchNorm {bn_name!r} keeps no running statistics "
                             "(track_running_stats=False), so it cannot be folded into the layer")
        if bn is not None and bn.bias is None and module.bias is None:
            if warn:
                logger.warning("layer %r: BatchNorm %r has no shift and the layer no bias; it is not "
                               "folded and the layer is pruned as a linear layer", name, bn_name)
            bn, bn_name, relu = None, None, False
        else:
            relu = follower.relu
        found[name] = (LayerHandle(name, module, bn, bn_name, activation=follower.activation), relu)
    return found
