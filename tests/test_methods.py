"""Baselines against direct implementations: L-OBS, SparseGPT, magnitude, Net-Trim refit."""
import numpy as np
import pytest
import torch
from torch import nn

import nettrim
from nettrim.methods import LayerTask, lobs, magnitude, nettrim as nettrim_method, sparsegpt


def _task(n_samples=80, n_in=7, n_out=4, seed=0, bias=True, relu=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_in)) @ rng.standard_normal((n_in, n_in))  # correlated inputs
    weight = rng.standard_normal((n_out, n_in))
    b = rng.standard_normal(n_out) if bias else None
    Z = X @ weight.T + (0 if b is None else b)
    Y = np.maximum(Z, 0) if relu else Z
    return LayerTask("layer", X, Y, relu, weight, b, budget=0.1 * np.linalg.norm(Y))


def _hessian(task, damping):
    Xa = np.hstack([task.X, np.ones((len(task.X), 1))]) if task.bias is not None else task.X
    H = Xa.T @ Xa / len(Xa)
    return H + damping * np.mean(np.diag(H)) * np.eye(len(H))


def _brute_force_greedy(theta, H, n_prunable, count):
    """Greedy removal by trying every candidate: the optimal compensation of the remaining
    entries and its error, from the Hessian directly (no inverse updates)."""
    removed = []
    for _ in range(count):
        best = None
        for q in range(n_prunable):
            if q in removed:
                continue
            R = removed + [q]
            S = [j for j in range(len(theta)) if j not in R]
            d_R = -theta[R]
            d_S = -np.linalg.solve(H[np.ix_(S, S)], H[np.ix_(S, R)] @ d_R)
            error = d_R @ H[np.ix_(R, R)] @ d_R + d_R @ H[np.ix_(R, S)] @ d_S
            if best is None or error < best[0]:
                best = (error, q, S, d_S)
        _, q, S, d_S = best
        removed.append(q)
    R = removed
    S = [j for j in range(len(theta)) if j not in R]
    new = np.zeros_like(theta)
    new[S] = theta[S] - np.linalg.solve(H[np.ix_(S, S)], H[np.ix_(S, R)] @ -theta[R])
    return new, sorted(removed)


@pytest.mark.parametrize("bias", [True, False])
def test_lobs_equals_brute_force_greedy_obs(bias):
    task = _task(bias=bias)
    result = lobs.prune_layer(task, sparsity=0.5, damping=1e-3)
    H = _hessian(task, 1e-3)
    hinv_diag = np.diag(np.linalg.inv(H))[: task.weight.shape[1]]
    _, counts = lobs.removal_counts(task.weight, hinv_diag, 0.5)
    theta = np.hstack([task.weight, task.bias[:, None]]) if bias else task.weight
    for m in range(task.weight.shape[0]):
        expected, removed = _brute_force_greedy(theta[m], H, task.weight.shape[1], counts[m])
        assert sorted(np.flatnonzero(result.weight[m] == 0)) == removed
        np.testing.assert_allclose(result.weight[m], expected[: task.weight.shape[1]], atol=1e-9)
        if bias:
            assert result.bias[m] == pytest.approx(expected[-1], abs=1e-9)


