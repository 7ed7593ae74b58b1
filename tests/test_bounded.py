"""The restricted program with inequality bounds (the ReLU polish): its least-distance
kernel against scipy's NNLS, the restricted optimum against cvxpy, the duality gap as a
lower bound, and the ADMM certifying ReLU layers at its first attempt."""
import numpy as np
import pytest

from conftest import make_layer
from solvers import solve
from solvers._bounded import bounded_restricted
from solvers._ldp import _candidate_rows, _dual_qp
from solvers._polish import _Round
from solvers._restricted import Moments, Work


def _kernel_case(seed, n_rows=300, k=6):
    rng = np.random.default_rng(seed)
    Xa = np.ascontiguousarray(rng.standard_normal((n_rows + 20, k + 3)))
    rows = np.sort(rng.choice(n_rows + 20, n_rows, replace=False)).astype(np.int64)
    cols = np.sort(rng.choice(k + 3, k, replace=False)).astype(np.int64)
    h = np.abs(rng.standard_normal(n_rows))
    positions = np.arange(0, k, 2, dtype=np.int64)
    signs = np.where(rng.random(positions.size) < 0.5, -1.0, 1.0)
    A = rng.standard_normal((k, k))
    L = np.ascontiguousarray(np.linalg.cholesky(A @ A.T + k * np.eye(k)))
    theta_u = 3.0 * rng.standard_normal(k)
    return Xa, rows, h, cols, positions, signs, L, theta_u


def _explicit(Xa, rows, h, cols, positions, signs, L, theta_u):
    """The bounds ``E theta <= h`` and the rows ``[-F, -r]`` of the least-distance program."""
    E = np.vstack([Xa[np.ix_(rows, cols)], np.zeros((positions.size, cols.size))])
    E[rows.size + np.arange(positions.size), positions] = -signs
    bounds = np.r_[h, np.zeros(positions.size)]
    F = np.linalg.solve(L, E.T).T
    return E, bounds, np.column_stack([-F, -(bounds - E @ theta_u)])


def _kernel(kernel_case, order, F_rows, candidates, confirm, factor=None):
    """``_dual_qp`` warm-started from ``order`` (rows ``F_rows``, the factor of ``F F^T``
    when given), its ``candidates``' rows gathered as ``_Neuron.use_candidates`` does; what
    the kernel returns but those rows and the factor."""
    return _kernel_factored(kernel_case, order, F_rows, candidates, confirm, factor)[:-1]


def _kernel_factored(kernel_case, order, F_rows, candidates, confirm, factor=None):
    """:func:`_kernel`'s answer and the factor of ``F F^T`` it returns (last)."""
    Xa, norms, rows, h, cols, positions, signs = kernel_case[:7]
    gathered = _candidate_rows(Xa, norms, rows, h, cols, positions, signs, candidates)
    factor = np.empty((0, 0)) if factor is None else factor
    answer = _dual_qp(*kernel_case, order, F_rows, factor, candidates, gathered, confirm)
    return answer[:4] + answer[5:6] + answer[7:] + answer[4:5]


@pytest.mark.parametrize("seed", range(4))
def test_the_least_distance_kernel_solves_the_quadratic_program(seed):
    """``_dual_qp`` reaches scipy's NNLS residual; the point it gives is the projection of
    ``theta_u`` in the metric ``G = L L^T`` onto the bounds (feasible, KKT with its
    multipliers); warm-started from its own answer it returns the same."""
    from scipy.optimize import nnls

    case = _kernel_case(seed)
    Xa, rows, h, cols, positions, signs, L, theta_u = case
    empty = (np.empty(0, np.int64), np.empty((0, cols.size)), np.empty(0, np.int64))
    kernel_case = (Xa, np.linalg.norm(Xa[np.ix_(rows, cols)], axis=1), *case[1:])
    mu, residual, order, F_rows, candidates, _ = _kernel(kernel_case, *empty, True)
    E, bounds, C = _explicit(*case)
    target = np.zeros(cols.size + 1)
    target[-1] = 1.0
    assert np.linalg.norm(residual) == pytest.approx(nnls(C.T, target)[1], rel=1e-9)
    scale = -residual[-1]
    theta = theta_u + np.linalg.solve(L.T, residual[:-1] / scale)
    multipliers = mu / scale
    assert np.all(E @ theta - bounds <= 1e-9)
    assert np.all(multipliers >= 0) and set(np.flatnonzero(multipliers)) == set(order)
    G = L @ L.T
    assert np.allclose(G @ (theta - theta_u) + E.T @ multipliers, 0.0, atol=1e-8)  # stationarity
    assert np.allclose(multipliers * (E @ theta - bounds), 0.0, atol=1e-8)  # complementarity
    again = _kernel(kernel_case, order, F_rows, candidates, True)
    assert np.allclose(again[1], residual, atol=1e-12) and set(again[2]) == set(order)
    factor = _kernel_factored(kernel_case, *empty, True)[-1]  # F F^T's factor: the warm start's rank-one update
    assert factor.shape == (order.size, order.size)
    assert np.allclose(factor @ factor.T, F_rows @ F_rows.T, rtol=1e-10, atol=1e-10)
    again = _kernel(kernel_case, order, F_rows, candidates, True, factor)
    assert np.allclose(again[1], residual, atol=1e-12) and set(again[2]) == set(order)


