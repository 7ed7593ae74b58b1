"""Pruning methods, one module each, all with the signature of :mod:`.base`:
``prune_layer(task, *, sparsity, solver, solver_options) -> LayerOutcome``.
"""
from __future__ import annotations

from collections.abc import Callable

from . import magnitude, nettrim
from .base import LayerOutcome, LayerTask

__all__ = ["METHODS", "LayerTask", "LayerOutcome", "get_method"]

METHODS: dict[str, Callable[..., LayerOutcome]] = {
    "nettrim": nettrim.prune_layer,
    "magnitude": magnitude.prune_layer,
}


def get_method(name: str) -> Callable[..., LayerOutcome]:
    """The ``prune_layer`` function of a method, by name."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method: got {name!r}, needs one of {sorted(METHODS)}") from None
