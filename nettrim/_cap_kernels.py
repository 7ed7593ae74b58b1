"""Compiled kernel of the greedy elimination of input columns (:func:`nettrim.cap.greedy_keep`).

Removing column ``g`` from a least-squares fit updates the compensated weights ``W``
(``n_out x n``) and the inverse covariance ``P`` (``n x n``) by rank one. numpy forms each
update as an ``n x n`` temporary (two products through a ``1 x 1`` block) and subtracts
it; :func:`_remove_column` updates both in place, with the same products and
subtractions, so the numbers are the same bit for bit, without the temporaries.
"""
from __future__ import annotations

from numba import njit

__all__ = ["_remove_column"]


@njit(cache=True, nogil=True)
def _remove_column(WT, P, g, inverse):
    """With ``W = WT^T``: ``W -= (W[:, g] * inverse) P[g, :]`` and ``P -= (P[:, g] * inverse) P[g, :]``
    (both from the ``P`` before the call; ``inverse = 1 / P[g, g]``), then column ``g`` of
    ``W`` and row and column ``g`` of ``P`` set to zero. ``W`` is held transposed, so that
    the columns still kept are rows to gather."""
    row = P[g].copy()
    scaled = WT[g] * inverse
    for b in range(WT.shape[0]):
        for a in range(WT.shape[1]):
            WT[b, a] -= scaled[a] * row[b]
    WT[g, :] = 0.0
    for a in range(P.shape[0]):
        factor = P[a, g] * inverse
        for b in range(P.shape[1]):
            P[a, b] -= factor * row[b]
        P[a, g] = 0.0
    P[g, :] = 0.0
