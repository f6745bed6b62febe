"""The Tennessee Eastman simulator as a data source (tep-studio, the ``sim`` extra): short runs."""

import sys

import numpy as np
import pandas as pd
import pytest

from mola_ts.cli import main
from mola_ts.data import (
    TEP_COLUMNS,
    PlantShutdownError,
    SimulatorMissingError,
    settling_time,
    simulate_tep,
)

tep_studio = pytest.importorskip("tep_studio", reason="the sim extra (tep-studio) is installed "
                                                      "with dev; CI runs these tests")
SHORT = dict(settle_hours=0.0, cache=False)


@pytest.fixture(autouse=True)
def temporary_data_home(tmp_path, monkeypatch):
    """Simulated runs are cached in the data home: a temporary one (CI's is read-only)."""
    home = tmp_path / "data-home"
    home.mkdir()
    monkeypatch.setenv("MOLA_TS_DATA", str(home))
    return home


@pytest.fixture(scope="module")
def two_hours():
    return simulate_tep(2.0, seed=3, **SHORT)


def test_layout_matches_the_braatz_files(two_hours):
    run = two_hours
    assert list(run.columns) == list(TEP_COLUMNS)  # XMEAS(1..41), XMV(1..11): no agitator
    assert run.shape == (40, 52)
    assert isinstance(run.index, pd.DatetimeIndex) and run.index.name == "time"
    assert run.index[0] == pd.Timestamp("2000-01-01") and run.index.freqstr == "3min"
    assert np.isfinite(run.to_numpy()).all()
    # mode 1 at its steady state: reactor pressure near 2705 kPa, valves inside 0..100 %
    assert 2600 < run["XMEAS(7)"].mean() < 2800
    xmv = run.filter(like="XMV").to_numpy()
    assert (xmv >= 0).all() and (xmv <= 100).all()
    assert run.attrs["mode"] == 1 and run.attrs["tep_studio"] == tep_studio.__version__


def test_the_same_seed_gives_the_same_run_and_another_seed_another(two_hours):
    again = simulate_tep(2.0, seed=3, **SHORT)
    pd.testing.assert_frame_equal(again, two_hours)
    other = simulate_tep(2.0, seed=4, **SHORT)
    assert not np.allclose(other.to_numpy(), two_hours.to_numpy())


def test_a_disturbance_changes_the_data_only_after_its_onset(two_hours):
    faulty = simulate_tep(2.0, seed=3, disturbance="idv_01", onset_hours=1.0, **SHORT)
    before, after = slice(0, 20), slice(20, 40)  # row 20 ends the first 3 minutes after 1 h
    np.testing.assert_array_equal(faulty.iloc[before].to_numpy(),
                                  two_hours.iloc[before].to_numpy())
    assert not np.allclose(faulty.iloc[after].to_numpy(), two_hours.iloc[after].to_numpy())
    # by number, the simulator's numbering: the same run
    by_number = simulate_tep(2.0, seed=3, disturbance=1, onset_hours=1.0, **SHORT)
    pd.testing.assert_frame_equal(by_number, faulty)
    assert faulty.attrs["disturbance"] == "idv_01"


def test_settling_drops_the_first_hours():
    full = simulate_tep(1.0, seed=5, **SHORT)
    settled = simulate_tep(0.5, seed=5, settle_hours=0.5, cache=False)
    np.testing.assert_array_equal(settled.to_numpy(), full.iloc[10:].to_numpy())
    assert settled.index[0] == pd.Timestamp("2000-01-01")


