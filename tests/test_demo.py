"""The quick-start demo: a digits MLP pruned layer by layer with the solver."""
import pytest

from solvers.demo import format_report, main, run_demo


def test_demo_prunes_and_keeps_accuracy():
    result = run_demo(epsilon=0.05, hidden=(32,), seed=0)
    assert [row["layer"] for row in result["rows"]] == ["fc1", "fc2"]
    assert [row["relu"] for row in result["rows"]] == [True, False]
    assert all(row["status"] == "optimal" and row["violation"] <= 1e-3 for row in result["rows"])
    assert 0.05 < result["kept"] < 0.95
    assert result["dense_accuracy"] > 0.9
    assert result["pruned_accuracy"] >= result["dense_accuracy"] - 0.05
    report = format_report(result)
    assert "fc1" in report and "test accuracy dense" in report


def test_demo_command_line(capsys):
    main(["--hidden", "16", "--epsilon", "0.1"])
    assert "weights kept" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--epsilon", "-1"])
    assert "--epsilon: needs a value >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--hidden", "16", "0"])
    assert "--hidden: got [16, 0], needs sizes >= 1" in capsys.readouterr().err
