"""How many ADMM iterations the rho rule and the centring of the input save, side by side.

The ADMM's time is its iteration count times two ``n_samples x n_in x n_out`` products,
so the count is what a GPU target (the LeNet-size layer of ``torch_backend.py --lenet``)
depends on. This benchmark solves the same problems, in one process, with the rules of
:class:`solvers.AdmmSettings` changed by the fields of its rho rule and scaling (an
ablation; the defaults are the current rule):

- ``balanced-from-start``: the rule before 2026-12 for a run without polishing: residual
  balancing from the first check (iteration 25) whenever the normalised residuals differ
  by more than a factor 4 (``sqrt`` ratio 2), input not centred (``before, polishing on``:
  the same rule as it ran with polishing, rho held for the first 200 iterations);
- ``held, not centred``: rho held at its start value ``2 sqrt(#weights)/||Theta_0||`` for 200
  iterations, then balanced at a factor 25 (``sqrt`` ratio 5, OSQP's default tolerance);
- ``held, centred scale``: the same, and the input centred (exact when the bias is fitted
  and free: ``X W^T + b = (X - mean) W^T + (b + W mean)``) and scaled by its centred
  columns (the rule of the morning of 2026-12-01);
- ``held, centred`` (the current rule): centred, but scaled as the uncentred columns
  are (at most 4x the centred columns' scale: ``offset_scale_cap``);
- ``fixed rho``: rho never moves from its start value, input centred.

Problems (ReLU layers, layer budget, bias fitted): ``relu-features`` layers like LeNet's
hidden layers at reduced size (``torch_backend.lenet_problem``: ``X = relu(G T / sqrt(p))``,
a planted weight with 10% entries, ``epsilon = 0.05 ||Y||``) at two sizes; planted layers on
Gaussian inputs (``solvers.examples.planted_problem``) at two budgets; the second hidden
layer of a digits MLP (``solvers.examples.digits_layer_problem``). Each is solved without
polishing (the ADMM alone to ``tol``, as the GPU benchmark runs it) in float64 with numba,
and once more with the default settings (polishing on) under the current rule.

Section ``pipeline``: the digits MLP 64-256-256-10 (``nettrim.examples``, trained here,
seed 0) pruned in cascade and in parallel mode at ``epsilon = 0.08``, and the digits CNN
at ``epsilon = 0.1`` with ``prune_digits.py``'s 10,000 rows per convolution, with the pipeline's
defaults (``tol = 1e-3``, warm start from the original weights, polishing on) under
``before, polishing on`` and the current rule (or the rules of ``--rules``): iterations
per layer (and the check where their residuals met tol) and seconds (median of
``--repeats``). Writes rho_rule_pipeline.csv.

``--rules "held, centred scale;held, centred"`` runs a subset (the first is the baseline of
the summary); with ``--out`` it keeps the full table of an earlier run.

Iteration counts are deterministic; seconds are one run each (the time per iteration does
not depend on the rule; ``--repeats`` takes medians). The numba kernels are compiled on a
tiny problem first. Writes benchmarks/results/rho_rule.csv and .meta.json.

Run:  python benchmarks/rho_rule.py [--quick] [--repeats 1] [--tol 1e-4] [--sections layers,pipeline]
      [--rules "NAME;NAME"] [--out benchmarks/results/rho_rule.csv]
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see solver_vs_cvxpy.py

import argparse
import sys
import time

import numpy as np

from _common import RESULTS, ROOT, compile_cost, machine_info, write_results

sys.path.insert(0, str(ROOT))
from solvers import solve  # noqa: E402
from solvers.examples import digits_layer_problem, planted_problem  # noqa: E402

RULES = {  # name: (rho hold, sqrt-ratio tolerance, centre the input, adapt at all, offset scale cap)
    "balanced-from-start": (0, 2.0, False, True, 4.0),
    "before, polishing on": (200, 2.0, False, True, 4.0),
    "held, not centred": (200, 5.0, False, True, 4.0),
    "held, centred scale": (200, 5.0, True, True, 1.0),
    "held, centred": (200, 5.0, True, True, 4.0),
    "fixed rho": (0, 5.0, True, False, 4.0),
}


def rule(name: str) -> dict:
    """The :class:`solvers.AdmmSettings` fields of one rule (solver options of ``solve`` and
    of ``nettrim.prune``)."""
    hold, ratio, centre, adapt, cap = RULES[name]
    return {"rho_hold": hold, "rho_adapt_ratio": ratio, "center": centre, "rho_adapt": adapt,
            "offset_scale_cap": cap}


def problems(quick: bool) -> dict:
    from torch_backend import lenet_problem

    found = {"relu-features 3000x392x64": lenet_problem((3000, 392, 64), device="cpu", n_pixels=98)[0],
             "planted 2000x256x128 eps 0.02": planted_problem(2000, 256, 128, density=0.2, epsilon=0.02, seed=1)[0],
             "planted 3000x200x100 eps 0.1": planted_problem(3000, 200, 100, density=0.1, epsilon=0.1, seed=2)[0]}
    if not quick:
        found["digits hidden 3000x256x256"] = digits_layer_problem((256, 256), 3000)[0]
        found["relu-features 8000x784x128"] = lenet_problem((8000, 784, 128), device="cpu", n_pixels=196)[0]
    return found


def bench_pipeline(repeats: int, rules: list[str]) -> list[dict]:
    """The digits MLP and CNN pruned in both modes under the rules asked for."""
    import statistics

    import nettrim
    from nettrim.examples import digits_cnn, digits_mlp, load_digits_split, train

    models = []
    for name, build, images, epsilon, extra in (("mlp", digits_mlp, False, 0.08, {}),
                                                 ("cnn", digits_cnn, True, 0.1, {"max_positions": 10_000})):
        data = load_digits_split(images=images)
        models.append((name, train(build(), data.x_train, data.y_train), data, epsilon, extra))
    nettrim.prune(models[0][1], models[0][2].x_train[:200], progress=False)  # kernels loaded outside the timings
    rows = []
    print("\ndigits MLP 64-256-256-10 (epsilon 0.08) and CNN (epsilon 0.1, prune_digits.py's settings), "
          "pipeline defaults (tol 1e-3, polishing on)")
    for (model_name, model, data, epsilon, extra), mode, rule_name in [
            (m, mode, r) for m in models for mode in ("cascade", "parallel") for r in rules]:
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = nettrim.prune(model, data.x_train, mode=mode, epsilon=epsilon, progress=False,
                                   solver_options=rule(rule_name), **extra)
            seconds.append(time.perf_counter() - started)
        for layer in result.layers.values():
            rows.append({"model": model_name, "mode": mode, "rule": rule_name, "layer": layer.name,
                         "shape": "x".join(map(str, layer.shape)), "iterations": layer.iterations,
                         "residuals_met_at": layer.info.get("residuals_met_at"), "layer_seconds": layer.seconds,
                         "polished": layer.info.get("polished"), "nnz_after": layer.nnz_after,
                         "prune_seconds": statistics.median(seconds), "kept": result.kept})
        print(f"  {model_name} {mode:<9} {rule_name:<22} {statistics.median(seconds):6.2f}s kept {result.kept:.2%}  "
              "iterations per layer: " + ", ".join(f"{layer.name}: {layer.iterations}" for layer in result.layers.values()),
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the three smaller problems only")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant (median seconds)")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max-iter", type=int, default=10_000)
    parser.add_argument("--sections", default="layers,pipeline", help="comma-separated: layers, pipeline")
    parser.add_argument("--rules", default=";".join(RULES),
                        help="semicolon-separated subset of the rules (default: all); the pipeline section "
                             "runs 'before, polishing on' and the current rule unless given others")
    parser.add_argument("--out", default=str(RESULTS / "rho_rule.csv"))
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    if not sections <= {"layers", "pipeline"}:
        raise SystemExit(f"--sections: got {args.sections!r}, needs a comma-separated subset of layers,pipeline")

    rules = [r.strip() for r in args.rules.split(";")]
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise SystemExit(f"--rules: unknown {unknown}, needs some of {list(RULES)} separated by ';'")
    pipeline_rules = (["before, polishing on", "held, centred"] if args.rules == parser.get_default("rules")
                      else rules)
    info = machine_info()
    info["compile_seconds"] = compile_cost()
    tiny, _ = planted_problem(50, 5, 3)
    solve(tiny, max_iter=30)  # compile or load the kernels outside the timings
    info.update(tol=args.tol, repeats=args.repeats, max_iter=args.max_iter, quick=args.quick,
                rules={k: dict(zip(("hold", "sqrt_ratio", "centred", "adaptive", "offset_scale_cap"), v))
                       for k, v in RULES.items() if k in rules or k in pipeline_rules},
                date=time.strftime("%Y-%m-%d %H:%M:%S"))
    if "pipeline" in sections:
        out = write_results(args.out.replace(".csv", "_pipeline.csv"), bench_pipeline(args.repeats, pipeline_rules), info)
        print(f"wrote {out}")
    if "layers" not in sections:
        return
    rows = []
    for name, problem in problems(args.quick).items():
        print(f"\n{name} (n_samples x n_in x n_out; active {problem.active.mean():.0%})", flush=True)
        runs = [(r, False) for r in rules if r != "before, polishing on"] + [("held, centred", True)]
        for rule_name, polish in runs:
            sols = [solve(problem, tol=args.tol, polish=polish, max_iter=args.max_iter, **rule(rule_name))
                    for _ in range(args.repeats)]
            sol = sols[0]
            row = {"problem": name, "n_samples": problem.n_samples, "n_in": problem.n_in, "n_out": problem.n_out,
                   "rule": rule_name, "polish": polish, "status": sol.status, "iterations": sol.iterations,
                   "seconds": float(np.median([s.solve_time for s in sols])),
                   "ms_per_iteration": 1e3 * (sol.solve_time - sol.info["factor_time"] - sol.info["polish_time"])
                   / sol.iterations,
                   "objective": sol.objective, "violation": sol.violation, "density": sol.density,
                   "final_rho": sol.info["rho"], "polished": sol.info["polished"]}
            rows.append(row)
            print(f"  {rule_name:<22} polish={polish!s:<5} {sol.status:<8} {sol.iterations:6d} it "
                  f"{row['seconds']:7.1f}s obj {sol.objective:.7g} viol {sol.violation:.1e} rho {sol.info['rho']:.3g}",
                  flush=True)

    reference = next(r for r in rules if r != "before, polishing on")  # the first rule run: the baseline

    def iterations(problem: str, rule_name: str) -> int:
        return next(b for b in rows if b["problem"] == problem and b["rule"] == rule_name and not b["polish"])[
            "iterations"]

    print(f"\n{'problem':<30} {'rule':<22} {'polish':>6} {'iters':>6} {'seconds':>8} {'vs ' + reference:>9}")
    for r in rows:
        print(f"{r['problem']:<30} {r['rule']:<22} {r['polish']!s:>6} {r['iterations']:6d} {r['seconds']:8.1f} "
              f"{iterations(r['problem'], reference) / r['iterations']:8.1f}x")
    current = [iterations(p, reference) / iterations(p, "held, centred") for p in dict.fromkeys(r["problem"] for r in rows)]
    print(f"\nfewer iterations without polishing, current rule against {reference!r}: "
          f"median {np.median(current):.1f}x (range {min(current):.1f}-{max(current):.1f}x)")
    print(f"wrote {write_results(args.out, rows, info)}")


if __name__ == "__main__":
    main()
