"""What every benchmark records beside its figures: the machine, the versions, the JIT cost."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    import cvxpy
    import numba
    import scipy
    from threadpoolctl import threadpool_info

    cpu = "unknown"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                "numba": numba.__version__, "cvxpy": cvxpy.__version__}
    for name in ("clarabel", "scs", "torch", "sklearn"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # pragma: no cover
            versions[name] = "missing"
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "versions": versions,
            "blas": [(i.get("internal_api"), i.get("num_threads")) for i in threadpool_info()]}


def compile_cost() -> dict:
    """First-call cost of the numba kernels in a fresh process with an empty cache."""
    code = (
        "import time; t=time.perf_counter();"
        "from solvers import solve; from solvers.examples import planted_problem;"
        "p,_=planted_problem(50,5,3); t0=time.perf_counter(); solve(p, max_iter=20);"
        "t1=time.perf_counter(); solve(p, max_iter=20); t2=time.perf_counter();"
        "print(t1-t0, t2-t1)"
    )
    costs = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        for label in ("compile (empty cache)", "load (disk cache)"):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            first, second = map(float, out.stdout.split())
            costs[label] = first - second
    return costs


def write_results(path: str, rows: list[dict], meta: dict) -> str:
    """Write ``rows`` as CSV at ``path`` and ``meta`` as JSON beside it (``.meta.json``).

    Returns the absolute CSV path.
    """
    import csv
    import json

    out = os.path.abspath(path)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(out.replace(".csv", ".meta.json"), "w") as handle:
        json.dump(meta, handle, indent=2)
    return out


def new_axes(figsize: tuple[float, float] = (6.4, 4.4)):
    """A figure and its axes for a PNG beside the CSV (the Agg backend: no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def save_figure(fig, ax, path: str, **legend) -> None:
    """Legend, light grid, tight layout, written at ``path``."""
    ax.legend(**legend)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
