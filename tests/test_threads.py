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


def test_serial_blas_keeps_blas_on_one_thread_for_a_single_item_too():
    """One item runs in the calling thread with BLAS as it is, or, with ``serial_blas``, on
    one BLAS thread (restored after), as it would among several items."""
    seen = []
    with threadpool_limits(2, user_api="blas"):
        _threads.map_threads(lambda item: seen.append(_threads.blas_threads()), [0])
        _threads.map_threads(lambda item: seen.append(_threads.blas_threads()), [0], serial_blas=True)
        assert _threads.blas_threads() == 2
    assert seen == [2, 1]


def test_parallel_kernels_take_turns_where_numba_cannot_run_them_at_once(monkeypatch):
    """``parallel_launch()``: nothing where numba's threading layer runs parallel kernels
    in several threads at once (OpenMP's, TBB's); a lock where it does not (its own
    workqueue aborts the process), so that threads take turns inside it."""
    import time

    import numba

    assert _threads.parallel_kernels_thread_safe() == (numba.threading_layer() in ("omp", "tbb"))
    inside, most = [0], [0]

    def work(item):
        with _threads.parallel_launch():
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.01)
            inside[0] -= 1
        return item

    with threadpool_limits(2, user_api="blas"):
        monkeypatch.setattr(_threads, "_thread_safe", False)
        assert _threads.map_threads(work, list(range(6))) == list(range(6))
        assert most == [1]  # one at a time
        monkeypatch.setattr(_threads, "_thread_safe", True)
        _threads.map_threads(work, list(range(6)))
        assert most == [2]  # side by side


