"""``mola-ts serve`` and ``mola-ts replay``: their arguments and runners.

Building the arguments imports nothing heavy (no FastAPI, no torch); the runners import what
they need when they run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_serve_arguments", "run_serve", "add_replay_arguments", "run_replay"]


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_file", type=Path,
                   help="a saved monitor (ResidualMonitor, MOLAMonitor, PCA/DPCA) or stream")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--state-dir", type=Path, default=None,
                   help="SQLite history and stream state (default: MODEL_FILE.state/)")
    p.add_argument("--missing", choices=["hold", "raise"], default=None,
                   help="the stream's sensor-dropout policy (default hold)")
    p.add_argument("--max-hold", type=int, default=None,
                   help="samples a missing variable may be held (default 10)")
    p.add_argument("--on-stale", choices=["flag", "raise"], default=None,
                   help="what an unmonitorable sample gets (default flag)")
    p.add_argument("--tags", type=Path, default=None,
                   help="tag mapping file (JSON object or CSV tag,column): historian names")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding the access token (else $MOLA_TS_SERVE_TOKEN)")
    p.add_argument("--require-token", action="store_true",
                   help="require the token on localhost too")
    p.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body")
    p.add_argument("--max-rows", type=int, default=10_000, help="most rows per request")
    p.add_argument("--rate", type=float, default=2000.0,
                   help="requests per second per client (0: no limit)")
    p.add_argument("--burst", type=int, default=4000, help="burst of the rate limit")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="an origin allowed by CORS (repeatable; default: CORS off)")
    p.add_argument("--log-level", default="warning", help="uvicorn's log level")


def run_serve(args: argparse.Namespace) -> int:
    from .auth import TOKEN_ENV, is_loopback, read_token

    token = read_token(args.token_file)
    if token is None and (args.require_token or not is_loopback(args.host)):
        raise ValueError(f"binding to {args.host} needs an access token: set {TOKEN_ENV} or "
                         "give --token-file (the service refuses to run open to the network)")
    try:
        import uvicorn

        from .app import ServeConfig, create_app
    except ImportError as exc:
        raise ImportError(f"mola-ts serve needs the serve extra: pip install "
                          f"'mola-ts[serve]' ({exc})") from None
    from .inputs import read_tag_map
    from .service import MonitorService

    tags = read_tag_map(args.tags) if args.tags else None
    state_dir = args.state_dir or args.model_file.with_name(args.model_file.name + ".state")
    dropout = {"missing": args.missing, "max_hold": args.max_hold, "on_stale": args.on_stale}
    service = MonitorService.open(args.model_file, state_dir, dropout=dropout, tags=tags,
                                  max_rows=args.max_rows)
    config = ServeConfig(token=token, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                         rate=args.rate, burst=args.burst,
                         cors_origins=tuple(args.cors_origin))
    status = service.status()
    print(f"mola-ts serve: {status['model']['monitor_class']} on http://{args.host}:{args.port}"
          f"/ ({status['samples']} samples in {state_dir}"
          f"{', token required' if token else ''})", flush=True)
    try:
        uvicorn.run(create_app(service, config), host=args.host, port=args.port, workers=1,
                    log_level=args.log_level)
    finally:
        service.close()
    return 0


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a CSV file (first column the time), tep:NN (Braatz test "
                                  "run of fault NN) or sim:DISTURBANCE (e.g. sim:idv_01)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    p.add_argument("--speed", default="60x", help="times real time, e.g. 60x; max: no pacing")
    p.add_argument("--batch", type=int, default=1, help="rows per post")
    p.add_argument("--start", default="data",
                   help="time of the first row: data (as recorded), now, continue (after the "
                        "service's last sample) or an ISO-8601 time")
    p.add_argument("--hours", type=float, default=48.0, help="sim: hours simulated")
    p.add_argument("--onset", type=float, default=8.0, help="sim: hours before the disturbance")
    p.add_argument("--seed", type=int, default=0, help="sim: the simulator's seed")
    p.add_argument("--retry-seconds", type=float, default=60.0,
                   help="how long to resend a batch while the service is down")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding the access token (else $MOLA_TS_SERVE_TOKEN)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")


def run_replay(args: argparse.Namespace) -> int:
    import pandas as pd

    from .auth import TOKEN_ENV
    from .replay import ReplayClient, load_source, parse_speed, replay, shift_times

    speed = parse_speed(args.speed)
    token = None
    if args.token_file is not None:
        token = args.token_file.read_text(encoding="utf-8").splitlines()[0].strip()
    elif os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV].strip()
    client = ReplayClient(args.url, token)
    frame = load_source(args.source, hours=args.hours, onset=args.onset, seed=args.seed)
    start = None
    if args.start == "now":
        start = pd.Timestamp.now(tz="UTC").floor("s")
    elif args.start == "continue":
        code, status = client.request("GET", "/status")
        if code != 200:
            raise ValueError(f"GET /status answered {code}: {status}")
        last = status.get("last_time")
        step = frame.index[1] - frame.index[0] if len(frame) > 1 else pd.Timedelta("3min")
        start = pd.Timestamp(last) + step if last else pd.Timestamp.now(tz="UTC").floor("s")
    elif args.start != "data":
        start = pd.Timestamp(args.start)
    frame = shift_times(frame, start)

    def report(answer: dict) -> None:
        if args.quiet:
            return
        for row in answer["results"]:
            if row["alarm"] != report.alarm:
                report.alarm = row["alarm"]
                word = "ALARM raised" if row["alarm"] else "alarm cleared"
                print(f"{row['time']}  {word} (score {row['statistics'].get('score')})",
                      flush=True)

    report.alarm = 0
    print(f"replaying {len(frame)} rows of {args.source} to {args.url} at {args.speed}",
          flush=True)
    summary = replay(frame, client, speed=speed, batch=args.batch,
                     retry_seconds=args.retry_seconds, report=report)
    print(" ".join(f"{k}={v}" for k, v in summary.items()), file=sys.stdout)
    return 0