@pytest.mark.parametrize("bias, widen", [(True, 2.0), (False, 2.0), (True, np.inf)])
def test_relu_obs_second_stage_equals_brute_force_greedy_obs(bias, widen, monkeypatch):
    """Net-Trim's per-neuron OBS candidate: the shared Hessian's pass down to ``first_stage``
    (``widen`` times the target's weights, at most a step above it; none removed with
    ``inf``), then, from those weights, each
    neuron's Hessian on its active rows and the entries it still holds, the remaining
    removals allotted over the layer by the costs there, and each row's share removed
    greedily, against removals tried one by one on the Hessians formed directly. The
    shared Hessian's candidate is that pass's last level: L-OBS's answer where the pass
    removes greedily."""
    from nettrim.methods._relu_obs import first_stage, obs_candidates

    task = _task(n_samples=120, n_in=9, n_out=5, seed=3, bias=bias, relu=True)
    sparsity, damping = 0.75, 1e-3
    candidates, _ = obs_candidates(task, sparsity, damping, widen)
    first = first_stage(sparsity, widen)
    start, _ = lobs.prune_path(task, [first, sparsity], damping)
    Xa = np.hstack([task.X, np.ones((len(task.X), 1))]) if bias else task.X
    rows, hessians, costs = [], [], []
    for m in range(task.weight.shape[0]):
        held = np.flatnonzero(start[0][m])
        entries = np.append(held, task.weight.shape[1]) if bias else held
        active = Xa[task.Y[:, m] > 0][:, entries]
        H = active.T @ active / len(Xa)
        H += damping * np.mean(np.diag(H)) * np.eye(len(H))
        theta = np.append(start[0][m, held], start[1][m]) if bias else start[0][m, held]
        rows.append((held, theta))
        hessians.append(H)
        costs += [(theta[q] ** 2 / (2 * np.linalg.inv(H)[q, q]), m) for q in range(held.size)]
    n_left = round(sparsity * task.weight.size) - int(task.weight.size - sum(held.size for held, _ in rows))
    counts = np.bincount([m for _, m in sorted(costs)[:n_left]], minlength=task.weight.shape[0])
    weight, b = candidates["neuron"]
    assert np.count_nonzero(weight) == task.weight.size - round(sparsity * task.weight.size)
    for m, ((held, theta), H) in enumerate(zip(rows, hessians)):
        expected, removed = _brute_force_greedy(theta, H, held.size, counts[m])
        assert sorted(np.flatnonzero(weight[m] == 0)) == sorted(
            set(range(task.weight.shape[1])) - set(held) | set(held[removed]))
        np.testing.assert_allclose(weight[m, held], expected[:held.size], rtol=1e-9, atol=1e-12)
        if bias:
            assert b[m] == pytest.approx(expected[-1], rel=1e-9)
    np.testing.assert_array_equal(candidates["layer"][0], lobs.prune_path(task, [first, sparsity], damping)[1][0])
    monkeypatch.setattr(lobs, "BACKWARD_FLOPS", float("inf"))  # greedy removal: L-OBS's answer
    np.testing.assert_array_equal(obs_candidates(task, sparsity, damping, widen)[0]["layer"][0],
                                  lobs.prune_layer(task, sparsity=sparsity, damping=damping).weight)


def test_the_first_stage_keeps_widen_times_the_target_and_at_most_a_step_more():
    """The per-neuron Hessians take over where the layer keeps ``widen`` times the target's
    weights, or ``STEP`` of the layer's weights more than the target where that is fewer;
    ``widen = inf``: from the original weights; never below 0."""
    from nettrim.methods._relu_obs import STEP, first_stage

    assert STEP == pytest.approx(0.1)
    assert first_stage(0.9, 2.0) == pytest.approx(0.8)  # 0.2 kept: twice the target, a step more
    assert first_stage(0.95, 2.0) == pytest.approx(0.9)
    assert first_stage(0.7, 2.0) == pytest.approx(0.6)  # the step binds: 0.4 kept, not 0.6
    assert first_stage(0.8, 1.5) == pytest.approx(0.7)
    assert first_stage(0.8, 1.25) == pytest.approx(0.75)  # widen binds
    assert first_stage(0.3, 2.0) == pytest.approx(0.2)
    assert first_stage(0.05, 2.0) == 0.0
    assert first_stage(0.7, np.inf) == 0.0
    assert first_stage(0.7, 1.0) == pytest.approx(0.7)  # nothing left to the per-neuron Hessians


