"""A linear layer's program restricted to a support, in closed form (the rounds of
:mod:`solvers._polish`), and the cost model of polishing.

For one neuron, with ``M`` the rows and columns ``S_m`` of the scaled input and ``w sigma``
the signed l1 weights, the restricted program

.. math::

    \\min_\\theta (w \\sigma)^T \\theta \\quad \\text{s.t.} \\quad
    \\|M \\theta - y\\|^2 \\le \\varepsilon^2

has ``theta = theta_0 + t theta_1`` (``G theta_0 = b`` and ``G theta_1 = -w sigma`` with
``G = M^T M``, ``b = M^T y``), and its residual is ``a + c t^2``; the budget gives ``t``.
:class:`Moments` keeps the second moments that ``G`` is cut from (each neuron's on its
active rows, which a ReLU layer's polish in :mod:`solvers._bounded` reads too);
:func:`restricted` solves every neuron (again only where its support or signs changed)
and :func:`mend_unsolvable` changes the program when it has no answer.
"""
from __future__ import annotations

import logging

import numpy as np
from numba import njit

__all__ = ["Moments", "Work", "restricted", "mend_unsolvable"]

logger = logging.getLogger(__name__)

_BUDGET_MEND = 0.25  # fraction of the neurons (furthest from Y first) mended when a layer ball is missed
_SOLVE_COST = 8.0  # a flop of a small dense solve, in flops of a large product (see Work)
_SMALL_SOLVE = 1e6  # the flops a dense solve counts at least: the overhead of a call
_FORMS = 4  # times a neuron's program is formed in a solve's polishing, about (supports change between rounds)


class Work:
    """Work spent, in floating-point operations of a fixed cost model (not a clock).

    A product of ``(a x b)`` by ``(b x c)`` counts ``2abc``. A dense solve of size ``k``
    with ``r`` right-hand sides counts ``_SOLVE_COST`` times ``2k^3/3 + 2k^2 r``, and at
    least ``_SOLVE_COST * _SMALL_SOLVE``. The polish solves one neuron's system at a time;
    measured against the ADMM's iterations (whose large products the plain count fits),
    these solves ran about 8 times slower per operation, and a small one cost about a
    tenth of a millisecond of Python and LAPACK overhead (random MLP 3,000 x 300 x 300
    and digits MLP 1,257 x 256 x 256: the model is within a factor of two of the measured
    times of their attempts). Counting instead of timing keeps every decision taken on it
    independent of the machine.
    """

    def __init__(self, flops: float = 0.0) -> None:
        self.flops = float(flops)

    def product(self, a: int, b: int, c: int) -> None:
        self.flops += 2.0 * a * b * c

    def solve(self, size: int, n_rhs: int) -> None:
        self.flops += _SOLVE_COST * max(2.0 * size**3 / 3.0 + 2.0 * size**2 * n_rhs, _SMALL_SOLVE)


def _solve(G: np.ndarray, rhs: np.ndarray, work: Work) -> np.ndarray:
    """Solve ``G x = rhs`` (several right-hand sides); minimum-norm least squares when ``G``
    is singular (a support column that is zero on the rows), which the caller's
    certificate then judges."""
    work.solve(G.shape[0], rhs.shape[1])
    try:
        solution = np.linalg.solve(G, rhs)
        if (np.all(np.isfinite(solution))
                and np.linalg.norm(G @ solution - rhs) <= 1e-8 * max(np.linalg.norm(rhs), 1e-300)):
            return solution
    except np.linalg.LinAlgError:
        pass
    work.solve(G.shape[0], 3 * rhs.shape[1])  # an SVD costs a few solves
    return np.linalg.lstsq(G, rhs, rcond=None)[0]


