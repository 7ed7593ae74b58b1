"""Per-neuron work spread over Python threads with BLAS on one thread (solvers._threads)."""
import threading

import importlib

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from solvers import _threads
from solvers.refit import active_systems, relu_refit

importlib.import_module("scipy.linalg")  # SciPy's BLAS loaded before the counts are read


def _blas_counts():
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_map_threads_keeps_the_order_and_limits_blas_while_it_runs():
    before = _blas_counts()
    seen = []

    def work(item):
        seen.append((threading.current_thread().name, _threads.blas_threads()))
        return item * item

    with threadpool_limits(2, user_api="blas"):
        assert _threads.map_threads(work, list(range(7))) == [item * item for item in range(7)]
        assert {count for _, count in seen} == {1}  # BLAS on one thread inside
        assert all(name.startswith("nettrim-neurons") for name, _ in seen)
        assert _threads.blas_threads() == 2  # restored after
        seen.clear()
        with threadpool_limits(1, user_api="blas"):  # what the user allows: one thread, a plain loop
            assert _threads.map_threads(work, [3, 4]) == [9, 16]
        assert [name for name, _ in seen] == [threading.current_thread().name] * 2
    assert _blas_counts() == before


def test_map_threads_passes_an_items_error_on():
    def work(item):
        if item == 2:
            raise ValueError("item 2")
        return item

    with threadpool_limits(2, user_api="blas"), pytest.raises(ValueError, match="item 2"):
        _threads.map_threads(work, [0, 1, 2, 3])


def _layer(seed, n_samples=400, n_in=30, n_out=40):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_in))
    weight, bias = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
    Y = np.maximum(X @ weight.T + bias, 0.0)
    density = np.linspace(0.1, 0.9, n_out)[:, None]  # supports of many widths: several chunks
    support = rng.random((n_out, n_in)) < density
    return X + 0.3 * rng.standard_normal(X.shape), Y, support, weight * support, bias


@pytest.mark.parametrize("relu", [True, False])
def test_the_refit_on_one_thread_and_on_several_agree(relu):
    """The chunks of neurons fitted in threads (cut smaller to share them out) give the
    answer of the plain loop: the same rows, hence the same optimum of each neuron."""
    X, Y, support, weight, bias = _layer(3)
    with threadpool_limits(1, user_api="blas"):
        alone = relu_refit(X, Y, support, relu=relu, weight=weight, bias=bias)
        systems_alone = active_systems(X, Y, support, relu=relu)
    with threadpool_limits(2, user_api="blas"):
        shared = relu_refit(X, Y, support, relu=relu, weight=weight, bias=bias)
        systems_shared = active_systems(X, Y, support, relu=relu)
    np.testing.assert_allclose(shared.objective, alone.objective, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(shared.weight, alone.weight, rtol=1e-7, atol=1e-9)
    assert shared.steps == alone.steps and shared.converged == alone.converged
    for m in range(support.shape[0]):
        np.testing.assert_array_equal(systems_shared.columns[m], systems_alone.columns[m])
        np.testing.assert_allclose(systems_shared.gram[m], systems_alone.gram[m], rtol=1e-12, atol=1e-10)


def test_chunks_are_cut_to_share_the_work_out():
    from solvers.refit import _chunks, _spread

    _, _, support, _, _ = _layer(4, n_out=60)
    chunks = _chunks(support, 400)
    assert _spread(chunks, support, 1) is chunks
    pieces = _spread(chunks, support, 2)
    assert sorted(np.concatenate(pieces).tolist()) == list(range(60))
    widths = support.sum(axis=1)
    costs = [len(piece) * (int(widths[piece].max()) + 1) ** 2 for piece in pieces]
    assert costs == sorted(costs, reverse=True)  # the dearest first
    total = sum(len(chunk) * (int(widths[chunk].max()) + 1) ** 2 for chunk in chunks)
    assert max(costs) <= total / 2 + max((int(w) + 1) ** 2 for w in widths)  # none much above a half


def test_the_per_neuron_inverses_do_not_depend_on_the_threads():
    from nettrim.methods import _relu_obs

    rng = np.random.default_rng(7)
    X = rng.standard_normal((300, 12))
    active = rng.random((300, 9)) < 0.6
    entries = [np.sort(rng.choice(13, size=int(rng.integers(1, 13)), replace=False)) for _ in range(9)]
    Xa = _relu_obs._augmented(X, True)
    with threadpool_limits(1, user_api="blas"):
        alone = _relu_obs.neuron_inverse_hessians(Xa, active, entries, 13, 1e-4, np.arange(9))
    with threadpool_limits(2, user_api="blas"):
        shared = _relu_obs.neuron_inverse_hessians(Xa, active, entries, 13, 1e-4, np.arange(9))
    np.testing.assert_array_equal(shared, alone)
