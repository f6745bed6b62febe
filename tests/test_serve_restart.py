"""Durability: a stopped or killed (-9) service resumes with bit-identical statistics, no
sample lost, none counted twice, and a retried batch gets its stored results."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from serve_support import fitted_monitor_file, free_port, plant_run, rows  # noqa: E402

from mola_ts.monitor import ResidualMonitor  # noqa: E402
from mola_ts.serve.app import create_app  # noqa: E402
from mola_ts.serve.loadbench import replay_with_kills, stored_results  # noqa: E402
from mola_ts.serve.service import MonitorService  # noqa: E402


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return fitted_monitor_file(tmp_path_factory.mktemp("model"))


def _post_all(client, frame, batch):
    out = []
    for start in range(0, len(frame), batch):
        answer = client.post("/samples", json=rows(frame.iloc[start:start + batch]))
        assert answer.status_code == 200, answer.text
        out += answer.json()["results"]
    return out


def test_a_restarted_service_continues_exactly_and_answers_a_retry(model_file, tmp_path):
    run = plant_run(400, fault_at=300)
    # uninterrupted: one service takes the whole run
    whole = MonitorService.open(model_file, tmp_path / "whole")
    uninterrupted = _post_all(TestClient(create_app(whole)), run, 40)
    whole.close()
    # interrupted: stopped after 160 rows (its process gone), a new one opens the directory
    first = MonitorService.open(model_file, tmp_path / "cut")
    last_batch = rows(run.iloc[120:160])
    before = _post_all(TestClient(create_app(first)), run.iloc[:160], 40)
    first.close()
    second = MonitorService.open(model_file, tmp_path / "cut")
    client = TestClient(create_app(second))
    retry = client.post("/samples", json=last_batch)  # its answer was lost: sent again
    assert retry.status_code == 200
    assert retry.json() == {"accepted": 0, "repeated": 40, "results": before[120:160]}
    after = _post_all(client, run.iloc[160:], 40)
    assert before + after == uninterrupted  # every statistic, flag and seq, bit for bit
    assert client.get("/status").json()["samples"] == 400
    alarms = [(a["raised_seq"], a["cleared_seq"]) for a in second.alarms(limit=1000)]
    whole = MonitorService.open(model_file, tmp_path / "whole")
    assert alarms == [(a["raised_seq"], a["cleared_seq"]) for a in whole.alarms(limit=1000)]
    second.close()
    whole.close()
    expected = ResidualMonitor.load(model_file).statistics(run)["score"].to_numpy()
    np.testing.assert_array_equal([r["statistics"]["score"] for r in after],
                                  expected[160:])


def test_an_acknowledgement_survives_a_restart(model_file, tmp_path):
    service = MonitorService.open(model_file, tmp_path / "s")
    client = TestClient(create_app(service))
    client.post("/samples", json=rows(plant_run(300, fault_at=200)))
    alarm = client.get("/alarms").json()[0]
    client.post(f"/alarms/{alarm['id']}/acknowledge", params={"by": "ana"})
    service.close()
    again = MonitorService.open(model_file, tmp_path / "s")
    assert again.alarms()[0]["acknowledged_by"] == "ana"
    assert again.status()["alarm_active"] == bool(alarm["cleared_seq"] is None)
    again.close()


@pytest.mark.slow
def test_kill_9_during_a_replay_loses_nothing(model_file, tmp_path):
    """A real ``mola-ts serve`` process killed (-9) at a random moment of a replay and
    restarted; the replay resends what was not answered."""
    run = plant_run(1500, fault_at=1000).tz_localize(None)
    report = replay_with_kills(model_file, tmp_path / "state", run, free_port(), kills=1,
                               batch=5, seed=1)
    assert report["kills"] == 1
    assert report["stored"] == len(run) and report["seqs_contiguous"]
    assert report["bit_identical"], report
    assert "score" in report["columns_compared"]
    stored = stored_results(tmp_path / "state")
    assert len({r["time"] for r in stored}) == len(run)  # no time twice
    json.dumps(report)
