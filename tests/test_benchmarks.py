"""The GPU benchmark's LeNet run, end to end at a small size on the CPU.

A session with a GPU has minutes of device time: the command it runs
(``benchmarks/torch_backend.py --lenet-only``) is checked here, down to the CSV it
writes, so that those minutes are not lost to a crash after the solve.
"""
import csv
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
torch_backend = pytest.importorskip("torch_backend")


def test_lenet_run_writes_its_rows(tmp_path, capsys):
    out = tmp_path / "torch_backend.csv"
    torch_backend.main(["--lenet-only", "--lenet-device", "cpu", "--lenet-size", "800x96x12",
                        "--out", str(out)])
    written = tmp_path / "torch_backend_lenet_cpu_800x96x12.csv"
    rows = list(csv.DictReader(written.open()))
    assert len(rows) == 1 and rows[0]["status"] == "optimal"
    assert int(rows[0]["residuals_met_at"]) <= int(rows[0]["iterations"])
    assert float(rows[0]["violation_over_epsilon"]) <= 5e-4
    meta = json.loads(written.with_suffix("").with_suffix(".meta.json").read_text())
    assert meta["device"] == "cpu" and "published" in meta
    assert "residuals met at" in capsys.readouterr().out


@pytest.mark.parametrize("where", [["--lenet-device", "cpu"], []])  # [] : cuda, skipped here without a GPU
def test_lenet_size_is_checked(where):
    with pytest.raises(SystemExit, match="--lenet-size"):
        torch_backend.main(["--lenet-only", *where, "--lenet-size", "800x96"])
