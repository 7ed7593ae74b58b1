"""What follows each prunable layer: a ReLU or not, and a BatchNorm to fold.

The Net-Trim program of a layer depends on the operation applied to its output: with a
ReLU after it, only the active entries must be reproduced and the inactive ones kept off
(:class:`solvers.LayerProblem` with ``relu=True``); otherwise the whole response must be.
This module reads that off the model's ``torch.fx`` graph.

A ReLU "follows" a layer when the layer's output reaches it through a chain of single-use
operations that commute with the ReLU and do not mix entries linearly: dropout (identity in
eval mode), identity, flatten/view/reshape and max pooling (``relu(maxpool(z)) =
maxpool(relu(z))``). ``nn.ReLU``, ``F.relu``, ``torch.relu`` and the in-place forms are
recognised. A ``BatchNorm1d``/``2d``/``3d`` applied directly to the layer's output (and
nothing else reading that output) is an affine map per channel in eval mode and is folded
into the layer (:mod:`nettrim.layers`).

Anything else between the layer and its ReLU (an average pool, an addition, a second
reader of the output) makes the layer linear for the program, which is always sound: the
linear program's constraint implies the ReLU one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["Follower", "analyse", "PRUNABLE"]

logger = logging.getLogger(__name__)

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

_TRANSPARENT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
                        nn.Flatten, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
                        nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_TRANSPARENT_FUNCTIONS = {torch.flatten, torch.reshape, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
                          F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d,
                          F.adaptive_max_pool2d, F.adaptive_max_pool3d}
_TRANSPARENT_METHODS = {"view", "reshape", "flatten", "contiguous"}
_RELU_FUNCTIONS = {F.relu, torch.relu}
_RELU_INPLACE_FUNCTIONS = {torch.relu_, F.relu_}
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# elementwise nonlinearities other than ReLU: the layer is pruned with the linear program
_OTHER_ACTIVATION_MODULES = (nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU,
                             nn.PReLU, nn.RReLU, nn.ReLU6, nn.Softplus, nn.Mish, nn.Hardswish, nn.Hardsigmoid,
                             nn.Hardtanh, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.Softmax, nn.LogSoftmax)
_OTHER_ACTIVATION_FUNCTIONS = {torch.sigmoid, torch.tanh, F.sigmoid, F.tanh, F.gelu, F.silu, F.elu, F.selu,
                               F.celu, F.leaky_relu, F.prelu, F.rrelu, F.relu6, F.softplus, F.mish,
                               F.hardswish, F.hardsigmoid, F.hardtanh, F.logsigmoid, F.softsign, F.tanhshrink,
                               F.softmax, F.log_softmax}
_OTHER_ACTIVATION_METHODS = {"sigmoid", "tanh", "softmax", "log_softmax"}


@dataclass(frozen=True)
class Follower:
    """What the graph says about one prunable layer.

    Attributes
    ----------
    relu : bool
        A ReLU follows the layer (through operations that commute with it).
    batchnorm : str or None
        Qualified name of a BatchNorm applied directly to the layer's output, to fold.
    calls : int
        How many times the layer is called in one forward pass (more than 1: shared).
    traced : bool
        False when the model could not be traced and nothing is known about the layer.
    activation : str or None
        A nonlinearity other than ReLU that follows the layer (``"GELU"``, ``"tanh"``,
        ...): the layer is pruned with the linear program, which keeps the pre-activation
        within ``epsilon`` and so the output within ``L * epsilon`` for an ``L``-Lipschitz
        activation.
    """

    relu: bool
    batchnorm: str | None = None
    calls: int = 1
    traced: bool = True
    activation: str | None = None


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[bool, bool]:
    """``(is_relu, in_place)`` for one graph node."""
    if node.op == "call_module" and isinstance(modules.get(node.target), nn.ReLU):
        return True, bool(modules[node.target].inplace)
    if node.op == "call_function":
        if node.target in _RELU_INPLACE_FUNCTIONS:
            return True, True
        if node.target in _RELU_FUNCTIONS:
            in_place = bool(node.kwargs.get("inplace", node.args[1] if len(node.args) > 1 else False))
            return True, in_place
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return True, node.target == "relu_"
    return False, False


def _other_activation(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The name of a non-ReLU nonlinearity at ``node``, or None."""
    if node.op == "call_module" and isinstance(modules.get(node.target), _OTHER_ACTIVATION_MODULES):
        return type(modules[node.target]).__name__
    if node.op == "call_function" and node.target in _OTHER_ACTIVATION_FUNCTIONS:
        return getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method" and node.target in _OTHER_ACTIVATION_METHODS:
        return str(node.target)
    return None


def _is_transparent(node: fx.Node, modules: dict[str, nn.Module], source: fx.Node) -> bool:
    """An operation that commutes with the ReLU, applied to ``source`` as its data input."""
    if not node.args or node.args[0] is not source:
        return False
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _TRANSPARENT_MODULES)
    if node.op == "call_function":
        return node.target in _TRANSPARENT_FUNCTIONS
    if node.op == "call_method":
        return node.target in _TRANSPARENT_METHODS
    return False


