"""Sample complexity of Net-Trim: the phase transition of exact recovery of one neuron.

One ReLU neuron, ``x ~ N(0, I_200)``, ``w*`` s-sparse with Gaussian values,
``y = relu(X w*)``, ``epsilon = 0``, no bias. Three programs on the same draws
(:mod:`nettrim.experiments.recovery`): (a) Net-Trim (equalities on the active samples, ``X w <= 0`` on
the inactive ones), (b) the equalities alone (basis pursuit on the active rows), (c) least
squares on the active rows (minimum norm). Success: ``||w_hat - w*|| <= 1e-3 ||w*||``.

Grid: ``s in {2, 5, 10, 15, 20, 30}``, ``n_samples`` from 10 to 200 by 5 and from 210 to
450 by 10 (past 400 so that least squares, whose transition is ``2 n_in - 1 = 399``
samples, is bracketed), ``--trials`` per cell (default 20). Trials share ``X`` in draws
of ``--trials-per-draw`` (default 5) neurons of every ``s``: each draw is ONE layer
program with per-neuron budgets ``epsilon_m = 0``, solved by the project's ADMM in
stages with certified failures (see :mod:`nettrim.experiments.recovery`).

For every ``s``: the number of samples at 50% success (isotonic fit, linear
interpolation, 90% parametric-bootstrap interval) of each program, and its ratio to
``2 s ln(n_in / s)``; beside them the NeurIPS sufficient condition ``(11 s + 7) mu ln n_in``
with ``mu = 1`` and the natural log. The ADMM verdicts are checked against the cvxpy
reference (Clarabel) on a few draws near the transitions.

Run:  python benchmarks/sample_complexity.py [--quick] [--trials 20]
Writes benchmarks/results/sample_complexity.csv, .meta.json and .png (matplotlib).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see README, Performance notes

import argparse
import logging
import sys
import time

import numpy as np

from _common import RESULTS, ROOT, compile_cost, machine_info, write_results

sys.path.insert(0, str(ROOT))
from nettrim.experiments.recovery import DEFAULT_STAGES, PROGRAMS, planted_neurons, solve_recovery  # noqa: E402
from nettrim.experiments.transition import (  # noqa: E402
    log_curve,
    neurips_curve,
    phase_transition,
    transition_interval,
    transition_point,
)

N_IN = 200
S_VALUES = (2, 5, 10, 15, 20, 30)
N_SAMPLES = tuple(range(10, 201, 5)) + tuple(range(210, 451, 10))
QUICK_S = (2, 10, 30)
QUICK_N_SAMPLES = tuple(range(10, 451, 40))
LABELS = {"nettrim": "(a) Net-Trim", "active_bp": "(b) active BP", "active_ls": "(c) active LS"}
TARGET_RATIO = 1.5


def summarise(records: list[dict], s_values, n_in: int) -> list[dict]:
    """One row per ``s``: the curves and each program's n50, interval and ratio."""
    table = []
    for s in s_values:
        row = {"s": s, "log_curve": float(log_curve(s, n_in)), "neurips_curve": float(neurips_curve(s, n_in))}
        for program in PROGRAMS:
            cell = sorted((r for r in records if r["program"] == program and r["s"] == s), key=lambda r: r["n_samples"])
            if not cell:
                continue
            n = [r["n_samples"] for r in cell]
            n50 = transition_point(n, [r["probability"] for r in cell])
            low, high = transition_interval(n, [r["n_success"] for r in cell], [r["n_trials"] for r in cell])
            row[f"n50_{program}"] = n50
            row[f"n50_{program}_low"], row[f"n50_{program}_high"] = low, high
            row[f"ratio_{program}"] = n50 / row["log_curve"]
        table.append(row)
    return table


def agreement(records: list[dict]) -> dict:
    """Cells where programs (a) and (b) differ in successes (0 expected: same verdicts)."""
    a = {(r["s"], r["n_samples"]): r["n_success"] for r in records if r["program"] == "nettrim"}
    b = {(r["s"], r["n_samples"]): r["n_success"] for r in records if r["program"] == "active_bp"}
    differing = {f"s={k[0]},n={k[1]}": (a[k], b[k]) for k in a if k in b and a[k] != b[k]}
    return {"cells_compared": len(set(a) & set(b)), "cells_differing": differing}


def check_against_cvxpy(n_samples_values, s_values, n_in: int, trials: int, seed: int) -> list[dict]:
    """ADMM verdicts against the cvxpy reference on one draw per ``n_samples``."""
    rows = []
    for n_samples in n_samples_values:
        rng = np.random.default_rng([seed, 10_000 + n_samples])
        X, Y, W_star = planted_neurons(n_samples, n_in, s_values, trials, rng)
        for program in ("nettrim", "active_bp"):
            admm = solve_recovery(X, Y, W_star, program)
            reference = solve_recovery(X, Y, W_star, program, method="cvxpy")
            rows.append({"n_samples": n_samples, "program": program, "n_trials": int(W_star.shape[0]),
                         "successes_admm": int(admm.success.sum()), "successes_cvxpy": int(reference.success.sum()),
                         "verdicts_differing": int((admm.success != reference.success).sum()),
                         "cvxpy_status": reference.stages[0]["status"],
                         "seconds_admm": admm.seconds, "seconds_cvxpy": reference.seconds})
    return rows


