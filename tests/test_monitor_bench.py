"""``mola-ts bench monitor``: the table and files it writes (no timing is asserted)."""

import json

import pandas as pd
import pytest

from mola_ts.cli import main

pytest.importorskip("bibmon")  # the TEP files ship with bibmon (a dev dependency)


def test_bench_monitor_writes_one_row_per_monitor(tmp_path, capsys):
    code = main(["bench", "monitor", "--out", str(tmp_path), "--models", "Residual", "DPCA",
                 "--repeats", "1", "--stream-rows", "5", "--quick"])
    assert code == 0
    out = capsys.readouterr().out
    assert "batch samples/CPU-s" in out and "stream ms" in out
    table = pd.read_csv(tmp_path / "monitor_speed.csv")
    # PCA is always timed: it is the ratio anchor
    assert list(table.model) == ["Residual", "DPCA", "PCA"]
    assert (table.batch_samples == 22 * 960).all()
    assert table.set_index("model").loc["PCA", "vs_pca"] == pytest.approx(1.0)
    rows = json.loads((tmp_path / "monitor_speed.json").read_text())
    assert [r["model"] for r in rows] == list(table.model)


def test_bench_monitor_rejects_unknown_monitors(tmp_path, capsys):
    assert main(["bench", "monitor", "--out", str(tmp_path), "--models", "LSTM"]) == 2
    assert "unknown monitors ['LSTM']" in capsys.readouterr().err
