"""The service's HTTP API through the ASGI test client: every endpoint, every bad input (a 4xx
naming the problem, no state changed), the token on and off, the limits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from serve_support import COLUMNS, fitted_monitor_file, plant_run, rows  # noqa: E402

from mola_ts.monitor import ResidualMonitor  # noqa: E402
from mola_ts.serve.app import ServeConfig, create_app  # noqa: E402
from mola_ts.serve.inputs import read_tag_map  # noqa: E402
from mola_ts.serve.service import MonitorService, frame_results  # noqa: E402
from mola_ts.serve.store import StateDirError, decode_state, encode_state  # noqa: E402

TOKEN = "s3cret-token-for-tests-0123"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return fitted_monitor_file(tmp_path_factory.mktemp("model"))


@pytest.fixture
def service(model_file, tmp_path):
    svc = MonitorService.open(model_file, tmp_path / "state")
    yield svc
    svc.close()


@pytest.fixture
def client(service):
    return TestClient(create_app(service))


def _fingerprint(service):
    """What a refused request must not change: the rows, alarms and the stream state."""
    return (service.store.count(), service.store.alarms(), encode_state(service.stream.get_state()))


def test_posted_rows_get_exactly_the_stream_results(client, model_file):
    run = plant_run(300, fault_at=200)
    expected = ResidualMonitor.load(model_file).statistics(run)
    one = client.post("/samples", json=rows(run.iloc[:1])[0])
    many = client.post("/samples", json=rows(run.iloc[1:150]))
    wrapped = client.post("/samples", json={"rows": rows(run.iloc[150:200])})
    csv_body = "time," + ",".join(COLUMNS) + "\n" + "\n".join(
        f"{t.isoformat()}," + ",".join(repr(v) for v in r)
        for t, r in zip(run.index[200:], run.to_numpy()[200:].tolist(), strict=True))
    csv = client.post("/samples", content=csv_body, headers={"content-type": "text/csv"})
    results = []
    for answer in (one, many, wrapped, csv):
        assert answer.status_code == 200, answer.text
        results += answer.json()["results"]
    assert [r["seq"] for r in results] == list(range(300))
    scores = np.array([r["statistics"]["score"] for r in results])
    np.testing.assert_array_equal(scores, expected["score"].to_numpy())  # bit for bit
    assert [r["alarm"] for r in results] == expected["alarm"].tolist()
    assert results[0]["flags"]["warmup"] == 1 and results[5]["non_finite"] == []
    assert results[0]["time"] == "2024-01-01T00:00:00+00:00"


def test_times_are_utc_unless_a_zone_is_given(client):
    row = rows(plant_run(2))[0]
    row["time"] = "2024-01-01T01:00:00+01:00"
    assert client.post("/samples", json=row).json()["results"][0]["time"] == \
        "2024-01-01T00:00:00+00:00"
    row["time"] = "2024-01-01T00:03:00"  # no zone: UTC
    assert client.post("/samples", json=row).json()["results"][0]["time"] == \
        "2024-01-01T00:03:00+00:00"


def test_missing_values_are_held_and_flagged(client):
    run = plant_run(5)
    run.iloc[3, 1] = np.nan
    body = rows(run)
    body[4]["c"] = float("nan")  # the NaN literal of JSON too
    answer = client.post("/samples", content=json.dumps(body),
                         headers={"content-type": "application/json"}).json()["results"]
    assert answer[3]["flags"]["sensor_fault"] == 1 and answer[3]["missing_variables"] == ["b"]
    assert answer[4]["missing_variables"] == ["c"] and answer[2]["flags"]["sensor_fault"] == 0


def test_non_finite_statistics_are_null_with_a_flag():
    scored = pd.DataFrame({"score": [float("inf"), 2.0], "T2": [1.5, np.nan], "alarm": [1, 0],
                           "missing_variables": [(), ("a",)]})
    result, other = frame_results(3, ["t", "u"], scored)
    assert result["statistics"] == {"score": None, "T2": 1.5} and result["seq"] == 3
    assert other["non_finite"] == ["T2"] and other["missing_variables"] == ["a"]
    assert result["non_finite"] == ["score"] and result["alarm"] == 1
    json.dumps(result, allow_nan=False)  # valid strict JSON


def test_a_retried_batch_gets_its_stored_results(client, service):
    run = plant_run(60)
    first = client.post("/samples", json=rows(run.iloc[:40])).json()
    before = _fingerprint(service)
    again = client.post("/samples", json=rows(run.iloc[:40]))
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "repeated": 40, "results": first["results"]}
    assert _fingerprint(service) == before
    # a retry overlapping the accepted rows: the old ones repeated, the new ones scored
    both = client.post("/samples", json=rows(run.iloc[30:60])).json()
    assert (both["repeated"], both["accepted"]) == (10, 20)
    assert both["results"][:10] == first["results"][30:]
    assert [r["seq"] for r in both["results"]] == list(range(30, 60))


def test_conflicting_or_late_rows_get_409(client, service):
    run = plant_run(20)
    client.post("/samples", json=rows(run.iloc[::2]))
    before = _fingerprint(service)
    changed = rows(run.iloc[4:5])
    changed[0]["a"] += 1.0
    answer = client.post("/samples", json=changed)
    assert answer.status_code == 409 and "other values" in answer.json()["error"]
    late = client.post("/samples", json=rows(run.iloc[5:6]))  # between two accepted times
    assert late.status_code == 409 and "time order" in late.json()["error"]
    assert _fingerprint(service) == before


BAD_BODIES = [
    ("malformed JSON", b'{"time": "2024-01-01", ', "application/json", 400, "not valid JSON"),
    ("not rows", b"[1, 2]", "application/json", 422, "row object"),
    ("no rows", b"[]", "application/json", 422, "no rows"),
    ("no time", b'{"a": 1, "b": 2, "c": 3, "d": 4}', "application/json", 422, "no time"),
    ("bad time", b'{"time": "yesterday", "a": 1, "b": 2, "c": 3, "d": 4}', "application/json",
     422, "not an ISO-8601 time"),
    ("number time", b'{"time": 5, "a": 1, "b": 2, "c": 3, "d": 4}', "application/json", 422,
     "ISO-8601 string"),
    ("missing column", b'{"time": "2030-01-01", "a": 1, "b": 2, "c": 3}', "application/json",
     422, "missing columns ['d']"),
    ("unknown column", b'{"time": "2030-01-01", "a": 1, "b": 2, "c": 3, "d": 4, "e": 5}',
     "application/json", 422, "unknown columns ['e']"),
    ("text value", b'{"time": "2030-01-01", "a": "high", "b": 2, "c": 3, "d": 4}',
     "application/json", 422, "expected a number"),
    ("boolean value", b'{"time": "2030-01-01", "a": true, "b": 2, "c": 3, "d": 4}',
     "application/json", 422, "expected a number"),
    ("rows differ", b'[{"time": "2030-01-01", "a": 1, "b": 2, "c": 3, "d": 4}, '
                    b'{"time": "2030-01-02", "a": 1, "b": 2, "c": 3}]', "application/json", 422,
     "other keys"),
    ("out of order", b'[{"time": "2030-01-02", "a": 1, "b": 2, "c": 3, "d": 4}, '
                     b'{"time": "2030-01-01", "a": 1, "b": 2, "c": 3, "d": 4}]',
     "application/json", 422, "increasing time order"),
    ("repeated time", b'[{"time": "2030-01-02", "a": 1, "b": 2, "c": 3, "d": 4}, '
                      b'{"time": "2030-01-02", "a": 1, "b": 2, "c": 3, "d": 4}]',
     "application/json", 422, "increasing time order"),
    ("xml", b"<rows/>", "application/xml", 415, "unsupported content type"),
    ("csv header", b"when,a,b,c,d\n2030-01-01,1,2,3,4\n", "text/csv", 422, "time column"),
    ("csv cell", b"time,a,b,c,d\n2030-01-01,1,x,3,4\n", "text/csv", 422, "not a number"),
    ("csv fields", b"time,a,b,c,d\n2030-01-01,1,2,3\n", "text/csv", 422, "fields"),
    ("csv empty", b"", "text/csv", 422, "empty"),
    ("csv no rows", b"time,a,b,c,d\n", "text/csv", 422, "no rows"),
    ("csv binary", b"\xff\xfe\x00", "text/csv", 400, "not UTF-8"),
]


@pytest.mark.parametrize("what, body, ctype, status, message", BAD_BODIES,
                         ids=[b[0] for b in BAD_BODIES])
def test_every_bad_input_gets_a_clear_4xx_and_changes_nothing(client, service, what, body,
                                                              ctype, status, message):
    client.post("/samples", json=rows(plant_run(3)))
    before = _fingerprint(service)
    answer = client.post("/samples", content=body, headers={"content-type": ctype})
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert _fingerprint(service) == before


def test_the_nan_policy_raise_refuses_a_missing_value(model_file, tmp_path):
    service = MonitorService.open(model_file, tmp_path / "s", dropout={"missing": "raise"})
    client = TestClient(create_app(service))
    run = plant_run(4)
    client.post("/samples", json=rows(run.iloc[:2]))
    before = _fingerprint(service)
    bad = rows(run.iloc[2:])
    bad[1]["a"] = None
    answer = client.post("/samples", json=bad)
    assert answer.status_code == 422 and "missing='raise'" in answer.json()["error"]
    assert _fingerprint(service) == before  # the valid row before it was not scored either
    service.close()


def test_a_missing_value_before_any_valid_one_is_refused(client, service):
    row = rows(plant_run(1))[0]
    row["a"] = None
    answer = client.post("/samples", json=row)
    assert answer.status_code == 422 and "no value to hold" in answer.json()["error"]
    assert service.store.count() == 0 and service.stream.n_seen == 0


def test_size_and_row_limits(model_file, tmp_path):
    service = MonitorService.open(model_file, tmp_path / "s", max_rows=10)
    client = TestClient(create_app(service, ServeConfig(max_body_bytes=2000)))
    run = plant_run(30)
    big = client.post("/samples", json=rows(run))
    assert big.status_code == 413 and "limit of 2000" in big.json()["error"]
    many = client.post("/samples", content=b"time,a,b,c,d\n" + b"".join(
        f"{t.isoformat()},1,2,3,4\n".encode() for t in run.index[:11]),
        headers={"content-type": "text/csv"})
    assert many.status_code == 413 and "limit of 10 per request" in many.json()["error"]
    assert service.store.count() == 0
    service.close()


def test_rate_limit_answers_429_with_retry_after(service):
    client = TestClient(create_app(service, ServeConfig(rate=0.5, burst=2)))
    codes = [client.get("/health").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert int(client.get("/health").headers["retry-after"]) >= 1


ENDPOINTS = [("GET", "/"), ("GET", "/health"), ("GET", "/status"), ("GET", "/history"),
             ("GET", "/alarms"), ("GET", "/events"), ("GET", "/openapi.json"),
             ("GET", "/page/page.js"), ("POST", "/samples"), ("POST", "/alarms/1/acknowledge"),
             ("GET", "/alarms/1/contributions")]


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_with_a_token_every_endpoint_needs_it(service, method, path):
    client = TestClient(create_app(service, ServeConfig(token=TOKEN)))
    answer = client.request(method, path)
    assert answer.status_code == 401 and "access token" in answer.json()["error"]
    wrong = client.request(method, path, headers={"Authorization": "Bearer " + "x" * 27})
    assert wrong.status_code == 401


def test_with_a_token_the_right_one_opens_the_api_and_the_page(service):
    client = TestClient(create_app(service, ServeConfig(token=TOKEN)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/status", headers=auth).status_code == 200
    assert client.post("/samples", json=rows(plant_run(2)), headers=auth).status_code == 200
    page = client.get(f"/?token={TOKEN}")  # the page sets a cookie for its own requests
    assert page.status_code == 200 and "mola_ts_token" in page.headers["set-cookie"]
    assert client.get("/status").status_code == 200  # the cookie now
    assert TestClient(create_app(service, ServeConfig(token=TOKEN))).get(
        f"/status?token={TOKEN}").status_code == 401  # a query token only opens the page


def test_without_a_token_the_api_is_open(client):
    for path in ("/", "/health", "/status", "/alarms", "/history", "/openapi.json", "/docs",
                 "/page/page.js", "/page/page.css"):
        assert client.get(path).status_code == 200, path
    assert client.get("/page/secret.py").status_code == 404


def test_status_health_history_and_openapi(client):
    run = plant_run(200, fault_at=120)
    results = client.post("/samples", json=rows(run)).json()["results"]
    status = client.get("/status").json()
    assert status["samples"] == 200 and status["model"]["features"] == COLUMNS
    assert status["last_time"] == run.index[-1].isoformat()
    assert status["alarm_active"] == bool(results[-1]["alarm"])
    assert status["last_alarm"]["raised_seq"] >= 120
    assert client.get("/health").json() == {"status": "ok", "samples_seen": 200}
    full = client.get("/history", params={"start": run.index[0].isoformat()}).json()
    assert len(full["rows"]) == 200 and not full["decimated"]
    thin = client.get("/history", params={"start": run.index[0].isoformat(),
                                          "max_points": 20}).json()
    assert thin["decimated"] and len(thin["rows"]) == 20
    assert max(r["score"] for r in thin["rows"]) == max(r["score"] for r in full["rows"])
    part = client.get("/history", params={"start": run.index[10].isoformat(),
                                          "end": run.index[19].isoformat()}).json()
    assert [r["seq"] for r in part["rows"]] == list(range(10, 20))
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/samples", "/events", "/status", "/health", "/history", "/alarms"):
        assert path in paths


@pytest.mark.parametrize("query, message", [
    ({"start": "noon"}, "ISO-8601"), ({"max_points": 0}, "max_points"),
    ({"max_points": "many"}, "max_points"),
    ({"start": "2024-01-02", "end": "2024-01-01"}, "after end")])
def test_bad_history_queries_get_422(client, query, message):
    client.post("/samples", json=rows(plant_run(3)))
    answer = client.get("/history", params=query)
    assert answer.status_code == 422 and message in answer.json()["error"]


def test_alarms_acknowledgement_and_contributions(client):
    run = plant_run(300, fault_at=200)
    client.post("/samples", json=rows(run))
    alarms = client.get("/alarms").json()
    fault = [a for a in alarms if a["raised_seq"] >= 200][-1]  # the first after the onset
    ack = client.post(f"/alarms/{fault['id']}/acknowledge", params={"by": "ana"}).json()
    assert ack["acknowledged_by"] == "ana" and ack["acknowledged_at"]
    again = client.post(f"/alarms/{fault['id']}/acknowledge", params={"by": "bo"}).json()
    assert again["acknowledged_by"] == "ana"  # the first acknowledgement stays
    top = client.get(f"/alarms/{fault['id']}/contributions", params={"top": 2}).json()
    assert [v["variable"] for v in top["variables"]][0] == "a"  # the faulty variable
    assert len(top["variables"]) == 2 and top["rows_used"] == 200
    assert client.post("/alarms/999/acknowledge").status_code == 404
    assert client.get("/alarms/999/contributions").status_code == 404
    assert client.get("/alarms", params={"limit": 0}).status_code == 422
    assert client.get(f"/alarms/{fault['id']}/contributions",
                      params={"top": 0}).status_code == 422


def test_a_state_dir_of_another_model_is_refused(model_file, tmp_path):
    MonitorService.open(model_file, tmp_path / "s").close()
    other = ResidualMonitor(alpha=0.05, order=2).fit(plant_run(800, seed=3))
    other_file = other.save(tmp_path / "other.pt")
    with pytest.raises(StateDirError, match="written for another model"):
        MonitorService.open(other_file, tmp_path / "s")


def test_a_saved_stream_is_served_from_where_it_stood(model_file, tmp_path):
    run = plant_run(40)
    stream = ResidualMonitor.load(model_file).stream()
    stream.update(run.iloc[:20].tz_localize(None))  # a stream fed naive times: UTC
    stream.save(tmp_path / "stream.pt")
    service = MonitorService.open(tmp_path / "stream.pt", tmp_path / "s")
    client = TestClient(create_app(service))
    late = client.post("/samples", json=rows(run.iloc[19:20]))
    assert late.status_code == 409
    answer = client.post("/samples", json=rows(run.iloc[20:])).json()["results"]
    expected = ResidualMonitor.load(model_file).statistics(run)["score"].to_numpy()[20:]
    np.testing.assert_array_equal([r["statistics"]["score"] for r in answer], expected)
    service.close()
    with pytest.raises(ValueError, match="its own sensor-dropout"):
        MonitorService.open(tmp_path / "stream.pt", tmp_path / "s2", dropout={"max_hold": 3})


def test_a_failed_commit_rolls_the_stream_back(service, monkeypatch):
    client = TestClient(create_app(service), raise_server_exceptions=False)
    run = plant_run(20)
    client.post("/samples", json=rows(run.iloc[:10]))
    before = _fingerprint(service)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(service.store, "commit_batch", broken)
    assert client.post("/samples", json=rows(run.iloc[10:])).status_code == 500
    assert _fingerprint(service) == before
    monkeypatch.undo()
    assert client.post("/samples", json=rows(run.iloc[10:])).json()["accepted"] == 10


def test_tag_mapping_renames_historian_names(model_file, tmp_path):
    (tmp_path / "tags.json").write_text(json.dumps({"TI-1.PV": "a", "FI-2.PV": "b"}))
    (tmp_path / "tags.csv").write_text("tag,column\nTI-1.PV,a\nFI-2.PV,b\n")
    tags = read_tag_map(tmp_path / "tags.json")
    assert tags == read_tag_map(tmp_path / "tags.csv")
    service = MonitorService.open(model_file, tmp_path / "s", tags=tags)
    client = TestClient(create_app(service))
    row = rows(plant_run(1))[0]
    row["TI-1.PV"], row["FI-2.PV"] = row.pop("a"), row.pop("b")
    assert client.post("/samples", json=row).status_code == 200
    service.close()
    (tmp_path / "bad.json").write_text('{"x": "a", "y": "a"}')
    with pytest.raises(ValueError, match="same column"):
        read_tag_map(tmp_path / "bad.json")


def test_the_state_codec_is_exact():
    state = {"engine": {"history": np.array([[0.1, np.nextafter(1, 2)]]), "smooth": 1 / 3,
                        "pairs": [(np.arange(3), np.float64(2.5))], "inf": float("inf")},
             "n_seen": 7, "last_time": None, "ok": True}
    back = decode_state(encode_state(state))
    assert back["engine"]["history"].tobytes() == state["engine"]["history"].tobytes()
    assert back["engine"]["smooth"] == 1 / 3 and back["engine"]["inf"] == float("inf")
    assert isinstance(back["engine"]["pairs"][0], tuple) and back["n_seen"] == 7


def test_serve_refuses_to_open_to_the_network_without_a_token(model_file, monkeypatch, capsys):
    from mola_ts.cli import main

    monkeypatch.delenv("MOLA_TS_SERVE_TOKEN", raising=False)
    assert main(["serve", str(model_file), "--host", "0.0.0.0"]) == 2
    assert "needs an access token" in capsys.readouterr().err
    monkeypatch.setenv("MOLA_TS_SERVE_TOKEN", "short")
    assert main(["serve", str(model_file), "--host", "0.0.0.0"]) == 2
    assert "at least 16 characters" in capsys.readouterr().err


def test_history_of_an_empty_service(client):
    assert client.get("/history").json() == {"rows": [], "decimated": False}
    assert client.get("/status").json()["last_time"] is None


def test_events_push_every_row_and_each_alarm_change(service):
    import http.client
    import threading

    from serve_support import running_server

    from mola_ts.serve.replay import ReplayClient

    run = plant_run(260, fault_at=200)
    with running_server(create_app(service)) as url:
        port = int(url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/events")
        stream = conn.getresponse()
        assert stream.status == 200 and stream.getheader("content-type").startswith(
            "text/event-stream")
        stream.readline()  # the retry line: subscribed from here on
        poster = threading.Thread(target=lambda: ReplayClient(url).request(
            "POST", "/samples", json.dumps({"rows": rows(run)}).encode()))
        poster.start()
        events = []
        while len([e for e in events if e["type"] == "row"]) < len(run):
            line = stream.readline().decode()
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
        poster.join()
        conn.close()
    scored = [e for e in events if e["type"] == "row"]
    assert [e["seq"] for e in scored] == list(range(len(run)))
    raised = [e for e in events if e["type"] == "alarm" and e["state"] == "raised"]
    stored = service.store.alarms(limit=1000)
    assert len(raised) == len(stored) and raised[-1]["id"] == stored[0]["id"]
    assert all(e["limit"] == scored[0]["limit"] for e in scored)


def test_cors_is_off_unless_origins_are_given(service):
    asked = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "GET"}
    closed = TestClient(create_app(service)).options("/status", headers=asked)
    assert "access-control-allow-origin" not in closed.headers
    opened = TestClient(create_app(service, ServeConfig(
        cors_origins=("http://elsewhere.example",)))).get("/status", headers=asked)
    assert opened.headers["access-control-allow-origin"] == "http://elsewhere.example"


def test_replay_sources_and_speeds():
    from mola_ts.serve.replay import load_source, parse_speed, shift_times

    assert parse_speed("60x") == 60.0 and parse_speed("2.5") == 2.5
    assert parse_speed("max") == float("inf")
    for bad in ("fast", "0x", "-3"):
        with pytest.raises(ValueError, match="speed"):
            parse_speed(bad)
    run = load_source("tep:4")
    assert run.shape == (960, 52)
    moved = shift_times(run.iloc[:3], pd.Timestamp("2024-05-01T12:00:00Z"))
    assert moved.index[1] == pd.Timestamp("2024-05-01T12:03:00Z")
    assert run.index[0] == pd.Timestamp("2000-01-01")  # the source is not changed
    with pytest.raises(ValueError, match="tep:NN"):
        load_source("tep:x")
    with pytest.raises(FileNotFoundError, match="neither a file"):
        load_source("no/such/run.csv")


def test_replay_source_sim_runs_the_simulator(tmp_path, monkeypatch):
    """``sim:DISTURBANCE`` is a simulated run: the disturbance, its onset and the seed reach
    the simulator; ``sim:normal`` has none."""
    pytest.importorskip("tep_studio", reason="the sim extra (tep-studio) is installed with dev")
    from mola_ts.data import TEP_COLUMNS
    from mola_ts.serve.replay import load_source

    monkeypatch.setenv("MOLA_TS_DATA", str(tmp_path))  # simulated runs are cached there
    normal = load_source("sim:normal", hours=1.0, seed=2, data_home=tmp_path)
    assert list(normal.columns) == list(TEP_COLUMNS) and len(normal) == 20
    assert isinstance(normal.index, pd.DatetimeIndex)
    again = load_source("sim:none", hours=1.0, seed=2, data_home=tmp_path)
    pd.testing.assert_frame_equal(normal, again)
    step = load_source("sim:idv_01", hours=1.0, onset=0.25, seed=2, data_home=tmp_path)
    assert step.shape == normal.shape
    pd.testing.assert_frame_equal(step.iloc[:5], normal.iloc[:5])  # before the onset
    assert not np.allclose(step.iloc[-5:].to_numpy(), normal.iloc[-5:].to_numpy())
    with pytest.raises(ValueError, match="idv_99"):
        load_source("sim:idv_99", hours=1.0, data_home=tmp_path)
