"""The target sparsity as a path in epsilon (solvers.path): it reaches the target, its answer
is the program's optimum at the budget it ends at (against cvxpy), and it says why when the
target cannot be reached."""
import numpy as np
import pytest

from conftest import make_layer
from solvers import LayerProblem, solve, solve_at_sparsity
from solvers.examples import planted_problem
from solvers.path import next_epsilon, warm_budget, zero_budget


def _at(problem, upper=None, dtype=None):
    X = problem.X if dtype is None else problem.X.astype(dtype)
    return lambda epsilon: LayerProblem(X, problem.Y, epsilon, relu=problem.relu, upper=upper,
                                        fit_bias=problem.fit_bias)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_path_reaches_the_target_at_an_optimum_of_its_budget(relu, dtype, sparsity):
    problem, original = make_layer(n_samples=200, n_in=40, n_out=10, relu=relu, density=0.9, seed=1)
    at = _at(problem, dtype=dtype)
    solution = solve_at_sparsity(at, sparsity, float(problem.epsilon), warm_start=original, dtype=dtype)
    kept = solution.nnz / solution.weight.size
    assert abs(kept - (1 - sparsity)) <= 0.01 + 1e-12
    assert solution.info["target_met"] and solution.info["why"] is None
    assert solution.status == "optimal"
    final = at(solution.info["epsilon"])
    assert final.violation(solution.weight, solution.bias) <= 5e-3 + (5e-3 if dtype == np.float32 else 0.0)
    reference = solve(final, method="cvxpy")
    assert solution.objective == pytest.approx(reference.objective, rel=2e-3)
    # the record of the path: search stages, then at least one full one at the final budget
    stages = solution.info["path"]
    assert stages[-1]["final"] and stages[-1]["epsilon"] == solution.info["epsilon"]
    assert solution.info["path_iterations"] == sum(stage["iterations"] for stage in stages)
    # no stage goes to or past the budget where zero weights are feasible (nothing kept there)
    assert all(stage["epsilon"] < zero_budget(final) for stage in stages)


def test_a_path_that_lands_by_rounding_keeps_the_target_within_the_feasibility_tolerance():
    # 40 inputs, 10 neurons at 70%: the full answer kept too much, and six of its weights
    # that carry least of the response were set to zero within the solver's tolerance
    problem, original = make_layer(n_samples=300, n_in=40, n_out=10, relu=True, density=0.9, seed=0)
    at = _at(problem)
    solution = solve_at_sparsity(at, 0.7, float(problem.epsilon), warm_start=original)
    assert solution.info["rounded"] > 0 and solution.info["target_met"]
    assert abs(solution.nnz / solution.weight.size - 0.3) <= 0.01 + 1e-12
    final = at(solution.info["epsilon"])
    assert solution.violation == pytest.approx(final.violation(solution.weight, solution.bias))
    assert solution.violation <= 5e-3  # the tolerance every answer of tol=1e-3 is held to
    # below the optimum of its budget (it uses the slack), and keeping fewer weights than it
    reference = solve(final, method="cvxpy")
    assert solution.objective <= reference.objective * (1 + 1e-6)
    assert solution.nnz < np.count_nonzero(np.abs(reference.weight) > 1e-6 * np.abs(reference.weight).max())


def test_path_through_the_cascade_bound_and_screened_inputs():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 48))
    X[:, 3] = 0.0  # a dead input: its weights are zero at every budget
    weight, bias = rng.standard_normal((10, 48)), 0.3 * rng.standard_normal(10)
    Z = X @ weight.T + bias
    Y, upper = np.maximum(Z, 0.0), Z + 0.3 * np.abs(rng.standard_normal(Z.shape))  # the original stays feasible
    at = lambda epsilon: LayerProblem(X, Y, epsilon, upper=upper)  # noqa: E731
    solution = solve_at_sparsity(at, 0.5, 0.1 * float(np.linalg.norm(Y)), warm_start=(weight, bias))
    assert abs(solution.nnz / solution.weight.size - 0.5) <= 0.01 + 1e-12
    assert solution.info["screened"] == 1 and not solution.weight[:, 3].any()
    assert solution.violation <= 5e-3


def test_scaling_data_and_budget_together_changes_nothing():
    problem, original = make_layer(n_samples=100, n_in=15, n_out=4, density=0.9, seed=4)
    base = solve_at_sparsity(_at(problem), 0.7, float(problem.epsilon), warm_start=original)
    c = 8.0
    scaled_problem = LayerProblem(c * problem.X, c * problem.Y, c * problem.epsilon)
    scaled = solve_at_sparsity(_at(scaled_problem), 0.7, c * float(problem.epsilon),
                               warm_start=(original[0], c * original[1]))
    assert scaled.nnz == base.nnz
    assert scaled.info["epsilon"] == pytest.approx(c * base.info["epsilon"], rel=1e-6)


