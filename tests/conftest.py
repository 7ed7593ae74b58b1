import numpy as np
import pytest

from solvers import LayerProblem


def make_layer(n_samples=60, n_in=10, n_out=4, *, relu=True, per_neuron=False, upper=False,
               fit_bias=True, epsilon=0.1, density=0.6, seed=0):
    """A small layer whose original weights are known (and feasible).

    With ``upper=True`` the inactive entries are bounded by the original pre-activation
    plus a positive margin, as the cascade mode does; the original weights stay feasible.
    Returns ``(problem, (weight, bias))``.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_in))
    weight = rng.standard_normal((n_out, n_in)) * (rng.random((n_out, n_in)) < density)
    bias = 0.3 * rng.standard_normal(n_out) if fit_bias else None
    Z = X @ weight.T + (bias if fit_bias else 0.0)
    Y = np.maximum(Z, 0.0) if relu else Z
    budget = epsilon * (np.linalg.norm(Y, axis=0) if per_neuron else np.linalg.norm(Y))
    V = Z + 0.3 * np.abs(rng.standard_normal(Z.shape)) if (upper and relu) else None
    return LayerProblem(X, Y, budget, relu=relu, upper=V, fit_bias=fit_bias), (weight, bias)


@pytest.fixture
def layer():
    return make_layer


@pytest.fixture(scope="session")
def digits():
    from nettrim.examples import load_digits_split

    return load_digits_split()


@pytest.fixture(scope="session")
def digits_model(digits):
    """A small trained digits MLP 64-32-24-10 (about 95% test accuracy); do not modify it."""
    from nettrim.examples import digits_mlp, train

    return train(digits_mlp((32, 24)), digits.x_train, digits.y_train, epochs=15, seed=0)


@pytest.fixture(scope="session")
def dask_cluster():
    """A Dask LocalCluster on loopback with two single-threaded worker processes."""
    import logging

    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        yield cluster


def batchnorm_cnn():
    """A small untrained DigitsCNN (4 and 6 channels) whose BatchNorms have non-trivial running
    statistics, and 60 random 8x8 inputs (seed 0): for tests that cut channels."""
    import torch

    from nettrim.examples import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN(channels=(4, 6), hidden=8).eval()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return model, torch.rand(60, 1, 8, 8)
