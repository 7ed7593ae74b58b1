"""Wide layers: greedy OBS removals against forward selection, in the kernel and in a prune.

Greedy OBS (L-OBS, and the first stage of Net-Trim's supports and error curves) removes a
row's weights one at a time with its ``n x n`` inverse Hessian downdated each time:
``O(n^3)`` per row, ``O(n_out n^3)`` per layer. Forward selection
(``nettrim.methods.lobs.prune_path(order="forward")``) adds the ``K`` kept entries one at
a time instead, on the same objective: ``O(n K^2)`` per row. The default (``"auto"``)
takes the order that counts fewer operations (greedy removal where both count the same
or where it counts at most ``BACKWARD_FLOPS``, 0 by default).

Two sections, in one process:

- ``kernel``: seeded synthetic layers (4,000 rows of correlated non-negative inputs, 256
  neurons, ``n_in`` inputs)
  pruned by ``prune_path`` along the two level sets the default asks for: its supports at
  90% (``[0.8, 0.9]``: the per-neuron stage starts at twice the target's weights) and its
  error curves (``[0.5, 0.7, 0.8, 0.9, 0.95, 0.98]``). Seconds of each order (the kernels
  compiled first) and the OBS error ``sum_m (theta_m - w_m)^T H (theta_m - w_m)`` at the
  first and last levels.
- ``network``: a VGG-style digits CNN twice as wide as the suite's (64 and 128 channels,
  a 256-wide hidden layer; its last convolution has 1,153 inputs per neuron, its first
  linear layer 513), trained here (seed 0), pruned at 70-95% by L-OBS, by Net-Trim's
  default and by the default with greedy removals forced on every layer
  (``BACKWARD_FLOPS = inf``):
  accuracy, output error, seconds and the default's parts.

Run:  python benchmarks/wide_layers.py [--sections kernel,network] [--widths 256,512,1024,2048]
Writes benchmarks/results/wide_layers.csv and .meta.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see README, Performance notes

import argparse
import statistics
import sys
import time

import numpy as np

from _common import RESULTS, ROOT, machine_info, write_results

sys.path.insert(0, str(ROOT))
import nettrim  # noqa: E402
from nettrim import examples  # noqa: E402
from nettrim.methods import lobs  # noqa: E402
from nettrim.types import LayerTask  # noqa: E402

LEVELS = {"supports at 90%": [0.8, 0.9], "error curves": [0.5, 0.7, 0.8, 0.9, 0.95, 0.98]}
TARGETS = (0.7, 0.8, 0.9, 0.95)
N_SAMPLES, N_OUT = 4000, 256


def synthetic_layer(n_in: int, seed: int = 0) -> LayerTask:
    """Correlated non-negative inputs, as a hidden layer's are (the ReLU of ``n_in / 4``
    mixed factors plus noise), weights ``N(0, 1/n_in)``."""
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((N_SAMPLES, n_in // 4)) @ rng.standard_normal((n_in // 4, n_in)) / np.sqrt(n_in / 4)
    X = np.maximum(factors + 0.5 * rng.standard_normal((N_SAMPLES, n_in)), 0.0)
    weight = rng.standard_normal((N_OUT, n_in)) / np.sqrt(n_in)
    bias = 0.1 * rng.standard_normal(N_OUT)
    return LayerTask(f"{N_SAMPLES}x{n_in}x{N_OUT}", X, np.maximum(X @ weight.T + bias, 0.0), True, weight, bias,
                     budget=float("nan"))


def obs_error(H: np.ndarray, task: LayerTask, weight: np.ndarray, bias: np.ndarray) -> float:
    change = np.hstack([weight - task.weight, (bias - task.bias)[:, None]])
    return float(np.einsum("ij,jk,ik->", change, H, change))


def kernel_rows(widths: list[int]) -> list[dict]:
    rows = []
    warm = synthetic_layer(64)
    for order in ("backward", "forward"):  # compile both kernels outside the timings
        lobs.prune_path(warm, [0.5, 0.9], order=order)
    for n_in in widths:
        task = synthetic_layer(n_in)
        H = lobs.hessian(task.X, True, 1e-4)
        for label, levels in LEVELS.items():
            for order in ("backward", "forward"):
                started = time.perf_counter()
                path = lobs.prune_path(task, levels, order=order)
                seconds = time.perf_counter() - started
                row = {"section": "kernel", "model": task.name, "n_in": n_in, "levels": label, "order": order,
                       "seconds": seconds, "error_first": obs_error(H, task, *path[0]),
                       "error_last": obs_error(H, task, *path[-1])}
                rows.append(row)
                print(f"{task.name:<16} {label:<16} {order:<9} {seconds:8.2f} s  OBS error at {levels[0]:.2f} "
                      f"{row['error_first']:9.4g}, at {levels[-1]:.2f} {row['error_last']:9.4g}", flush=True)
    return rows


def network_rows() -> tuple[list[dict], float]:
    data = examples.load_digits_split(images=True)
    started = time.perf_counter()
    model = examples.train(examples.digits_vgg((64, 128), hidden=256), data.x_train, data.y_train)
    print(f"trained in {time.perf_counter() - started:.1f} s", flush=True)
    dense = examples.accuracy(model, data.x_test, data.y_test)
    nettrim.prune(model, data.x_train[:200], sparsity=0.9, progress=False)  # load the kernels
    rows = []
    runs = {"lobs": ("lobs", lobs.BACKWARD_FLOPS), "nettrim": ("nettrim", lobs.BACKWARD_FLOPS),
            "nettrim-backward": ("nettrim", float("inf"))}
    for sparsity in TARGETS:
        for label, (method, flops) in runs.items():
            budget, lobs.BACKWARD_FLOPS = lobs.BACKWARD_FLOPS, flops
            try:
                started = time.perf_counter()
                result = nettrim.prune(model, data.x_train, method=method, sparsity=sparsity, mode="cascade",
                                       progress=False)
                seconds = time.perf_counter() - started
            finally:
                lobs.BACKWARD_FLOPS = budget
            row = {"section": "network", "model": "digits-vgg-wide", "method": label, "target_sparsity": sparsity,
                   "kept": result.kept, "accuracy": examples.accuracy(result.model, data.x_test, data.y_test),
                   "output_error": result.output_error, "seconds": seconds,
                   **{f"seconds_{part}": result.timings.get(part, result.timings.get(f"seconds_{part}", 0.0))
                      for part in ("share_out", "supports", "fits", "neurons")}}
            rows.append(row)
            print(f"{label:<17} {sparsity:5.2f} {row['kept']:7.2%} {row['accuracy']:8.2%} {row['output_error']:8.4f} "
                  f"{seconds:8.2f} s (sharing out {row['seconds_share_out']:.2f}, supports "
                  f"{row['seconds_supports']:.2f}, fits {row['seconds_fits']:.2f})", flush=True)
    return rows, dense


def summarise(rows: list[dict]) -> dict:
    summary = {}
    kernel = [r for r in rows if r["section"] == "kernel"]
    for label in LEVELS:
        for n_in in sorted({r["n_in"] for r in kernel}):
            pair = {r["order"]: r for r in kernel if r["levels"] == label and r["n_in"] == n_in}
            summary[f"{label}, n_in {n_in}"] = {
                "backward_over_forward_time": pair["backward"]["seconds"] / pair["forward"]["seconds"],
                "forward_over_backward_error_last": pair["forward"]["error_last"] / pair["backward"]["error_last"],
                "forward_over_backward_error_first": pair["forward"]["error_first"] / pair["backward"]["error_first"]}
    network = [r for r in rows if r["section"] == "network"]
    if network:
        by = {(r["method"], r["target_sparsity"]): r for r in network}
        speed = [by[("nettrim-backward", s)]["seconds"] / by[("nettrim", s)]["seconds"] for s in TARGETS]
        versus = [by[("nettrim", s)]["seconds"] / by[("lobs", s)]["seconds"] for s in TARGETS]
        error = [by[("nettrim", s)]["output_error"] / by[("nettrim-backward", s)]["output_error"] for s in TARGETS]
        summary["network"] = {"backward_over_auto_time_median": statistics.median(speed),
                              "auto_over_lobs_time": dict(zip(map(str, TARGETS), versus)),
                              "auto_over_backward_output_error": dict(zip(map(str, TARGETS), error))}
    for key, value in summary.items():
        print(f"{key}: {value}")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="kernel,network")
    parser.add_argument("--widths", default="256,512,1024,2048", help="n_in of the kernel section's layers")
    parser.add_argument("--out", default=str(RESULTS / "wide_layers.csv"))
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    info = machine_info()
    rows, dense = [], None
    if "kernel" in sections:
        rows += kernel_rows([int(width) for width in args.widths.split(",")])
    if "network" in sections:
        network, dense = network_rows()
        rows += network
    fields = list(dict.fromkeys(key for row in rows for key in row))  # the sections' columns, in order
    rows = [{key: row.get(key, "") for key in fields} for row in rows]
    meta = {**info, "summary": summarise(rows), "backward_flops": lobs.BACKWARD_FLOPS,
            "sizes": {"kernel": f"{N_SAMPLES} rows x n_in x {N_OUT} neurons",
                      "network": "digits VGG-style CNN, widths (64, 128), hidden 256; 1,257 calibration / 540 test "
                                 f"images; dense accuracy {dense}"}}
    out = write_results(args.out, rows, meta)
    print(f"wrote {out} (+ .meta.json)")


if __name__ == "__main__":
    main()
