"""Sharing a network target out: fits where the shares fall, against fits at every point.

Net-Trim's default at a target sparsity shares the target out among the layers by their
error curves (``nettrim.allocation``). A curve's points are the errors of each layer's
greedy L-OBS weights after the ReLU-aware fit; :func:`nettrim.allocation.share_out` fits
only the points next to each layer's share (a first allocation on the unfitted errors,
then rounds of fits where the shares fall). This benchmark measures what that gives up:
for every model of the suite (its layers recorded on the calibration data, at the
default rows) and every target, the shares of ``share_out`` against those of the
allocation on curves fitted at every point, the largest difference of a layer's share,
the objective ``sum_l e_l(s_l)^2`` of both on the fully fitted curves, the fits made, and the time of each (the L-OBS passes, common to both, counted in both).

Run:  python benchmarks/allocation_fits.py [--models digits-mlp,...]
Writes benchmarks/results/allocation_fits.csv and .meta.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see README, Performance notes

import argparse
import statistics
import sys
import time

import numpy as np
from _common import RESULTS, ROOT, compile_cost, machine_info, write_results

sys.path.insert(0, str(ROOT))
import suite  # noqa: E402
from nettrim.allocation import GRID, ErrorCurves, allocate, share_out  # noqa: E402
from nettrim.record import record  # noqa: E402

TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)


def objective(shares: dict[str, float], curves: dict[str, np.ndarray]) -> float:
    """``sum_l e_l(s_l)^2`` on the curves fitted at every point (what the allocation minimises)."""
    return sum(float(np.interp(share, GRID, curves[layer] ** 2)) for layer, share in shares.items())


def compare(name: str, bench: suite.Benchmark, targets: tuple[float, ...]) -> list[dict]:
    records = record(bench.model, bench.data.x_train, max_positions="auto")
    sizes = {layer: rec.weight.numel() for layer, rec in records.items()}
    started = time.perf_counter()
    every = ErrorCurves(records)
    every.fit_all()
    fitted_curves = every.curves()
    every_seconds = time.perf_counter() - started
    rows = []
    for target in targets:
        full = allocate(fitted_curves, sizes, target)
        started = time.perf_counter()
        curves = ErrorCurves(records)
        shares = share_out(records, target, curves=curves)
        seconds = time.perf_counter() - started
        total = sum(sizes.values())
        rows.append({
            "model": name, "target_sparsity": target, "layers": len(records),
            "same_shares": shares == full,
            "largest_share_difference": max(abs(shares[layer] - full[layer]) for layer in records),
            "objective_every": objective(full, fitted_curves),
            "objective_share_out": objective(shares, fitted_curves),
            "kept_share_out": sum(sizes[layer] * (1 - shares[layer]) for layer in records) / total,
            "fits": sum(len(curves.fitted[layer]) for layer in records),
            "fits_every": (len(GRID) - 1) * len(records),
            "seconds_share_out": seconds, "seconds_every": every_seconds})
        row = rows[-1]
        print(f"{name:<14} {target:5.2f} same {str(row['same_shares']):5} diff {row['largest_share_difference']:.3f} "
              f"fits {row['fits']:3d}/{row['fits_every']:3d} {seconds:6.2f} s vs {every_seconds:6.2f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(suite.MODELS), help="comma-separated names of the suite")
    parser.add_argument("--out", default=str(RESULTS / "allocation_fits.csv"))
    args = parser.parse_args(argv)
    info = machine_info()
    info["compile_seconds"] = compile_cost()
    benches = suite.build(args.models.split(","))
    warm = next(iter(benches.values()))
    share_out(record(warm.model, warm.data.x_train[:200]), 0.8)  # the numba kernels, before any timing
    rows = []
    for name, bench in benches.items():
        rows.extend(compare(name, bench, TARGETS))
    same = sum(row["same_shares"] for row in rows)
    ratio = statistics.median(row["seconds_share_out"] / row["seconds_every"] for row in rows)
    print(f"same shares at {same} of {len(rows)} points; time of share_out over fitting every point: "
          f"median {ratio:.2f}")
    meta = {**info, "targets": list(TARGETS), "grid": list(GRID), "same_shares": f"{same} of {len(rows)}",
            "median_time_ratio": ratio,
            "sizes": {name: f"{suite.MODELS[name].description}; {len(bench.data.x_train)} calibration"
                      for name, bench in benches.items()}}
    print(f"wrote {write_results(args.out, rows, meta)} (+ .meta.json)")


if __name__ == "__main__":
    main()
