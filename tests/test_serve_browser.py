"""End to end in a real browser: the service, a replayed fault run and the operator page in
headless Chromium (the Debian ``chromium`` package driven by Playwright).

Run with ``python -m pytest -m browser tests/test_serve_browser.py`` after
``apt-get install -y chromium`` and ``pip install playwright`` (no ``playwright install``: the
system browser is used). Skipped when no chromium is found, unless
``MOLA_TS_REQUIRE_BROWSER=1`` (CI), which makes a missing browser a failure. The screenshot is
written to ``$MOLA_TS_TEST_ARTEFACTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("MOLA_TS_CHROMIUM") or shutil.which("chromium") or \
    shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("MOLA_TS_REQUIRE_BROWSER") == "1":
            pytest.fail("no chromium found and MOLA_TS_REQUIRE_BROWSER=1: apt-get install -y "
                        "chromium")
        pytest.skip("no chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def _artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MOLA_TS_TEST_ARTEFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_page_draws_the_chart_and_raises_the_alarm_after_the_onset(browser, tmp_path):
    pytest.importorskip("fastapi")
    from serve_support import running_server

    from mola_ts.data import load_tep
    from mola_ts.monitor import ResidualMonitor
    from mola_ts.serve.app import create_app
    from mola_ts.serve.replay import ReplayClient, replay
    from mola_ts.serve.service import MonitorService

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ResidualMonitor().fit(load_tep(0, "train")).save(tmp_path / "residual.pt")
    run = load_tep(4, "test").iloc[:400]  # fault 4 enters after sample 160 (8 h)
    service = MonitorService.open(tmp_path / "residual.pt", tmp_path / "state")
    with running_server(create_app(service)) as url:
        client = ReplayClient(url)
        normal = replay(run.iloc[:150], client, batch=50)
        assert normal["alarms_raised"] == 0
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('chart').dataset.points === '150'")
        assert page.inner_text("#banner-text") == "NORMAL"
        page.wait_for_selector("#connection.up")  # the event stream is open
        replay(run.iloc[150:], client, batch=10)  # the fault, live through the events
        page.wait_for_function("document.getElementById('banner-text').textContent === 'ALARM'",
                               timeout=30_000)
        page.wait_for_function("document.getElementById('chart').dataset.points === '400'")
        page.wait_for_selector("#contrib li")
        canvas = page.eval_on_selector("#chart", """c => {
            const ctx = c.getContext('2d');
            const y = Math.round(Number(c.dataset.limitY));
            const row = ctx.getImageData(0, y - 1, c.width, 3).data;
            let limitPixels = 0;
            for (let i = 0; i < row.length; i += 4)
                if (row[i] > 200 && row[i + 1] < 130 && row[i + 2] < 130) limitPixels++;
            const all = ctx.getImageData(0, 0, c.width, c.height).data;
            let linePixels = 0;
            for (let i = 0; i < all.length; i += 4)
                if (all[i + 2] > 200 && all[i] < 140) linePixels++;
            return {points: Number(c.dataset.points), limit: Number(c.dataset.limit),
                    limitY: y, height: c.height, limitPixels, linePixels};
        }""")
        detail = page.inner_text("#banner-detail")
        assert page.inner_text("#samples") == "400 samples"
        contributions = page.inner_text("#contrib")
        shot = _artefacts(tmp_path) / "serve_page.png"
        page.screenshot(path=str(shot), full_page=True)
        page.click("#ack")  # the operator acknowledges: stored, and the banner says so
        page.wait_for_function("document.getElementById('banner-detail').textContent"
                               ".includes('acknowledged by operator')")
        assert page.is_hidden("#ack")
        page.close()
    assert service.alarms()[0]["acknowledged_by"] == "operator"
    service.close()
    assert canvas["points"] == 400 and 0 < canvas["limitY"] < canvas["height"]
    assert canvas["limit"] == pytest.approx(service.stream.monitor.threshold_)
    assert canvas["limitPixels"] > 100  # the dashed limit line is drawn across the chart
    assert canvas["linePixels"] > 200  # the statistic's line
    raised = detail.split("since ")[1][:16]
    assert raised >= "2000-01-01 08:00"  # raised after the onset (sample 160)
    variables = [line.split()[0] for line in contributions.splitlines()]
    assert len(variables) == 8 and set(variables) <= set(run.columns)
    assert shot.stat().st_size > 10_000
