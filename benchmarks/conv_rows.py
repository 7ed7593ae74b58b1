"""Rows of a convolution's program: how many to solve on, and the error that sampling makes.

A convolution's program has one row per output position of every calibration input
(80,448 rows for a 3x3 convolution on 1,257 8x8 digits). ``max_positions`` solves it on
a seeded sample of the rows; the default ``'auto'`` takes ``max(10_000, 16 * n_in)``.
For every convolutional model of the suite and every row setting (a quarter of the
default's 10,000, ``'auto'``, every row), this prunes with Net-Trim in parallel mode (every
layer on the original network's signals, so that each layer's error is its own) at a
budget (``epsilon=0.05``) and at a target (``sparsity=0.8``), and records the prune time,
the weights kept and the test accuracy; and for every convolution, the rows used, the
relative post-ReLU error of the pruned layer on the rows it was solved on and on every
row of the calibration data, and their ratio: the sampling error (1 when every row is
used; NaN for a convolution the target leaves whole, whose error is 0 on any rows).

Run:  python benchmarks/conv_rows.py [--models digits-cnn,...] [--rows 2500,auto,all]
Writes benchmarks/results/conv_rows.csv, .meta.json and .png (needs the ``bench`` extra).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see README, Performance notes

import argparse
import math
import statistics
import sys
import time

import torch

from _common import RESULTS, ROOT, machine_info, new_axes, save_figure, write_results

sys.path.insert(0, str(ROOT))
import nettrim  # noqa: E402
import suite  # noqa: E402
from nettrim import examples  # noqa: E402
from nettrim.prunable import layer_handles  # noqa: E402

CONVOLUTIONAL = ("digits-cnn", "mnist1d-cnn", "digits-vgg", "digits-resnet")
TARGETS = {"epsilon 0.05": {"epsilon": 0.05}, "sparsity 0.8": {"sparsity": 0.8}}


def _rows_setting(text: str) -> int | str | None:
    return None if text == "all" else text if text == "auto" else int(text)


def _label(setting: int | str | None) -> str:
    return "all" if setting is None else str(setting)


def layer_error(handle, record) -> float:
    """Relative error of the layer's (post-ReLU) output on every recorded row of the
    original signals, with the pruned, BatchNorm-folded weights of ``handle``."""
    weight, bias = handle.folded()
    Z = record.input.double() @ weight.T
    if bias is not None:
        Z += bias
    Y = record.pre_activation
    if record.relu:
        Z, Y = Z.clamp(min=0), Y.clamp(min=0)
    return float(torch.linalg.norm(Z - Y) / torch.linalg.norm(Y))


def sampling_ratio(error_all_rows: float, error_solved: float) -> float:
    """A convolution's error on every row over its error on the rows it was solved on; NaN
    where the latter is 0 (a layer the target leaves whole has no error on any rows)."""
    return error_all_rows / error_solved if error_solved > 0 else math.nan


def summarise(rows: list[dict], labels: list[str]) -> dict[str, dict[str, float]]:
    """The median and largest sampling ratio of each row setting, over the convolutions that
    have one (NaN ratios left out)."""
    summary = {}
    for label in labels:
        ratios = [r["sampling_ratio"] for r in rows
                  if r["rows_setting"] == label and not math.isnan(r["sampling_ratio"])]
        summary[label] = {"median": statistics.median(ratios), "max": max(ratios)}
    return summary


def measure(bench, rows_settings) -> list[dict]:
    full = nettrim.record(bench.model, bench.data.x_train)  # every row, original signals
    convolutions = [name for name, record in full.items() if record.kind != "linear"]
    found = []
    for target, kwargs in TARGETS.items():
        for setting in rows_settings:
            started = time.perf_counter()
            result = nettrim.prune(bench.model, bench.data.x_train, mode="parallel", max_positions=setting,
                                   progress=False, **kwargs)
            seconds = time.perf_counter() - started
            accuracy = examples.accuracy(result.model, bench.data.x_test, bench.data.y_test)
            handles = layer_handles(result.model)
            for name in convolutions:
                report = result.layers[name]
                on_all = layer_error(handles[name][0], full[name])
                found.append({"model": bench.name, "target": target, "rows_setting": _label(setting), "layer": name,
                              "n_in": full[name].weight.shape[1], "rows": report.n_samples,
                              "rows_total": full[name].n_samples, "error_solved": report.error_out,
                              "error_all_rows": on_all, "sampling_ratio": sampling_ratio(on_all, report.error_out),
                              "kept": result.kept, "accuracy": accuracy, "seconds": seconds})
            print(f"{bench.name:<14} {target:<13} rows {_label(setting):<5} kept {result.kept:6.1%} "
                  f"test acc {accuracy:6.2%} {seconds:7.1f}s", flush=True)
    return found


def draw(rows: list[dict], path: str) -> None:
    fig, ax = new_axes((6.4, 4.4))
    for marker, target in zip("os", TARGETS):
        points = [(r["rows"] / r["n_in"], r["sampling_ratio"]) for r in rows
                  if r["target"] == target and not math.isnan(r["sampling_ratio"])]
        ax.scatter(*zip(*points), marker=marker, label=target, alpha=0.7)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("rows solved on per input of the layer")
    ax.set_ylabel("error on every row / error on the rows solved on")
    save_figure(fig, ax, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CONVOLUTIONAL), help="comma-separated names of the suite")
    parser.add_argument("--rows", default="2500,auto,all", help="max_positions settings: numbers, auto, all")
    parser.add_argument("--out", default=str(RESULTS / "conv_rows.csv"))
    args = parser.parse_args(argv)
    settings = [_rows_setting(text) for text in args.rows.split(",")]
    info = machine_info()
    benches = suite.build(args.models.split(","))
    warm = next(iter(benches.values()))
    nettrim.prune(warm.model, warm.data.x_train[:100], progress=False)  # load the kernels
    rows = []
    for bench in benches.values():
        rows += measure(bench, settings)

    print(f"\n{'model':<14} {'target':<13} {'rows':<5} {'layer':<14} {'n_in':>5} {'rows used':>16} "
          f"{'err solved':>10} {'err all':>8} {'ratio':>6}")
    for r in rows:
        used = f"{r['rows']:,} of {r['rows_total']:,}"
        print(f"{r['model']:<14} {r['target']:<13} {r['rows_setting']:<5} {r['layer']:<14} {r['n_in']:>5} "
              f"{used:>16} {r['error_solved']:10.4f} {r['error_all_rows']:8.4f} {r['sampling_ratio']:6.3f}")
    summary = summarise(rows, [_label(setting) for setting in settings])
    for setting in summary:
        print(f"rows {setting}: error on every row / on the rows solved on, median {summary[setting]['median']:.3f}, "
              f"largest {summary[setting]['max']:.3f}")
    meta = {**info, "rows_settings": [_label(s) for s in settings], "sampling_ratio": summary,
            "sizes": {name: bench.description for name, bench in benches.items()}}
    out = write_results(args.out, rows, meta)
    draw(rows, out.replace(".csv", ".png"))
    print(f"wrote {out} (+ .meta.json, .png)")


if __name__ == "__main__":
    main()
