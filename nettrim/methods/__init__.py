"""Pruning methods, one module each, all with the signature of :mod:`.base`:
``prune_layer(task, *, sparsity, solver, solver_options) -> LayerOutcome``.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from . import cap, lobs, magnitude, nettrim, sparsegpt
from .base import LayerOutcome, LayerTask

__all__ = ["METHODS", "NETWORK_METHODS", "LayerTask", "LayerOutcome", "get_method", "check_method_options"]

METHODS: dict[str, Callable[..., LayerOutcome]] = {
    "nettrim": nettrim.prune_layer,
    "magnitude": magnitude.prune_layer,
    "lobs": lobs.prune_layer,
    "sparsegpt": sparsegpt.prune_layer,
}
# Methods that act on the network (several layers at once) rather than layer by layer,
# with the options they take.
NETWORK_METHODS: dict[str, tuple[str, ...]] = {"cap": ("accuracy_floor", "validation", "ridge")}
_COMMON = {"task", "sparsity", "solver", "solver_options"}


def method_option_names(name: str) -> list[str]:
    """The options a method takes beyond the common signature."""
    if name in NETWORK_METHODS:
        return list(NETWORK_METHODS[name])
    parameters = inspect.signature(get_method(name)).parameters
    return [p for p in parameters if p not in _COMMON]


def check_method_options(name: str, options: Mapping[str, Any] | None) -> None:
    """Raise a clear error for options the method does not take."""
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise TypeError(f"method_options: got {type(options).__name__}, needs a dict")
    allowed = method_option_names(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method_options: {unknown} are not options of method {name!r}; "
                         f"it takes {allowed or 'none'}")


def get_method(name: str) -> Callable[..., Any]:
    """The ``prune_layer`` function of a method (``prune_network`` for CaP), by name."""
    if name in NETWORK_METHODS:
        return cap.prune_network
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method: got {name!r}, needs one of {sorted([*METHODS, *NETWORK_METHODS])}") from None
