"""A FAULT INJECTOR for tests: an HTTP reverse proxy in front of the AWS emulator that misbehaves on purpose.

A real network cannot be told "answer 30 % of EC2 calls with RequestLimitExceeded" or "let AWS create the
session, then lose the answer". This proxy can, so the operator's retries and idempotency are put to the proof
against the failures AWS clients meet in production:

- `throttle_ratio`: that fraction of EC2 calls is answered by the proxy itself with HTTP 503 and EC2's
  `RequestLimitExceeded` error body; the emulator never sees them.
- `drop_response_for` (a set of EC2 actions, e.g. {"CreateTrafficMirrorSession"}) with `drop_ratio`: the request
  is forwarded and completed by the emulator (AWS did the work), but the response is thrown away and the client's
  connection closed, so the caller sees a connection error and cannot know whether the create happened.
- `rate_limits` (a scale, 1.0 = AWS's defaults; None = off): EC2's documented per-API token buckets
  (`trafficmirror_testbed.ec2_throttling`). A call that finds its API's bucket empty is answered with HTTP 503
  and `RequestLimitExceeded`, as EC2 does, and counted in `rate_limited` (and `throttled`).
- `record_calls`: every EC2 call is kept in `call_log` (time, action, its query parameters, the verdict), so a
  test can count calls per resource ID or ClientToken.

Decisions come from one seeded RNG, drawn in arrival order, so a run is repeatable up to thread scheduling.
Every EC2 call is counted per action (`calls`), and the faults too (`throttled`, `dropped`).

From pytest:  `with FaultProxy(emulator.endpoint_url, seed=7) as proxy: ...` then point the client's
`AWS_ENDPOINT_URL` at `proxy.endpoint_url` and flip the switches at run time with `proxy.configure(...)`.
From a script or a shell: `python -m trafficmirror_testbed.faultproxy --upstream URL --rate-limits 1.0` prints
`faultproxy ready on http://...`; GET /_faultproxy/counters answers the counters as JSON.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import random
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trafficmirror_testbed.ec2_throttling import Ec2RateLimits

THROTTLE_STATUS = 503
# What EC2 answers when an account's API request rate is exceeded [EC2 API "Request throttling"].
THROTTLE_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    "</Error></Errors><RequestID>{request_id}</RequestID></Response>"
)
COUNTERS_PATH = "/_faultproxy/counters"
READY_MARKER = "faultproxy ready on "
# Not forwarded either way: they describe one hop, not the message.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer (a killed operator) is part of the game, not an error to print.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass(frozen=True)
class Call:
    """One EC2 call as the proxy saw it: when (time.monotonic()), which action, its parameters, the verdict."""

    at: float
    action: str
    params: dict[str, str]
    verdict: str  # "forward" | "throttle" | "rate-limit" | "drop"


class FaultProxy:
    """A threaded reverse proxy to `upstream` (the emulator's endpoint URL) that injects AWS faults on demand."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_timeout: float = 60.0,
        rate_limits: float | None = None,
        record_calls: bool = False,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port or 80
        self.upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        # The switches; change them with configure() (or directly: each is read under the lock).
        self.throttle_ratio = 0.0
        self.drop_response_for: set[str] = set()
        self.drop_ratio = 1.0
        self.rate_limits: Ec2RateLimits | None = Ec2RateLimits(rate_limits) if rate_limits else None
        self.record_calls = record_calls
        # What was seen: EC2 actions → number of calls, of calls throttled (either way), of calls refused by the
        # emulated token buckets, of responses dropped; and, when recording, every call.
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.call_log: list[Call] = []
        self._server = _Server((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- switches and counters -----------------------------------------------------------------------------
    def configure(
        self,
        *,
        throttle_ratio: float | None = None,
        drop_response_for: Iterable[str] | None = None,
        drop_ratio: float | None = None,
        rate_limits: float | bool | None = None,
        record_calls: bool | None = None,
    ) -> None:
        """Change the faults at run time; what is not named stays as it is.

        `rate_limits`: a scale of AWS's default buckets (True = 1.0) switches the emulated buckets on, afresh (full);
        False switches them off."""
        for name, ratio in (("throttle_ratio", throttle_ratio), ("drop_ratio", drop_ratio)):
            if ratio is not None and not 0.0 <= ratio <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], not {ratio}")
        with self._lock:
            if throttle_ratio is not None:
                self.throttle_ratio = throttle_ratio
            if drop_response_for is not None:
                self.drop_response_for = set(drop_response_for)
            if drop_ratio is not None:
                self.drop_ratio = drop_ratio
            if rate_limits is not None:
                scale = 1.0 if rate_limits is True else float(rate_limits)
                self.rate_limits = Ec2RateLimits(scale) if rate_limits is not False and scale > 0 else None
            if record_calls is not None:
                self.record_calls = record_calls

    def heal(self) -> None:
        """No more faults: every call is forwarded and answered (the emulated rate limits stay as they are)."""
        self.configure(throttle_ratio=0.0, drop_response_for=())

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.throttled.clear()
            self.rate_limited.clear()
            self.dropped.clear()
            self.call_log.clear()

    def total_calls(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def counters(self) -> dict[str, dict[str, int]]:
        """A consistent copy of the counters: {"calls": {action: n}, "throttled": {...}, "rate_limited": {...},
        "dropped": {...}}."""
        with self._lock:
            return {
                "calls": dict(self.calls),
                "throttled": dict(self.throttled),
                "rate_limited": dict(self.rate_limited),
                "dropped": dict(self.dropped),
            }

    def calls_since(self, start: float) -> list[Call]:
        """The recorded calls that arrived at or after `start` (a time.monotonic() value)."""
        with self._lock:
            return [c for c in self.call_log if c.at >= start]

    # -- the decisions -------------------------------------------------------------------------------------
    def _decide(self, action: str | None, params: dict[str, str]) -> tuple[str, str]:
        """("throttle" | "rate-limit" | "drop" | "forward", a request ID) for one call; non-EC2 requests are only
        forwarded."""
        with self._lock:
            request_id = "%08x-%04x-%04x-%04x-%012x" % tuple(  # noqa: UP031
                self._rng.getrandbits(bits) for bits in (32, 16, 16, 16, 48)
            )
            if action is None:
                return "forward", request_id
            verdict = self._verdict(action, params)
            if self.record_calls:
                self.call_log.append(Call(time.monotonic(), action, params, verdict))
            return verdict, request_id

    def _verdict(self, action: str, params: dict[str, str]) -> str:
        self.calls[action] += 1
        if self.throttle_ratio and self._rng.random() < self.throttle_ratio:
            self.throttled[action] += 1
            return "throttle"
        if self.rate_limits is not None and not self.rate_limits.allow(action, params):
            self.throttled[action] += 1
            self.rate_limited[action] += 1
            return "rate-limit"
        if action in self.drop_response_for and self._rng.random() < self.drop_ratio:
            self.dropped[action] += 1
            return "drop"
        return "forward"

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects of AWS
            server_version = "trafficmirror-faultproxy"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the counters say what happened; a line per call would drown the test output

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.path.startswith(COUNTERS_PATH):
                    payload = json.dumps(proxy.counters(), sort_keys=True).encode()
                    self._reply(200, [("Content-Type", "application/json")], payload)
                    return
                params = _params(self.path, self.headers.get("Content-Type"), body)
                verdict, request_id = proxy._decide(params.get("Action"), params)
                if verdict in ("throttle", "rate-limit"):
                    payload = THROTTLE_BODY.format(request_id=request_id).encode()
                    self._reply(THROTTLE_STATUS, [("Content-Type", "text/xml;charset=UTF-8")], payload)
                    return
                try:
                    status, headers, payload = self._forward(body)
                except OSError as error:
                    self._reply(502, [("Content-Type", "text/plain")], f"faultproxy: upstream failed: {error}".encode())
                    return
                if verdict == "drop":
                    # The emulator did the work; the caller never hears of it.
                    self.close_connection = True
                    return
                self._reply(status, headers, payload)

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                connection = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=proxy.upstream_timeout
                )
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                    kept = [
                        (k, v) for k, v in response.getheaders() if k.lower() not in {*_HOP_BY_HOP, "content-length"}
                    ]
                    return response.status, kept, payload
                finally:
                    connection.close()

            def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in {"server", "date"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def _params(path: str, content_type: str | None, body: bytes) -> dict[str, str]:
    """The parameters of a query-protocol request (form body and query string), "Action" among them; {} for
    anything else."""
    query = urllib.parse.urlsplit(path).query
    fields = urllib.parse.parse_qs(query)
    if body and (content_type or "").startswith("application/x-www-form-urlencoded"):
        fields.update(urllib.parse.parse_qs(body.decode("utf-8", errors="replace")))
    return {key: values[0] for key, values in fields.items() if values}


def main(argv: list[str] | None = None) -> int:
    """Run a proxy until SIGTERM/SIGINT, e.g. with AWS's rate limits in front of an emulator for a benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upstream", required=True, help="the emulator's endpoint URL, http://host:port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rate-limits", type=float, default=None, metavar="SCALE", help="enforce EC2's token buckets (1.0: defaults)"
    )
    parser.add_argument("--throttle-ratio", type=float, default=0.0)
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, seed=args.seed, host=args.host, port=args.port, rate_limits=args.rate_limits)
    proxy.configure(throttle_ratio=args.throttle_ratio)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with proxy:
        print(f"{READY_MARKER}{proxy.endpoint_url}", flush=True)
        done.wait()
    print(json.dumps(proxy.counters(), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
