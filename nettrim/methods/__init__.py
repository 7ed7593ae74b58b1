"""The layer methods, one module each, and the protocol they follow (:mod:`.base`).

``nettrim`` (the convex program), ``magnitude``, ``lobs`` (layer-wise OBS) and
``sparsegpt``: each module has its ``prune_layer`` function, its options dataclass and its
``METHOD``. The registry of every method, the network method CaP included, is
:mod:`nettrim.registry`.
"""
from __future__ import annotations

from . import lobs, magnitude, nettrim, sparsegpt
from .base import LayerOutcome, LayerSolver, LayerTask, Method, NoOptions

__all__ = ["Method", "NoOptions", "LayerSolver", "LayerTask", "LayerOutcome", "lobs", "magnitude", "nettrim",
           "sparsegpt"]