def test_a_target_denser_than_any_l1_answer_is_reported_with_its_reason():
    # a planted sparse layer, well determined: at small budgets the l1 answer is the planted
    # support (about 20% of the weights), so half the weights cannot be kept
    problem, planted = planted_problem(400, 20, 4, density=0.2, epsilon=0.05, relu=False, seed=0)
    solution = solve_at_sparsity(_at(problem), 0.5, float(problem.epsilon), warm_start=planted)
    assert not solution.info["target_met"]
    assert solution.nnz / solution.weight.size < 0.4
    assert "does not get denser" in solution.info["why"]


def test_torch_backend_walks_the_same_path():
    pytest.importorskip("torch")
    problem, original = make_layer(n_samples=120, n_in=20, n_out=5, density=0.9, seed=5)
    numba = solve_at_sparsity(_at(problem), 0.7, float(problem.epsilon), warm_start=original)
    torch_path = solve_at_sparsity(_at(problem), 0.7, float(problem.epsilon), warm_start=original,
                                   backend="torch", device="cpu")
    assert torch_path.nnz == numba.nnz
    assert torch_path.info["epsilon"] == pytest.approx(numba.info["epsilon"], rel=1e-9)


def test_inputs_are_not_modified():
    problem, original = make_layer(n_samples=80, n_in=10, n_out=3, density=0.9, seed=6)
    copies = [problem.X.copy(), problem.Y.copy(), original[0].copy(), original[1].copy()]
    solve_at_sparsity(_at(problem), 0.6, float(problem.epsilon), warm_start=original)
    for before, after in zip(copies, [problem.X, problem.Y, *original]):
        np.testing.assert_array_equal(before, after)


def test_bad_arguments_are_refused():
    problem, _ = make_layer()
    with pytest.raises(ValueError, match="sparsity"):
        solve_at_sparsity(_at(problem), 1.0, 1.0)
    with pytest.raises(ValueError, match="epsilon"):
        solve_at_sparsity(_at(problem), 0.5, 0.0)
    with pytest.raises(ValueError, match="tolerance"):
        solve_at_sparsity(_at(problem), 0.5, 1.0, tolerance=0.0)
    with pytest.raises(ValueError, match="only the ADMM"):
        solve_at_sparsity(_at(problem), 0.5, 1.0, method="cvxpy")
    other = LayerProblem(problem.X.copy(), problem.Y, 1.0)
    with pytest.raises(ValueError, match="share the first one's X"):
        solve_at_sparsity(lambda e: problem if e == 1.0 else other, 0.99, 1.0)


def test_next_epsilon_steps_then_interpolates_inside_the_bracket():
    size = 1000
    # everything kept too much: a larger budget, by a factor 2 to 4
    step = next_epsilon([(1.0, 0.8)], 0.3, size)
    assert step == pytest.approx(2.0)
    following = next_epsilon([(1.0, 0.8), (2.0, 0.6)], 0.3, size)
    assert 2.0 * 2.0 <= following <= 2.0 * 4.0 + 1e-12
    # bracketed: inside the middle 60% of [lo, hi] on the log scale
    inside = next_epsilon([(1.0, 0.5), (4.0, 0.1)], 0.3, size)
    assert 1.0 * 4.0**0.2 <= inside <= 1.0 * 4.0**0.8
    # an infeasible low end: geometric bisection
    assert next_epsilon([(1.0, None), (4.0, 0.1)], 0.3, size) == pytest.approx(2.0)
    # a bracket closed to 0.1%: nothing left to try
    assert next_epsilon([(1.0, 0.5), (1.0005, 0.1)], 0.3, size) is None


def test_why_the_path_ends_names_the_jump_or_the_side_every_answer_is_on():
    from solvers.path import _jump

    assert "jumps from 0.3500 at epsilon 1 to 0.2500 at 1.0005" in _jump([(1.0, 0.35), (1.0005, 0.25)], 0.3)
    assert "not monotone" in _jump([(2.0, 0.35), (1.0, 0.25)], 0.3)
    # the full answers all on one side, and the next step repeating one of them: said, not a crash
    dense = _jump([(1.0, 0.4), (1.1, 0.35)], 0.3)
    assert "every answer so far keeps more than the target 0.3000" in dense and "0.3500 kept at epsilon 1.1" in dense
    assert "keeps less" in _jump([(1.0, 0.2), (1.1, 0.1)], 0.3)
    assert "no feasible answer" in _jump([(1.0, None)], 0.3)


