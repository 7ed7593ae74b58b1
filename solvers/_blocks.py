"""Row blocks: the one place that says how many rows a float64 temporary may hold.

Products that would need a float64 copy of a long matrix (the Gram matrix of a layer
input, the violation of an answer, the cascade's bound, a layer's errors) are formed a
block of :data:`ROWS` rows at a time, so their temporaries do not grow with
``n_samples``.
"""
from __future__ import annotations

from collections.abc import Iterator

__all__ = ["ROWS", "row_blocks"]

ROWS = 16384


def row_blocks(n_rows: int) -> Iterator[slice]:
    """Slices of ``ROWS`` consecutive rows covering ``range(n_rows)``, in order."""
    rows = ROWS  # read at call time: a test may lower it to exercise several blocks
    for start in range(0, n_rows, rows):
        yield slice(start, start + rows)
