"""The polish's root search in the ball's step ``t``: a neuron's answer read off its
segment is the answer a solve gives there, and not beyond it; the ADMM's duals give the
search a first step close to the one it ends at, formed only when rounds run and from
copies of the ADMM's arrays; a step is taken on its budget to round-off."""
import numpy as np
import pytest

from conftest import make_layer
from solvers import solve
from solvers._bounded import _follow
from solvers._neuron import _Neuron
from solvers._restricted import Moments, Work


def _neuron(seed, upper):
    """Neuron 0 of a random ReLU layer on its original support (and a fresh copy maker)."""
    problem, (weight, bias) = make_layer(n_samples=300, n_in=8, n_out=3, upper=upper, epsilon=0.1, seed=seed)
    Xa = np.ascontiguousarray(np.hstack([problem.X, np.ones((problem.n_samples, 1))]))
    V = None if problem.upper is None else np.asarray(problem.upper, dtype=np.float64)
    moments = Moments(Xa, problem.Y, problem.Y > 0)
    weights = np.r_[np.ones(problem.n_in), 0.0]  # the bias is not penalised
    theta = np.r_[weight[0], bias[0]]
    columns = np.flatnonzero(theta != 0)
    signs = np.where(weights > 0, np.sign(theta), 1.0)
    squares = (Xa * Xa) @ np.isin(np.arange(Xa.shape[1]), columns).astype(np.float64)

    def make():
        return _Neuron(moments, Xa, V, columns, signs[columns], weights, 0, Work(), squares)

    return Xa, make


def _solved(make, t):
    """A fresh neuron's confirmed answer at ``t`` (no segment to read from)."""
    neuron = make()
    return neuron, neuron.at(t, Work(), confirm=True)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("upper", [False, True])
def test_an_answer_read_off_its_segment_is_the_one_a_solve_gives(seed, upper):
    Xa, make = _neuron(seed, upper)
    t = 0.05
    neuron, answer = _solved(make, t)
    assert answer is not None and not neuron.predicted
    _follow([neuron], [0], Xa, Work())
    segment = neuron.segment
    assert segment is not None and segment.low <= t <= segment.high
    inside = [t]
    if segment.high > t:
        inside.append(t + 0.5 * (min(segment.high, 10 * t) - t))
    if segment.low < t:
        inside.append(segment.low + 0.5 * (t - segment.low))
    for step in inside:
        read = neuron.at(step, Work())
        assert neuron.predicted
        _, solved = _solved(make, step)
        for got, expected in zip(read, solved):
            assert np.allclose(got, expected, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_past_the_end_of_its_segment_the_line_is_not_the_answer(seed):
    Xa, make = _neuron(seed, upper=False)
    t = 0.05
    neuron, _ = _solved(make, t)
    _follow([neuron], [0], Xa, Work())
    segment = neuron.segment
    checked = 0
    for beyond in (segment.high * 1.2 + 1e-6, segment.low * 0.8 if segment.low > 0 else None):
        if beyond is None or not np.isfinite(beyond):
            continue
        assert not segment.holds(beyond)
        line_theta = segment.theta + (beyond - segment.t) * segment.slope
        _, solved = _solved(make, beyond)
        assert np.abs(line_theta - solved[0]).max() > 1e-8
        checked += 1
    assert checked >= 1


def test_the_admm_duals_start_the_step_search_near_its_end(monkeypatch):
    """The first step the polish tries (from the ADMM's duals at its first attempt) is
    within 10% of the step it certifies at, on a layer ball and on per-neuron balls."""
    import solvers._polish as polish_module

    seen = []
    original = polish_module.bounded_restricted

    def recording(moments, Xa, V, epsilon, support, signs, weights, work, cache, tol, flops_limit=np.inf):
        outcome = original(moments, Xa, V, epsilon, support, signs, weights, work, cache, tol, flops_limit)
        seen.append((cache.get("start"), cache.get("t")))
        return outcome

    monkeypatch.setattr(polish_module, "bounded_restricted", recording)
    for per_neuron in (False, True):
        seen.clear()
        problem, original_weights = make_layer(n_samples=600, n_in=20, n_out=6, per_neuron=per_neuron,
                                               epsilon=0.05, seed=4)
        answer = solve(problem, warm_start=original_weights, tol=1e-3)
        assert answer.info["polished"]
        start, end = seen[-1]
        assert start is not None and np.all(np.isfinite(start))
        assert np.allclose(start, end, rtol=0.1)


def test_a_step_is_taken_on_its_budget_to_round_off_and_nearly_tight():
    from solvers._bounded import _ROOT_TOL, _on_budget

    budget, tol = np.array([4.0]), 1e-3
    for f, taken in ((4.0, True), (4.0 * (1 + 1e-12), True), (4.0 * (1 + 1e-6), False),
                     (4.0 * (1 - 0.5 * _ROOT_TOL * tol), True), (4.0 * (1 - 2 * _ROOT_TOL * tol), False)):
        assert bool(_on_budget(np.array([f]), budget, tol)[0]) is taken, f


def test_an_attempt_refused_for_its_size_does_not_form_its_first_step():
    """The step guess is formed (a few copies of the response) only when rounds run."""
    from solvers._polish import polish

    problem, (weight, bias) = make_layer(n_samples=200, n_in=8, n_out=3, epsilon=0.1, seed=1)
    Xa = np.hstack([problem.X, np.ones((problem.n_samples, 1))])
    Q = np.vstack([weight.T, bias[None, :]])

    def never():
        raise AssertionError("the step guess was formed for an attempt that runs no round")

    result = polish(Xa, problem.Y, None, problem.epsilon, True, Q, np.r_[np.ones(8), 0.0], 1e-3,
                    flops_limit=0.0, steps=never)
    assert result.Theta is None and "too large" in result.reason


def test_the_step_guess_leaves_the_admm_state_as_it_was(monkeypatch):
    """Polisher._steps works on copies: the ADMM's arrays are the same after it."""
    from solvers._polisher import Polisher

    seen = []
    original = Polisher._steps

    def checked(self, engine, state):
        before = [engine.host(array).copy() for array in (state.B, state.carry_a)]
        steps = original(self, engine, state)
        seen.append(all(np.array_equal(engine.host(array), copy)
                        for array, copy in zip((state.B, state.carry_a), before)))
        return steps

    monkeypatch.setattr(Polisher, "_steps", checked)
    for dtype in (np.float64, np.float32):
        problem, original_weights = make_layer(n_samples=400, n_in=12, n_out=5, epsilon=0.05, seed=2)
        solve(problem, warm_start=original_weights, tol=1e-3, dtype=dtype)
    assert seen and all(seen)