def test_after_two_full_answers_the_step_follows_their_own_slope():
    """Two full answers on the same side of the target: the next budget is their secant's
    (held to a factor 2), whatever the search stages' looser readings say; one full answer:
    the search stages' slope, held to a factor 1.25."""
    import math

    from solvers.path import _full_step, _log_kept, _Point

    size = 1000
    # the search read sparser answers than the full stages give at the same budgets
    search = [_Point(100.0, 0.32, 25, False), _Point(120.0, 0.31, 25, False)]
    one_full = search + [_Point(100.0, 0.38, 25, True)]
    following, _ = _full_step(one_full, 0.3, size)
    assert following == pytest.approx(125.0)  # the search's slope asks for more: held to 1.25
    two_full = one_full + [_Point(110.0, 0.36, 25, True)]
    following, _ = _full_step(two_full, 0.3, size)
    slope = (_log_kept(0.36, size) - _log_kept(0.38, size)) / math.log(1.1)
    wanted = 110.0 * math.exp((_log_kept(0.3, size) - _log_kept(0.36, size)) / slope)
    assert following == pytest.approx(min(wanted, 220.0))
    assert following > 125.0
    # once the full answers bracket the target, interpolation between them
    bracketed = two_full + [_Point(160.0, 0.25, 25, True)]
    following, readings = _full_step(bracketed, 0.3, size)
    assert 110.0 < following < 160.0 and len(readings) == 3


class _ScriptedStages:
    """Search stages whose reading is ``read(epsilon, stage)``: a stand-in for the ADMM's
    continued run, to drive the search's rules."""

    def __init__(self, read):
        self.read, self.iterations, self.budgets = read, 0, []

    def stage(self, epsilon, final):
        self.iterations += 25
        self.budgets.append(epsilon)
        return self.read(epsilon, len(self.budgets)), None


def _search_with(read, target_kept=0.3):
    from solvers.path import _search

    stages, points = _ScriptedStages(read), []
    why = _search(stages, lambda epsilon: epsilon, points, 1.0, target_kept, 1000, 1.0, (1e-4, 64.0), None, 0.01)
    return why, points


def test_the_search_ends_when_its_readings_drift_against_the_budget():
    """Inside a bracket, loose readings that move with the run rather than the budget (a
    larger budget reading denser) end the search after two such stages, at no cost in
    reach: the full stages start from the closest reading."""
    def drifting(epsilon, stage):  # 1.2 points over the target up to 3.5, 5 under beyond; each stage adds 0.2
        return (max(0.312, 0.6 / epsilon) if epsilon < 3.5 else 0.25) + 0.002 * stage

    why, points = _search_with(drifting)
    assert why is None  # no reason: the full stages go on from the closest reading
    readings = [(p.epsilon, p.kept) for p in points]
    closest = min(readings[:-2], key=lambda r: abs(r[1] - 0.3))
    assert all(abs(k - 0.3) >= abs(closest[1] - 0.3) and (e - closest[0]) * (k - closest[1]) > 0
               for e, k in readings[-2:])
    assert len(points) == 5  # without the rule: 14 stages, to a bracket closed on the drift


def test_the_search_ends_when_three_readings_in_a_row_stay_farther_than_the_closest():
    """A bracket whose dense side reads the same whatever its budget (as a bracket entered
    from the sparse side can: the MNIST-1D CNN's conv2 at 70% read 31.5-32.1% at seven
    budgets while 28.9% was read at the bracket's sparse end) ends after three readings
    farther from the target than the closest, instead of narrowing to a closed bracket."""
    def held(epsilon, stage):
        return 0.289 if epsilon >= 2.0 else 0.316

    why, points = _search_with(held)
    assert why is None  # the full stages go on from the closest reading
    readings = [p.kept for p in points]
    assert readings[-3:] == [0.316] * 3 and 0.289 in readings[:-3]
    assert len(points) == 5  # without the rule: 10 stages, to a bracket closed 0.1% wide


def test_a_monotone_jump_is_still_narrowed_and_named():
    """Readings that respect the budget (here a jump over the target) keep the search
    interpolating until the bracket closes, and the reason names the jump."""
    def jump(epsilon, stage):
        return 0.36 if epsilon < 2.5 else 0.24

    why, points = _search_with(jump)
    assert "jumps from 0.3600" in why
    assert len(points) > 8