@pytest.fixture
def trip_after_half_an_hour(monkeypatch):
    """The simulator's own trip record (as a real trip returns it) from 0.51 h on."""
    from tep_studio import TennesseeEastmanProcess

    real = TennesseeEastmanProcess.advance

    def tripping(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        if result.time > 0.51:  # the simulator's own trip record, as a real trip returns it
            status = {"code": 1.0, "message": "High Reactor Pressure!!  Shutting down.",
                      "terminated": True}
            return type(result)(**{**vars(result), "shutdown_status": status})
        return result

    monkeypatch.setattr(TennesseeEastmanProcess, "advance", tripping)


def test_a_shutdown_is_reported_with_when_and_why(trip_after_half_an_hour):
    with pytest.raises(PlantShutdownError, match=r"shut down after 0\.51 h .*High Reactor "
                                                  r"Pressure") as info:
        simulate_tep(1.0, seed=0, **SHORT)
    assert abs(info.value.hours - 0.51) < 0.001 and "Reactor Pressure" in info.value.reason


def test_a_shutdown_can_end_the_run_instead(trip_after_half_an_hour, tmp_path):
    run = simulate_tep(1.0, seed=0, settle_hours=0.0, on_shutdown="truncate",
                       data_home=tmp_path)
    # the 10 rows completed before the trip (rows end every 0.05 h)
    assert len(run) == 10 and abs(run.attrs["shutdown"]["hours"] - 0.51) < 0.001
    # the trip is cached: the same run raises (or truncates) without simulating again
    with pytest.raises(PlantShutdownError, match="cached"):
        simulate_tep(1.0, seed=0, settle_hours=0.0, data_home=tmp_path)
    again = simulate_tep(1.0, seed=0, settle_hours=0.0, on_shutdown="truncate",
                         data_home=tmp_path)
    assert again.attrs["cached"]
    pd.testing.assert_frame_equal(again, run)


def test_a_real_trip_mode_5_seed_0_after_about_22_hours():
    # measured: the Ricker controller steered from mode 1 to mode 5's setpoints trips on high
    # reactor pressure after 21.7 h with seed 0 (docs/how-to/simulated-plant.md)
    with pytest.raises(PlantShutdownError, match="High Reactor Pressure") as info:
        simulate_tep(24.0, seed=0, mode=5, **SHORT)
    assert 20.0 < info.value.hours < 23.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode=7), "mode must be one of"),
    (dict(mode="mode0"), "mode must be one of"),
    (dict(disturbance="idv_29"), "disturbance must be"),
    (dict(disturbance=0), "disturbance must be"),
    (dict(disturbance="IDV(1)"), "disturbance must be"),
    (dict(hours=0), "hours must be"),
    (dict(hours=float("nan")), "hours must be"),
    (dict(hours=1.01), "multiples of 3 minutes"),
    (dict(control_interval=0.007), "must divide"),
    (dict(disturbance="idv_02", onset_hours=2.0), "onset_hours=2 must lie inside"),
    (dict(on_shutdown="ignore"), "on_shutdown must be"),
])
def test_bad_settings_are_refused_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_tep(**{"hours": 2.0, **SHORT, **kwargs})


def test_a_seed_of_another_kind_is_refused():
    with pytest.raises(TypeError, match="seed must be a non-negative int"):
        simulate_tep(1.0, seed=1.5, **SHORT)


def test_a_missing_simulator_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tep_studio", None)  # import tep_studio raises
    with pytest.raises(SimulatorMissingError, match=r'mola-ts\[sim\]'):
        simulate_tep(1.0, **SHORT)


def test_runs_are_cached_in_the_data_home_with_their_parameters(tmp_path):
    first = simulate_tep(0.5, seed=2, settle_hours=0.0, data_home=tmp_path)
    assert not first.attrs["cached"]
    files = sorted((tmp_path / "simulated" / "tep").iterdir())
    assert [f.suffix for f in files] == [".json", ".npz"]
    assert '"tep_studio"' in files[0].read_text()
    second = simulate_tep(0.5, seed=2, settle_hours=0.0, data_home=tmp_path)
    assert second.attrs["cached"]
    pd.testing.assert_frame_equal(second, first)
    third = simulate_tep(0.5, seed=6, settle_hours=0.0, data_home=tmp_path)  # other params
    assert not third.attrs["cached"]


