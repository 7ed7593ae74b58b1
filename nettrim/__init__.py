"""nettrim: prune a trained ReLU network layer by layer with convex programs (Net-Trim).

>>> import nettrim
>>> result = nettrim.prune(model, calib_inputs, mode="cascade", epsilon=0.05)   # doctest: +SKIP
>>> config = nettrim.PruneConfig(method="lobs", sparsity=0.8)                   # doctest: +SKIP
>>> result = nettrim.prune(model, calib_inputs, config)                         # doctest: +SKIP
>>> print(result.summary()); result.save("pruned.safetensors")                 # doctest: +SKIP
"""
from __future__ import annotations

from ._version import __version__
from .config import PruneConfig
from .registry import METHODS
from .pipeline import MODES, PruneInterrupted, prune
from .record import LayerRecord, record
from .result import LayerReport, PruneResult
from .write import load, read_report

__all__ = ["prune", "PruneConfig", "PruneInterrupted", "record", "load", "read_report", "PruneResult", "LayerReport",
           "LayerRecord", "METHODS", "MODES", "__version__"]
