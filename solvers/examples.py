"""Layer problems to test and benchmark the solvers on: planted sparse layers and the
layers of a small ReLU network trained on scikit-learn's bundled digits data.

Nothing here downloads data: digits ships inside scikit-learn (a ``dev`` dependency,
imported only when a digits problem is asked for).
"""
from __future__ import annotations

import numpy as np

from .problem import LayerProblem

__all__ = ["planted_problem", "digits_inputs", "digits_layer_problem"]


def planted_problem(
    n_samples: int,
    n_in: int,
    n_out: int,
    *,
    density: float = 0.2,
    epsilon: float = 0.02,
    relu: bool = True,
    fit_bias: bool = True,
    per_neuron: bool = False,
    seed: int = 0,
) -> tuple[LayerProblem, tuple[np.ndarray, np.ndarray | None]]:
    """A layer whose target comes from a planted sparse weight.

    ``X`` is standard Gaussian, ``W`` keeps a ``density`` fraction of Gaussian entries,
    ``b`` is Gaussian with standard deviation 0.1 (or 0), ``Y = relu(X W^T + b)`` (or the
    linear response). ``epsilon`` is relative: the absolute budget is
    ``epsilon * ||Y||_F`` (layer) or ``epsilon * ||Y_m||`` per neuron.

    Returns
    -------
    problem : LayerProblem
    planted : (weight, bias)
        The planted weights; they are feasible.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_in))
    weight = rng.standard_normal((n_out, n_in)) * (rng.random((n_out, n_in)) < density)
    bias = 0.1 * rng.standard_normal(n_out) if fit_bias else None
    response = X @ weight.T + (0.0 if bias is None else bias)
    Y = np.maximum(response, 0.0) if relu else response
    budget = epsilon * (np.linalg.norm(Y, axis=0) if per_neuron else np.linalg.norm(Y))
    return LayerProblem(X, Y, budget, relu=relu, fit_bias=fit_bias), (weight, bias)


def digits_inputs(n_samples: int | None = None, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standardised 8x8 digits (``(n, 64)``) and labels from scikit-learn's bundled set.

    Beyond the 1,797 images, extra samples are random one-pixel shifts of them.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images, digits.target
    rng = np.random.default_rng(seed)
    if n_samples is not None and n_samples > len(images):
        extra = rng.integers(0, len(images), n_samples - len(images))
        shifts = rng.integers(-1, 2, size=(extra.size, 2))
        shifted = np.stack([np.roll(images[i], tuple(s), axis=(0, 1)) for i, s in zip(extra, shifts)])
        images = np.concatenate([images, shifted])
        labels = np.concatenate([labels, labels[extra]])
    elif n_samples is not None:
        keep = rng.permutation(len(images))[:n_samples]
        images, labels = images[keep], labels[keep]
    X = images.reshape(len(images), -1) / 16.0
    return (X - 0.3) / 0.4, labels


def digits_layer_problem(
    hidden: tuple[int, int],
    n_samples: int,
    *,
    epsilon: float = 0.05,
    per_neuron: bool = False,
    seed: int = 0,
) -> tuple[LayerProblem, tuple[np.ndarray, np.ndarray]]:
    """The second hidden layer of a ReLU MLP ``64 - hidden[0] - hidden[1] - 10`` trained on digits.

    The layer's input is the first hidden layer's ReLU output on ``n_samples`` digits;
    ``epsilon`` is relative to ``||Y||_F`` (parallel mode, as in the pipeline).

    Returns
    -------
    problem : LayerProblem
        ``X`` is ``(n_samples, hidden[0])``, ``Y`` is ``(n_samples, hidden[1])``.
    original : (weight, bias)
        The trained layer's weights (feasible; a warm start).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    X_train, labels = digits_inputs(seed=seed)
    model = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", max_iter=300, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, labels)
    X_calib, _ = digits_inputs(n_samples, seed=seed + 1)
    H1 = np.maximum(X_calib @ model.coefs_[0] + model.intercepts_[0], 0.0)
    weight, bias = model.coefs_[1].T.copy(), model.intercepts_[1].copy()
    Y = np.maximum(H1 @ weight.T + bias, 0.0)
    budget = epsilon * (np.linalg.norm(Y, axis=0) if per_neuron else np.linalg.norm(Y))
    return LayerProblem(H1, Y, budget), (weight, bias)