def test_a_read_only_data_home_warns_and_still_returns_the_run(tmp_path):
    home = tmp_path / "home"
    home.write_text("a file where the cache folder should go")  # cannot hold folders
    with pytest.warns(UserWarning, match="not cached"):
        run = simulate_tep(0.5, seed=2, settle_hours=0.0, data_home=home)
    assert run.shape == (10, 52)


def test_settling_time_of_a_step_and_of_a_steady_run():
    index = pd.date_range("2000-01-01", periods=600, freq="3min")
    level = np.r_[np.linspace(50.0, 100.0, 200), np.full(400, 100.0)]
    run = pd.DataFrame({"x": level, "y": np.full(600, 7.0)}, index=index)
    # within 1.0 (0.5 * scale 2) of 100: the ramp gets there after ~196 rows, the window adds 1 h
    hours = settling_time(run, {"x": 2.0, "y": 1.0}, window_hours=1.0, tolerance=0.5,
                          final_hours=5.0)
    assert 9.0 < hours < 11.0
    # a larger scale (drift judged in larger units) settles earlier; only "x" is checked here
    assert settling_time(run, {"x": 20.0}, window_hours=1.0, tolerance=0.5,
                         final_hours=5.0) < hours - 1.5
    steady = pd.DataFrame({"x": np.full(600, 3.0)}, index=index)
    assert settling_time(steady, {"x": 1.0}, window_hours=1.0, final_hours=5.0) == \
        pytest.approx(0.95)
    drifting = pd.DataFrame({"x": np.linspace(0.0, 100.0, 600)}, index=index)
    assert np.isnan(settling_time(drifting, {"x": 1.0}, window_hours=1.0, final_hours=5.0))


def test_settling_time_refuses_missing_columns_and_bad_scales():
    run = pd.DataFrame({"x": np.ones(600)},
                       index=pd.date_range("2000-01-01", periods=600, freq="3min"))
    with pytest.raises(ValueError, match="missing"):
        settling_time(run, {"x": 1.0}, ["z"], final_hours=5.0)
    with pytest.raises(ValueError, match="no column with a positive scale"):
        settling_time(run, {"x": 0.0}, final_hours=5.0)
    with pytest.raises(ValueError, match="finite and > 0"):
        settling_time(run, {"x": np.nan}, ["x"], final_hours=5.0)
    with pytest.raises(ValueError, match="tolerance"):
        settling_time(run, {"x": 1.0}, tolerance=0.0, final_hours=5.0)
    with pytest.raises(ValueError, match="at least"):
        settling_time(run.iloc[:50], {"x": 1.0}, final_hours=5.0)


def test_the_command_line_writes_a_csv(tmp_path, capsys):
    out = tmp_path / "run.csv"
    assert main(["datasets", "simulate", "tep", "--hours", "0.5", "--settle", "0",
                 "--disturbance", "3", "--onset", "0.2", "--no-cache", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "10 rows x 52 columns" in text and "idv_03 from 0.2 h" in text
    frame = pd.read_csv(out, index_col="time", parse_dates=True)
    assert frame.shape == (10, 52) and list(frame.columns) == list(TEP_COLUMNS)


def test_the_plant_benchmark_runs_small(tmp_path):
    import argparse

    from mola_ts.bench.plant import run_bench

    args = argparse.Namespace(
        out=tmp_path / "out", models=["Residual", "PCA"], train_runs=2, train_hours=5.0,
        normal_runs=2, normal_hours=2.0, fault_hours=3.0, onset_hours=1.0,
        disturbances=["idv_01", "idv_06"], jobs=1, quick=False)
    tables = run_bench(args, verbose=False)
    far, det = tables["far"], tables["detection"]
    assert list(far["model"]) == ["Residual", "PCA"]
    assert (far["n_samples"] > 0).all() and far["far_pct"].between(0, 100).all()
    assert set(det["disturbance"]) == {"idv_01", "idv_06"} and len(det) == 4
    # a step in the A/C feed ratio is seen by both monitors within the two hours after it
    assert (det.loc[det["disturbance"] == "idv_01", "fdr_pct"] > 50).all()
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"far.csv", "detection.csv",
                                                               "summary.json"}
