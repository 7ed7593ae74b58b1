"""Every pruning method, by name: what the configuration, the pipeline and the CLI read.

Each entry is a :class:`~nettrim.methods.base.Method`: the layer methods of
:mod:`nettrim.methods` (``nettrim``, ``magnitude``, ``lobs``, ``sparsegpt``) and the
network methods CaP (:mod:`nettrim.cap`) and structured Net-Trim (``nettrim-group``,
:mod:`nettrim.structured`), which live beside the surgery they perform. A new
method is a module with its ``METHOD`` and one entry below.
"""
from __future__ import annotations

from . import cap, structured
from .methods import lobs, magnitude, nettrim, sparsegpt
from .methods.base import Method

__all__ = ["METHODS", "get_method"]

METHODS: dict[str, Method] = {method.name: method for method in (
    nettrim.METHOD, magnitude.METHOD, lobs.METHOD, sparsegpt.METHOD, cap.METHOD, structured.METHOD)}


def get_method(name: str) -> Method:
    """The :class:`~nettrim.methods.base.Method` called ``name``."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"method: got {name!r}, needs one of {sorted(METHODS)}") from None
