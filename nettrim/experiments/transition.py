"""The phase transition of exact recovery: success rates over a grid, and where they cross 50%.

:func:`phase_transition` runs the recovery programs of :mod:`nettrim.experiments.recovery`
over a grid of sparsities ``s`` and sample sizes; :func:`transition_point` and
:func:`transition_interval` read off the number of samples at 50% success (on the
isotonic fit of the rates, :func:`isotonic_increasing`); :func:`log_curve` and
:func:`neurips_curve` are the theory's curves to compare with.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from .recovery import PROGRAMS, SUCCESS_TOL, planted_neurons, recovery_batch

__all__ = ["phase_transition", "transition_point", "transition_interval", "isotonic_increasing", "log_curve",
           "neurips_curve"]

logger = logging.getLogger(__name__)


def _cells(n_in: int, s_values: list[int], n_samples: int, n_trials: int, trials_per_draw: int, seed: int,
           programs: Sequence[str], success_tol: float, options: dict[str, Any]) -> dict:
    """The trials of every ``(program, s)`` cell at one ``n_samples``, draw by draw."""
    cells = {(p, s): {"errors": [], "success": [], "undecided": [], "certified": [], "active": [],
                      "iterations": 0, "seconds": 0.0} for p in programs for s in s_values}
    n_draws = -(-n_trials // trials_per_draw)
    for draw in range(n_draws):
        size = min(trials_per_draw, n_trials - draw * trials_per_draw)
        rng = np.random.default_rng([seed, n_samples, draw])
        X, Y, W_star = planted_neurons(n_samples, n_in, s_values, size, rng)
        active = (Y > 0).sum(axis=0)
        for program, result in recovery_batch(X, Y, W_star, programs, success_tol=success_tol,
                                              **options).items():
            for k, s in enumerate(s_values):
                block = slice(k * size, (k + 1) * size)
                cell = cells[(program, s)]
                cell["errors"].append(result.errors[block])
                cell["success"].append(result.success[block])
                cell["undecided"].append(result.undecided[block])
                cell["certified"].append(result.certified[block])
                cell["active"].append(active[block])
                cell["iterations"] += result.iterations
                cell["seconds"] += result.seconds / len(s_values)
    return cells


def phase_transition(
    n_in: int,
    s_values: Sequence[int],
    n_samples_values: Sequence[int],
    n_trials: int,
    seed: int = 0,
    programs: Sequence[str] = PROGRAMS,
    *,
    trials_per_draw: int | None = None,
    success_tol: float = SUCCESS_TOL,
    **options: Any,
) -> list[dict]:
    """Success rate of each program over a grid of sparsities and sample sizes.

    For each ``n_samples``, the ``n_trials`` trials are split into draws of
    ``trials_per_draw``; each draw takes one ``X`` shared by ``trials_per_draw`` planted
    neurons of EVERY sparsity of ``s_values`` (:func:`planted_neurons`), and all programs
    run on that same draw (:func:`recovery_batch`). Draw ``d`` at ``n_samples`` uses the
    generator seeded by ``(seed, n_samples, d)``: a cell's draws do not depend on the rest
    of the grid nor on ``programs`` (they do on ``s_values`` and ``trials_per_draw``).

    Parameters
    ----------
    n_in : int
    s_values : sequence of int
    n_samples_values : sequence of int
    n_trials : int
        Trials per ``(s, n_samples)`` cell.
    seed : int
    programs : sequence of {'nettrim', 'active_bp', 'active_ls'}
    trials_per_draw : int, optional
        Trials sharing one ``X`` (default: all ``n_trials``). Smaller gives more
        independent draws of ``X`` per cell at more solves.
    success_tol : float
    **options
        Passed to :func:`solve_recovery` (``method``, ``stages``, solver options).

    Returns
    -------
    list of dict
        One record per ``(program, s, n_samples)``: ``program``, ``n_in``, ``s``,
        ``n_samples``, ``n_trials``, ``n_success``, ``probability``, ``undecided``,
        ``certified`` (failures proven), ``median_error``, ``mean_active`` (mean
        ``|Omega|``), ``iterations`` (ADMM iterations of the draws, summed), ``seconds``
        (wall time of the program on the draws, shared among the cells of a draw in
        proportion to their trials).
    """
    s_values = [int(s) for s in s_values]
    trials_per_draw = n_trials if trials_per_draw is None else int(trials_per_draw)
    if trials_per_draw < 1:
        raise ValueError(f"trials_per_draw: got {trials_per_draw}, needs >= 1")
    unknown = [p for p in programs if p not in PROGRAMS]
    if unknown:
        raise ValueError(f"programs: got {unknown}, needs a subset of {PROGRAMS}")
    records = []
    for n_samples in n_samples_values:
        n_samples = int(n_samples)
        cells = _cells(n_in, s_values, n_samples, n_trials, trials_per_draw, seed, programs, success_tol, options)
        for (program, s), cell in cells.items():
            success = np.concatenate(cell["success"])
            records.append({
                "program": program, "n_in": n_in, "s": s, "n_samples": n_samples,
                "n_trials": int(success.size), "n_success": int(success.sum()),
                "probability": float(success.mean()),
                "undecided": int(np.concatenate(cell["undecided"]).sum()),
                "certified": int(np.concatenate(cell["certified"]).sum()),
                "median_error": float(np.median(np.concatenate(cell["errors"]))),
                "mean_active": float(np.concatenate(cell["active"]).mean()),
                "iterations": int(cell["iterations"]), "seconds": float(cell["seconds"]),
            })
        logger.info("n_samples %d done: %s", n_samples, {
            p: [r["n_success"] for r in records[-len(cells):] if r["program"] == p] for p in programs})
    return records


def isotonic_increasing(values: Sequence[float], weights: Sequence[float] | None = None) -> np.ndarray:
    """Least-squares non-decreasing fit of ``values`` (pool adjacent violators).

    ``min_f sum_i weights_i (f_i - values_i)^2`` subject to ``f_1 <= f_2 <= ...``.
    """
    values = np.asarray(values, dtype=float)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float)
    blocks: list[list[float]] = []  # [mean, weight, length]
    for value, weight in zip(values, weights):
        blocks.append([value, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean2, weight2, length2 = blocks.pop()
            mean1, weight1, length1 = blocks.pop()
            total = weight1 + weight2
            blocks.append([(mean1 * weight1 + mean2 * weight2) / total, total, length1 + length2])
    return np.concatenate([np.full(int(length), mean) for mean, _, length in blocks]) if blocks else values


def transition_point(
    n_samples_values: Sequence[float],
    probability: Sequence[float],
    level: float = 0.5,
    *,
    monotone: bool = True,
) -> float:
    """The number of samples at which the success probability reaches ``level``.

    The empirical curve is first made non-decreasing (:func:`isotonic_increasing`, so
    that trial noise cannot create several crossings; ``monotone=False`` skips it), then
    interpolated linearly between the last grid point below ``level`` and the next one:

    .. math::

        n_{50} = n_i + (n_{i+1} - n_i) \\frac{\\text{level} - p_i}{p_{i+1} - p_i}

    Returns NaN when the curve never reaches ``level`` on the grid, and the first grid
    point when it starts at or above ``level`` (the transition lies at or before it).
    """
    n = np.asarray(n_samples_values, dtype=float)
    p = np.asarray(probability, dtype=float)
    if n.shape != p.shape or n.ndim != 1 or n.size == 0:
        raise ValueError(f"n_samples_values and probability: got shapes {n.shape} and {p.shape}, "
                         "need equal 1-D shapes")
    order = np.argsort(n)
    n, p = n[order], p[order]
    if monotone:
        p = isotonic_increasing(p)
    above = np.flatnonzero(p >= level)
    if above.size == 0:
        return float("nan")
    if monotone:
        first = above[0]
    else:  # the last crossing from below
        below = np.flatnonzero(p < level)
        if below.size == 0:
            return float(n[0])
        later = above[above > below[-1]]
        if later.size == 0:
            return float("nan")
        first = later[0]
    if first == 0:
        return float(n[0])
    lower = first - 1
    return float(n[lower] + (n[first] - n[lower]) * (level - p[lower]) / (p[first] - p[lower]))


def transition_interval(
    n_samples_values: Sequence[float],
    n_success: Sequence[int],
    n_trials: int | Sequence[int],
    level: float = 0.5,
    *,
    coverage: float = 0.9,
    n_boot: int = 400,
    seed: int = 0,
) -> tuple[float, float]:
    """A parametric-bootstrap interval for :func:`transition_point`.

    Each cell's count is redrawn as ``Binomial(n_trials, n_success / n_trials)``
    independently, the transition point recomputed, and the central ``coverage``
    quantiles of the ``n_boot`` values returned (NaN-free draws only; NaNs when more than
    half of them never reach ``level``). It measures the trial noise of the estimate,
    not the grid's resolution.
    """
    rng = np.random.default_rng(seed)
    n_success = np.asarray(n_success, dtype=int)
    n_trials = np.broadcast_to(np.asarray(n_trials, dtype=int), n_success.shape)
    estimate = n_success / n_trials
    points = np.array([
        transition_point(n_samples_values, rng.binomial(n_trials, estimate) / n_trials, level)
        for _ in range(n_boot)
    ])
    finite = points[np.isfinite(points)]
    if finite.size < n_boot / 2:
        return float("nan"), float("nan")
    tail = (1.0 - coverage) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def log_curve(s: np.ndarray | float, n_in: int) -> np.ndarray:
    """``2 s ln(n_in / s)``: the empirical scale of the transition (natural log)."""
    s = np.asarray(s, dtype=float)
    return 2.0 * s * np.log(n_in / s)


def neurips_curve(s: np.ndarray | float, n_in: int, mu: float = 1.0) -> np.ndarray:
    """``(11 s + 7) mu ln(n_in)``: the NeurIPS sufficient condition (natural log, ``mu = 1``).

    With ``mu > 1`` it holds with probability at least ``1 - n_in^(1 - mu)``; ``mu = 1``
    is the curve's scale, not a probability statement.
    """
    s = np.asarray(s, dtype=float)
    return (11.0 * s + 7.0) * mu * np.log(n_in)
