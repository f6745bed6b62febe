"""A bounded load test on loopback: batches and single rows posted back to back to a real
uvicorn server for a fixed short time, concurrent posts serialised. It stops by itself and
asserts no timing (the figures are for ``mola-ts bench serve``)."""

from __future__ import annotations

import os
import threading

import pandas as pd
import pytest

pytest.importorskip("fastapi")
from serve_support import fitted_monitor_file, plant_run, running_server  # noqa: E402

from mola_ts.serve.app import create_app  # noqa: E402
from mola_ts.serve.loadbench import (  # noqa: E402
    RssSampler,
    measure_latency,
    measure_throughput,
    row_feed,
)
from mola_ts.serve.replay import ReplayClient, batch_json  # noqa: E402
from mola_ts.serve.service import MonitorService  # noqa: E402


def test_loopback_load_is_scored_in_full_and_stops_by_itself(tmp_path):
    service = MonitorService.open(fitted_monitor_file(tmp_path), tmp_path / "state")
    feed = row_feed(plant_run(500), pd.Timestamp("2030-01-01", tz="UTC"), pd.Timedelta("1s"))
    sampler = RssSampler(os.getpid(), interval=0.2)
    sampler.start()
    with running_server(create_app(service)) as url:
        client = ReplayClient(url)
        load = measure_throughput(client, feed, seconds=1.5, batch=100)
        latency = measure_latency(client, feed, n=40)
    sampler.done.set()
    assert load["rows"] == 100 * load["posts"] and load["posts"] >= 1
    assert service.store.count() == load["rows"] + 40  # every sample scored and stored once
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert sampler.samples and all(v > 0 for _, v in sampler.samples)
    service.close()


def test_concurrent_posts_are_serialised(tmp_path):
    service = MonitorService.open(fitted_monitor_file(tmp_path), tmp_path / "state")
    body = batch_json(plant_run(100).tz_localize(None))
    answers = []
    with running_server(create_app(service)) as url:
        def post():
            answers.append(ReplayClient(url).request("POST", "/samples", body))

        threads = [threading.Thread(target=post) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [code for code, _ in answers] == [200] * 6
    assert sorted(a["accepted"] for _, a in answers) == [0] * 5 + [100]  # scored once
    results = {str(a["results"]) for _, a in answers}
    assert len(results) == 1  # the repeats got the stored results of the one scored
    assert service.store.count() == 100
    service.close()


def test_the_replay_command_posts_a_csv_run_after_the_last_sample(tmp_path, capsys):
    from mola_ts.cli import main

    service = MonitorService.open(fitted_monitor_file(tmp_path), tmp_path / "state")
    run = plant_run(120, fault_at=60)
    run.to_csv(tmp_path / "run.csv")
    with running_server(create_app(service)) as url:
        assert main(["replay", str(tmp_path / "run.csv"), "--url", url, "--speed", "max",
                     "--batch", "25"]) == 0
        first = capsys.readouterr().out
        assert "ALARM raised" in first and "accepted=120" in first
        assert main(["replay", str(tmp_path / "run.csv"), "--url", url, "--speed", "max",
                     "--batch", "50", "--start", "continue", "--quiet"]) == 0
        capsys.readouterr()
        assert main(["replay", str(tmp_path / "run.csv"), "--url", url, "--speed", "max",
                     "--quiet"]) == 0  # the first run again: its stored results
        again = capsys.readouterr().out
        (run + 1.0).to_csv(tmp_path / "other.csv")
        refused = main(["replay", str(tmp_path / "other.csv"), "--url", url, "--speed", "max"])
    out = capsys.readouterr()
    assert "accepted=0 repeated=120" in again
    assert refused == 2 and "409" in out.err  # the same times with other values
    status = service.status()
    assert status["samples"] == 240
    assert status["last_time"] == (run.index[-1] + 120 * pd.Timedelta("3min")).isoformat()
    service.close()