@pytest.mark.parametrize("bias", [True, False])
def test_a_ranked_path_equals_the_released_lobs_at_each_sparsity(bias):
    """``order="ranked"``: at every level, bit for bit L-OBS as released (the weights of the
    initial ranking removed in order, the fixed inverse, the removed entries zeroed)."""
    task = _task(n_in=12, n_out=5, bias=bias)
    sparsities = [0.0, 0.25, 0.5, 0.5, 0.9, 1.0]
    for (weight, b), sparsity in zip(lobs.prune_path(task, sparsities, order="ranked"), sparsities):
        released = lobs.prune_layer(task, sparsity=sparsity, faithful=True)
        np.testing.assert_array_equal(weight, released.weight)
        assert np.count_nonzero(weight == 0) >= round(sparsity * weight.size)
        if bias:
            np.testing.assert_array_equal(b, released.bias)
        else:
            assert b is None


@pytest.mark.parametrize("bias", [True, False])
def test_lobs_path_equals_one_prune_per_sparsity(bias):
    task = _task(n_in=12, n_out=5, bias=bias)
    sparsities = [0.25, 0.5, 0.5, 0.9, 1.0]
    for (weight, b), sparsity in zip(lobs.prune_path(task, sparsities, order="backward"), sparsities):
        alone = lobs.prune_layer(task, sparsity=sparsity)
        np.testing.assert_array_equal(weight, alone.weight)
        if bias:
            np.testing.assert_array_equal(b, alone.bias)
        else:
            assert b is None
    with pytest.raises(ValueError, match="increasing"):
        lobs.prune_path(task, [0.5, 0.25])


def _brute_force_forward(theta, H, n_prunable, keep):
    """Forward selection by trying every candidate: the entry whose least-squares row on the
    support with it errs least, the error and the row from the Hessian directly."""
    fixed = list(range(n_prunable, len(theta)))
    g = H @ theta

    def fitted(S):
        row = np.zeros_like(theta)
        if S:
            row[S] = np.linalg.solve(H[np.ix_(S, S)], g[S])
        return row, (row - theta) @ H @ (row - theta)

    chosen = []
    for _ in range(keep):
        q = min((q for q in range(n_prunable) if q not in chosen), key=lambda q: fitted(fixed + chosen + [q])[1])
        chosen.append(q)
    return fitted(fixed + chosen)[0], sorted(chosen)


@pytest.mark.parametrize("bias", [True, False])
def test_forward_path_equals_brute_force_forward_selection(bias):
    """``order="forward"``: each row keeps what :func:`lobs.removal_counts` leaves it, chosen
    one at a time by the lowest OBS error, the row the least-squares one on its support;
    the levels' supports are nested."""
    task = _task(n_in=9, n_out=5, seed=4, bias=bias)
    damping, sparsities = 1e-3, [0.3, 0.6, 0.8]
    H = _hessian(task, damping)
    theta = np.hstack([task.weight, task.bias[:, None]]) if bias else task.weight
    levels = lobs.prune_path(task, sparsities, damping, order="forward")
    for (weight, b), sparsity in zip(levels, sparsities):
        _, counts = lobs.removal_counts(task.weight, np.diag(np.linalg.inv(H))[:9], sparsity)
        for m in range(5):
            expected, kept = _brute_force_forward(theta[m], H, 9, 9 - counts[m])
            assert sorted(np.flatnonzero(weight[m])) == kept
            np.testing.assert_allclose(weight[m], expected[:9], rtol=1e-9, atol=1e-10)
            if bias:
                assert b[m] == pytest.approx(expected[-1], rel=1e-9, abs=1e-12)
            else:
                assert b is None
    supports = [weight != 0 for weight, _ in levels]
    assert all(np.all(later <= earlier) for earlier, later in zip(supports, supports[1:]))
    with pytest.raises(ValueError, match="order: got 'sideways'"):
        lobs.prune_path(task, sparsities, order="sideways")