def test_an_unconfirmed_answer_is_caught_by_the_layer_check():
    """With ``confirm=False`` and candidates that leave out the bounds the unbounded point
    violates, the kernel stops without them; the layer's check (:func:`_bound_gradients`
    on ``Xa w``, as ``_Neuron.violated`` uses it) finds one that should enter, and a call
    from those candidates reaches the confirmed answer."""
    from solvers._ldp import _bound_gradients

    case = _kernel_case(0, n_rows=400, k=6)
    Xa, rows, h, cols, positions, signs, L, theta_u = case
    norms = np.linalg.norm(Xa[np.ix_(rows, cols)], axis=1)
    kernel_case = (Xa, norms, *case[1:])
    violated = np.flatnonzero(Xa[np.ix_(rows, cols)] @ theta_u > h)
    assert violated.size > 1
    quiet = np.setdiff1d(np.arange(rows.size), violated)[:10].astype(np.int64)  # none of them violated
    empty = (np.empty(0, np.int64), np.empty((0, cols.size)))
    mu, residual, order, _, _, passes = _kernel(kernel_case, *empty, quiet, False)
    assert passes == 0 and order.size == 0  # stopped on its candidates alone: theta_u unchanged

    def entering(residual, order):
        w = np.linalg.solve(L.T, residual[:-1]) - residual[-1] * theta_u
        w_full = np.zeros(Xa.shape[1])
        w_full[cols] = w
        gradient, scale = _bound_gradients(Xa @ w_full, norms, rows, h, positions, signs, w, float(residual[-1]))
        should = gradient > 1e-10 * scale
        should[order] = False
        return np.flatnonzero(should), np.argsort(-gradient)[: 8 * (cols.size + 1)]

    found, candidates = entering(residual, order)
    assert set(found[found < rows.size]) == set(violated)
    confirmed = _kernel(kernel_case, *empty, np.empty(0, np.int64), True)
    warm = empty
    for _ in range(10):  # as the layer's check does: solve from the largest gradients until none should enter
        answer = _kernel(kernel_case, *warm, candidates, False)
        found, candidates = entering(answer[1], answer[2])
        if found.size == 0:
            break
        warm = (answer[2], answer[3])
    assert found.size == 0
    assert np.allclose(answer[1], confirmed[1], atol=1e-10)