def test_the_error_curves_run_under_numbas_workqueue_layer(tmp_path):
    """The curves measure their layers in threads, and their path is a parallel kernel:
    under numba's workqueue layer (no OpenMP, no TBB) the threads take turns at it instead
    of aborting the process, and give the same numbers."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "curves.py"
    script.write_text(
        "import sys, numpy as np, torch\n"
        "from torch import nn\n"
        "from nettrim.allocation import ErrorCurves\n"
        "from nettrim.record import record\n"
        "torch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(40, 60), nn.ReLU(), nn.Linear(60, 30), nn.ReLU(), nn.Linear(30, 5))\n"
        "curves = ErrorCurves(record(model, torch.randn(400, 40)))\n"
        "np.save(sys.argv[1], np.concatenate(list(curves.unfitted.values())))\n")
    root = Path(__file__).resolve().parents[1]
    answers = []
    for layer in ("workqueue", None):
        env = {**os.environ, "PYTHONPATH": str(root), "OPENBLAS_NUM_THREADS": "2"}
        env.pop("NUMBA_THREADING_LAYER", None)
        if layer is not None:
            env["NUMBA_THREADING_LAYER"] = layer
        out = tmp_path / f"{layer}.npy"
        done = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        answers.append(np.load(out))
    np.testing.assert_array_equal(answers[0], answers[1])


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
    """The per-neuron inverses (LAPACK's, whose threaded version rounds differently) are the
    same bits on one BLAS thread and on two, and a neuron inverted alone, in the calling
    thread, gets the bits it gets among others in the worker threads."""
    from nettrim.methods import _relu_obs

    rng = np.random.default_rng(7)
    X = rng.standard_normal((300, 12))
    Y = np.maximum(rng.standard_normal((300, 9)), 0.0)
    support = rng.random((9, 12)) < 0.6
    with threadpool_limits(1, user_api="blas"):
        systems = active_systems(X, Y, support, relu=True, fit_bias=True)
        alone = _relu_obs.neuron_inverse_hessians(systems, 300, 13, 1e-4, np.arange(9))
    with threadpool_limits(2, user_api="blas"):
        systems = active_systems(X, Y, support, relu=True, fit_bias=True)
        shared = _relu_obs.neuron_inverse_hessians(systems, 300, 13, 1e-4, np.arange(9))
        for m in range(9):
            single = _relu_obs.neuron_inverse_hessians(systems, 300, 13, 1e-4, np.array([m]))
            np.testing.assert_array_equal(single[0], shared[m])
    np.testing.assert_array_equal(shared, alone)


def test_deal_hands_out_about_equal_shares_dearest_first():
    costs = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    hands = _threads.deal(costs, 2)
    assert [hand.tolist() for hand in hands] == [[2, 0, 5], [4, 3, 1]]  # 9, 5, 2 and 7, 3, 1
    assert sorted(np.concatenate(hands).tolist()) == list(range(6))
    assert len(_threads.deal(costs[:1], 4)) == 1 and len(_threads.deal([], 4)) == 1


def test_each_neuron_counts_each_calls_work_and_keeps_the_order():
    """In threads when the neurons are large enough (their calls then release the GIL), in
    the caller's thread otherwise; either way the results and each call's own work come
    back in the order of the neurons."""
    from solvers import _neuron

    seen = []

    def call(m, own):
        seen.append(threading.current_thread().name)
        own.product(m, 2, 3)
        return 10 * m

    large = [_neuron._THREAD_SIZE] * 6
    with threadpool_limits(2, user_api="blas"):
        results = _neuron.each_neuron(call, [5, 1, 4, 0, 3, 2], large)
        assert results == [(10 * m, 12.0 * m) for m in (5, 1, 4, 0, 3, 2)]
        assert all(name.startswith("nettrim-neurons") for name in seen)
        seen.clear()
        small = _neuron.each_neuron(call, [5, 1, 4], [1.0] * 3)
        assert small == [(50, 60.0), (10, 12.0), (40, 48.0)]
        assert seen == [threading.current_thread().name] * 3


def test_the_polish_on_one_thread_and_on_several_agree(monkeypatch):
    """A ReLU layer's polishing with its neurons' programs formed and solved in threads (every
    pass, whatever its size) certifies the same optimum, at the same iteration, as in one."""
    from solvers import _neuron, solve
    from solvers.examples import planted_problem

    problem, planted = planted_problem(1500, 60, 6, epsilon=0.02)
    monkeypatch.setattr(_neuron, "_THREAD_SIZE", 0.0)
    passes = []
    monkeypatch.setattr(_neuron, "map_threads",
                        lambda function, items: passes.append(len(items)) or _threads.map_threads(function, items))
    answers = []
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            answers.append(solve(problem, warm_start=planted, tol=1e-3))
    alone, shared = answers
    assert passes and max(passes) > 1  # the passes went to the threads
    assert alone.info["polish_outcome"] == shared.info["polish_outcome"] == "certified"
    assert alone.iterations == shared.iterations
    np.testing.assert_allclose(shared.weight, alone.weight, rtol=1e-9, atol=1e-12)
    assert shared.objective == pytest.approx(alone.objective, rel=1e-12)


def test_overlapping_calls_from_two_threads_leave_blas_as_it_was(monkeypatch):
    """Two user threads that both saw two BLAS threads before either limited it, whose
    map_threads then overlap (A starts, B starts, A ends, B ends): BLAS is back at its
    count once both are done, and another thread can still set its limit (threadpoolctl
    lets only the thread that set OpenBLAS's limit change it: one restored by the wrong
    thread is ignored, one never released locks the others out)."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(_threads, "blas_threads", lambda: 2)
    monkeypatch.setattr(_threads, "_pool", lambda workers: ThreadPoolExecutor(workers))  # the calls' own workers
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first(item):
        a_inside.set()
        b_inside.wait(5)
        seen.setdefault("a", _blas_counts())
        return item

    def second(item):
        b_inside.set()
        a_done.wait(5)
        return item

    with threadpool_limits(2, user_api="blas"):
        before = _blas_counts()
        b = threading.Thread(target=lambda: (a_inside.wait(5), _threads.map_threads(second, [0, 1])))
        b.start()
        _threads.map_threads(first, [0, 1])
        a_done.set()
        b.join(10)
        assert set(seen["a"]) == {1}  # one BLAS thread while they overlap
        assert _blas_counts() == before
    after = _blas_counts()

    def limit_elsewhere():  # once the test's own limit is gone, no thread holds OpenBLAS's
        with threadpool_limits(1, user_api="blas"):
            seen["elsewhere"] = _blas_counts()

    other = threading.Thread(target=limit_elsewhere)
    other.start()
    other.join(10)
    assert set(seen["elsewhere"]) == {1}
    assert _blas_counts() == after
