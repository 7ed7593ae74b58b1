"""Calibration data as the recorder takes it: a list of input batches, checked.

:func:`calibration_batches` accepts a tensor or array of inputs, or an iterable of
batches ``x`` / ``(x, y, ...)`` as a ``DataLoader`` yields, and names the batch that is
empty, holds NaN or Inf, or is not a tensor.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

__all__ = ["calibration_batches", "check_max_positions", "row_cap", "AUTO_MIN_ROWS", "AUTO_ROWS_PER_INPUT"]

AUTO_MIN_ROWS = 10_000
AUTO_ROWS_PER_INPUT = 16


def calibration_batches(calib: Any) -> list[torch.Tensor]:
    """The calibration inputs as a list of batches.

    Parameters
    ----------
    calib : Tensor, ndarray, or iterable of batches
        A tensor (or array) of inputs, or an iterable yielding ``x`` or ``(x, y, ...)`` as a
        ``DataLoader`` does (only ``x`` is used).

    Returns
    -------
    list of Tensor
    """
    if isinstance(calib, (torch.Tensor, np.ndarray)):
        items: Iterable[Any] = [calib]
    elif isinstance(calib, Iterable) and not isinstance(calib, (str, bytes, dict)):
        items = calib
    else:
        raise TypeError(f"calib: got {type(calib).__name__}, needs a tensor of inputs or an iterable "
                        "of batches (x or (x, y)) such as a DataLoader")
    batches = []
    for index, item in enumerate(items):
        x = item[0] if isinstance(item, (tuple, list)) and item else item
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"calib: batch {index} holds a {type(x).__name__}, needs a tensor "
                            "(or a tuple whose first element is the input tensor)")
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError(f"calib: batch {index} has shape {tuple(x.shape)}, needs at least one sample")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError(f"calib: batch {index} holds NaN or Inf values; clean the calibration data")
        batches.append(x)
    if not batches:
        raise ValueError("calib: is empty; pass at least one batch of inputs")
    return batches


def check_max_positions(max_positions: Any) -> None:
    if isinstance(max_positions, str) and max_positions == "auto":
        return
    if max_positions is not None and (isinstance(max_positions, bool) or not isinstance(max_positions, int)
                                      or max_positions < 1):
        raise ValueError(f"max_positions: got {max_positions!r}, needs 'auto', a positive integer or None "
                         "(every row)")


def row_cap(max_positions: int | str | None, n_in: int, kind: str) -> int | None:
    """The most rows a layer's program gets (None: every row).

    ``'auto'`` (the default) samples convolutions only, at
    ``max(AUTO_MIN_ROWS, AUTO_ROWS_PER_INPUT * n_in)`` rows: on the suite's convolutions
    the error of the pruned layer on all rows is then at most 5% above its error on the
    rows it was solved on (``benchmarks/conv_rows.py``). A ``Linear``
    keeps every row (one per calibration input). An integer caps every layer; None
    keeps every row of every layer.
    """
    if max_positions == "auto":
        return None if kind == "linear" else max(AUTO_MIN_ROWS, AUTO_ROWS_PER_INPUT * n_in)
    return max_positions