def test_the_answer_kernel_gives_the_point_its_residual_and_curvature():
    """``_answer`` maps the least-distance residual back: the projected point (the weights
    whose sign bounds are passive at exactly 0), ``f = ||M theta - y||^2`` from ``G`` and
    ``b``, ``gamma`` the part of ``c~`` outside the passive rows' span (by least squares), and
    no answer when the residual vanishes."""
    from solvers._ldp import _answer

    case = _kernel_case(1)
    Xa, rows, h, cols, positions, signs, L, theta_u = case
    kernel_case = (Xa, np.linalg.norm(Xa[np.ix_(rows, cols)], axis=1), *case[1:])
    empty = (np.empty(0, np.int64), np.empty((0, cols.size)), np.empty(0, np.int64))
    mu, residual, order, F_rows, _, _ = _kernel(kernel_case, *empty, True)
    assert order.size > 0
    rng = np.random.default_rng(5)
    c_tilde, b = rng.standard_normal(cols.size), rng.standard_normal(cols.size)
    G = L @ L.T  # the metric of the case; f is checked against its own G, b and ||y||^2 = 4
    unknown = np.empty((0, 0))  # no factor of F F^T: _answer forms one
    ok, theta, multipliers, f, gamma, _ = _answer(mu, residual, order, F_rows, unknown, rows.size, positions, L, G, b,
                                               4.0, theta_u, c_tilde, 1e-10)
    scale = -residual[-1]
    expected = theta_u + np.linalg.solve(L.T, residual[:-1] / scale)
    expected[positions[order[order >= rows.size] - rows.size]] = 0.0
    assert ok and np.allclose(theta, expected, rtol=1e-12, atol=1e-12)
    assert np.allclose(multipliers, mu[:rows.size] / scale, rtol=1e-14)
    assert f == pytest.approx(max(expected @ G @ expected - 2.0 * b @ expected + 4.0, 0.0), rel=1e-12)
    coefficients = np.linalg.lstsq(F_rows.T, c_tilde, rcond=None)[0]
    outside = c_tilde - F_rows.T @ coefficients
    assert gamma == pytest.approx(outside @ outside, rel=1e-9, abs=1e-12)
    assert abs(outside @ F_rows.T).max() < 1e-9  # orthogonal to every passive row
    dependent = np.vstack([F_rows, F_rows[:1]])  # a repeated row: the least-squares branch
    gamma_dependent = _answer(mu, residual, order, dependent, unknown, rows.size, positions, L, G, b, 4.0, theta_u,
                              c_tilde, 1e-10)[4]
    assert gamma_dependent == pytest.approx(gamma, rel=1e-9, abs=1e-12)
    factor = np.linalg.cholesky(F_rows @ F_rows.T)  # the kernel's factor, when it kept one
    assert _answer(mu, residual, order, F_rows, factor, rows.size, positions, L, G, b, 4.0, theta_u, c_tilde,
                   1e-10)[4] == pytest.approx(gamma, rel=1e-9, abs=1e-12)
    none = _answer(mu, np.zeros_like(residual), order, F_rows, unknown, rows.size, positions, L, G, b, 4.0, theta_u,
                   c_tilde, 1e-10)
    assert not none[0]


@pytest.mark.parametrize("size", [1, 4, 25])
def test_the_factor_takes_a_rank_one_update_and_downdate(size):
    """``_rank_one_update`` makes ``R`` the factor of ``R R^T + x x^T`` (from a given row
    on), ``_downdate`` of ``R R^T - x x^T``, and refuses when that is not positive definite."""
    from solvers._triangular import _downdate, _rank_one_update

    rng = np.random.default_rng(size)
    A = rng.standard_normal((size, size + 3))
    M = A @ A.T
    R = np.linalg.cholesky(M)
    x = rng.standard_normal(size)
    updated = R.copy()
    _rank_one_update(updated, 0, size, x.copy())
    assert np.allclose(updated @ updated.T, M + np.outer(x, x), rtol=1e-12, atol=1e-12)
    assert np.allclose(updated, np.tril(updated)) and np.all(np.diag(updated) > 0)
    tail = R.copy()  # from row 1 on: the leading row and column stay
    _rank_one_update(tail, 1, size, x[1:].copy())
    assert np.array_equal(tail[:1], R[:1])
    assert np.allclose(tail[1:, 1:] @ tail[1:, 1:].T, R[1:, 1:] @ R[1:, 1:].T + np.outer(x[1:], x[1:]),
                       rtol=1e-12, atol=1e-12)
    inside = R @ (0.9 * x / np.linalg.norm(x))  # M - x x^T stays positive definite
    ok, downdated = _downdate(R, size, inside)
    assert ok and np.allclose(downdated @ downdated.T, M - np.outer(inside, inside), rtol=1e-9, atol=1e-9)
    assert np.allclose(downdated, np.tril(downdated)) and np.all(np.diag(downdated) > 0)
    assert not _downdate(R, size, R @ (1.1 * x / np.linalg.norm(x)))[0]


@pytest.mark.parametrize("memory", [0.0, 1e9])
def test_moments_cut_or_gather_the_same_normal_equations(memory):
    """A neuron's ``M^T M`` on a support is the same whether cut from its Gram over every
    column (held, when cheaper) or gathered from the support's columns (``memory=0`` holds
    none); so is the residual's correlation with every column."""
    rng = np.random.default_rng(2)
    Xa = rng.standard_normal((200, 12))
    Y = np.maximum(Xa @ rng.standard_normal((12, 3)), 0.0)
    moments = Moments(Xa, Y, Y > 0, memory=memory)
    work = Work()
    for m, columns in [(0, np.arange(12)), (1, np.array([1, 4, 7])), (2, np.arange(0, 12, 2))]:
        rows = Y[:, m] > 0
        M = Xa[np.ix_(rows, columns)]
        assert np.allclose(moments.neuron(m, columns, work), M.T @ M, rtol=1e-12, atol=1e-10)
        theta = rng.standard_normal(columns.size)
        expected = Xa[rows].T @ (Y[rows, m] - M @ theta)
        assert np.allclose(moments.correlation(m, columns, theta), expected, rtol=1e-10, atol=1e-9)
    assert (len(moments._grams) > 0) == (memory > 0)  # every column: held when it fits, gathered when not


