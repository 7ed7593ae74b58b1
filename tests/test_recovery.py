"""Exact recovery of a planted ReLU neuron (nettrim.experiments.recovery): verdicts, certificates and
the transition read-out, on small deterministic draws."""
import numpy as np
import pytest
from scipy.optimize import linprog

from nettrim.experiments.recovery import (
    PROGRAMS,
    beats_planted,
    inactive_bound,
    planted_neurons,
    recovery_batch,
    recovery_problem,
    relative_errors,
    solve_recovery,
)
from nettrim.experiments.transition import (
    isotonic_increasing,
    log_curve,
    neurips_curve,
    phase_transition,
    transition_interval,
    transition_point,
)


def draw(n_samples, n_in=20, s=2, n_trials=4, seed=0):
    return planted_neurons(n_samples, n_in, s, n_trials, np.random.default_rng(seed))


def l1_program(X, y, inequalities):
    """Program (a) (or (b) without the inequalities) as an exact LP, w = u - v, u, v >= 0."""
    active = y > 0
    n_in = X.shape[1]
    bounds = {}
    if inequalities and (~active).any():
        bounds = dict(A_ub=np.hstack([X[~active], -X[~active]]), b_ub=np.zeros((~active).sum()))
    result = linprog(np.ones(2 * n_in), A_eq=np.hstack([X[active], -X[active]]), b_eq=y[active],
                     bounds=(0, None), method="highs", **bounds)
    return result.x[:n_in] - result.x[n_in:]


def test_planted_neurons_shapes_sparsity_and_outputs():
    X, Y, W = planted_neurons(15, 12, [1, 3], 4, np.random.default_rng(1))
    assert X.shape == (15, 12) and Y.shape == (15, 8) and W.shape == (8, 12)
    assert list(np.count_nonzero(W, axis=1)) == [1] * 4 + [3] * 4
    np.testing.assert_array_equal(Y, np.maximum(X @ W.T, 0.0))
    again = planted_neurons(15, 12, [1, 3], 4, np.random.default_rng(1))
    for first, second in zip((X, Y, W), again):
        np.testing.assert_array_equal(first, second)
    with pytest.raises(ValueError, match="sparsity_s"):
        planted_neurons(15, 12, 13, 4, np.random.default_rng(1))


@pytest.mark.parametrize("program", ["nettrim", "active_bp"])
def test_recovers_with_ample_samples_and_fails_with_too_few(program):
    ample = solve_recovery(*draw(60), program)
    assert ample.success.all() and (ample.errors <= 1e-5).all() and not ample.undecided.any()
    scarce = solve_recovery(*draw(4), program)
    assert not scarce.success.any()
    assert scarce.certified.all()  # each failure is proven by a feasible point with a smaller l1 norm


def test_least_squares_needs_as_many_active_rows_as_inputs():
    n_in = 10
    X, Y, W = draw(14, n_in=n_in, n_trials=6, seed=3)
    few = solve_recovery(X, Y, W, "active_ls")
    assert ((Y > 0).sum(axis=0) < n_in).all()
    assert not few.success.any()
    X, Y, W = draw(60, n_in=n_in, n_trials=6, seed=3)
    many = solve_recovery(X, Y, W, "active_ls")
    assert ((Y > 0).sum(axis=0) >= n_in).all()
    assert many.success.all()


def test_nettrim_and_active_bp_agree_on_every_trial_and_with_the_exact_lp():
    X, Y, W = draw(16, n_in=20, s=3, n_trials=10, seed=5)
    results = recovery_batch(X, Y, W, ("nettrim", "active_bp"))
    exact = {program: relative_errors(np.stack([l1_program(X, Y[:, m], program == "nettrim")
                                                for m in range(W.shape[0])]), W) <= 1e-3
             for program in results}
    assert 0 < exact["nettrim"].sum() < W.shape[0]  # a mix of successes and failures
    for program, result in results.items():
        np.testing.assert_array_equal(result.success, exact[program])
    np.testing.assert_array_equal(results["nettrim"].success, results["active_bp"].success)


def test_batched_verdicts_equal_one_by_one():
    X, Y, W = draw(16, n_in=20, s=3, n_trials=8, seed=5)
    batched = solve_recovery(X, Y, W, "nettrim")
    single = [solve_recovery(X, Y[:, [m]], W[[m]], "nettrim").success[0] for m in range(W.shape[0])]
    np.testing.assert_array_equal(batched.success, single)


