"""Net-Trim's l1 program at a target sparsity: the path in epsilon against the search it replaced.

For every layer program of the models asked for (``suite.py``; on the original network's
signals, the parallel mode's programs, convolutions at the default rows), at each target
sparsity, the budget ``epsilon`` whose l1 answer removes the target fraction of the
weights is found three ways, side by side in one process, each warm-started from the
original weights, with the pipeline's solver defaults, in the precision of the layer's
input, starting from the parallel mode's budget ``0.05 ||Y||_F``:

- ``path``: :func:`solvers.solve_at_sparsity` (one ADMM run continued from budget to
  budget; loose search stages, then full ones);
- ``search``: the bracketing search the library used before (``_bracketing_search`` here:
  an independent solve per budget, each capped at 1,500 iterations and warm-started from
  the nearest feasible one, the budget stepped by 2-4x and then interpolated, until the
  kept fraction is within one point; a capped best probe is finished by a full solve);
- ``single``: one solve at the budget the path ended at, the unit of the
  *solve-equivalents* (``seconds / single seconds``, ``iterations / single iterations``).

The path and the single solve are timed ``--repeats`` times (default 3; the runs are
deterministic, the same iterations and answer each time) and their median seconds are
kept: a sub-second solve's wall time moves by 10-20% from one run to the next, enough to
move a ratio near 5 across it. The search, the slow baseline, runs once.

Recorded per layer and target: the kept fraction each way, whether it is within one point
of the target, the solves (search) or stages (path), iterations, seconds,
solve-equivalents, the objective and status at the end, the path's reason when it
misses, and whether the path's answer and the single solve's are polished (certified;
otherwise the ADMM's own answer, whose support depends on the run that reached it), with
the path answer's violation of its budget and why its last polishing attempt gave up,
how many weights the path's landing rounded to zero (``path_rounded``; see
:mod:`solvers.path`), and the error of the path's and the search's answers on the
ball's entries, ``||(X W^T + b - Y)_Omega|| / ||Y||`` (``path_error``, ``search_error``).
numba's kernels are compiled before the first timing; each program is solved once,
untimed, before its timed runs.

Run:  python benchmarks/sparsity_path.py [--models digits-mlp,...] [--targets 0.7,0.9]
Writes benchmarks/results/sparsity_path.csv and .meta.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see README, Performance notes

import argparse
import math
import statistics
import sys
import time

import numpy as np

from _common import RESULTS, ROOT, compile_cost, machine_info, write_results

sys.path.insert(0, str(ROOT))
import nettrim  # noqa: E402
import suite  # noqa: E402
from nettrim.config import PRUNE_SOLVER_DEFAULTS  # noqa: E402
from solvers import LayerProblem, solve, solve_at_sparsity  # noqa: E402
from solvers.path import _within, next_epsilon  # noqa: E402

EPSILON = 0.05  # the starting budget, relative to ||Y||_F (the parallel mode's)
TOLERANCE = 0.01  # one point
_PROBE_ITERATIONS = 1500  # the search's cap per probe


def programs(names: list[str]) -> list[tuple[str, str, LayerProblem, tuple]]:
    """``(model, layer, problem at the starting budget, original weights)`` of every layer."""
    found = []
    for name, bench in suite.build(names).items():
        for layer, record in nettrim.record(bench.model, bench.data.x_train, max_positions="auto").items():
            Z = record.pre_activation.numpy()
            Y = np.maximum(Z, 0.0) if record.relu else Z
            problem = LayerProblem(record.input.numpy(), Y, EPSILON * float(np.linalg.norm(Y)), relu=record.relu,
                                   fit_bias=record.bias is not None)
            bias = None if record.bias is None else record.bias.numpy()
            found.append((name, layer, problem, (record.weight.numpy().reshape(Y.shape[1], -1), bias)))
    return found


def _at(problem: LayerProblem):
    return lambda epsilon: LayerProblem(problem.X, problem.Y, epsilon, relu=problem.relu,
                                        fit_bias=problem.fit_bias)


def _bracketing_search(problem: LayerProblem, target_kept: float, original: tuple, options: dict):
    """The search the library used before the path: ``(solution, epsilon, solves, iterations)``."""
    at, size, scale = _at(problem), problem.n_in * problem.n_out, float(np.linalg.norm(problem.Y))
    feasible_violation = max(10.0 * options["tol"], 0.05)
    tried, points, iterations = [], [], 0
    epsilon = float(problem.epsilon)
    for _ in range(40):
        near = [(e, s) for e, s in tried if s is not None]
        warm = original if not near else min(near, key=lambda item: abs(math.log(item[0] / epsilon)))[1]
        warm = warm if isinstance(warm, tuple) else (warm.weight, warm.bias)
        solution = solve(at(epsilon), warm_start=warm, **{**options, "max_iter": _PROBE_ITERATIONS})
        iterations += solution.iterations
        ok = solution.status == "optimal" or solution.violation <= feasible_violation
        tried.append((epsilon, solution if ok else None))
        kept = solution.nnz / size if ok else None
        points.append((epsilon, kept))
        if kept is not None and _within(kept, target_kept, TOLERANCE):
            break
        following = next_epsilon(points, target_kept, size)
        if following is None or not 1e-4 * scale < following < 64 * scale:
            break
        epsilon = following
    best_epsilon, best = min(((e, s) for e, s in tried if s is not None),
                             key=lambda item: (abs(item[1].nnz / size - target_kept), item[0]))
    if best.status != "optimal":  # a capped probe: finish it
        finished = solve(at(best_epsilon), warm_start=(best.weight, best.bias), **options)
        iterations += finished.iterations
        if finished.status == "optimal" and abs(finished.nnz / size - target_kept) <= max(
                abs(best.nnz / size - target_kept), TOLERANCE):
            best = finished
    return best, best_epsilon, len(tried), iterations


def _error(problem: LayerProblem, solution) -> float:
    """The answer's error on the ball's entries, ``||(X W^T + b - Y)_Omega||_F / ||Y||_F``."""
    residual = problem.response(solution.weight, solution.bias) - problem.Y
    if problem.relu:
        residual[problem.Y <= 0] = 0.0
    return float(np.linalg.norm(residual) / np.linalg.norm(problem.Y))


def _timed(repeats: int, run):
    """The answer of ``run()`` and the median of its wall times over ``repeats`` calls; the
    runs are deterministic, and a repeat that answers differently is an error."""
    answers, seconds = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        answers.append(run())
        seconds.append(time.perf_counter() - started)
    first = answers[0]
    if any(a.nnz != first.nnz or a.iterations != first.iterations for a in answers[1:]):
        raise RuntimeError("a repeated solve answered differently: timings would compare different work")
    return first, statistics.median(seconds)


def measure(found, targets: list[float], repeats: int = 3) -> list[dict]:
    rows = []
    for model, layer, problem, original in found:
        dtype = np.asarray(problem.X).dtype
        options = {**PRUNE_SOLVER_DEFAULTS["admm"], "dtype": dtype}
        solve(problem, warm_start=original, **{**options, "max_iter": 50})  # untimed: first-solve allocations
        size = problem.n_in * problem.n_out
        for sparsity in targets:
            target_kept = 1.0 - sparsity
            path, path_seconds = _timed(repeats, lambda: solve_at_sparsity(
                _at(problem), sparsity, float(problem.epsilon), warm_start=original, tolerance=TOLERANCE, **options))
            started = time.perf_counter()
            search, search_epsilon, solves, search_iterations = _bracketing_search(problem, target_kept, original,
                                                                                   options)
            search_seconds = time.perf_counter() - started
            epsilon = path.info["epsilon"]
            single, single_seconds = _timed(repeats, lambda: solve(_at(problem)(epsilon), warm_start=original,
                                                                   **options))
            row = {"model": model, "layer": layer, "n_samples": problem.n_samples, "n_in": problem.n_in,
                   "n_out": problem.n_out, "relu": problem.relu, "target": sparsity,
                   "path_kept": path.nnz / size, "path_met": _within(path.nnz / size, target_kept, TOLERANCE),
                   "path_stages": len(path.info["path"]), "path_iterations": path.info["path_iterations"],
                   "path_seconds": path_seconds, "path_epsilon": epsilon, "path_objective": path.objective,
                   "path_status": path.status, "path_why": path.info["why"] or "",
                   "path_polished": bool(path.info.get("polished")), "path_violation": path.violation,
                   "path_polish_outcome": path.info.get("polish_outcome", ""),
                   "path_rounded": path.info.get("rounded", 0), "path_error": _error(problem, path),
                   "search_kept": search.nnz / size, "search_met": _within(search.nnz / size, target_kept, TOLERANCE),
                   "search_solves": solves, "search_iterations": search_iterations, "search_seconds": search_seconds,
                   "search_epsilon": search_epsilon, "search_status": search.status,
                   "search_error": _error(problem, search),
                   "single_seconds": single_seconds, "single_iterations": single.iterations,
                   "single_kept": single.nnz / size, "single_status": single.status,
                   "single_polished": bool(single.info.get("polished")),
                   "path_solve_equivalents": path_seconds / single_seconds,
                   "search_solve_equivalents": search_seconds / single_seconds,
                   "path_iteration_equivalents": path.info["path_iterations"] / max(single.iterations, 1),
                   "search_over_path": search_seconds / path_seconds}
            rows.append(row)
            print(f"{model:<12} {layer:<10} {problem.n_samples:>6}x{problem.n_in:<4}x{problem.n_out:<4} {sparsity:.0%}: "
                  f"path kept {row['path_kept']:.3f} in {row['path_stages']} stages {path_seconds:6.2f}s "
                  f"({row['path_solve_equivalents']:.1f} solves); search kept {row['search_kept']:.3f} in "
                  f"{solves} solves {search_seconds:6.2f}s ({row['search_solve_equivalents']:.1f}); "
                  f"single {single_seconds:.2f}s" + (f"; path: {row['path_why']}" if row["path_why"] else ""),
                  flush=True)
    return rows


def summary(rows: list[dict]) -> None:
    print("\n| target | layers | path within 1 pt | search within 1 pt | path solve-eq. median (max) "
          "| search solve-eq. median (max) | search / path time, median |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for target in sorted({r["target"] for r in rows}):
        sel = [r for r in rows if r["target"] == target]
        path_eq = [r["path_solve_equivalents"] for r in sel]
        search_eq = [r["search_solve_equivalents"] for r in sel]
        print(f"| {target:.0%} | {len(sel)} | {sum(r['path_met'] for r in sel)} | {sum(r['search_met'] for r in sel)} "
              f"| {statistics.median(path_eq):.1f} ({max(path_eq):.1f}) "
              f"| {statistics.median(search_eq):.1f} ({max(search_eq):.1f}) "
              f"| {statistics.median(r['search_over_path'] for r in sel):.1f} |")
    print(f"\nall: path {sum(r['path_seconds'] for r in rows):.1f} s, "
          f"search {sum(r['search_seconds'] for r in rows):.1f} s")
    rounded = [r for r in rows if r["path_rounded"]]
    both = [r for r in rows if r["path_met"] and r["search_met"]]
    print(f"path answers rounded onto the target: {len(rounded)} of {len(rows)} "
          f"({sum(r['path_rounded'] for r in rounded)} weights set to zero in all, violation at most "
          f"{max((r['path_violation'] for r in rounded), default=0.0):.1e})")
    if both:
        ratios = [r["path_error"] / r["search_error"] for r in both]
        print(f"error of the path's answer / the search's, where both are within a point: median "
              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}, {len(both)} programs)")
    certified = [r for r in rows if r["path_polished"] and not r["path_rounded"]]
    own = [r for r in rows if not r["path_polished"]]
    print(f"path answers polished (certified optima of their budget): {len(certified)} of {len(rows)}; rounded "
          f"after a certified stage: {sum(r['path_polished'] and r['path_rounded'] > 0 for r in rows)}; the ADMM's "
          f"own (rounded or not): {len(own)}, violation at most "
          f"{max((r['path_violation'] for r in own), default=0.0):.1e} of the budget")
    for row in own:
        print(f"  not certified: {row['model']} {row['layer']} at {row['target']:.0%}: {row['path_polish_outcome']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits-mlp,digits-cnn,mnist1d-mlp,mnist1d-cnn")
    parser.add_argument("--targets", default="0.7,0.9")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of each path and single solve (the median is kept; the search runs once)")
    parser.add_argument("--out", default=str(RESULTS / "sparsity_path.csv"))
    args = parser.parse_args(argv)
    info = machine_info()
    compile_seconds = compile_cost()
    if args.repeats < 1:
        parser.error(f"--repeats: got {args.repeats}; give at least 1")
    rows = measure(programs(args.models.split(",")), [float(t) for t in args.targets.split(",")], args.repeats)
    summary(rows)
    out = write_results(args.out, rows, {"machine": info, "jit_seconds": compile_seconds, "models": args.models,
                                         "targets": args.targets, "start_epsilon": EPSILON, "tolerance": TOLERANCE,
                                         "repeats": args.repeats})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
