"""The pruning methods, by name: each a :class:`~nettrim.methods.base.Method`.

Layer methods live here, one module each (``nettrim``, ``magnitude``, ``lobs``,
``sparsegpt``); the network method CaP lives beside the surgery it performs
(:mod:`nettrim.cap`). :data:`METHODS` is what the pipeline, the configuration and the
CLI read: a new method is a module with its ``METHOD`` and one line below.
"""
from __future__ import annotations

from .. import cap
from . import lobs, magnitude, nettrim, sparsegpt
from .base import LayerOutcome, LayerSolver, LayerTask, Method, NoOptions

__all__ = ["METHODS", "Method", "NoOptions", "LayerSolver", "LayerTask", "LayerOutcome", "get_method"]

METHODS: dict[str, Method] = {method.name: method for method in (
    nettrim.METHOD, magnitude.METHOD, lobs.METHOD, sparsegpt.METHOD, cap.METHOD)}


def get_method(name: str) -> Method:
    """The :class:`Method` called ``name``."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"method: got {name!r}, needs one of {sorted(METHODS)}") from None
