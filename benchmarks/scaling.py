"""How nettrim scales: solve time against the layer's sizes, in process against Dask, the
numba against the torch backend on CPU, and peak memory with activations in memory or on disk.

Sections (each writes its CSV + meta under benchmarks/results/; one PNG for the sizes):

1. ``sizes``: one ReLU layer with a planted sparse weight (``solvers.examples.planted_problem``,
   Gaussian inputs, 20% density, layer budget 0.05 ||Y||, warm start from the planted
   weights), varying one of ``n_samples``, ``n_in``, ``n_out`` around (4000, 256, 256).
   The time of one ADMM iteration (median of 3 runs of 50 iterations, polishing off, the
   set-up subtracted) and of one whole solve (tol 1e-3, polishing on, at most 3000
   iterations); the exponent of a least-squares line through log time against log size.
2. ``executors``: a teacher MLP 256-512-512-10 with random weights, 10% of them kept, on
   4000 Gaussian inputs, parallel mode with ``split="neuron"``: in process, Dask with 1 worker and with
   2 workers (processes, one thread each, on loopback). Median of 3 runs after a warm-up.
3. ``backends``: one layer solved with ``backend="numba"`` and ``backend="torch"`` on the
   CPU (when the torch backend is present), same problem, median of 3.
4. ``memory``: a teacher MLP 784-1024-1024-10 on 50,000 Gaussian inputs, cascade mode, in a
   fresh process per store (``memory``, ``disk``), peak resident set size
   (``ru_maxrss``). The ADMM is capped at ``--memory-iterations`` iterations per layer:
   memory does not depend on the iteration count and a full solve of these layers takes
   far longer than a benchmark should on 2 cores (the time per iteration is reported).

Run:  python benchmarks/scaling.py [--quick] [--sections sizes,executors,backends,memory]
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see solver_vs_cvxpy.py

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from solvers import solve  # noqa: E402
from solvers.examples import planted_problem  # noqa: E402

from _common import RESULTS, compile_cost, machine_info, write_results  # noqa: E402

BASE = {"n_samples": 4000, "n_in": 256, "n_out": 256}
GRID = {"n_samples": [1000, 2000, 4000, 8000, 16000], "n_in": [64, 128, 256, 512, 1024],
        "n_out": [64, 128, 256, 512, 1024]}
QUICK_GRID = {"n_samples": [500, 1000, 2000], "n_in": [32, 64, 128], "n_out": [32, 64, 128]}


def _median_solve(problem, warm, repeats, **options):
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        solution = solve(problem, tol=1e-3, warm_start=warm, **options)
        runs.append((time.perf_counter() - start, solution))
    seconds = float(np.median([t for t, _ in runs]))
    return seconds, runs[-1][1]


def _iteration_seconds(problem, warm, repeats, n_iterations=50):
    """Median time of one iteration: ``n_iterations`` with polishing off and a tolerance
    never met, set-up (scaling, factorisation) subtracted by timing 1 iteration too."""
    def run(iterations):
        start = time.perf_counter()
        solve(problem, tol=1e-12, max_iter=iterations, polish=False, warm_start=warm)
        return time.perf_counter() - start

    times = [(run(n_iterations) - run(1)) / (n_iterations - 1) for _ in range(repeats)]
    return float(np.median(times))


def section_sizes(quick: bool, repeats: int) -> tuple[list[dict], dict]:
    grid = QUICK_GRID if quick else GRID
    base = {key: values[len(values) // 2] for key, values in grid.items()} if quick else BASE
    rows, exponents = [], {}
    for varied, values in grid.items():
        for value in values:
            size = {**base, varied: value}
            problem, planted = planted_problem(size["n_samples"], size["n_in"], size["n_out"], epsilon=0.05, seed=0)
            per_iteration = _iteration_seconds(problem, planted, repeats)
            seconds, solution = _median_solve(problem, planted, 1, max_iter=3000)
            rows.append({"varied": varied, **size, "seconds_per_iteration": per_iteration, "solve_seconds": seconds,
                         "iterations": solution.iterations, "polished": solution.info["polished"],
                         "status": solution.status, "violation": solution.violation, "kept": solution.density})
            print(f"  {varied:>9} = {value:>6}: {1e3 * per_iteration:8.2f} ms/iteration; solve {seconds:7.2f} s, "
                  f"{solution.iterations:5d} it, polished {solution.info['polished']}, {solution.status}")
        part = [row for row in rows if row["varied"] == varied]
        x = np.log([row[varied] for row in part])
        exponents[varied] = {key: float(np.polyfit(x, np.log([row[key] for row in part]), 1)[0])
                             for key in ("seconds_per_iteration", "solve_seconds")}
    return rows, exponents


def _teacher(sizes, density=1.0, seed=0):
    """A ReLU MLP with random (Kaiming-uniform) weights, of which a ``density`` fraction is
    kept (rescaled to keep the layer's gain): a network with a sparse answer to find."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layer = nn.Linear(n_in, n_out)
        if density < 1:
            with torch.no_grad():
                layer.weight.mul_((torch.rand_like(layer.weight) < density) / density ** 0.5)
        layers += [layer, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def section_executors(quick: bool, repeats: int) -> list[dict]:
    import torch
    import distributed

    import nettrim

    sizes, n_samples = ((64, 128, 128, 10), 2000) if quick else ((256, 512, 512, 10), 4000)
    model = _teacher(sizes, density=0.1)
    x = torch.randn(n_samples, sizes[0], generator=torch.Generator().manual_seed(1))
    settings = dict(mode="parallel", epsilon=0.05, split="neuron", progress=False)
    rows = []

    def timed(label, executor):
        nettrim.prune(model, x[:200], executor=executor, **settings)  # warm-up: workers load their kernels
        times, result = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            result = nettrim.prune(model, x, executor=executor, **settings)
            times.append(time.perf_counter() - start)
        rows.append({"executor": label, "sizes": "-".join(map(str, sizes)), "n_samples": n_samples,
                     "seconds": float(np.median(times)), "kept": result.kept, "output_error": result.output_error})
        print(f"  {label:<22} {rows[-1]['seconds']:7.2f} s  kept {result.kept:.3f}")

    timed("in process", None)
    for n_workers in (1, 2):
        with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
                distributed.Client(cluster) as client:
            timed(f"dask {n_workers} worker{'s' if n_workers > 1 else ''}", client)
    return rows


def section_backends(quick: bool, repeats: int) -> list[dict]:
    from solvers import admm

    if "torch" not in getattr(admm, "BACKENDS", ()):
        print("  the torch backend is not available in this checkout: skipped")
        return []
    size = (2000, 128, 128) if quick else (8000, 512, 512)
    problem, planted = planted_problem(*size, epsilon=0.05, seed=0)
    rows = []
    for backend in ("numba", "torch"):
        for dtype in (np.float32, np.float64):
            solve(problem, backend=backend, dtype=dtype, max_iter=30)  # warm-up
            seconds, solution = _median_solve(problem, planted, repeats, backend=backend, dtype=dtype)
            rows.append({"backend": backend, "dtype": np.dtype(dtype).name, "n_samples": size[0], "n_in": size[1],
                         "n_out": size[2], "seconds": seconds, "iterations": solution.iterations,
                         "objective": solution.objective, "violation": solution.violation})
            print(f"  {backend:>6} {np.dtype(dtype).name}: {seconds:7.3f} s, {solution.iterations} it, "
                  f"objective {solution.objective:.4f}, violation {solution.violation:.1e}")
    return rows


_MEMORY_CHILD = r"""
import json, resource, sys, time, torch, nettrim
from torch import nn
store, n_samples, iterations, n_in, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))
batches = [torch.randn(5000, n_in, generator=torch.Generator().manual_seed(i)) for i in range(n_samples // 5000)]
start = time.perf_counter()
result = nettrim.prune(model, batches, mode="cascade", epsilon=0.05, progress=False, store=store,
                       solver_options={"max_iter": iterations, "polish": False}, accept_infeasible=True)
seconds = time.perf_counter() - start
iters = sum(r.iterations for r in result.layers.values())
print(json.dumps({"store": store, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": seconds, "iterations": iters}))
"""


def section_memory(quick: bool, iterations: int) -> list[dict]:
    n_samples, n_in, hidden = (10000, 196, 256) if quick else (50000, 784, 1024)
    rows = []
    for store in ("memory", "disk"):
        out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, store, str(n_samples), str(iterations),
                              str(n_in), str(hidden)], capture_output=True, text=True, check=True,
                             env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
        data = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"model": f"{n_in}-{hidden}-{hidden}-10", "n_samples": n_samples, "mode": "cascade",
                     "max_iter": iterations, **data})
        print(f"  store={store:<6}: peak {data['peak_mib']:.0f} MiB, {data['seconds']:.1f} s "
              f"({data['iterations']} iterations in all)")
    return rows