def _cvxpy_restricted(problem, support, signs):
    """The program restricted to ``support`` with the signs ``signs``, by cvxpy (the bias free)."""
    import cvxpy as cp

    X, Y, active = problem.X, problem.Y, problem.active
    upper = np.zeros_like(Y) if problem.upper is None else problem.upper
    total, constraints, residuals = 0.0, [], []
    for m in range(problem.n_out):
        columns = np.flatnonzero(support[:-1, m])
        w = cp.Variable(columns.size)
        b = cp.Variable()
        response = X[:, columns] @ w + b
        total += signs[columns, m] @ w
        residuals.append(response[active[:, m]] - Y[active[:, m], m])
        constraints += [response[~active[:, m]] <= upper[~active[:, m], m], cp.multiply(signs[columns, m], w) >= 0]
    constraints.append(cp.sum_squares(cp.hstack(residuals)) <= float(problem.epsilon) ** 2)
    return cp.Problem(cp.Minimize(total), constraints).solve(solver="CLARABEL")


@pytest.mark.parametrize("upper", [False, True])
def test_the_restricted_optimum_matches_cvxpy(upper):
    """On a support with signs (from a perturbed optimum), the restricted program with its
    inactive bounds as inequalities has cvxpy's optimum; every bound holds."""
    problem, _ = make_layer(n_samples=150, n_in=10, n_out=3, upper=upper, seed=4)
    reference = solve(problem, method="cvxpy")
    Xa = np.ascontiguousarray(np.column_stack([problem.X, np.ones(problem.n_samples)]))
    weights = np.r_[np.ones(problem.n_in), 0.0]
    Q = np.vstack([reference.weight.T, reference.bias])
    rng = np.random.default_rng(0)
    support = (Q != 0) | (rng.random(Q.shape) < 0.3)
    support[-1] = True
    signs = np.where(Q != 0, np.sign(Q), np.where(rng.random(Q.shape) < 0.5, -1.0, 1.0))
    signs[-1] = 0.0
    moments = Moments(Xa, problem.Y, problem.active)
    outcome = bounded_restricted(moments, Xa, problem.upper, problem.epsilon, support, signs, weights, Work(), {},
                                 1e-6)
    assert outcome[0] == "ok"
    Theta = outcome[1]
    assert np.all(Theta[~support] == 0) and np.all(Theta[:-1] * signs[:-1] >= 0)
    assert problem.violation(Theta[:-1].T, Theta[-1]) <= 1e-7
    expected = _cvxpy_restricted(problem, support, signs)
    assert np.sum(np.abs(Theta[:-1])) == pytest.approx(expected, rel=1e-5)


def test_the_duality_gap_bounds_the_optimum_from_below():
    """From any support, the round's multipliers scaled into the dual's feasible set give a
    value below the optimum (cvxpy): the relative gap is an upper bound of how far the
    round's objective is from it, and it vanishes on the optimal support."""
    problem, original = make_layer(n_samples=150, n_in=10, n_out=3, epsilon=0.3, seed=8)
    optimum = solve(problem, method="cvxpy")
    Xa = np.ascontiguousarray(np.column_stack([problem.X, np.ones(problem.n_samples)]))
    weights = np.r_[np.ones(problem.n_in), 0.0]
    Q = np.vstack([optimum.weight.T, optimum.bias])
    free = np.broadcast_to(weights[:, None] == 0, Q.shape)
    moments = Moments(Xa, problem.Y, problem.active)
    gaps = []
    for iterations in (0, 25, 50, 100):  # supports and signs of early ADMM iterates (0: the optimum's)
        if iterations:
            early = solve(problem, warm_start=original, max_iter=iterations, polish=False)
            Q = np.vstack([early.weight.T, early.bias])
        support, signs = (Q != 0) | free, np.sign(Q)
        outcome = bounded_restricted(moments, Xa, None, problem.epsilon, support, signs, weights, Work(), {}, 1e-6)
        if outcome[0] != "ok":  # a support that cannot meet the budget
            continue
        _, Theta, nu, inverse_steps = outcome
        round_ = _Round(Xa, problem.Y, None, problem.epsilon, problem.active, weights, free, (Theta != 0) | free,
                        signs, Theta, nu, inverse_steps, 1e-6)
        primal = np.sum(np.abs(Theta[:-1]))
        assert round_.primal == pytest.approx(primal)
        assert round_.dual_bound() <= optimum.objective * (1 + 1e-7)
        assert round_.refined_dual_bound(Work()) <= optimum.objective * (1 + 1e-7)  # still weak duality
        gaps.append(1 - round_.dual_bound() / primal)
    assert len(gaps) >= 3 and gaps[0] <= 1e-6 < max(gaps[1:])