def test_before_a_bracket_drifting_readings_are_left_to_the_steps():
    """Readings all on one side of the target (denser as the budget grows: no bracket yet)
    do not end the search as stalled: the steps go on until the budget leaves its range."""
    def denser_with_epsilon(epsilon, stage):
        return min(0.9, 0.5 + 0.01 * stage)

    why, points = _search_with(denser_with_epsilon)
    assert why is not None and "range" in why


@pytest.mark.parametrize("relu,upper,fit_bias", [(True, False, True), (True, True, True), (False, False, True),
                                                 (True, False, False)])
def test_zero_budget_is_where_zero_weights_become_feasible(relu, upper, fit_bias):
    problem, _ = make_layer(n_samples=70, n_in=8, n_out=4, relu=relu, upper=upper, fit_bias=fit_bias, seed=7)
    zero = zero_budget(problem)
    weight = np.zeros((problem.n_out, problem.n_in))
    # the program at that budget is feasible with W = 0 ...
    at = LayerProblem(problem.X, problem.Y, zero * (1 + 1e-9), relu=relu, upper=problem.upper, fit_bias=fit_bias)
    if fit_bias:  # the program's optimum there is 0 (cvxpy's weights are zero up to its accuracy)
        assert solve(at, method="cvxpy").objective <= 1e-6
    else:
        assert at.violation(weight, None) == 0.0
    # ... and just below it, zero weights with any bias leave the budget: the answer keeps something
    below = LayerProblem(problem.X, problem.Y, 0.98 * zero, relu=relu, upper=problem.upper, fit_bias=fit_bias)
    assert solve(below, method="cvxpy").objective > 1e-3


def test_warm_budget_is_the_smallest_budget_the_warm_start_meets():
    problem, (weight, bias) = make_layer(n_samples=80, n_in=10, n_out=4, seed=8)
    shrunk = (0.9 * weight, 0.9 * bias)  # the inactive responses stay below 0, the active ones move
    budget = warm_budget(problem, shrunk)
    assert budget > 0
    assert LayerProblem(problem.X, problem.Y, budget).violation(*shrunk) <= 1e-12
    assert LayerProblem(problem.X, problem.Y, 0.99 * budget).violation(*shrunk) > 0
    # a warm start that breaks the inactive bound meets no budget; none given, none known
    assert warm_budget(problem, (weight, bias + 10.0)) == np.inf
    assert warm_budget(problem, None) == np.inf


def test_an_infeasible_stage_reads_none_and_the_next_starts_afresh():
    from solvers._continuation import Continuation

    rng = np.random.default_rng(9)
    X = rng.standard_normal((200, 12))
    weight, bias = rng.standard_normal((3, 12)), rng.standard_normal(3)
    Y = X @ weight.T + bias + 0.3 * rng.standard_normal((200, 3))  # no weights fit it exactly
    at = lambda epsilon: LayerProblem(X, Y, epsilon, relu=False)  # noqa: E731
    least = float(np.linalg.norm(Y - np.hstack([X, np.ones((200, 1))]) @ np.linalg.lstsq(
        np.hstack([X, np.ones((200, 1))]), Y, rcond=None)[0]))
    stages = Continuation(at(0.5 * least), warm_start=(weight, bias))
    assert stages.known_feasible > least  # the warm start is not the least-squares fit
    kept, _ = stages.stage(at(0.5 * least), final=False)  # below the least-squares error: infeasible
    assert kept is None and stages.restart
    budget = 1.5 * stages.known_feasible
    kept, solution = stages.stage(at(budget), final=True)
    assert not stages.restart and kept == solution.nnz / solution.weight.size
    assert solution.status == "optimal" and solution.violation <= 5e-4
    assert solution.objective == pytest.approx(solve(at(budget), method="cvxpy").objective, rel=1e-3)


def test_failed_polishing_is_held_to_one_allowance_over_the_stages(monkeypatch):
    """The stages of a path share one polishing schedule: once an attempt has failed, the
    next final stage's attempts are held to the allowance of the whole path (a failure
    that took more than it leaves no attempt), where a fresh schedule would try at once."""
    import solvers._polish as polishing
    import solvers._polisher as schedule
    from solvers._continuation import Continuation

    problem, original = make_layer(n_samples=150, n_in=10, n_out=3, seed=4)
    at = _at(problem)
    attempts = []

    def failing(*args, **kwargs):
        attempts.append(kwargs["flops_limit"])
        return polishing.PolishResult(None, "made to fail", flops=1e30)

    monkeypatch.setattr(schedule, "polish", failing)
    stages = Continuation(at(problem.epsilon), warm_start=original, max_iter=200)
    stages.stage(at(problem.epsilon), final=True)
    first = len(attempts)
    assert first >= 1 and stages.polisher.failed_flops >= 1e30
    polisher = stages.polisher
    _, solution = stages.stage(at(1.2 * problem.epsilon), final=True)
    assert stages.polisher is polisher and len(attempts) == first  # the allowance is spent
    assert solution.info["polish_failed_flops"] >= 1e30