def plot_sizes(rows, exponents, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, varied in zip(axes, ("n_samples", "n_in", "n_out")):
        part = [row for row in rows if row["varied"] == varied]
        x = [row[varied] for row in part]
        for key, label, marker in (("solve_seconds", "solve (tol 1e-3, polished)", "o"),
                                   ("seconds_per_iteration", "one iteration", "s")):
            ax.loglog(x, [row[key] for row in part], marker=marker,
                      label=f"{label} (slope {exponents[varied][key]:.2f})")
        ax.set_xlabel(varied)
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    others = {key: value for key, value in BASE.items()}
    fig.suptitle(f"ADMM solve time of one ReLU layer (others fixed at {others})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--sections", default="sizes,executors,backends,memory")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-iterations", type=int, default=20)
    args = parser.parse_args()
    sections = args.sections.split(",")
    suffix = "_quick" if args.quick else ""
    meta = {"machine": machine_info(), "numba_compile_seconds": compile_cost(), "quick": args.quick,
            "repeats": args.repeats, "date": time.strftime("%Y-%m-%d")}
    solve(planted_problem(50, 5, 3)[0], max_iter=20)  # numba kernels compiled before any timing

    if "sizes" in sections:
        print("time against the layer's sizes (one ReLU layer, planted, tol 1e-3)")
        rows, exponents = section_sizes(args.quick, args.repeats)
        write_results(str(RESULTS / f"scaling_sizes{suffix}.csv"), rows,
                      {**meta, "base": BASE, "exponents": exponents})
        plot_sizes(rows, exponents, RESULTS / f"scaling_sizes{suffix}.png")
        for varied, fit in exponents.items():
            print(f"  exponent in {varied}: {fit['seconds_per_iteration']:.2f} (one iteration), "
                  f"{fit['solve_seconds']:.2f} (solve)")
    if "executors" in sections:
        print("in process against Dask (parallel mode, split='neuron')")
        rows = section_executors(args.quick, args.repeats)
        write_results(str(RESULTS / f"scaling_executors{suffix}.csv"), rows, meta)
    if "backends" in sections:
        print("numba against torch backend, CPU")
        rows = section_backends(args.quick, args.repeats)
        if rows:
            write_results(str(RESULTS / f"scaling_backends{suffix}.csv"), rows, meta)
    if "memory" in sections:
        print("peak memory, cascade mode, activations in memory or on disk")
        rows = section_memory(args.quick, args.memory_iterations)
        write_results(str(RESULTS / f"scaling_memory{suffix}.csv"), rows, meta)


if __name__ == "__main__":
    main()
