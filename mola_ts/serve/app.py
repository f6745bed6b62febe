"""The web layer: a FastAPI application around one :class:`~.service.MonitorService`.

Endpoints: ``POST /samples`` (JSON or CSV rows -> each row's result), ``GET /events``
(server-sent events: every scored row, alarm change and acknowledgement), ``GET /status``,
``GET /health``, ``GET /history``, ``GET /alarms``, ``POST /alarms/{id}/acknowledge``,
``GET /alarms/{id}/contributions``, the operator page at ``/`` and the OpenAPI description
(``/openapi.json``, ``/docs``). FastAPI (on Starlette) and uvicorn are used because they are
maintained, small, asynchronous (server-sent events beside posts in one process) and describe
the API in OpenAPI from the code.

Every error is a JSON ``{"error": message}`` with a 4xx status; a request refused changes no
state. CORS is off unless origins are given.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .auth import COOKIE, RateLimiter, token_matches
from .inputs import InputError
from .service import MonitorService

__all__ = ["ServeConfig", "create_app", "PAGE_DIR"]

PAGE_DIR = Path(__file__).with_name("page")
_PAGE_FILES = {"page.js": "text/javascript", "page.css": "text/css"}


@dataclass(frozen=True)
class ServeConfig:
    """The service's limits and access settings.

    token : required on every request when set (see :mod:`.auth`).
    max_body_bytes : larger request bodies get 413.
    rate, burst : requests per second per client address (token bucket); 0 turns it off.
    cors_origins : origins allowed by CORS (empty: CORS off).
    event_queue : events held per slow subscriber before its stream is closed (it reconnects).
    """

    token: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    rate: float = 2000.0
    burst: int = 4000
    cors_origins: tuple[str, ...] = ()
    event_queue: int = 20_000


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Guard:
    """ASGI middleware: the access token and the rate limit, before any endpoint runs."""

    def __init__(self, app, config: ServeConfig):
        self.app, self.config = app, config
        self.limiter = RateLimiter(config.rate, config.burst) if config.rate > 0 else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        token = self.config.token
        if token is not None:
            header = request.headers.get("authorization", "")
            given = header[7:].strip() if header.lower().startswith("bearer ") else None
            if given is None:
                given = request.cookies.get(COOKIE)
            if given is None and request.url.path == "/":
                given = request.query_params.get("token")
            if not token_matches(token, given):
                return _error(401, "this service needs its access token: send "
                                   "'Authorization: Bearer TOKEN' (or open the page as "
                                   "/?token=TOKEN once)",
                              headers={"WWW-Authenticate": "Bearer"})
        if self.limiter is not None:
            client = request.client.host if request.client else "?"
            wait = self.limiter.allow(client)
            if wait > 0:
                return _error(429, f"too many requests: the limit is {self.config.rate:g} per "
                                   f"second (bursts of {self.config.burst})",
                              headers={"Retry-After": str(max(1, round(wait)))})
        return None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InputError(f"invalid Content-Length {declared!r}", status=400)
        if int(declared) > limit:
            raise InputError(f"the body has {int(declared)} bytes, more than the limit of "
                             f"{limit}: send smaller batches", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(f"the body is larger than the limit of {limit} bytes: send "
                             "smaller batches", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _sse(events: list[dict]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n"
                    .encode() for e in events)


def create_app(service: MonitorService, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI application serving ``service`` under ``config`` (default limits, no
    token)."""
    config = config or ServeConfig()
    app = FastAPI(title="mola-ts monitoring service",
                  description="Samples in, statistics, alarms and live control charts out.",
                  version=_version())
    app.state.service, app.state.config = service, config

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError):
        return _error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                 for e in exc.errors()]
        return _error(422, "; ".join(parts) or "invalid request")

    samples_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object"}, "example": {
            "rows": [{"time": "2024-05-01T12:00:00Z", "XMEAS(1)": 0.25}]}},
        "text/csv": {"schema": {"type": "string"},
                     "example": "time,XMEAS(1)\n2024-05-01T12:00:00Z,0.25\n"}}}}

    @app.post("/samples", openapi_extra=samples_body, summary="Score one or many samples")
    async def post_samples(request: Request) -> Response:
        """Each row's statistics, alarm and flags (non-finite numbers as null, named in
        ``non_finite``). Rows already accepted with equal values get their stored results
        (a retried batch); other rows at or before the last accepted time get 409."""
        body = await _read_body(request, config.max_body_bytes)
        answer = await run_in_threadpool(service.post_json, body,
                                         request.headers.get("content-type"))
        return Response(answer, media_type="application/json")

    @app.get("/events", summary="Server-sent events: rows, alarm changes, acknowledgements")
    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(_event_stream(service, config, request),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/status", summary="The model, the stream and the alarm state")
    async def status() -> dict[str, Any]:
        return await run_in_threadpool(service.status)

    @app.get("/health", summary="Liveness: 200 while the service answers")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "samples_seen": int(service.stream.n_seen)}

    @app.get("/history", summary="The chart's rows between two times (max score per bucket)")
    async def history(start: str | None = None, end: str | None = None,
                      max_points: int = Query(5000)) -> dict[str, Any]:
        return await run_in_threadpool(service.history, start, end, max_points)

    @app.get("/alarms", summary="The latest alarm episodes, newest first")
    async def alarms(limit: int = Query(50)) -> list[dict[str, Any]]:
        return await run_in_threadpool(service.alarms, limit)

    @app.post("/alarms/{alarm_id}/acknowledge", summary="Acknowledge an alarm")
    async def acknowledge(alarm_id: int, by: str = "operator") -> dict[str, Any]:
        return await run_in_threadpool(service.acknowledge, alarm_id, by)

    @app.get("/alarms/{alarm_id}/contributions",
             summary="The top variables driving an alarm (computed on demand)")
    async def contributions(alarm_id: int, top: int = Query(10),
                            rows: int = Query(200)) -> dict[str, Any]:
        return await run_in_threadpool(service.contributions, alarm_id, top, rows)

    @app.get("/", include_in_schema=False)
    async def page(request: Request) -> Response:
        response = FileResponse(PAGE_DIR / "index.html", media_type="text/html")
        given = request.query_params.get("token")
        if config.token is not None and given is not None:
            response.set_cookie(COOKIE, given, httponly=True, samesite="strict")
        return response

    @app.get("/page/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in _PAGE_FILES:
            return _error(404, f"no page file {name!r}")
        return FileResponse(PAGE_DIR / name, media_type=_PAGE_FILES[name])

    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(_Guard, config=config)
    return app


async def _event_stream(service: MonitorService, config: ServeConfig, request: Request):
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=config.event_queue)

    def put(events: list[dict]) -> None:
        try:
            queue.put_nowait(events)
        except asyncio.QueueFull:  # a subscriber too slow: end its stream, it reconnects
            queue.get_nowait()
            queue.put_nowait(None)

    def listener(events: list[dict]) -> None:
        loop.call_soon_threadsafe(put, events)

    service.subscribe(listener)
    try:
        yield b"retry: 2000\n: connected\n\n"
        while True:
            try:
                events = await asyncio.wait_for(queue.get(), timeout=15.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    break
                yield b": keep-alive\n\n"
                continue
            if events is None:
                break
            yield _sse(events)
    finally:
        service.unsubscribe(listener)


def _version() -> str:
    from .. import __version__

    return __version__
