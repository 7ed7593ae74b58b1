"""Where a neuron's restricted answer moves on a line in the ball's step ``t``.

For one neuron of a ReLU layer's polish (:mod:`solvers._bounded`), the quadratic program
at the step ``t``

.. math::

    \\theta(t) = \\arg\\min_\\theta \\tfrac12 \\theta^T G \\theta - (b - t c)^T \\theta
    \\quad \\text{s.t.} \\quad E\\theta \\le h

is, while its passive (active) bounds ``P`` stay the same, the equality-constrained
program on them, whose answer and multipliers are affine in ``t``:
``theta(t') = theta(t) + (t' - t) d`` and ``nu_P(t') = nu_P(t) + (t' - t) e``
(:func:`solvers._ldp._answer` gives ``d`` and ``e``). The answer stays optimal as long as
every other bound holds and every passive multiplier stays non-negative: a ratio test
over the bounds gives the segment ``[low, high]`` of ``t`` where that is so (parametric
quadratic programming, as the homotopy of LARS). On it the answer at any ``t'`` is read
off the line, without solving, and its residual is exactly ``f(t') = a + gamma t'^2``
(:mod:`solvers._bounded`).

The root search in ``t`` evaluates every neuron of a layer's ball at each trial step;
with the segments, only the neurons whose segment does not hold the step are solved
again. The sample bounds' values along the line need one product with the samples for
all the neurons just solved (:func:`segment_products`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["Segment", "segment_products"]


@njit(cache=True, nogil=True)
def _ratio_limits(t, values, slopes, low, high):
    """Narrow ``[low, high]`` to the ``t'`` at which ``values + (t' - t) slopes`` stays at
    most ``max(values, 0)``: a bound that holds at ``t`` keeps holding, one just outside
    (within the kernel's round-off) gets no worse."""
    for i in range(values.size):
        limit = max(values[i], 0.0) - values[i]
        if slopes[i] > 0.0:
            high = min(high, t + limit / slopes[i])
        elif slopes[i] < 0.0:
            low = max(low, t + limit / slopes[i])
    return low, high


@njit(cache=True, nogil=True)
def _segment(t, sample_values, sample_slopes, passive, theta, slope, positions, signs, n_rows, nu, nu_slope):
    """The segment ``[low, high]`` of steps around ``t`` on which the answer ``theta``
    (moving by ``slope``) stays optimal: the sample bounds that are not passive
    (``sample_values = E_i theta - h_i``, ``sample_slopes = E_i slope``) and the sign
    bounds ``-sigma_j theta_j <= 0`` keep holding, the passive bounds' multipliers ``nu``
    (moving by ``nu_slope``) stay non-negative. ``passive`` marks every bound (samples,
    then signs) passive at ``t``."""
    low, high = 0.0, np.inf
    free_values = np.empty(sample_values.size + positions.size)
    free_slopes = np.empty(free_values.size)
    count = 0
    for i in range(sample_values.size):
        if not passive[i]:
            free_values[count], free_slopes[count] = sample_values[i], sample_slopes[i]
            count += 1
    for p in range(positions.size):
        if not passive[n_rows + p]:
            free_values[count] = -signs[p] * theta[positions[p]]
            free_slopes[count] = -signs[p] * slope[positions[p]]
            count += 1
    low, high = _ratio_limits(t, free_values[:count], free_slopes[:count], low, high)
    # nu + (t' - t) nu_slope >= 0 is -nu - (t' - t) nu_slope <= 0
    low, high = _ratio_limits(t, -nu, -nu_slope, low, high)
    return max(low, 0.0), max(high, t)


@dataclass
class Segment:
    """A neuron's answer on the segment ``[low, high]`` of ``t`` (module docstring).

    ``theta`` and ``slope`` on the support; ``samples`` the positions (among the neuron's
    sample bounds) of the passive ones, ``nu`` and ``nu_slope`` their multipliers in the
    quadratic program; ``a`` and ``gamma`` give ``f(t) = a + gamma t^2``.
    """

    t: float
    low: float
    high: float
    theta: np.ndarray
    slope: np.ndarray
    samples: np.ndarray
    nu: np.ndarray
    nu_slope: np.ndarray
    a: float
    gamma: float
    n_rows: int

    def holds(self, t: float) -> bool:
        return self.low <= t <= self.high

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray, float, float]:
        """``(theta, multipliers, f, gamma)`` at ``t`` (on the segment), as a solve gives them."""
        step = t - self.t
        multipliers = np.zeros(self.n_rows)
        multipliers[self.samples] = self.nu + step * self.nu_slope
        return self.theta + step * self.slope, multipliers, max(self.a + self.gamma * t * t, 0.0), self.gamma


def make_segment(t, theta, motion, f, gamma, order, rows_values, rows_slopes, positions, signs, n_rows):
    """The :class:`Segment` of an answer at ``t`` (``motion`` from :func:`solvers._ldp._answer`,
    with unique multipliers; ``order`` its passive bounds, ``rows_values`` and
    ``rows_slopes`` its sample bounds' ``E_i theta - h_i`` and ``E_i slope``)."""
    slope, nu, nu_slope, _ = motion
    passive = np.zeros(n_rows + positions.size, dtype=np.bool_)
    passive[order] = True
    low, high = _segment(t, rows_values, rows_slopes, passive, theta, slope, positions, signs, n_rows, nu, nu_slope)
    samples = order < n_rows
    return Segment(t, low, high, theta, slope, order[samples], nu[samples], nu_slope[samples],
                   f - gamma * t * t, gamma, n_rows)


def segment_products(Xa, columns, thetas, slopes):
    """``Xa theta`` and ``Xa slope`` of several neurons (``columns[j]`` the support of the
    ``j``-th, ``thetas[j]`` and ``slopes[j]`` on it): one product, ``(n_samples, 2 n)``."""
    W = np.zeros((Xa.shape[1], 2 * len(columns)))
    for j, (found, theta, slope) in enumerate(zip(columns, thetas, slopes)):
        W[found, j] = theta
        W[found, len(columns) + j] = slope
    return Xa @ W
