"""ADMM (numba and numpy backends) against cvxpy (Clarabel, SCS) on Net-Trim layer programs.

Problems: the second hidden layer of a ReLU MLP trained on scikit-learn's digits
(``64 - n_in - n_out - 10``, calibration inputs = digits and one-pixel shifts of them) and
a planted sparse ReLU layer, at three sizes. For each problem and method: wall time,
iterations, objective, gap to Clarabel's objective, true violation of the returned
weights, speed-up over the faster cvxpy solver; for the ADMM also the time per iteration
against the time of its two matrix products alone (same shapes, same BLAS), measured on
200 iterations with polishing off and convergence checks included, alternating with the
products, medians over 7 rounds.

Run:  python benchmarks/solver_vs_cvxpy.py [--sizes S,M,L] [--repeats 3]
(sets OPENBLAS_THREAD_TIMEOUT=4 unless the environment already has it; see below)
Writes benchmarks/results/solver_vs_cvxpy.csv and solver_vs_cvxpy.meta.json.
"""
from __future__ import annotations

import os

# OpenBLAS workers sleep right after each product instead of spinning: on a 2-vCPU VM a
# spinning worker gets descheduled and the next product stalls for a scheduler tick
# (4 ms). Must be set before numpy loads OpenBLAS; an explicit setting wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from solvers import solve  # noqa: E402
from solvers.examples import digits_layer_problem, planted_problem  # noqa: E402

from _common import compile_cost, machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"S": (50, 20, 300), "M": (100, 25, 1000), "L": (200, 50, 2000)}  # n_in, n_out, n_samples


def products_time(problem, repeats: int = 30) -> float:
    """Median time of the iteration's two products ``Xa^T B`` and ``Xa Theta`` alone."""
    rng = np.random.default_rng(0)
    Xa = rng.standard_normal((problem.n_samples, problem.n_in + 1))
    B = rng.standard_normal((problem.n_samples, problem.n_out))
    Theta = np.empty((problem.n_in + 1, problem.n_out))
    R = np.empty_like(B)
    times = []
    for _ in range(repeats + 3):
        t = time.perf_counter()
        np.matmul(Xa.T, B, out=Theta)
        np.matmul(Xa, Theta, out=R)
        times.append(time.perf_counter() - t)
    return float(np.median(times[3:]))


def iteration_time(problem, backend: str, n_iterations: int = 200) -> float:
    """Seconds per ADMM iteration over one run (checks included, polishing and set-up excluded)."""
    sol = solve(problem, backend=backend, polish=False, tol=1e-12, max_iter=n_iterations)
    return (sol.solve_time - sol.info["factor_time"]) / sol.iterations


def loop_against_products(problem, rounds: int = 7) -> tuple[dict, float]:
    """Median time per iteration of each backend and of the two products alone.

    The three are measured in turn, ``rounds`` times, so that drift of the machine hits
    them alike; medians over the rounds.
    """
    per_iteration = {"numba": [], "numpy": []}
    products = []
    for _ in range(rounds):
        products.append(products_time(problem))
        for backend in per_iteration:
            per_iteration[backend].append(iteration_time(problem, backend))
    return {f"admm-{b}": float(np.median(t)) for b, t in per_iteration.items()}, float(np.median(products))


def build_problems(sizes: list[str]):
    for size in sizes:
        n_in, n_out, n_samples = SIZES[size]
        problem, original = digits_layer_problem((n_in, n_out), n_samples, epsilon=0.05)
        yield f"digits-{size}", problem, original
        problem, original = planted_problem(n_samples, n_in, n_out, density=0.2, epsilon=0.02, seed=1)
        yield f"planted-{size}", problem, original


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="S,M,L", help="comma-separated subset of S,M,L")
    parser.add_argument("--repeats", type=int, default=3, help="ADMM runs per problem (median)")
    parser.add_argument("--tol", type=float, default=1e-4, help="ADMM tolerance")
    parser.add_argument("--no-cvxpy", action="store_true", help="skip the cvxpy solvers")
    parser.add_argument("--out", default=str(RESULTS / "solver_vs_cvxpy.csv"))
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]

    info = machine_info()
    info["compile_seconds"] = compile_cost()
    info["OPENBLAS_THREAD_TIMEOUT"] = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    warm, _ = planted_problem(50, 5, 3)
    for backend in ("numba", "numpy"):  # warm-up: JIT out of the timings
        solve(warm, backend=backend, max_iter=20)

    rows = []
    for name, problem, original in build_problems(sizes):
        size = dict(n_in=problem.n_in, n_out=problem.n_out, n_samples=problem.n_samples)
        print(f"\n{name}: n_in={problem.n_in} n_out={problem.n_out} n_samples={problem.n_samples} "
              f"(active {problem.active.mean():.0%})", flush=True)
        results = {}
        if not args.no_cvxpy:
            for solver in ("CLARABEL", "SCS"):
                sol = solve(problem, method="cvxpy", solver=solver)
                results[f"cvxpy-{solver.lower()}"] = (sol, [sol.solve_time])
                print(f"  cvxpy {solver}: {sol.solve_time:.2f}s, status {sol.status}", flush=True)
        for backend in ("numba", "numpy"):
            runs = [solve(problem, backend=backend, tol=args.tol) for _ in range(args.repeats)]
            results[f"admm-{backend}"] = (runs[0], [r.solve_time for r in runs])
        reference = results.get("cvxpy-clarabel", (None,))[0]
        fastest_cvxpy = min((np.median(t) for k, (_, t) in results.items() if k.startswith("cvxpy")), default=np.nan)
        per_iteration, product_seconds = loop_against_products(problem)
        for method, (sol, times) in results.items():
            seconds = float(np.median(times))
            per_iter = per_iteration.get(method, np.nan)
            rows.append({
                "problem": name, **size, "method": method, "status": sol.status,
                "seconds": seconds, "iterations": sol.iterations,
                "objective": sol.objective, "polished": sol.info.get("polished", False),
                "gap_vs_clarabel": (sol.objective - reference.objective) / reference.objective if reference else np.nan,
                "violation": sol.violation, "density": sol.density,
                "speedup_vs_fastest_cvxpy": fastest_cvxpy / seconds,
                "ms_per_iteration": per_iter * 1e3,
                "ms_two_products": product_seconds * 1e3 if method.startswith("admm") else np.nan,
                "iteration_over_products": per_iter / product_seconds if method.startswith("admm") else np.nan,
            })

    columns = list(rows[0])
    header = (f"{'problem':<11} {'method':<15} {'status':<9} {'seconds':>8} {'iters':>6} {'objective':>10} "
              f"{'gap':>9} {'viol':>8} {'kept':>6} {'speedup':>8} {'ms/it':>6} {'it/prod':>7}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['problem']:<11} {r['method']:<15} {r['status'][:9]:<9} {r['seconds']:8.3f} {r['iterations']:6d} "
              f"{r['objective']:10.4f} {r['gap_vs_clarabel']:+9.1e} {r['violation']:8.1e} {r['density']:6.1%} "
              f"{r['speedup_vs_fastest_cvxpy']:8.1f} {r['ms_per_iteration']:6.2f} {r['iteration_over_products']:7.2f}")
    print(f"\nnumba first-call cost: {info['compile_seconds']}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    info.update(sizes={k: SIZES[k] for k in sizes}, tol=args.tol, repeats=args.repeats,
                date=time.strftime("%Y-%m-%d %H:%M:%S"))
    out.with_suffix(".meta.json").write_text(json.dumps(info, indent=2))
    print(f"wrote {out} and {out.with_suffix('.meta.json')}")


if __name__ == "__main__":
    main()