@pytest.mark.parametrize("upper", [False, True])
def test_any_multipliers_give_a_lower_bound_once_the_bias_is_made_stationary(upper):
    """The dual point is formed from any multipliers (``nu >= 0`` on the inactive entries):
    the bias's gradient is made zero by one shift of each neuron's active entries, so
    multipliers far from stationary for the bias still bound the optimum from below (they
    gave no bound before, the same as a restricted solve 2e-4 off stationarity)."""
    problem, original = make_layer(n_samples=120, n_in=10, n_out=4, upper=upper, seed=12)
    optimum = solve(problem, method="cvxpy")
    Xa = np.ascontiguousarray(np.column_stack([problem.X, np.ones(problem.n_samples)]))
    weights = np.r_[np.ones(problem.n_in), 0.0]
    Theta = np.vstack([optimum.weight.T, optimum.bias])
    free = np.broadcast_to(weights[:, None] == 0, Theta.shape)
    round_ = _Round(Xa, problem.Y, problem.upper, problem.epsilon, problem.active, weights, free, (Theta != 0) | free,
                    np.sign(Theta), Theta, np.zeros_like(problem.Y), 1.0, 1e-6)
    rng = np.random.default_rng(0)
    bounds = []
    for _ in range(20):
        N = rng.standard_normal(problem.Y.shape)
        N[~problem.active] = np.abs(N[~problem.active])
        assert abs((Xa.T @ N)[-1]).max() > 1.0  # far from stationary for the bias
        bounds.append(round_._dual_value(N, Xa.T @ N))
    assert np.all(np.isfinite(bounds))
    assert max(bounds) <= optimum.objective * (1 + 1e-7)