class Moments:
    """Each neuron's second moments on its active rows, kept for a solve's polishing.

    ``moment[:, m] = Xa_{Omega_m}^T y_m`` and ``y_sq[m] = ||y_{Omega_m}||^2`` for every
    neuron, formed at once. ``G = M^T M`` on a support (:meth:`neuron`) is cut from a Gram
    matrix over every column (one for a linear layer; for a ReLU layer, neuron ``m``'s over
    its active rows ``Xa_{Omega_m}^T Xa_{Omega_m}``, formed the first time the neuron
    asks), or gathered from the support's columns of a transposed copy of ``Xa``,
    whichever costs less: a neuron's Gram over every column costs
    ``min(|Omega_m|, n - |Omega_m|) n_cols^2`` (from ``Xa^T Xa``, less the rows on the
    smaller side), a gathered one ``|Omega_m| k^2`` each time the neuron's program is
    formed (about ``_FORMS`` times a solve). On a support of a tenth of the columns the
    gathered ones cost tens of times less. The neurons' Gram matrices held stay within
    ``memory`` bytes (``Xa^T Xa`` and the transposed copy come besides, once each).
    """

    def __init__(self, Xa: np.ndarray, Y: np.ndarray, active: np.ndarray | None, memory: float = 256e6) -> None:
        self.Xa, self.active, self.memory = Xa, active, memory
        masked = Y if active is None else np.where(active, Y, 0.0)
        self.moment = Xa.T @ masked
        self.y_sq = np.einsum("pm,pm->m", masked, masked)
        self.gram = Xa.T @ Xa if active is None else None  # a linear layer: one Gram for every neuron
        self._full: np.ndarray | None = None  # Xa^T Xa of a ReLU layer, formed when a neuron's Gram needs it
        self._transposed: np.ndarray | None = None  # Xa^T, C-ordered: a support's columns are its rows
        self._grams: dict[int, np.ndarray] = {}  # neuron -> its Gram over every column
        self._rows: dict[tuple[int, bool], np.ndarray] = {}  # (neuron, active) -> those rows (a ReLU layer's)
        self._active_sums: np.ndarray | None = None  # Xa^T of the active indicator (see active_sums)

    def active_sums(self) -> np.ndarray:
        """``Xa^T`` of the active indicator (every row of a linear layer): each neuron's
        column sums over ``Omega_m``, ``(n_cols, n_out)``, formed once per solve (the dual
        point of every round reads it, :meth:`solvers._polish._Round._free_stationary`)."""
        if self._active_sums is None:
            indicator = np.ones((self.Xa.shape[0], self.moment.shape[1])) if self.active is None else self.active
            self._active_sums = self.Xa.T @ indicator.astype(np.float64)
        return self._active_sums

    def rows_of(self, m: int, active: bool = True) -> np.ndarray:
        """Neuron ``m``'s active rows ``Omega_m`` (or with ``active`` False the others;
        int64, ascending), found once."""
        if (m, active) not in self._rows:
            self._rows[m, active] = np.flatnonzero(self.active[:, m] == active).astype(np.int64)
        return self._rows[m, active]

    def _held(self, m: int, k: int) -> np.ndarray | None:
        """Neuron ``m``'s Gram over every column on its active rows, formed now when that
        costs less than gathering a support of ``k`` columns about ``_FORMS`` times (and fits
        in ``memory``); None when gathering is the cheaper."""
        if self.gram is not None:
            return self.gram
        if m in self._grams:
            return self._grams[m]
        n_samples, n_cols = self.Xa.shape
        n_active = self.rows_of(m).size
        whole = min(n_active, n_samples - n_active) * n_cols**2
        if whole >= _FORMS * n_active * k**2 or 8 * n_cols**2 * (len(self._grams) + 2) > self.memory:
            return None
        if self._full is None:
            self._full = self.Xa.T @ self.Xa
        if 2 * n_active > n_samples:  # fewer rows to subtract
            rows = self.Xa[~self.active[:, m]]
            self._grams[m] = self._full - rows.T @ rows
        else:
            rows = self.Xa[self.active[:, m]]
            self._grams[m] = rows.T @ rows
        return self._grams[m]

    def prepare(self, needs: list[tuple[int, int]]) -> None:
        """Make ready, in this thread and in the neurons' order, what :meth:`neuron` will read
        for each ``(m, k)`` of ``needs`` (neuron ``m`` on a support of ``k`` columns): the
        rows, the Gram matrices held (whose choice depends on those held before, so on the
        order) and the transposed copy that gathering needs. :meth:`neuron` for those
        neurons then reads and forms only what is its own, and may run in several threads."""
        gathers = False
        for m, k in needs:
            if self.active is not None:
                self.rows_of(m)
                self.rows_of(m, active=False)
            gathers |= self._held(m, k) is None
        if gathers and self._transposed is None:
            self._transposed = np.ascontiguousarray(self.Xa.T)

    def neuron(self, m: int, columns: np.ndarray, work: Work) -> np.ndarray:
        """``M^T M`` for neuron ``m`` restricted to ``columns``, a new array (its cost added to
        ``work`` when gathered)."""
        held = self._held(m, columns.size)
        if held is not None:
            return held[np.ix_(columns, columns)]
        if self._transposed is None:
            self._transposed = np.ascontiguousarray(self.Xa.T)
        M_T = _gathered(self._transposed, columns.astype(np.int64, copy=False), self.rows_of(m))
        work.product(M_T.shape[0], M_T.shape[1], M_T.shape[0])
        return M_T @ M_T.T

    def correlation(self, m: int, columns: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``Xa_{Omega_m}^T (y_m - Xa_{Omega_m, columns} theta)`` over every column: how the
        residual of neuron ``m``'s fit on ``columns`` correlates with each input."""
        held = self.gram if self.gram is not None else self._grams.get(m)
        if held is not None:
            return self.moment[:, m] - held[:, columns] @ theta
        rows = self.Xa if self.active is None else self.Xa[np.flatnonzero(self.active[:, m])]
        return self.moment[:, m] - rows.T @ (rows[:, columns] @ theta)


@njit(cache=True, nogil=True)
def _gathered(XT, columns, rows):
    """``XT[columns][:, rows]`` (``XT`` C-ordered: each of the columns' samples contiguous),
    in one pass, without the intermediate copy of the columns' every sample."""
    gathered = np.empty((columns.size, rows.size))
    for a in range(columns.size):
        samples = XT[columns[a]]
        for r in range(rows.size):
            gathered[a, r] = samples[rows[r]]
    return gathered


def _neuron_fit(moments, columns, linear, m, work):
    """One neuron's two solutions ``theta_0`` and ``theta_1`` and its ``a`` and ``c``."""
    G = moments.neuron(m, columns, work)
    b = moments.moment[columns, m]
    x = _solve(G, np.column_stack([b, -linear]), work)
    theta0, theta1 = x[:, 0], x[:, 1]
    a = max(float(theta0 @ G @ theta0 - 2.0 * b @ theta0 + moments.y_sq[m]), 0.0)  # ||M theta0 - y||^2
    c = float(-linear @ theta1)
    return theta0, theta1, a, c


def restricted(moments, Xa, epsilon, support, signs, weights, cache, work):
    """Closed-form optimum of a linear layer's program restricted to ``support``.

    Returns ``("ok", Theta, None, inverse_steps)`` with ``inverse_steps = 1 / t = 2 lambda``
    per neuron (no bound has a multiplier), or ``("budget", neurons)`` when their supports
    cannot meet the budget. ``cache`` keeps each neuron's solution between rounds; only
    neurons whose support or signs changed are solved again. The solves' cost is added to
    ``work``.
    """
    n_cols, n_out = support.shape
    per_neuron = epsilon.ndim == 1
    for m in range(n_out):
        key = (support[:, m].tobytes(), signs[:, m].tobytes())
        if m not in cache or cache[m][0] != key:
            columns = np.flatnonzero(support[:, m])
            linear = weights[columns] * signs[columns, m]
            cache[m] = (key, (columns, *_neuron_fit(moments, columns, linear, m, work)))
    parts = [cache[m][1] for m in range(n_out)]
    a_values = np.array([part[3] for part in parts])
    c_values = np.maximum(np.array([part[4] for part in parts]), 0.0)
    if per_neuron:
        budgets, a_ref, c_ref = epsilon**2, a_values, c_values
    else:
        budgets = np.full(n_out, float(epsilon) ** 2)
        a_ref, c_ref = np.full(n_out, a_values.sum()), np.full(n_out, c_values.sum())
    over = a_ref > budgets
    if over.any():
        if per_neuron:
            return "budget", list(np.flatnonzero(over))
        worst = np.argsort(-a_values)[: max(1, int(_BUDGET_MEND * n_out))]  # the neurons furthest from Y
        return "budget", list(worst[a_values[worst] > 0])
    # t = sqrt((budget - a) / c); no penalised weight (c = 0): the ball is not binding, 1/t = 0
    inverse_steps = np.where(c_ref > 0, np.sqrt(c_ref / np.maximum(budgets - a_ref, 1e-300)), 0.0)
    Theta = np.zeros((n_cols, n_out))
    for m, (columns, theta0, theta1, _, _) in enumerate(parts):
        step = 1.0 / inverse_steps[m] if inverse_steps[m] > 0 else 0.0
        Theta[columns, m] = theta0 + step * theta1
    return "ok", Theta, None, inverse_steps


def _correlated_columns(moments, support, Theta_fit, m, count):
    """Off-support columns most correlated with neuron ``m``'s residual, and their signs."""
    columns = np.flatnonzero(Theta_fit)
    correlation = moments.correlation(m, columns, Theta_fit[columns])
    correlation[support[:, m]] = 0.0
    best = np.argsort(-np.abs(correlation))[:count]
    best = best[np.abs(correlation[best]) > 0]
    return best, np.sign(correlation[best])


def mend_unsolvable(outcome, moments, cache, support, signs) -> tuple[bool, str]:
    """Change a linear layer's restricted program after :func:`restricted` found no answer
    (in place): the neurons that cannot meet the budget gain the columns most correlated
    with their residuals. Returns whether polishing must stop, and why the round failed."""
    _, neurons = outcome
    reason = "the support cannot meet the budget"
    logger.debug("polish round: %s for %d neurons", reason, len(neurons))
    for m in neurons:
        columns, theta0 = cache[m][1][:2]
        fit = np.zeros(support.shape[0])
        fit[columns] = theta0
        count = max(2, int(0.1 * support[:, m].sum()))
        added, added_signs = _correlated_columns(moments, support, fit, m, count)
        if added.size == 0:  # nothing left to change for this neuron
            return True, reason
        support[added, m] = True
        signs[added, m] = added_signs
    return False, reason