def test_auto_order_takes_the_order_that_counts_fewer_operations(monkeypatch):
    """``order="auto"`` is forward selection where that counts fewer operations than greedy
    removal (keeping a tenth of 30 inputs), greedy removal where it does (keeping most),
    and greedy removal while that counts at most ``BACKWARD_FLOPS`` (``inf``: always); the
    flop counts are those of the two kernels' loops."""
    task = _task(n_samples=200, n_in=30, n_out=6, seed=5)
    backward = lobs.prune_path(task, [0.9], order="backward")[0][0]
    forward = lobs.prune_path(task, [0.9], order="forward")[0][0]
    assert not np.array_equal(backward, forward)  # the two choose differently here
    assert lobs.forward_flops(31, np.array([3])) < lobs.backward_flops(31, np.array([27]))
    np.testing.assert_array_equal(lobs.prune_path(task, [0.9])[0][0], forward)
    np.testing.assert_array_equal(lobs.prune_path(task, [0.0, 0.1])[0][0], task.weight)  # keeping most: backward
    monkeypatch.setattr(lobs, "BACKWARD_FLOPS", float("inf"))
    np.testing.assert_array_equal(lobs.prune_path(task, [0.9])[0][0], backward)
    assert lobs.backward_flops(31, np.array([1])) == pytest.approx(2 * 31**2, rel=0.05)
    assert lobs.forward_flops(31, np.array([3])) == pytest.approx(31 * 9 + 2 * 31**2)


def test_lobs_single_removal_predicts_the_error_it_makes():
    task = _task(n_out=1)
    result = lobs.prune_layer(task, sparsity=1 / 7, damping=0.0)
    Xa = np.hstack([task.X, np.ones((len(task.X), 1))])
    hinv = np.linalg.inv(Xa.T @ Xa / len(Xa))
    theta = np.append(task.weight[0], task.bias[0])
    q = int(np.flatnonzero(result.weight[0] == 0)[0])
    predicted = theta[q] ** 2 / (2 * hinv[q, q])
    new = np.append(result.weight[0], result.bias[0])
    measured = np.sum((Xa @ (new - theta)) ** 2) / (2 * len(Xa))
    assert measured == pytest.approx(predicted, rel=1e-10)
    costs = theta[:7] ** 2 / (2 * np.diag(hinv)[:7])
    assert q == int(np.argmin(costs))


def test_lobs_faithful_follows_the_fixed_ranking_and_inverse():
    task = _task(n_out=3)
    damping = 1e-4
    result = lobs.prune_layer(task, sparsity=0.4, faithful=True, damping=damping)
    hinv = np.linalg.inv(_hessian(task, damping))
    n_in = task.weight.shape[1]
    cost = task.weight**2 / (2 * np.diag(hinv)[:n_in])
    chosen, _ = lobs.removal_counts(task.weight, np.diag(hinv)[:n_in], 0.4)
    for m in range(3):
        theta = np.append(task.weight[m], task.bias[m])
        for q in sorted(np.flatnonzero(chosen[m]), key=lambda j: cost[m, j]):
            theta = theta - theta[q] / hinv[q, q] * hinv[:, q]
        theta[:n_in][chosen[m]] = 0
        np.testing.assert_allclose(result.weight[m], theta[:n_in], atol=1e-9)
        assert result.bias[m] == pytest.approx(theta[-1], abs=1e-9)


def _direct_sparsegpt(weight, X, sparsity, blocksize, damping):
    """Column by column with the inverse of H restricted to the columns not yet visited,
    recomputed from H at every step; the mask chosen per block over all rows."""
    W = weight.copy()
    H = X.T @ X
    H += damping * np.mean(np.diag(H)) * np.eye(len(H))
    n_in = W.shape[1]
    for start in range(0, n_in, blocksize):
        stop = min(start + blocksize, n_in)
        d = np.array([np.linalg.inv(H[j:, j:])[0, 0] for j in range(start, stop)])
        score = W[:, start:stop] ** 2 / d
        n_remove = int(score.size * sparsity)
        remove = np.zeros(score.shape, dtype=bool)
        remove.ravel()[np.argsort(score, axis=None, kind="stable")[:n_remove]] = True
        for j in range(start, stop):
            inverse = np.linalg.inv(H[j:, j:])
            kept = np.where(remove[:, j - start], 0.0, W[:, j])
            W[:, j:] -= np.outer((W[:, j] - kept) / inverse[0, 0], inverse[0])
            W[:, j] = kept
    return W