def test_admm_verdicts_match_cvxpy():
    X, Y, W = draw(14, n_in=16, s=2, n_trials=6, seed=2)
    for program in ("nettrim", "active_bp"):
        admm = solve_recovery(X, Y, W, program)
        reference = solve_recovery(X, Y, W, program, method="cvxpy")
        np.testing.assert_array_equal(admm.success, reference.success)


def test_certificate_accepts_a_better_feasible_point_and_never_the_planted_one():
    X, Y, W = draw(8, n_in=20, s=4, n_trials=3, seed=4)
    assert not beats_planted(X, Y, W, W).any()
    better = np.stack([l1_program(X, Y[:, m], False) for m in range(3)])
    smaller = np.abs(better).sum(axis=1) < np.abs(W).sum(axis=1) * (1 - 1e-6)
    assert smaller.any()
    np.testing.assert_array_equal(beats_planted(X, Y, better, W), smaller)
    X, Y, W = draw(60, n_in=20, s=4, n_trials=3, seed=4)  # >= n_in active rows: w* is the only feasible point
    assert not beats_planted(X, Y, np.zeros_like(W), W).any()


def test_the_inactive_bound_never_binds_program_b():
    X, Y, W = draw(12, n_in=20, s=3, n_trials=3, seed=6)
    V = inactive_bound(X, Y)
    problem = recovery_problem(X, Y, "active_bp")
    np.testing.assert_array_equal(problem.upper, V)
    for m in range(3):
        w = l1_program(X, Y[:, m], False)
        assert (X @ w < V[:, m] / 2).all()
    with pytest.raises(ValueError, match="program"):
        recovery_problem(X, Y, "active_ls")


def test_transition_point_interpolates_a_hand_made_curve():
    n = [10, 20, 30, 40, 50]
    assert transition_point(n, [0.0, 0.2, 0.4, 0.8, 1.0]) == pytest.approx(32.5)
    assert transition_point(n, [0.0, 0.2, 0.4, 0.8, 1.0], level=0.8) == pytest.approx(40.0)
    # a noisy dip is pooled first: [0, .6, .4, 1] -> [0, .5, .5, 1]
    np.testing.assert_allclose(isotonic_increasing([0.0, 0.6, 0.4, 1.0]), [0.0, 0.5, 0.5, 1.0])
    assert transition_point(n[:4], [0.0, 0.6, 0.4, 1.0]) == pytest.approx(20.0)
    assert transition_point(n[:4], [0.0, 0.6, 0.4, 1.0], monotone=False) == pytest.approx(30 + 10 / 6)
    assert np.isnan(transition_point(n, [0.0, 0.1, 0.2, 0.3, 0.4]))
    assert transition_point(n, [0.6, 0.7, 0.8, 0.9, 1.0]) == 10.0
    assert transition_point(n[::-1], [1.0, 0.8, 0.4, 0.2, 0.0]) == pytest.approx(32.5)  # any order
    low, high = transition_interval(n, [0, 4, 8, 16, 20], 20)
    assert low <= 32.5 <= high


def test_phase_transition_records_are_tidy_and_reproducible():
    kwargs = dict(n_in=12, s_values=[1, 3], n_samples_values=[6, 60], n_trials=4, seed=3, trials_per_draw=2)
    records = phase_transition(**kwargs)
    assert len(records) == len(PROGRAMS) * 2 * 2
    assert {r["program"] for r in records} == set(PROGRAMS)
    for r in records:
        assert r["n_trials"] == 4 and 0 <= r["n_success"] <= 4
        assert r["probability"] == r["n_success"] / 4
    ample = [r for r in records if r["n_samples"] == 60]
    assert all(r["n_success"] == 4 for r in ample)  # 60 samples, 12 inputs: every program recovers
    again = phase_transition(**kwargs)
    assert [r["n_success"] for r in records] == [r["n_success"] for r in again]


def test_reference_curves():
    assert log_curve(10, 200) == pytest.approx(20 * np.log(20))
    assert neurips_curve(10, 200) == pytest.approx(117 * np.log(200))
