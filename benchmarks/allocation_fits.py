"""Sharing a network target out: fits where the shares fall, against fits at every point.

Net-Trim's default at a target sparsity shares the target out among the layers by their
error curves (``nettrim.allocation``). A curve's points are the errors of each layer's
L-OBS weights (as released: the initial ranking, the fixed inverse) after the ReLU-aware
fit; :func:`nettrim.allocation.share_out` fits only the points next to each layer's share
(a first allocation on the unfitted errors, then rounds of fits where the shares fall),
stops each fit after ``FIT_STEPS`` Newton steps, and measures the curves on a subset of
each layer's rows (``ROWS_PER_INPUT * (n_in + 1)`` within ``[ROWS, ROWS_MAX]``,
``nettrim.allocation``). This benchmark measures what the three give up: for every model
of the suite (its layers recorded on the calibration data, at the default rows) and every
target, the shares of ``share_out`` (as it runs; on every row; with fits run to
convergence) against those of the allocation on curves fitted to convergence at every
point on every row, the largest difference of a layer's share, the objective
``sum_l e_l(s_l)^2`` of each on those fully fitted curves, the fits made, and the time of
each (the L-OBS passes, common to all, counted in each).

Every curve weighs each neuron's error by the consumer weights (``nettrim.consumers``), as
the default does.

Run:  python benchmarks/allocation_fits.py [--models digits-mlp,...] [--rows 1024]
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
from nettrim.allocation import FIT_STEPS, GRID, ROWS, ErrorCurves, allocate, share_out  # noqa: E402
from nettrim.consumers import consumer_importance  # noqa: E402
from nettrim.record import record  # noqa: E402
from solvers.refit import MAX_STEPS as CONVERGED  # noqa: E402  (the fits' default: run to convergence)

TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)


def objective(shares: dict[str, float], curves: dict[str, np.ndarray]) -> float:
    """``sum_l e_l(s_l)^2`` on the curves fitted at every point (what the allocation minimises)."""
    return sum(float(np.interp(share, GRID, curves[layer] ** 2)) for layer, share in shares.items())


def compare(name: str, bench: suite.Benchmark, targets: tuple[float, ...], rows_read: int) -> list[dict]:
    records = record(bench.model, bench.data.x_train, max_positions="auto")
    importance = consumer_importance(bench.model, records)
    sizes = {layer: rec.weight.numel() for layer, rec in records.items()}
    started = time.perf_counter()
    every = ErrorCurves(records, importance=importance, rows=None, fit_steps=CONVERGED)
    every.fit_all()
    fitted_curves = every.curves()
    every_seconds = time.perf_counter() - started
    rows = []
    for target in targets:
        full = allocate(fitted_curves, sizes, target)
        started = time.perf_counter()
        curves = ErrorCurves(records, importance=importance, rows=rows_read)
        shares = share_out(records, target, curves=curves)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        shares_every_row = share_out(records, target,
                                     curves=ErrorCurves(records, importance=importance, rows=None))
        seconds_every_row = time.perf_counter() - started
        started = time.perf_counter()
        shares_converged = share_out(records, target, curves=ErrorCurves(records, importance=importance,
                                                                          rows=rows_read, fit_steps=CONVERGED))
        seconds_converged = time.perf_counter() - started
        total = sum(sizes.values())
        rows.append({
            "model": name, "target_sparsity": target, "layers": len(records), "rows": rows_read,
            "same_shares": shares == full,
            "largest_share_difference": max(abs(shares[layer] - full[layer]) for layer in records),
            "objective_every": objective(full, fitted_curves),
            "objective_share_out": objective(shares, fitted_curves),
            "same_shares_every_row": shares_every_row == full,
            "objective_share_out_every_row": objective(shares_every_row, fitted_curves),
            "same_shares_as_converged": shares == shares_converged,
            "kept_share_out": sum(sizes[layer] * (1 - shares[layer]) for layer in records) / total,
            "fits": sum(len(curves.fitted[layer]) for layer in records),
            "fits_every": (len(GRID) - 1) * len(records),
            "seconds_share_out": seconds, "seconds_share_out_every_row": seconds_every_row,
            "seconds_share_out_converged": seconds_converged,
            "seconds_every": every_seconds})
        row = rows[-1]
        print(f"{name:<14} {target:5.2f} same {str(row['same_shares']):5} (every row: "
              f"{str(row['same_shares_every_row']):5}; converged fits: "
              f"{str(row['same_shares_as_converged']):5}) diff {row['largest_share_difference']:.3f} "
              f"objective {row['objective_share_out'] / max(row['objective_every'], 1e-300):.4f}x "
              f"fits {row['fits']:3d}/{row['fits_every']:3d} {seconds:6.2f} s (every row {seconds_every_row:6.2f} s) "
              f"vs {every_seconds:6.2f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(suite.MODELS), help="comma-separated names of the suite")
    parser.add_argument("--rows", type=int, default=ROWS,
                        help="the fewest rows the curves of share_out are measured on (ROWS_PER_INPUT per weight "
                             "of a neuron, up to ROWS_MAX)")
    parser.add_argument("--out", default=str(RESULTS / "allocation_fits.csv"))
    args = parser.parse_args(argv)
    info = machine_info()
    info["compile_seconds"] = compile_cost()
    benches = suite.build(args.models.split(","))
    warm = next(iter(benches.values()))
    share_out(record(warm.model, warm.data.x_train[:200]), 0.8)  # the numba kernels, before any timing
    rows = []
    for name, bench in benches.items():
        rows.extend(compare(name, bench, TARGETS, args.rows))
    same = sum(row["same_shares"] for row in rows)
    same_every_row = sum(row["same_shares_every_row"] for row in rows)
    same_converged = sum(row["same_shares_as_converged"] for row in rows)
    steps_ratio = statistics.median(row["seconds_share_out"] / row["seconds_share_out_converged"] for row in rows)
    ratio = statistics.median(row["seconds_share_out"] / row["seconds_every"] for row in rows)
    rows_ratio = statistics.median(row["seconds_share_out"] / row["seconds_share_out_every_row"] for row in rows)
    objective_ratio = statistics.median(row["objective_share_out"] / max(row["objective_every"], 1e-300)
                                        for row in rows)
    print(f"same shares at {same} of {len(rows)} points ({same_every_row} on every row); share_out's objective "
          f"over the fully fitted allocation's: median {objective_ratio:.4f}; time of share_out over fitting every "
          f"point on every row: median {ratio:.2f}; at {args.rows} rows over every row: median {rows_ratio:.2f}; "
          f"fits of {FIT_STEPS} Newton steps against converged ones: the same shares at {same_converged} of "
          f"{len(rows)}, time median {steps_ratio:.2f}")
    meta = {**info, "targets": list(TARGETS), "grid": list(GRID), "rows": args.rows,
            "same_shares": f"{same} of {len(rows)}", "same_shares_every_row": f"{same_every_row} of {len(rows)}",
            "median_time_ratio": ratio, "median_rows_time_ratio": rows_ratio,
            "median_objective_ratio": objective_ratio, "fit_steps": FIT_STEPS,
            "same_shares_as_converged": f"{same_converged} of {len(rows)}", "median_steps_time_ratio": steps_ratio,
            "sizes": {name: f"{suite.MODELS[name].description}; {len(bench.data.x_train)} calibration"
                      for name, bench in benches.items()}}
    print(f"wrote {write_results(args.out, rows, meta)} (+ .meta.json)")


if __name__ == "__main__":
    main()
