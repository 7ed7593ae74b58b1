"""Where the layer solves run: in process, in a local pool of processes, or on a Dask cluster.

:func:`open_executor` turns the ``executor=`` argument of :func:`nettrim.prune` into an
object with ``submit(fn, *args) -> future`` (``future.result()`` gives the value) and
``close()``:

- ``None``: in this process, when the result is asked for (nothing changes).
- ``"processes"``: a local pool of ``os.cpu_count()`` processes (``spawn``), each with its
  BLAS, numba and torch thread pools limited to one thread so the workers do not fight
  over the cores.
- a ``dask.distributed.Client``: the cluster it is connected to. Large arguments are
  scattered to the workers once; a worker lost mid-run has its tasks retried by Dask.
- ``"tcp://host:8786"`` (any scheduler address): a ``Client`` opened on it for the run
  and closed after.

The dashboard address of a Dask client is logged.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

__all__ = ["open_executor", "Executor"]

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT = "10s"  # to reach a scheduler given by its address


class Executor:
    """Runs ``fn(*args)`` somewhere and gives a future; see the module docstring.

    ``n_workers`` is how many tasks run at once (what a layer split by neuron is cut into).
    """

    description = "in process"
    n_workers = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # the caller sees it from result(), as with any executor
            if isinstance(exc, KeyboardInterrupt):
                raise
            future.set_exception(exc)
        return future

    def release(self) -> None:
        """Drop data kept for the tasks submitted so far (a Dask executor's scattered data)."""

    def close(self) -> None:
        pass


def _one_thread_each() -> None:
    """Worker initialiser: one BLAS/numba/torch thread per process."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        pass
    import numba
    import torch

    numba.set_num_threads(1)
    torch.set_num_threads(1)


class _Processes(Executor):
    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = self.n_workers = max_workers or os.cpu_count() or 1
        self.pool = ProcessPoolExecutor(max_workers=self.max_workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_one_thread_each)
        self.description = f"a local pool of {self.max_workers} processes"

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Dask(Executor):
    _SCATTER_BYTES = 1 << 20  # arguments larger than this go to the workers once, ahead of the task

    def __init__(self, client: Any, owned: bool) -> None:
        self.client, self.owned = client, owned
        self.n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.description = f"Dask at {client.scheduler.address} ({self.n_workers} workers)"
        self._scattered: dict[int, tuple[Any, Any]] = {}  # id -> (value, its future): each goes once
        logger.info("Dask dashboard: %s", client.dashboard_link)

    def _ship(self, value: Any) -> Any:
        nbytes = getattr(value, "nbytes", None)
        if nbytes is None and hasattr(value, "X"):  # a LayerTask: its arrays
            nbytes = sum(getattr(getattr(value, key, None), "nbytes", 0) for key in ("X", "Y", "upper"))
        if not nbytes or nbytes <= self._SCATTER_BYTES:
            return value
        if id(value) not in self._scattered:
            self._scattered[id(value)] = (value, self.client.scatter(value, hash=False))
        return self._scattered[id(value)][1]

    def release(self) -> None:
        """Forget the scattered data (the workers drop it once no task needs it)."""
        self._scattered.clear()

    def submit(self, fn, *args):
        return self.client.submit(fn, *[self._ship(arg) for arg in args], pure=False)

    def close(self) -> None:
        self.release()
        if self.owned:
            self.client.close()


def _dask_client_type():
    try:
        from distributed import Client
    except ImportError:
        return None
    return Client


def open_executor(executor: Any) -> Executor:
    """The :class:`Executor` for ``executor`` (None, ``"processes"``, a Dask ``Client`` or
    a scheduler address)."""
    if executor is None:
        return Executor()
    if isinstance(executor, Executor):
        return executor
    if executor == "processes":
        return _Processes()
    client_type = _dask_client_type()
    if isinstance(executor, str) and "://" in executor:
        if client_type is None:
            raise ValueError(f"executor: {executor!r} is a Dask scheduler address, and dask.distributed is not "
                             "installed; pip install 'nettrim[distributed]'")
        try:
            client = client_type(executor, timeout=_CONNECT_TIMEOUT)
        except OSError as exc:
            raise ValueError(f"executor: cannot reach the Dask scheduler at {executor!r} ({exc}); is it "
                             "running?") from exc
        return _Dask(client, owned=True)
    if client_type is not None and isinstance(executor, client_type):
        return _Dask(executor, owned=False)
    raise ValueError(f"executor: got {executor!r}, needs None (in process), 'processes' (a local pool), a "
                     "dask.distributed.Client or a scheduler address like 'tcp://host:8786'")