def figure(records: list[dict], table: list[dict], s_values, n_samples_values, n_in: int):
    """Left: heat map of Net-Trim's success rate over ``(s, n_samples)`` with the curves
    and every program's n50; right: the success curves of the three programs per ``s``."""
    import matplotlib.pyplot as plt

    s_values, n_values = list(s_values), sorted(n_samples_values)
    grid = np.full((len(n_values), len(s_values)), np.nan)
    for r in records:
        if r["program"] == "nettrim":
            grid[n_values.index(r["n_samples"]), s_values.index(r["s"])] = r["probability"]
    s_mid = np.array(s_values, dtype=float)
    s_edges = np.concatenate([[max(0.0, s_mid[0] - (s_mid[1] - s_mid[0]) / 2)], (s_mid[:-1] + s_mid[1:]) / 2,
                              [s_mid[-1] + (s_mid[-1] - s_mid[-2]) / 2]])
    n_mid = np.array(n_values, dtype=float)
    n_edges = np.concatenate([[n_mid[0] - (n_mid[1] - n_mid[0]) / 2], (n_mid[:-1] + n_mid[1:]) / 2,
                              [n_mid[-1] + (n_mid[-1] - n_mid[-2]) / 2]])

    fig, (ax, ax_curves) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1.25]})
    mesh = ax.pcolormesh(s_edges, n_edges, grid, cmap="viridis", vmin=0, vmax=1, shading="flat")
    fig.colorbar(mesh, ax=ax, label="P(recovery), (a) Net-Trim")
    s_line = np.linspace(max(1.0, s_edges[0]), s_edges[-1], 200)
    ax.plot(s_line, log_curve(s_line, n_in), "w-", linewidth=2, label=r"$2 s \ln(n_{in}/s)$")
    ax.plot(s_line, TARGET_RATIO * log_curve(s_line, n_in), "w:", linewidth=1.5,
            label=rf"${TARGET_RATIO} \times 2 s \ln(n_{{in}}/s)$")
    ax.plot(s_line, neurips_curve(s_line, n_in), "r--", linewidth=2,
            label=r"$(11 s + 7)\,\ln n_{in}$ (NeurIPS, $\mu=1$)")
    markers = {"nettrim": ("o", "orange"), "active_bp": ("x", "red"), "active_ls": ("s", "deepskyblue")}
    for program, (marker, color) in markers.items():
        points = [(row["s"], row.get(f"n50_{program}", np.nan)) for row in table]
        ax.plot(*zip(*points), marker, color=color, markersize=7, markerfacecolor="none" if marker != "x" else None,
                label=f"n50 {LABELS[program]}", linestyle="none")
    ax.set_ylim(n_edges[0], n_edges[-1])
    ax.set_xlabel("sparsity s (nonzeros of w*)")
    ax.set_ylabel("n_samples")
    ax.set_title(f"Net-Trim exact recovery, n_in = {n_in}, epsilon = 0")
    ax.set_xlim(s_edges[0], s_edges[-1])
    ax.legend(fontsize=7, loc="lower right", framealpha=0.85)

    colors = plt.cm.plasma(np.linspace(0, 0.85, len(s_values)))
    styles = {"nettrim": "-", "active_bp": "--", "active_ls": ":"}
    for s, color in zip(s_values, colors):
        for program, style in styles.items():
            cell = sorted((r["n_samples"], r["probability"]) for r in records if r["program"] == program and r["s"] == s)
            if cell:
                ax_curves.plot(*zip(*cell), style, color=color, linewidth=1.4,
                               label=f"s={s}" if program == "nettrim" else None)
    for program, style in styles.items():
        ax_curves.plot([], [], style, color="grey", label=LABELS[program])
    ax_curves.axhline(0.5, color="grey", linewidth=0.6)
    ax_curves.set_xlabel("n_samples")
    ax_curves.set_ylabel("P(recovery)")
    ax_curves.set_title("success rate per s: (a) solid, (b) dashed, (c) dotted")
    ax_curves.legend(fontsize=7, ncol=2, loc="center right")
    ax_curves.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def print_table(table: list[dict], n_in: int) -> None:
    header = (f"{'s':>3} {'2s ln(n/s)':>10} {'(11s+7)ln n':>11} | {'n50 (a)':>16} {'ratio':>5} | "
              f"{'n50 (b)':>16} {'ratio':>5} | {'n50 (c)':>7} {'ratio':>5}")
    print(header + "\n" + "-" * len(header))
    for row in table:
        def cell(program):
            return (f"{row[f'n50_{program}']:6.1f} [{row[f'n50_{program}_low']:3.0f},{row[f'n50_{program}_high']:4.0f}]"
                    f" {row[f'ratio_{program}']:5.2f}")
        print(f"{row['s']:3d} {row['log_curve']:10.1f} {row['neurips_curve']:11.1f} | {cell('nettrim')} | "
              f"{cell('active_bp')} | {row['n50_active_ls']:7.1f} {row['ratio_active_ls']:5.2f}")
    print(f"n50: samples at 50% success (isotonic fit, linear interpolation) [90% bootstrap interval]; "
          f"ratio = n50 / (2 s ln(n_in/s)); (c) theory: 2 n_in - 1 = {2 * n_in - 1}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per (s, n_samples) cell")
    parser.add_argument("--trials-per-draw", type=int, default=5, help="trials that share one X")
    parser.add_argument("--quick", action="store_true", help="small grid (s in 2, 10, 30; n_samples by 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cvxpy", action="store_true", help="skip the check against cvxpy")
    parser.add_argument("--out", default=str(RESULTS / "sample_complexity.csv"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    s_values = QUICK_S if args.quick else S_VALUES
    n_samples_values = QUICK_N_SAMPLES if args.quick else N_SAMPLES

    info = machine_info()
    info["compile_seconds"] = compile_cost()
    info["OPENBLAS_THREAD_TIMEOUT"] = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    warm_rng = np.random.default_rng(1)
    solve_recovery(*planted_neurons(30, 20, 3, 2, warm_rng), "nettrim", stages=((1e-4, 50),))  # JIT out of timings

    print(f"n_in={N_IN}, s={list(s_values)}, {len(n_samples_values)} sample sizes "
          f"({n_samples_values[0]}..{n_samples_values[-1]}), {args.trials} trials per cell, "
          f"{args.trials_per_draw} per draw", flush=True)
    started = time.perf_counter()
    records = phase_transition(N_IN, s_values, n_samples_values, args.trials, seed=args.seed,
                               trials_per_draw=args.trials_per_draw)
    total_seconds = time.perf_counter() - started
    seconds_by_program = {p: float(sum(r["seconds"] for r in records if r["program"] == p)) for p in PROGRAMS}
    undecided = {p: int(sum(r["undecided"] for r in records if r["program"] == p)) for p in PROGRAMS}
    table = summarise(records, s_values, N_IN)
    same = agreement(records)

    print()
    print_table(table, N_IN)
    met = {f"s={row['s']}": bool(row["ratio_nettrim"] <= TARGET_RATIO) for row in table}
    earlier = {f"s={row['s']}": bool(row["n50_nettrim"] < row["n50_active_bp"]) for row in table}
    print(f"\nfull grid: {total_seconds:.0f} s ({', '.join(f'{p} {t:.0f} s' for p, t in seconds_by_program.items())}); "
          f"undecided trials: {undecided}")
    print(f"Net-Trim n50 within {TARGET_RATIO} x 2 s ln(n_in/s): {met}")
    print(f"Net-Trim n50 below active-BP n50: {earlier}")
    print(f"(a) and (b) success counts differ in {len(same['cells_differing'])} of {same['cells_compared']} cells "
          f"{same['cells_differing'] or ''}")

    checks = []
    if not args.no_cvxpy:
        check_n = (40, 120) if args.quick else (40, 80, 120, 160)
        checks = check_against_cvxpy(check_n, s_values, N_IN, trials=5, seed=args.seed)
        print("\nADMM verdicts against cvxpy (Clarabel), one draw of 5 trials per s:")
        for c in checks:
            print(f"  n_samples={c['n_samples']:3d} {c['program']:<9}: successes admm {c['successes_admm']:2d} "
                  f"cvxpy {c['successes_cvxpy']:2d} ({c['cvxpy_status']}), verdicts differing {c['verdicts_differing']}, "
                  f"{c['seconds_admm']:.1f} s vs {c['seconds_cvxpy']:.1f} s")
    print(f"numba first-call cost (not in the timings): {info['compile_seconds']}")

    meta = {**info, "n_in": N_IN, "s_values": list(s_values), "n_samples_values": list(n_samples_values),
            "trials": args.trials, "trials_per_draw": args.trials_per_draw, "seed": args.seed,
            "success_criterion": "||w_hat - w*|| <= 1e-3 ||w*||", "epsilon": 0.0, "fit_bias": False,
            "admm_stages": [list(st) for st in DEFAULT_STAGES],
            "curves": {"log_curve": "2 s ln(n_in / s)", "neurips_curve": "(11 s + 7) mu ln(n_in), mu = 1, natural log"},
            "seconds_total": total_seconds, "seconds_by_program": seconds_by_program, "undecided": undecided,
            "transition": table, "target_ratio": TARGET_RATIO, "target_met": met,
            "nettrim_earlier_than_active_bp": earlier, "a_b_agreement": same, "cvxpy_check": checks,
            "command": "python benchmarks/sample_complexity.py" + (" --quick" if args.quick else "")
                       + (f" --trials {args.trials}" if args.trials != 20 else ""),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = write_results(args.out, records, meta)
    import matplotlib

    matplotlib.use("Agg")
    figure(records, table, s_values, n_samples_values, N_IN).savefig(out.replace(".csv", ".png"), dpi=110)
    print(f"wrote {out} (+ .meta.json, .png)")


if __name__ == "__main__":
    main()
