"""The ADMM's numba backend against its torch backend (CPU, and CUDA where present), side by side.

Problems: planted sparse ReLU layers (:func:`solvers.examples.planted_problem`: Gaussian
``X``, a planted weight with 20% Gaussian entries, bias ``0.1 N(0, 1)``,
``Y = relu(X W^T + b)``, layer budget ``epsilon = 0.02 ||Y||_F``), at the sizes given as
``n_samples x n_in x n_out``. Every variant solves the same problem in the same process:
numba (float64), torch on the CPU (float64 and float32) and, where CUDA is present, torch
on the GPU (float32, its default). Per problem and variant: median wall time over
``--repeats`` runs (set-up, factorisation, transfers and polishing included), the
iterations, the objective and its gap to numba's, the true violation of the returned
weights (relative to epsilon), the kept fraction, and the time per iteration measured
alone on a run of ``--iteration-runs`` iterations without polishing. A tiny solve warms
every variant up first; the numba compile cost (fresh process, empty cache) and the
warm-up times are in the meta file. ``--polish both`` adds the rows without polishing
(``polish=False``: the ADMM alone to ``tol``).

``--lenet`` (only where CUDA is present; skipped with a message otherwise): the size of
LeNet-5's first fully connected layer on MNIST, ``n_in = 3136`` (+ bias), ``n_out = 512``,
``n_samples = 55000``, on synthetic data: the inputs are ReLU features of a random
teacher layer, ``X = relu(G T / sqrt(784))`` with ``G`` a ``55000 x 784`` Gaussian (an
MNIST-sized input) and ``T`` a ``784 x 3136`` Gaussian; the layer has a planted weight
with 10% Gaussian entries scaled by ``1 / sqrt(0.1 * 3136)`` and bias ``0.1 N(0, 1)``;
``Y = relu(X W^T + b)``, ``epsilon = 0.05 ||Y||_F`` (the parallel mode's default).
Solved by torch on the GPU in float32 at ``tol = 1e-4`` without polishing (polishing runs
on the host in float64 and at this size costs far more than the iterations; ``--lenet-polish``
adds that row), warm start from the ridge solution. Reported: the time, the iterations,
the first check at which both residuals met tol (``residuals_met_at``: the violation test
of the returned weights decides the stop after it), the true violation relative to
epsilon, and the time of exactly 300 iterations (the published implementation: 126 s for
300 iterations, weights 7.5% over their epsilon).
``--tf32`` adds the rows with TF32 products (``torch.backends.cuda.matmul.allow_tf32``).
``--lenet-device cpu`` runs the tol-1e-4 row on the CPU instead (the same torch float32
iteration; the data drawn by the CPU generator, same distribution): seconds per iteration
on 2 cores, so it is there for the iteration count the GPU run will need. Writes
torch_backend_lenet_cpu.csv. ``--lenet-size 3000x392x64`` runs the same rows on a layer of
that size (``n_in / 4`` teacher pixels, as LeNet's 784 for 3136), written to a file named
after it: a check of the whole run in seconds before a GPU session spends its minutes.

Run:  python benchmarks/torch_backend.py [--sizes 2000x256x256,...] [--repeats 3]
      [--threads N] [--polish on|off|both] [--lenet] [--tf32]
      [--lenet-only] [--lenet-device cuda|cpu] [--lenet-size 55000x3136x512]
Writes benchmarks/results/torch_backend.csv and .meta.json, rewritten after each size (the
meta's ``sizes_done`` says how many a stopped run finished; ``--lenet``: also
torch_backend_lenet.csv and .meta.json).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see benchmarks/solver_vs_cvxpy.py

import argparse
import sys
import time

import numpy as np

from _common import RESULTS, ROOT, compile_cost, machine_info, write_results

sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

from solvers import LayerProblem, solve  # noqa: E402
from solvers.examples import planted_problem  # noqa: E402

CPU_SIZES = "2000x256x256,5000x513x256"  # under ~5 minutes on 2 busy cores
GPU_SIZES = "2000x256x256,10000x785x300,20000x1025x512"
LENET = (55000, 3136, 512)  # n_samples, n_in, n_out


def parse_sizes(text: str, option: str = "--sizes") -> list[tuple[int, int, int]]:
    sizes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise SystemExit(f"{option}: got {item!r}, needs n_samples x n_in x n_out like 2000x256x256")
        sizes.append(tuple(int(p) for p in parts))
    return sizes


def variants(cuda: bool, polish_modes: list[bool]) -> list[dict]:
    """The solver settings compared, numba (the reference) first."""
    base = [dict(backend="numba", dtype="float64"),
            dict(backend="torch", device="cpu", dtype="float64"),
            dict(backend="torch", device="cpu", dtype="float32")]
    if cuda:
        base.append(dict(backend="torch", device="cuda", dtype="float32"))
    return [dict(v, polish=p) for p in polish_modes for v in base]


def label(options: dict) -> str:
    where = options["backend"] if options["backend"] != "torch" else f"torch-{options['device']}"
    return f"{where}-{options['dtype']}" + ("" if options.get("polish", True) else "-nopolish")


def warm_up() -> dict:
    """First-call time of each backend on a tiny problem (JIT or cache load, torch/CUDA start-up)."""
    tiny, _ = planted_problem(50, 5, 3)
    seconds = {}
    for options in variants(torch.cuda.is_available(), [True]):
        started = time.perf_counter()
        solve(tiny, **options, max_iter=20)
        seconds[label(options)] = time.perf_counter() - started
    return seconds


def per_iteration(problem: LayerProblem, options: dict, iterations: int) -> float:
    """Seconds per iteration of a run without polishing (set-up and factorisation excluded)."""
    run = dict(options, polish=False, tol=1e-12, max_iter=iterations)
    sol = solve(problem, **run)
    return (sol.solve_time - sol.info["factor_time"]) / sol.iterations


def bench_problem(name: str, problem: LayerProblem, options_list: list[dict], repeats: int, tol: float,
                  iteration_runs: int) -> list[dict]:
    rows, reference = [], None
    for options in options_list:
        runs = [solve(problem, tol=tol, **options) for _ in range(repeats)]
        sol = runs[0]
        times = [r.solve_time for r in runs]
        if options["backend"] == "numba" and reference is None:
            reference = sol.objective
        row = {
            "problem": name, "n_samples": problem.n_samples, "n_in": problem.n_in, "n_out": problem.n_out,
            "variant": label(options), "backend": options["backend"], "device": sol.info["device"],
            "dtype": sol.info["dtype"], "polish": options.get("polish", True), "status": sol.status,
            "seconds": float(np.median(times)), "seconds_min": float(np.min(times)),
            "iterations": sol.iterations, "polished": sol.info["polished"], "objective": sol.objective,
            "gap_vs_numba": (sol.objective - reference) / reference if reference else np.nan,
            "violation": sol.violation, "density": sol.density, "factor_seconds": sol.info["factor_time"],
            "polish_seconds": sol.info["polish_time"],
            "ms_per_iteration": 1e3 * per_iteration(problem, options, iteration_runs) if iteration_runs else np.nan,
        }
        rows.append(row)
        print(f"  {row['variant']:<28} {row['status']:<9} {row['seconds']:8.2f}s {row['iterations']:6d} it "
              f"obj {row['objective']:.6g} gap {row['gap_vs_numba']:+.1e} viol {row['violation']:.1e} "
              f"{row['ms_per_iteration']:.1f} ms/it", flush=True)
    return rows


def lenet_problem(size: tuple[int, int, int] = LENET, device: str = "cuda", seed: int = 0,
                  n_pixels: int = 784) -> tuple[LayerProblem, tuple[np.ndarray, np.ndarray]]:
    """The synthetic LeNet-size layer of the module docstring (generated on ``device``, kept on the host)."""
    n_samples, n_in, n_out = size
    generator = torch.Generator(device=device).manual_seed(seed)
    options = dict(device=device, generator=generator)
    G = torch.randn(n_samples, n_pixels, **options)
    teacher = torch.randn(n_pixels, n_in, **options)
    X = torch.relu(G @ teacher / n_pixels**0.5)
    del G, teacher
    density = 0.1
    weight = torch.randn(n_out, n_in, **options) * (torch.rand(n_out, n_in, **options) < density)
    weight /= (density * n_in) ** 0.5
    bias = 0.1 * torch.randn(n_out, **options)
    Y = torch.relu(X.double() @ weight.double().T + bias.double())
    epsilon = 0.05 * float(torch.linalg.vector_norm(Y))
    problem = LayerProblem(X.cpu().numpy(), Y.cpu().numpy(), epsilon)
    return problem, (weight.double().cpu().numpy(), bias.double().cpu().numpy())


def bench_lenet(args) -> None:
    device = args.lenet_device
    sizes = parse_sizes(args.lenet_size, "--lenet-size")  # checked first: also where the run is skipped
    if len(sizes) != 1:
        raise SystemExit(f"--lenet-size: got {args.lenet_size!r}, needs one size like 55000x3136x512")
    size = sizes[0]
    if device == "cuda" and not torch.cuda.is_available():
        print("\n--lenet: skipped, no CUDA device here (torch.cuda.is_available() is False); "
              "run it on a machine with a GPU, or pass --lenet-device cpu for the iteration count (slow)")
        return
    where = torch.cuda.get_device_name() if device == "cuda" else f"the CPU ({torch.get_num_threads()} threads)"
    label = "LeNet-size layer" if size == LENET else "LeNet-like layer (reduced size)"
    print(f"\n{label} {size[0]} x {size[1]} (+bias) x {size[2]}, float32 on {where}", flush=True)
    started = time.perf_counter()
    problem, planted = lenet_problem(size, device=device, n_pixels=max(1, size[1] // 4))  # 784 for LeNet
    build = time.perf_counter() - started
    print(f"  data built in {build:.1f}s; active entries {problem.active.mean():.1%}; "
          f"planted weights' violation {problem.violation(*planted):.1e}", flush=True)
    settings = [("tol-1e-4", dict(polish=False))]
    if device == "cuda":  # on the CPU an iteration takes seconds: the count to tol is what is asked for
        settings.append(("300-iterations", dict(polish=False, tol=1e-12, max_iter=300)))
    if args.lenet_polish:
        settings.append(("tol-1e-4-polish", dict(polish=True)))
    precisions = [False, True] if args.tf32 and device == "cuda" else [False]
    rows = []
    for tf32 in precisions:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for name, options in settings:
            options = dict(dict(tol=1e-4, max_iter=args.lenet_max_iter), **options)
            for _ in range(args.lenet_repeats):
                sol = solve(problem, backend="torch", device=device, dtype="float32", **options)
                row = {"run": name, "device": device, "tf32": tf32, "n_samples": problem.n_samples, "n_in": problem.n_in,
                       "n_out": problem.n_out, "tol": options["tol"], "status": sol.status,
                       "seconds": sol.solve_time, "factor_seconds": sol.info["factor_time"],
                       "iterations": sol.iterations, "residuals_met_at": sol.info["residuals_met_at"],
                       "ms_per_iteration": 1e3 * (sol.solve_time - sol.info["factor_time"]) / sol.iterations,
                       "objective": sol.objective, "planted_objective": problem.objective(*planted),
                       "violation_over_epsilon": sol.violation, "density": sol.density,
                       "polished": sol.info["polished"], "polish_seconds": sol.info["polish_time"],
                       "primal_residual": sol.primal_residual,
                       "dual_residual": sol.dual_residual}
                rows.append(row)
                print(f"  {name:<16} tf32={tf32!s:<5} {sol.status:<9} {sol.solve_time:7.2f}s "
                      f"{sol.iterations:5d} it ({row['ms_per_iteration']:.1f} ms/it; residuals met at "
                      f"{sol.info['residuals_met_at']}) violation {sol.violation:.2e} "
                      f"of epsilon, kept {sol.density:.1%}", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    meta = dict(machine_info(), device=device, gpu=torch.cuda.get_device_name() if device == "cuda" else None,
                data_seconds=build, torch_threads=torch.get_num_threads(),
                problem="synthetic LeNet-size layer, see the module docstring",
                published="126 s for 300 iterations, weights 7.5% over epsilon",
                date=time.strftime("%Y-%m-%d %H:%M:%S"))
    suffix = ("_lenet" if device == "cuda" else "_lenet_cpu") + ("" if size == LENET else "_" + "x".join(map(str, size)))
    out = write_results(args.out.replace(".csv", suffix + ".csv"), rows, meta)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--sizes", default=GPU_SIZES if cuda else CPU_SIZES,
                        help=f"comma-separated n_samples x n_in x n_out (default {CPU_SIZES} without CUDA, "
                             f"{GPU_SIZES} with)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median)")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--polish", choices=["on", "off", "both"], default="on",
                        help="rows with polishing (the default), without, or both")
    parser.add_argument("--iteration-runs", type=int, default=50,
                        help="iterations of the run that measures the time per iteration (0: skip)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for BLAS and torch alike (default: as the environment says)")
    parser.add_argument("--lenet", action="store_true", help="the LeNet-size layer on the GPU (CUDA only)")
    parser.add_argument("--lenet-only", action="store_true", help="only the LeNet-size layer")
    parser.add_argument("--lenet-polish", action="store_true", help="add a LeNet run with polishing")
    parser.add_argument("--lenet-repeats", type=int, default=1)
    parser.add_argument("--lenet-max-iter", type=int, default=5000)
    parser.add_argument("--tf32", action="store_true", help="LeNet runs with TF32 products as well")
    parser.add_argument("--lenet-device", choices=["cuda", "cpu"], default="cuda",
                        help="where the LeNet-size layer runs; 'cpu' measures its iteration count to tol "
                             "(the same torch float32 iteration, seconds per iteration on 2 cores)")
    parser.add_argument("--lenet-size", default="x".join(map(str, LENET)),
                        help="n_samples x n_in x n_out of that layer (default: LeNet's); another size is a "
                             "check of the run at less cost, written to a file named after it")
    parser.add_argument("--out", default=str(RESULTS / "torch_backend.csv"))
    args = parser.parse_args(argv)

    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)
    if args.lenet_only:
        bench_lenet(args)
        return

    info = machine_info()
    info["compile_seconds"] = compile_cost()
    info["warm_up_seconds"] = warm_up()
    info.update(torch_threads=torch.get_num_threads(), cuda=torch.cuda.get_device_name() if cuda else None,
                load_average=os.getloadavg(), OPENBLAS_THREAD_TIMEOUT=os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
                OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS"))
    polish_modes = {"on": [True], "off": [False], "both": [True, False]}[args.polish]
    info.update(sizes=args.sizes, tol=args.tol, repeats=args.repeats, polish=args.polish,
                iteration_runs=args.iteration_runs, threads=args.threads,
                problem="planted_problem(density=0.2, epsilon=0.02, seed=1)")
    rows, sizes = [], parse_sizes(args.sizes)
    for done, (n_samples, n_in, n_out) in enumerate(sizes, start=1):
        name = f"planted-{n_samples}x{n_in}x{n_out}"
        problem, _ = planted_problem(n_samples, n_in, n_out, density=0.2, epsilon=0.02, seed=1)
        print(f"\n{name} (active {problem.active.mean():.0%})", flush=True)
        rows += bench_problem(name, problem, variants(cuda, polish_modes), args.repeats, args.tol,
                              args.iteration_runs)
        # after each size, so that a run stopped early keeps the sizes it finished
        write_results(args.out, rows, dict(info, sizes_done=done, date=time.strftime("%Y-%m-%d %H:%M:%S")))

    header = (f"{'problem':<24} {'variant':<28} {'status':<8} {'seconds':>8} {'polish':>7} {'iters':>6} "
              f"{'objective':>12} {'gap':>9} {'viol':>8} {'kept':>6} {'ms/it':>7}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['problem']:<24} {r['variant']:<28} {r['status'][:8]:<8} {r['seconds']:8.2f} "
              f"{r['polish_seconds']:7.2f} {r['iterations']:6d} "
              f"{r['objective']:12.6g} {r['gap_vs_numba']:+9.1e} {r['violation']:8.1e} {r['density']:6.1%} "
              f"{r['ms_per_iteration']:7.1f}")
    print(f"\nnumba first-call cost: {info['compile_seconds']}; warm-up: "
          + ", ".join(f"{k} {v:.2f}s" for k, v in info["warm_up_seconds"].items()))
    print(f"wrote {os.path.abspath(args.out)}")
    if args.lenet:
        bench_lenet(args)


if __name__ == "__main__":
    main()
