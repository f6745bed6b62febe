"""Who may talk to the service, and how much: the access token and the rate limit.

- The service binds to localhost by default. Bound to any other address it needs a token,
  read from the environment variable :data:`TOKEN_ENV` or a file, and every request must
  carry it: ``Authorization: Bearer TOKEN``, or the ``mola_ts_token`` cookie the page gets
  when it is opened once as ``/?token=TOKEN`` (a browser's EventSource cannot send headers).
- A token bucket per client address limits requests per second (429 with ``Retry-After``).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
import time
from pathlib import Path

__all__ = ["TOKEN_ENV", "COOKIE", "is_loopback", "read_token", "token_matches", "RateLimiter"]

TOKEN_ENV = "MOLA_TS_SERVE_TOKEN"
COOKIE = "mola_ts_token"
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the service on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | Path | None = None) -> str | None:
    """The token from ``token_file`` (its first line) or else :data:`TOKEN_ENV`; None when
    neither is set. A token shorter than 16 characters is refused."""
    token = None
    if token_file is not None:
        path = Path(token_file)
        if not path.is_file():
            raise FileNotFoundError(f"token file {path} does not exist")
        lines = path.read_text(encoding="utf-8").splitlines()
        token = lines[0].strip() if lines else ""
    elif os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV].strip()
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the access token must have at least {MIN_TOKEN_LENGTH} characters, "
                         f"got {len(token)} (e.g. python -c 'import secrets; "
                         "print(secrets.token_urlsafe(24))')")
    return token


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a presented token with the expected one."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


class RateLimiter:
    """A token bucket per client: ``rate`` requests per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int):
        if rate <= 0 or burst < 1:
            raise ValueError(f"the rate limit needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst = float(rate), int(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> float:
        """0 when the request may pass, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > 10_000:  # forget idle clients
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
            return (1.0 - tokens) / self.rate