@pytest.mark.parametrize("blocksize", [3, 16])
def test_sparsegpt_equals_a_direct_implementation(blocksize):
    task = _task(n_in=9, n_out=5)
    got = sparsegpt.sparsegpt_weight(task.weight, task.X, 0.5, blocksize=blocksize, damping=0.01)
    expected = _direct_sparsegpt(task.weight, task.X, 0.5, blocksize, 0.01)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert np.count_nonzero(got == 0) == sum(int(5 * (min(s + blocksize, 9) - s) * 0.5) for s in range(0, 9, blocksize))


def test_refit_is_least_squares_on_the_support():
    task = _task(n_samples=60, n_in=6, n_out=3, relu=True)
    outcome = nettrim_method.prune_layer(task, sparsity=None)
    weight, bias = nettrim_method.refit_support(task, outcome.weight, outcome.bias)
    assert np.array_equal(weight != 0, outcome.weight != 0)
    for m in range(3):
        rows = task.Y[:, m] > 0
        columns = np.flatnonzero(outcome.weight[m])
        design = np.hstack([task.X[rows][:, columns], np.ones((rows.sum(), 1))])
        expected = np.linalg.lstsq(design, task.Y[rows, m], rcond=None)[0]
        np.testing.assert_allclose(weight[m, columns], expected[:-1], atol=1e-9)
        assert bias[m] == pytest.approx(expected[-1], abs=1e-9)
        before = np.linalg.norm(task.X[rows] @ outcome.weight[m] + outcome.bias[m] - task.Y[rows, m])
        after = np.linalg.norm(task.X[rows] @ weight[m] + bias[m] - task.Y[rows, m])
        assert after <= before + 1e-12


def test_magnitude_keeps_the_largest():
    weight = np.array([[3.0, -1.0, 0.5], [-4.0, 2.0, 0.1]])
    np.testing.assert_array_equal(magnitude.keep_largest(weight, 3), [[3.0, 0, 0], [-4.0, 2.0, 0]])


@pytest.mark.parametrize("method, options", [("magnitude", {}), ("lobs", {}), ("lobs", {"faithful": True}),
                                             ("sparsegpt", {}), ("nettrim", {}), ("nettrim", {"refit": True})])
def test_every_method_hits_the_requested_sparsity(digits, digits_model, method, options):
    """One fraction for every layer, or, where the target is shared out among the layers
    (Net-Trim's default, ``allocate='error'``), for the network."""
    result = nettrim.prune(digits_model, digits.x_train[:400], method=method, sparsity=0.7, mode="cascade",
                           method_options=options, progress=False)
    shared = nettrim.PruneConfig(method=method, sparsity=0.7).allocation is not None
    if shared:
        assert 0.29 <= result.kept_pruned <= 0.3 + 1e-9
    for name, report in result.layers.items():
        target = result.sparsity[name] if shared else 0.7
        assert abs((1 - report.kept) - target) <= 0.01 + 1e-9, (name, report.kept)
        assert report.nnz_after == int((result.model.get_submodule(name).weight != 0).sum())


def test_method_options_are_checked():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"\['refit'\] are not options of method 'lobs'"):
        nettrim.prune(model, torch.randn(10, 4), method="lobs", sparsity=0.5, method_options={"refit": True})
    with pytest.raises(ValueError, match="needs sparsity"):
        nettrim.prune(model, torch.randn(10, 4), method="sparsegpt")
