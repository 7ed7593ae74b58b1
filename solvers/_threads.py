"""Per-neuron work on every core: Python threads, each with BLAS on one thread.

Much of the ReLU-aware fit, of the per-neuron OBS Hessians and of polishing a ReLU layer's
answer is a loop over neurons or chunks of neurons, each step a small BLAS or LAPACK call
or a compiled kernel (a Gram matrix of a few hundred columns, a batched solve of systems
of that size, one neuron's least-distance program). OpenBLAS spreads such a call over its
threads at a cost that the call's size does not repay: on the benchmark suite's sizes a
154-wide Cholesky inverse ran about twice as fast with BLAS on one thread. The cores are
used instead by running independent items (chunks of neurons) in Python threads; numpy's
BLAS products, its batched solves and the compiled kernels (declared ``nogil``) release
the GIL. :func:`deal` hands items out in shares of about equal cost.

:func:`map_threads` runs a function over items that way, with as many threads as BLAS
had when it was called (what the user's ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` or
``threadpoolctl`` limits allow; 1 inside a worker of :mod:`nettrim.executors`), and BLAS
limited to one thread while they run. The results do not depend on the number of threads:
each item's arithmetic is the same whichever thread runs it.

Every launch of a numba parallel kernel (``prange``) goes through :func:`parallel_launch`:
numba's own ``workqueue`` threading layer, its fallback where neither OpenMP nor TBB is
installed, aborts the process when two threads launch one at once, so there the launches
take turns.
"""
from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from numba import njit, prange

__all__ = ["map_threads", "blas_threads", "deal", "parallel_kernels_thread_safe", "parallel_launch"]

Item = TypeVar("Item")
Result = TypeVar("Result")

_lock = threading.Lock()
_controller: Any = None
_pools: dict[int, ThreadPoolExecutor] = {}
_holders = 0  # blocks inside _one_blas_thread now
_thread_safe: bool | None = None  # parallel_kernels_thread_safe(), once known
_launch_lock = threading.Lock()  # parallel_launch() where numba's threading layer is not thread-safe


def _blas_controller() -> Any:
    """threadpoolctl's controller of the loaded BLAS libraries (made once; None without threadpoolctl)."""
    global _controller
    with _lock:
        if _controller is None:
            importlib.import_module("scipy.linalg")  # SciPy brings a BLAS of its own: loaded before the listing
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # pragma: no cover - scikit-learn, a dependency, brings threadpoolctl
                _controller = False
            else:
                _controller = ThreadpoolController()
        return _controller or None


def blas_threads() -> int:
    """The threads BLAS may use now: the most any loaded BLAS library may (1 when unknown).
    The most, not the fewest: a package may bring a BLAS built for one thread (cvxpy's
    solvers do), which says nothing of the cores numpy's and SciPy's may use."""
    controller = _blas_controller()
    if controller is None:
        return 1
    counts = [pool.num_threads for pool in controller.select(user_api="blas").lib_controllers]
    return max(counts, default=1)


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS on one thread inside the block, restored after it. The limit is process-wide,
    so blocks that overlap (calls from several of the user's threads) do not each set
    one: the first sets it and restores it itself when it leaves, and a block that
    outlives it runs on with BLAS as restored. Each restoring what it found would leave
    BLAS on one thread for good when they end in another order than they began (with
    threadpoolctl before 3.8; later versions let only the thread that set OpenBLAS's limit
    change it until that block ends, and ignore the others)."""
    global _holders
    controller = _blas_controller()
    if controller is None:
        yield
        return
    with _lock:
        first = _holders == 0
        _holders += 1
    try:
        if first:
            with controller.limit(limits=1, user_api="blas"):
                yield
        else:
            yield
    finally:
        with _lock:
            _holders -= 1


def _pool(workers: int) -> ThreadPoolExecutor:
    with _lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nettrim-neurons")
        return _pools[workers]


def deal(costs: Sequence[float], parts: int) -> list[np.ndarray]:
    """Positions ``0 .. len(costs) - 1`` dealt out into ``parts`` hands in turn, dearest
    first, so that each hand holds about as much of the work (the hands come dearest
    first too: the order in which :func:`map_threads` should be given them)."""
    order = np.argsort(-np.asarray(costs, dtype=np.float64), kind="stable")
    return [order[start::parts] for start in range(max(1, min(parts, len(order))))]


@njit(parallel=True, cache=True)
def _parallel_launch(values: np.ndarray) -> None:  # pragma: no cover - compiled
    """A parallel kernel that does next to nothing: numba picks its threading layer on the
    first launch of one (:func:`parallel_kernels_thread_safe`)."""
    for i in prange(values.size):
        values[i] = 0.0


def parallel_kernels_thread_safe() -> bool:
    """Whether numba's parallel kernels (``prange``) may run in several Python threads at
    once: its threading layer is OpenMP's or TBB's. Its own ``workqueue`` layer, which
    numba falls back to where neither is installed, aborts the process on a second
    concurrent launch."""
    global _thread_safe
    with _lock:
        if _thread_safe is None:
            import numba

            _parallel_launch(np.zeros(1))
            _thread_safe = numba.threading_layer() in ("omp", "tbb")
        return _thread_safe


@contextlib.contextmanager
def parallel_launch() -> Iterator[None]:
    """Around a call of a numba parallel kernel: nothing where numba's threading layer runs
    them from several threads at once (:func:`parallel_kernels_thread_safe`); where it does
    not, a lock, so that the threads (the curves' layers in :func:`map_threads`, a Dask
    worker's tasks) take turns at the kernel instead of aborting the process."""
    if parallel_kernels_thread_safe():
        yield
        return
    with _launch_lock:
        yield


def map_threads(function: Callable[[Item], Result], items: Sequence[Item], *,
                serial_blas: bool = False) -> list[Result]:
    """``[function(item) for item in items]``, the items spread over :func:`blas_threads`
    Python threads (taken in order as threads come free: put the dearest first), with
    BLAS on one thread meanwhile. One thread, or one item: a plain loop, BLAS as it is,
    or on one thread with ``serial_blas`` (for items of small LAPACK calls whose threaded
    versions round differently, OpenBLAS's inverse from a Cholesky factor among them: so
    that their results do not depend on how many items there are). Items that launch
    numba's parallel kernels call them inside :func:`parallel_launch`."""
    workers = min(blas_threads(), len(items))
    if workers <= 1:
        with _one_blas_thread() if serial_blas else contextlib.nullcontext():
            return [function(item) for item in items]
    with _one_blas_thread():
        return list(_pool(workers).map(function, items))
