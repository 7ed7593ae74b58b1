"""The bundled end-to-end example behind ``nettrim demo``.

Trains the digits MLP ``64-256-256-10`` on scikit-learn's bundled digits (1,257 training
images, which are also the calibration data), prunes it with Net-Trim's budget in cascade
and in parallel mode, prunes it by greedy L-OBS and by magnitude to the same per-layer
nonzeros as the cascade result (the usual baselines), and with Net-Trim's default at the
cascade result's sparsity (``sparsity=``: a network target shared out among the layers),
and tabulates the kept fraction, the test accuracy (540 images, no retraining) and the
time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from .examples import accuracy, digits_mlp, load_digits_split, train
from .pipeline import prune
from .result import PruneResult

__all__ = ["DemoRow", "run_demo", "format_demo"]


@dataclass
class DemoRow:
    """One line of the demo table."""

    method: str
    mode: str
    kept: float
    accuracy: float
    output_error: float | None
    seconds: float


def run_demo(*, epsilon: float = 0.08, hidden: tuple[int, ...] = (256, 256), epochs: int = 60, seed: int = 0,
             progress: bool = True, solver_options: dict | None = None) -> tuple[list[DemoRow], dict[str, PruneResult]]:
    """Train, prune five ways, evaluate.

    Returns
    -------
    rows : list of DemoRow
        Dense, Net-Trim cascade, Net-Trim parallel, L-OBS and magnitude (same per-layer
        nonzeros as cascade), Net-Trim at the cascade's sparsity.
    results : dict
        The :class:`PruneResult` of each pruning, by ``"<method> <mode>"``.
    """
    data = load_digits_split(seed=seed)
    started = time.perf_counter()
    model = train(digits_mlp(hidden), data.x_train, data.y_train, epochs=epochs, seed=seed)
    train_seconds = time.perf_counter() - started
    rows = [DemoRow("dense", "-", 1.0, accuracy(model, data.x_test, data.y_test), None, train_seconds)]
    results: dict[str, PruneResult] = {}
    for mode in ("cascade", "parallel"):
        result = prune(model, data.x_train, mode=mode, epsilon=epsilon, progress=progress,
                       solver_options=solver_options)
        results[f"nettrim {mode}"] = result
        rows.append(DemoRow("nettrim", mode, result.kept, accuracy(result.model, data.x_test, data.y_test),
                            result.output_error, result.seconds))
    cascade = results["nettrim cascade"]
    same_nnz = {name: 1.0 - report.kept for name, report in cascade.layers.items()}
    for method in ("lobs", "magnitude"):
        result = prune(model, data.x_train, method=method, mode="parallel", sparsity=same_nnz, progress=False)
        results[method] = result
        rows.append(DemoRow(method, "same nnz", result.kept, accuracy(result.model, data.x_test, data.y_test),
                            result.output_error, result.seconds))
    result = prune(model, data.x_train, sparsity=round(1.0 - cascade.kept_pruned, 4), progress=progress,
                   solver_options=solver_options)
    results["nettrim sparsity"] = result
    rows.append(DemoRow("nettrim", "sparsity", result.kept, accuracy(result.model, data.x_test, data.y_test),
                        result.output_error, result.seconds))
    return rows, results


def format_demo(rows: list[DemoRow], *, epsilon: float, hidden: tuple[int, ...]) -> str:
    """The demo table as text."""
    lines = [f"digits MLP 64-{'-'.join(map(str, hidden))}-10, 1,257 calibration / 540 test images, "
             f"epsilon {epsilon}, no retraining",
             f"{'method':<10} {'mode':<9} {'kept':>7} {'test acc':>9} {'out err':>8} {'seconds':>8}"]
    for row in rows:
        error = "-" if row.output_error is None else f"{row.output_error:.4f}"
        seconds = f"{row.seconds:.2f}" + (" (training)" if row.method == "dense" else "")
        lines.append(f"{row.method:<10} {row.mode:<9} {row.kept:7.1%} {row.accuracy:9.2%} {error:>8} {seconds:>8}")
    return "\n".join(lines)
