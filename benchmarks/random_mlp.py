"""The randomly initialised MLP 20-300-300-300-4 pruned whole at epsilon = 0.03.

The network of ``solver_convergence.py`` (``random_mlp``: seed 0, float64, 3,000 standard
Gaussian inputs as calibration data), pruned by ``nettrim.prune(method="nettrim",
epsilon=0.03)`` in cascade and parallel mode with the pipeline's solver defaults and with
each of ``--variants`` (solver settings, as in ``solver_convergence.py``; the default pair
compares today's solver with the one before the polishing budget and the screening:
``polish_budget=inf,screen=False``). Recorded per prune and layer: wall time, iterations,
status, whether polishing certified the layer, the inputs screened out, weights kept, and
the network's output error. numba's kernels are compiled before the first timing.

Run:  python benchmarks/random_mlp.py [--variants "default;polish_budget=inf,screen=False"] [--modes cascade,parallel]
Writes benchmarks/results/random_mlp.csv and .meta.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see README, Performance notes

import argparse
import sys
import time

from _common import RESULTS, ROOT, compile_cost, machine_info, write_results
from solver_convergence import parse_variants, random_mlp

sys.path.insert(0, str(ROOT))
import nettrim  # noqa: E402

EPSILON = 0.03
TARGET_SECONDS = 60.0  # the target for the cascade prune


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="default;polish_budget=inf,screen=False",
                        help="solver settings, ';'-separated: 'default' or overrides like 'polish_budget=inf'")
    parser.add_argument("--modes", default="cascade,parallel")
    parser.add_argument("--out", default=str(RESULTS / "random_mlp.csv"))
    args = parser.parse_args(argv)
    info = machine_info()
    compile_seconds = compile_cost()
    model, x = random_mlp()
    rows, totals = [], {}
    for mode in args.modes.split(","):
        for variant, overrides in parse_variants(args.variants).items():
            started = time.perf_counter()
            result = nettrim.prune(model, x, mode=mode, epsilon=EPSILON, solver_options=overrides, progress=False)
            seconds = time.perf_counter() - started
            totals[f"{mode}, {variant}"] = seconds
            print(f"{mode:<8} {variant:<36} {seconds:7.1f} s, kept {result.kept:.1%}, "
                  f"output error {result.output_error:.4f}", flush=True)
            for name, report in result.layers.items():
                rows.append({"mode": mode, "variant": variant, "prune_seconds": seconds, "layer": name,
                             "n_samples": report.n_samples, "shape": "x".join(map(str, report.shape)),
                             "iterations": report.iterations, "status": report.status,
                             "polished": report.info.get("polished"), "screened": report.info.get("screened"),
                             "seconds": report.seconds, "kept": report.kept, "violation": report.violation,
                             "output_error": result.output_error})
                print(f"    layer {name}: {report.iterations:5d} iterations, {report.seconds:6.1f} s, "
                      f"polished {report.info.get('polished')}, screened {report.info.get('screened')}, "
                      f"kept {report.kept:.1%}", flush=True)
    cascade = totals.get("cascade, default")
    if cascade is not None:
        print(f"target (cascade prune under {TARGET_SECONDS:.0f} s): {'met' if cascade < TARGET_SECONDS else 'NOT met'} "
              f"({cascade:.1f} s)")
    meta = {**info, "numba_compile_seconds": compile_seconds, "epsilon": EPSILON, "prune_seconds": totals,
            "sizes": {"network": "20-300-300-300-4, float64", "calibration": len(x)}}
    print(f"wrote {write_results(args.out, rows, meta)}")


if __name__ == "__main__":
    main()