def _follow(node: fx.Node, modules: dict[str, nn.Module], order: dict[fx.Node, int]) -> Follower:
    """Walk forward from a layer's node to decide whether a ReLU follows it."""
    batchnorm = None
    current, first = node, True
    while True:
        users = sorted(current.users, key=order.__getitem__)
        if not users:
            return Follower(relu=False, batchnorm=batchnorm)
        relu_users = [(user, _is_relu(user, modules)[1]) for user in users if _is_relu(user, modules)[0]]
        if len(users) > 1:
            # an in-place ReLU that runs before every other reader makes them all read relu(z)
            in_place_first = relu_users and relu_users[0][1] and relu_users[0][0] is users[0]
            return Follower(relu=bool(in_place_first), batchnorm=batchnorm)
        user = users[0]
        if relu_users:
            return Follower(relu=True, batchnorm=batchnorm)
        if first and user.op == "call_module" and isinstance(modules.get(user.target), _BATCHNORMS):
            batchnorm = user.target
        elif not _is_transparent(user, modules, current):
            return Follower(relu=False, batchnorm=batchnorm, activation=_other_activation(user, modules))
        current, first = user, False


def analyse(model: nn.Module) -> dict[str, Follower]:
    """Trace ``model`` with ``torch.fx`` and describe every ``Linear``/``ConvNd`` it calls.

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    dict
        Qualified layer name to :class:`Follower`. When the model cannot be traced, every
        prunable module gets ``Follower(relu=False, traced=False)`` (the linear program,
        which is sound whatever follows) and a warning is logged with the tracer's reason.
    """
    modules = dict(model.named_modules())
    try:
        graph = fx.Tracer().trace(model)
    except Exception as exc:  # tracing fails on data-dependent control flow, among others
        logger.warning(
            "torch.fx could not trace %s (%s: %s); every layer is pruned as a linear layer "
            "(no ReLU and no BatchNorm folding assumed). Make the forward traceable to prune "
            "ReLU layers with the sharper program.", type(model).__name__, type(exc).__name__, exc)
        return {name: Follower(relu=False, traced=False)
                for name, module in modules.items() if isinstance(module, PRUNABLE)}

    order = {node: index for index, node in enumerate(graph.nodes)}
    found: dict[str, Follower] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), PRUNABLE):
            continue
        follower = _follow(node, modules, order)
        if node.target in found:
            follower = Follower(relu=False, calls=found[node.target].calls + 1)
        found[node.target] = follower
    # a BatchNorm shared with another reader cannot be folded into one layer
    used_bn = [f.batchnorm for f in found.values() if f.batchnorm]
    for name, follower in found.items():
        if follower.batchnorm and used_bn.count(follower.batchnorm) > 1:
            found[name] = Follower(relu=False, calls=follower.calls)
    return found


@dataclass(frozen=True)
class Link:
    """A layer whose neurons (channels) feed exactly one other prunable layer.

    Attributes
    ----------
    producer, consumer : str
        Qualified names: removing a neuron of ``producer`` removes the inputs of
        ``consumer`` that come from it.
    batchnorms : tuple of str
        BatchNorms on the way, to be cut down to the kept channels too.
    """

    producer: str
    consumer: str
    batchnorms: tuple[str, ...] = ()


def _channel_preserving(node: fx.Node, modules: dict[str, nn.Module], source: fx.Node) -> bool:
    """An operation after which channel ``c`` still depends on channel ``c`` only."""
    if _is_relu(node, modules)[0] and node.args and node.args[0] is source:
        return True
    if node.op == "call_module" and isinstance(modules.get(node.target), _BATCHNORMS):
        return node.args[0] is source
    return _is_transparent(node, modules, source)


def links(model: nn.Module) -> dict[str, Link]:
    """Producer -> consumer pairs for removing whole neurons (:mod:`nettrim.methods.cap`).

    A ``Linear``/``ConvNd`` is a producer when its output reaches exactly one
    ``Linear``/``ConvNd`` (ungrouped) through single-use, channel-preserving operations:
    ReLU, BatchNorm, dropout, identity, max pooling, flatten/view. Anything else (an
    addition, a concatenation, a second reader) leaves the layer out. Raises ``ValueError``
    when the model cannot be traced.
    """
    modules = dict(model.named_modules())
    try:
        graph = fx.Tracer().trace(model)
    except Exception as exc:
        raise ValueError(f"removing neurons needs a model torch.fx can trace ({type(exc).__name__}: {exc})") from exc
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    found: dict[str, Link] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), PRUNABLE):
            continue
        current, batchnorms = node, []
        while len(current.users) == 1:
            user = next(iter(current.users))
            module = modules.get(user.target) if user.op == "call_module" else None
            if isinstance(module, PRUNABLE):
                if user.args and user.args[0] is current and calls.get(user.target) == 1 \
                        and calls.get(node.target) == 1 and getattr(module, "groups", 1) == 1:
                    found[node.target] = Link(node.target, user.target, tuple(batchnorms))
                break
            if not _channel_preserving(user, modules, current):
                break
            if isinstance(module, _BATCHNORMS):
                batchnorms.append(user.target)
            current = user
    return found