def test_better_multipliers_make_a_feasible_dual_point_where_one_exists():
    """For a neuron whose inactive multipliers leave ``|g_j| > w_j``, the LP finds others
    (``nu >= 0``) with every ``|g_j| <= w_j`` and the free column's ``g = 0``, at the least
    ``h^T nu``; a neuron with no such multipliers keeps its own; the work is counted and a
    program past the limit is not started."""
    from solvers._multipliers import LP_COST, better_multipliers

    rng = np.random.default_rng(4)
    n_samples, n_cols = 300, 6
    Xa = np.column_stack([np.abs(rng.standard_normal((n_samples, n_cols - 1))), np.ones(n_samples)])
    active = np.zeros((n_samples, 2), dtype=bool)
    active[:40] = True
    bound = np.broadcast_to(np.r_[np.ones(n_cols - 1), 0.0][:, None], (n_cols, 2))
    N = np.zeros((n_samples, 2))
    target = np.zeros(n_samples)  # multipliers that make a feasible point: build the active part from them
    target[rng.choice(np.arange(40, n_samples), 8, replace=False)] = rng.random(8)
    g_wanted = np.r_[0.5 * rng.uniform(-1, 1, n_cols - 1), 0.0]
    N[:40, 0] = np.linalg.lstsq(Xa[:40].T, g_wanted - Xa[40:].T @ target[40:], rcond=None)[0]
    N[40:, 0] = 5.0 * rng.random(n_samples - 40)  # the kernel's choice, far from feasible
    N[:40, 1] = 1e3  # no nu >= 0 undoes this: every column's g is far above its weight
    N[40:, 1] = 0.0
    V = np.abs(rng.standard_normal((n_samples, 2)))
    work = Work()
    better = better_multipliers(Xa, N, active, V, bound, np.array([0, 1]), work)
    g = Xa.T @ better
    assert np.all(better[40:, 0] >= 0) and np.abs(g[:-1, 0]).max() <= 1 + 1e-7 and abs(g[-1, 0]) <= 1e-7
    assert np.array_equal(better[:40], N[:40])  # the active part stays
    assert V[40:, 0] @ better[40:, 0] <= V[40:, 0] @ target[40:] + 1e-9  # the least h^T nu
    assert np.array_equal(better[:, 1], N[:, 1])  # infeasible: kept
    assert work.flops == pytest.approx(2 * LP_COST * (n_samples - 40) * n_cols)
    skipped = better_multipliers(Xa, N, active, V, bound, np.array([0]), Work(), flops_limit=1.0)
    assert np.array_equal(skipped, N)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_multipliers_program_by_column_generation_is_the_whole_programs_optimum(seed, monkeypatch):
    """The multipliers' program (module docstring of solvers._multipliers) solved on a few
    samples at a time, joined by their reduced costs, reaches the optimum of the program on
    every sample (HiGHS on all of it), feasible; it says so where no point is feasible."""
    from scipy.optimize import linprog

    from solvers import _multipliers

    rng = np.random.default_rng(seed)
    n_samples, n_cols = 3000, 8
    E_T = np.abs(rng.standard_normal((n_cols, n_samples)))
    E_T[-1] = 1.0  # the bias column: an equality
    w = np.r_[np.ones(n_cols - 1), 0.0]
    nu_wanted = np.zeros(n_samples)
    nu_wanted[rng.choice(n_samples, 12, replace=False)] = rng.random(12)
    fixed = -(E_T @ nu_wanted) + np.r_[0.5 * rng.uniform(-1, 1, n_cols - 1), 0.0]
    h = rng.random(n_samples)
    pen = w > 0
    A_ub = np.vstack([E_T[pen], -E_T[pen]])
    b_ub = np.r_[w[pen] - fixed[pen], w[pen] + fixed[pen]]
    rounds = []
    restricted = _multipliers._Program._restricted
    monkeypatch.setattr(_multipliers._Program, "_restricted",
                        lambda self, chosen: rounds.append(chosen.size) or restricted(self, chosen))
    program = _multipliers._Program(A_ub, b_ub, E_T[~pen], -fixed[~pen], h)
    nu = program.solve(np.array([], dtype=np.int64))
    whole = linprog(h, A_ub=A_ub, b_ub=b_ub, A_eq=E_T[~pen], b_eq=-fixed[~pen], bounds=(0, None), method="highs-ds")
    assert len(rounds) > 1 and max(rounds) < n_samples / 4  # samples joined, and few of them
    assert np.all(nu >= 0) and np.all(A_ub @ nu <= b_ub + 1e-7) and np.allclose(E_T[~pen] @ nu, -fixed[~pen], atol=1e-7)
    assert h @ nu == pytest.approx(whole.fun, rel=1e-7, abs=1e-9)
    far = _multipliers._Program(A_ub, b_ub + np.r_[np.zeros(n_cols - 1), -1e3 * np.ones(n_cols - 1)],
                                E_T[~pen], -fixed[~pen], np.zeros(n_samples))
    assert far.solve(np.array([], dtype=np.int64)) is None  # -E nu <= -1e3 - ...: g_j far above w_j whatever nu
    # with bounds h != 0 the slacks left over may only mean their cost was too low: the whole program decides
    wholes = []
    whole_program = _multipliers._Program._whole
    monkeypatch.setattr(_multipliers._Program, "_whole", lambda self: wholes.append(1) or whole_program(self))
    far_bounded = _multipliers._Program(far.A_ub, far.b_ub, far.A_eq, far.b_eq, h)
    assert far_bounded.solve(np.array([], dtype=np.int64)) is None and wholes == [1]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_layers_are_certified_by_the_first_attempts(dtype):
    """A first-convolution-like layer (many samples, few inputs) and a wider one: the ADMM
    stops on a certified polish within 150 iterations, feasible and at cvxpy's optimum
    within the tolerance (the ADMM's own stop took over a thousand iterations here)."""
    for n_samples, n_in, n_out in ((2000, 9, 8), (400, 40, 6)):
        problem, original = make_layer(n_samples=n_samples, n_in=n_in, n_out=n_out, epsilon=0.05, seed=3)
        reference = solve(problem, method="cvxpy")
        answer = solve(problem, warm_start=original, tol=1e-3, dtype=dtype)
        assert answer.info["polished"] and answer.iterations <= 150
        assert answer.violation <= 1e-5
        assert answer.objective == pytest.approx(reference.objective, rel=1e-3)
