"""Prune a small ReLU network trained on scikit-learn's digits with Net-Trim, layer by layer.

Trains an MLP ``64 - 128 - 128 - 10`` on the bundled digits data, then solves each
layer's Net-Trim program (parallel mode: every layer on the original network's signals,
``epsilon`` relative to ``||Y_l||_F``) on the training set as calibration data, writes the
sparse weights back and prints a per-layer table and the test accuracy.

Run:  python -m solvers.demo [--epsilon 0.05] [--hidden 128 128]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from . import LayerProblem, solve
from .examples import digits_inputs

__all__ = ["run_demo"]


def _forward(coefs, intercepts, X):
    """Activations of every layer: the input of layer l is ``activations[l]``."""
    activations = [X]
    for layer, (weight_t, bias) in enumerate(zip(coefs, intercepts)):
        Z = activations[-1] @ weight_t + bias
        activations.append(np.maximum(Z, 0.0) if layer < len(coefs) - 1 else Z)
    return activations


def run_demo(epsilon: float = 0.05, hidden: tuple[int, ...] = (128, 128), seed: int = 0,
             solver_options: dict | None = None) -> dict:
    """Train, prune in parallel mode, and return the per-layer rows and accuracies.

    Returns
    -------
    dict
        ``rows`` (one dict per layer), ``dense_accuracy``, ``pruned_accuracy``, ``kept``
        (fraction of weights kept over the network), ``seconds`` (pruning time).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    X, labels = digits_inputs(seed=seed)
    X_train, X_test, y_train, y_test = train_test_split(X, labels, test_size=0.3, random_state=seed,
                                                        stratify=labels)
    model = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", max_iter=400, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    dense_accuracy = model.score(X_test, y_test)

    activations = _forward(model.coefs_, model.intercepts_, X_train)
    rows, new_coefs, new_intercepts = [], [], []
    started = time.perf_counter()
    for layer, (weight_t, bias) in enumerate(zip(model.coefs_, model.intercepts_)):
        relu = layer < len(model.coefs_) - 1
        X_l, Y_l = activations[layer], activations[layer + 1]
        problem = LayerProblem(X_l, Y_l, epsilon * np.linalg.norm(Y_l), relu=relu)
        solution = solve(problem, warm_start=(weight_t.T, bias), **(solver_options or {}))
        new_coefs.append(solution.weight.T.copy())
        new_intercepts.append(solution.bias.copy())
        rows.append({
            "layer": f"fc{layer + 1}", "shape": f"{weight_t.shape[1]}x{weight_t.shape[0]}",
            "relu": relu, "kept": solution.density, "status": solution.status,
            "iterations": solution.iterations, "polished": solution.info["polished"],
            "violation": solution.violation, "seconds": solution.solve_time,
        })
    seconds = time.perf_counter() - started

    model.coefs_, model.intercepts_ = new_coefs, new_intercepts
    pruned_accuracy = model.score(X_test, y_test)
    total = sum(c.size for c in new_coefs)
    kept = sum(np.count_nonzero(c) for c in new_coefs) / total
    return {"rows": rows, "dense_accuracy": dense_accuracy, "pruned_accuracy": pruned_accuracy,
            "kept": kept, "seconds": seconds, "epsilon": epsilon, "hidden": hidden}


def format_report(result: dict) -> str:
    """The demo's table as text."""
    lines = [f"Net-Trim, parallel mode, epsilon = {result['epsilon']} (relative), digits MLP "
             f"64-{'-'.join(map(str, result['hidden']))}-10",
             f"{'layer':<6} {'shape':>8} {'kept':>7} {'status':>8} {'iters':>6} {'polished':>9} "
             f"{'violation':>10} {'seconds':>8}"]
    for row in result["rows"]:
        lines.append(f"{row['layer']:<6} {row['shape']:>8} {row['kept']:7.1%} {row['status']:>8} "
                     f"{row['iterations']:6d} {str(row['polished']):>9} {row['violation']:10.1e} "
                     f"{row['seconds']:8.3f}")
    lines.append(f"weights kept {result['kept']:.1%}; test accuracy dense {result['dense_accuracy']:.2%}, "
                 f"pruned {result['pruned_accuracy']:.2%} (no retraining); pruning took "
                 f"{result['seconds']:.2f}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, default=0.05, help="relative budget per layer (default 0.05)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128], help="hidden layer sizes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epsilon < 0:
        parser.error("--epsilon: needs a value >= 0")
    if any(size < 1 for size in args.hidden):
        parser.error(f"--hidden: got {args.hidden}, needs sizes >= 1")
    print(format_report(run_demo(args.epsilon, tuple(args.hidden), args.seed)))


if __name__ == "__main__":
    main()
