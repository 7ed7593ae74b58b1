"""How the layer solver converges on every layer program of the suite.

For every layer of every model of the suite (``suite.py``), of a randomly initialised MLP
20-300-300-300-4 on 3,000 Gaussian inputs (the programs that made the CLI slow), and of
planted sparse layers (``solvers.examples.planted_problem``), the Net-Trim program on the
original network's signals (parallel mode: ``Y`` the layer's output, budget
``epsilon * ||Y||_F``; ``epsilon`` 0.05, 0.03 for the random MLP, 0.02 for the planted
layers; convolutions at the default rows) is solved by the ADMM as the pipeline solves it
(``nettrim.config.PRUNE_SOLVER_DEFAULTS``, in the precision of the layer's input,
warm-started from the original weights) at
``tol`` 1e-3 and 1e-4. Recorded per solve: iterations, the first check at which both
residuals met ``tol`` (the rest of the iterations waited for the thresholded weights'
violation), status, whether polishing certified the answer, the time, the time of polishing
(failed attempts included) as a share of it, and the time in units of the layer's two
products (``Xa^T B`` and ``Xa Theta``, timed alone, median of 7; each program is solved
once, untimed, before its timed solves), the inputs screened out,
the failed polishing attempts' work in iterations of the solver's cost model; and, for programs small
enough (``n_samples * n_out <= --clarabel-below``), the objective's relative gap to
Clarabel's (through cvxpy).

Run:  python benchmarks/solver_convergence.py [--models digits-mlp,...] [--tols 1e-3,1e-4] [--quick]
Writes benchmarks/results/solver_convergence.csv, .meta.json and .png (needs the ``bench`` extra).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see README, Performance notes

import argparse
import itertools
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

from _common import RESULTS, ROOT, compile_cost, machine_info, new_axes, save_figure, write_results

sys.path.insert(0, str(ROOT))
import nettrim  # noqa: E402
import suite  # noqa: E402
from nettrim.config import PRUNE_SOLVER_DEFAULTS  # noqa: E402
from solvers import LayerProblem, solve  # noqa: E402
from solvers.examples import planted_problem  # noqa: E402

EPSILON = 0.05


def random_mlp() -> tuple[nn.Module, torch.Tensor]:
    """A randomly initialised MLP 20-300-300-300-4 and 3,000 standard Gaussian inputs (seed 0)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU(), nn.Linear(300, 300),
                          nn.ReLU(), nn.Linear(300, 4))
    return model.double().eval(), torch.randn(3000, 20, dtype=torch.float64)


def programs(names: list[str], quick: bool) -> list[tuple[str, str, LayerProblem, tuple]]:
    """``(model, layer, problem, original weights)`` of every layer asked for."""
    found = []
    networks = {name: (bench.model, bench.data.x_train, EPSILON) for name, bench in suite.build(names).items()}
    if not quick:
        model, x = random_mlp()
        networks["random-mlp"] = (model, x, 0.03)
    for name, (model, x, epsilon) in networks.items():
        for layer, record in nettrim.record(model, x, max_positions="auto").items():
            Z = record.pre_activation.numpy()
            Y = np.maximum(Z, 0.0) if record.relu else Z
            X = record.input.numpy()
            problem = LayerProblem(X, Y, epsilon * float(np.linalg.norm(Y)), relu=record.relu,
                                   fit_bias=record.bias is not None)
            bias = None if record.bias is None else record.bias.numpy()
            found.append((name, layer, problem, (record.weight.numpy(), bias)))
    for n_samples, n_in, n_out in ((1000, 100, 25),) if quick else ((1000, 100, 25), (2000, 200, 50)):
        problem, planted = planted_problem(n_samples, n_in, n_out, epsilon=0.02)
        found.append(("planted", f"{n_samples}x{n_in}x{n_out}", problem, planted))
    return found


def two_products(problem: LayerProblem, dtype: np.dtype) -> float:
    """Median seconds of ``Xa^T B`` and ``Xa Theta`` together, the two products of an iteration."""
    Xa = np.hstack([problem.X, np.ones((problem.n_samples, 1))]).astype(dtype)
    B = np.random.default_rng(0).standard_normal((problem.n_samples, problem.n_out)).astype(dtype)
    Theta = np.random.default_rng(1).standard_normal((problem.n_in + 1, problem.n_out)).astype(dtype)
    times = []
    for _ in range(7):
        started = time.perf_counter()
        Xa.T @ B
        Xa @ Theta
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def clarabel_objective(problem: LayerProblem) -> float | None:
    try:
        return float(solve(problem, method="cvxpy", solver="CLARABEL").objective)
    except Exception as exc:  # noqa: BLE001  (a reference that fails is recorded as missing)
        print(f"  clarabel failed: {type(exc).__name__}: {exc}", flush=True)
        return None


def parse_variants(text: str) -> dict[str, dict]:
    """``'default;polish_share=inf'`` -> ``{'default': {}, 'polish_share=inf': {'polish_share': inf}}``."""
    variants = {}
    for label in text.split(";"):
        overrides = {}
        if label != "default":
            for item in label.split(","):
                key, value = item.split("=")
                if value in ("True", "False"):
                    overrides[key] = value == "True"
                elif key in ("polish_wait", "max_iter", "check_every", "rho_hold"):
                    overrides[key] = int(value)
                else:
                    overrides[key] = float(value)
        variants[label] = overrides
    return variants