def test_a_full_stage_that_stops_before_an_attempt_gets_one_at_its_answer(monkeypatch):
    """A full stage that stops on the ADMM's own test before the schedule's first attempt
    (here: the wait set past the run) is polished at its answer: certified, the program's
    optimum; a solve with the same schedule is not, and says so (``polish_outcome``), as
    does a stage whose attempt fails, with the attempt's reason."""
    import solvers._polish as polishing
    import solvers._polisher as schedule
    from solvers._continuation import Continuation

    problem, original = make_layer(n_samples=150, n_in=12, n_out=3, density=0.9, seed=6)
    at = _at(problem)
    alone = solve(problem, warm_start=original, polish_wait=10**6)
    assert alone.status == "optimal" and not alone.info["polished"]
    assert alone.info["polish_outcome"] == "not attempted"
    assert solve(problem, warm_start=original, polish=False).info["polish_outcome"] == "off"
    stages = Continuation(at(problem.epsilon), warm_start=original, polish_wait=10**6)
    _, solution = stages.stage(at(problem.epsilon), final=True)
    assert solution.info["polished"] and solution.info["polish_outcome"] == "certified"
    assert solution.iterations == alone.iterations  # the same run, then the attempt
    assert solution.objective == pytest.approx(solve(problem, method="cvxpy").objective, rel=1e-6)
    monkeypatch.setattr(schedule, "polish", lambda *args, **kwargs: polishing.PolishResult(None, "made to fail"))
    stages = Continuation(at(problem.epsilon), warm_start=original, polish_wait=10**6)
    _, solution = stages.stage(at(problem.epsilon), final=True)
    assert not solution.info["polished"] and solution.info["polish_outcome"] == "made to fail"


def test_a_count_exactly_one_tolerance_away_is_within_it():
    """196 of 400 weights is one point from half, though 0.5 - 0.49 rounds above 0.01."""
    from solvers.path import _within

    assert 0.5 - 196 / 400 > 0.01
    assert _within(196 / 400, 0.5, 0.01) and _within(0.5 + 0.01, 0.5, 0.01)
    assert not _within(195 / 400, 0.5, 0.01) and not _within(0.52, 0.5, 0.01)


def test_a_full_stage_below_the_warm_budget_that_does_not_converge_reads_infeasible():
    """Below the budget the warm start meets, a full stage may sit at (or under) the
    program's floor, where the ADMM converges slowly or not at all: it stops after
    2,000 iterations and reads as infeasible (kept None) whatever its violation, so the
    path steps to a larger budget instead of ending there."""
    from solvers._continuation import _EDGE_ITERATIONS, Continuation

    rng = np.random.default_rng(9)
    X = rng.standard_normal((200, 12))
    weight, bias = rng.standard_normal((3, 12)), rng.standard_normal(3)
    Y = X @ weight.T + bias + 0.3 * rng.standard_normal((200, 3))
    at = lambda epsilon: LayerProblem(X, Y, epsilon, relu=False)  # noqa: E731
    stages = Continuation(at(1.0), warm_start=(weight, bias))
    done = stages.iterations
    kept, solution = stages.stage(at(0.5 * stages.known_feasible), final=True)
    assert kept is None and solution.status == "max_iter"
    assert stages.iterations - done == _EDGE_ITERATIONS
    kept, solution = stages.stage(at(1.5 * stages.known_feasible), final=True)  # above it: the full count
    assert solution.status == "optimal" and kept == solution.nnz / solution.weight.size


def test_after_an_infeasible_full_answer_the_readings_just_above_it_are_not_trusted():
    """A search stage's loose reading just above a budget that a full stage found
    infeasible is not a bracket end (the loose stages read the floor too low): the next
    budget bisects between the infeasible one and the first reading at least 5% above it."""
    import math

    from solvers.path import _full_step, _Point

    points = [_Point(101.0, 0.19, 25, False), _Point(103.0, 0.18, 25, False), _Point(130.0, 0.08, 25, False),
              _Point(100.0, None, 2000, True)]
    following, readings = _full_step(points, 0.2, 1000)
    assert following == pytest.approx(math.sqrt(100.0 * 130.0))
    assert (101.0, 0.19) not in readings and (130.0, 0.08) in readings
