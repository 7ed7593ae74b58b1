"""Layer solves on a local process pool and on a Dask cluster give the in-process weights."""
import logging
import os
import signal
import threading
import time

import pytest
import torch

import nettrim
from nettrim.executors import open_executor

distributed = pytest.importorskip("distributed")


def _close_weights(a, b, layers):
    for name, report in a.layers.items():
        wa, wb = a.model.get_submodule(name).weight, b.model.get_submodule(name).weight
        scale = float(wa.detach().abs().max())
        torch.testing.assert_close(wa, wb, atol=1e-3 * scale, rtol=0)
        assert abs(report.nnz_after - b.layers[name].nnz_after) <= 0.01 * report.size, name
        assert report.status == b.layers[name].status


@pytest.fixture
def cluster(dask_cluster):
    return dask_cluster


def test_process_pool_parallel_mode_matches_in_process(digits, digits_model):
    expected = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.1, progress=False)
    pooled = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.1, progress=False,
                           executor="processes")
    _close_weights(pooled, expected, expected.layers)


@pytest.mark.parametrize("mode", ["parallel", "cascade"])
def test_dask_client_matches_in_process(cluster, digits, digits_model, mode, caplog):
    expected = nettrim.prune(digits_model, digits.x_train, mode=mode, epsilon=0.1, progress=False)
    with distributed.Client(cluster) as client, caplog.at_level(logging.INFO, logger="nettrim"):
        result = nettrim.prune(digits_model, digits.x_train, mode=mode, epsilon=0.1, progress=False,
                               executor=client)
        assert client.status == "running"  # a client the caller gave stays open
    _close_weights(result, expected, expected.layers)
    assert "Dask dashboard" in caplog.text and "2 workers" in caplog.text


def test_scheduler_address_opens_and_closes_a_client(cluster, digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train[:300], mode="parallel", epsilon=0.1, progress=False,
                           executor=cluster.scheduler_address)
    assert result.kept < 1
    assert len(cluster.scheduler.clients) <= 1  # only the cluster's own bookkeeping client, if any


def test_a_worker_killed_mid_run_is_retried(cluster, digits, digits_model):
    options = {"tol": 1e-6, "max_iter": 20000}  # slow enough layers to kill a worker while they run
    expected = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.05, progress=False,
                             solver_options=options)
    with distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        found = {}

        def run():
            found["result"] = nettrim.prune(digits_model, digits.x_train, mode="parallel", epsilon=0.05,
                                            progress=False, solver_options=options, executor=client)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 60
        busy = []
        while time.monotonic() < deadline and not busy:
            busy = [worker for worker, tasks in client.processing().items() if tasks]
            time.sleep(0.01)
        assert busy, "no task reached a worker"
        os.kill(pids[busy[0]], signal.SIGKILL)
        thread.join(timeout=300)
        assert not thread.is_alive()
        client.wait_for_workers(2, timeout=60)
    _close_weights(found["result"], expected, expected.layers)


def test_bad_executor_names_the_allowed_values(digits, digits_model, monkeypatch):
    monkeypatch.setattr("nettrim.executors._CONNECT_TIMEOUT", "1s")
    with pytest.raises(ValueError, match="executor: got 'threads', needs None"):
        nettrim.prune(digits_model, digits.x_train, executor="threads", progress=False)
    with pytest.raises(ValueError, match="cannot reach the Dask scheduler"):
        open_executor("tcp://127.0.0.1:9")