def measure(found, tols: list[float], clarabel_below: int, variants: dict[str, dict]) -> list[dict]:
    rows = []
    options = dict(PRUNE_SOLVER_DEFAULTS["admm"])
    for model, layer, problem, original in found:
        dtype = np.asarray(problem.X).dtype
        unit = two_products(problem, dtype)
        reference = clarabel_objective(problem) if problem.n_samples * problem.n_out <= clarabel_below else None
        # untimed: the first solve of a program pays for allocations the later ones reuse
        # (digits CNN fc1: 1.3 s against 0.4 s), which would favour the variants run second
        solve(problem, warm_start=original, dtype=dtype, **{**options, "max_iter": 50})
        for tol, (variant, overrides) in itertools.product(tols, variants.items()):
            # as the pipeline solves it: iterates in the precision of the layer's input
            solution = solve(problem, warm_start=original, dtype=dtype, **{**options, "tol": tol, **overrides})
            info = solution.info
            gap = (None if reference is None
                   else abs(solution.objective - reference) / max(abs(reference), 1e-300))
            rows.append({"model": model, "layer": layer, "variant": variant, "n_samples": problem.n_samples, "n_in": problem.n_in,
                         "n_out": problem.n_out, "relu": problem.relu, "tol": tol,
                         "iterations": solution.iterations, "residuals_met_at": info["residuals_met_at"],
                         "status": solution.status, "polished": info["polished"],
                         "seconds": solution.solve_time, "polish_share": info["polish_time"] / solution.solve_time,
                         "screened": info["screened"],
                         "failed_polish_in_iterations": info["polish_failed_flops"] / info["iteration_flops"],
                         "two_products_seconds": unit, "in_two_products": solution.solve_time / unit,
                         "violation": solution.violation, "objective": solution.objective,
                         "clarabel_gap": gap})
            r = rows[-1]
            print(f"{variant:<10.10} {model:<13} {layer:<18} {problem.n_samples:>6}x{problem.n_in:<4}x{problem.n_out:<4} "
                  f"tol {tol:.0e} {r['iterations']:>6} it (residuals met at {r['residuals_met_at']}) "
                  f"{r['status']:<8} polished {str(r['polished']):<5} {r['seconds']:7.2f}s "
                  f"{r['in_two_products']:8.0f}x two products, polish {r['polish_share']:4.0%}"
                  + ("" if gap is None else f", gap to Clarabel {gap:.1e}"), flush=True)
    return rows


def draw(rows: list[dict], path: str) -> None:
    fig, ax = new_axes((6.4, 4.4))
    groups = sorted({(r["variant"], r["tol"]) for r in rows})
    for marker, (variant, tol) in zip("osD^v<>", groups):
        points = [(r["iterations"], r["in_two_products"]) for r in rows if (r["variant"], r["tol"]) == (variant, tol)]
        ax.scatter(*zip(*points), marker=marker, label=f"{variant}, tol {tol:g}", alpha=0.7)
    ax.axvline(150, color="grey", linewidth=0.8, linestyle=":")
    ax.axhline(150, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("iterations")
    ax.set_ylabel("solve time / time of the two products")
    save_figure(fig, ax, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(suite.MODELS), help="comma-separated names of the suite")
    parser.add_argument("--tols", default="1e-3,1e-4")
    parser.add_argument("--clarabel-below", type=int, default=20_000,
                        help="compare with Clarabel when n_samples * n_out is at most this")
    parser.add_argument("--variants", default="default",
                        help="solver settings to compare, ';'-separated: 'default' or overrides like 'polish_share=inf'")
    parser.add_argument("--quick", action="store_true", help="digits MLP, one planted layer, tol 1e-3")
    parser.add_argument("--out", default=str(RESULTS / "solver_convergence.csv"))
    args = parser.parse_args(argv)
    names = ["digits-mlp"] if args.quick else args.models.split(",")
    tols = [1e-3] if args.quick else [float(t) for t in args.tols.split(",")]
    info = machine_info()
    compile_seconds = compile_cost()
    variants = parse_variants(args.variants)
    rows = measure(programs(names, args.quick), tols, args.clarabel_below, variants)

    summary = {}
    for tol, variant in itertools.product(tols, variants):
        at = [r for r in rows if r["tol"] == tol and r["variant"] == variant]
        within = sum(r["iterations"] <= 150 or r["in_two_products"] <= 150 for r in at)
        key = f"{variant}, tol {tol:g}"
        summary[key] = {"layers": len(at), "within_150": within,
                        "max_iter_hit": sum(r["status"] == "max_iter" for r in at),
                        "median_iterations": statistics.median(r["iterations"] for r in at),
                        "median_polish_share": statistics.median(r["polish_share"] for r in at),
                        "total_seconds": sum(r["seconds"] for r in at)}
        print(f"{key}: {within} of {len(at)} programs within 150 iterations or 150x their two products; "
              f"{summary[key]['max_iter_hit']} hit max_iter; median {summary[key]['median_iterations']:.0f} "
              f"iterations, median polishing share {summary[key]['median_polish_share']:.0%}, "
              f"{summary[key]['total_seconds']:.1f} s in all")
    meta = {**info, "numba_compile_seconds": compile_seconds, "summary": summary,
            "solver_options": {k: str(v) for k, v in PRUNE_SOLVER_DEFAULTS["admm"].items()}}
    out = write_results(args.out, rows, meta)
    draw(rows, out.replace(".csv", ".png"))
    print(f"wrote {out} (+ .meta.json, .png)")


if __name__ == "__main__":
    main()
