"""A FAULT INJECTOR for tests: an HTTP reverse proxy in front of the AWS emulator that misbehaves on purpose.

A real network cannot be told "answer 30 % of EC2 calls with RequestLimitExceeded" or "let AWS create the
session, then lose the answer". This proxy can, so the operator's retries and idempotency are put to the proof
against the failures AWS clients meet in production:

- `throttle_ratio`: that fraction of EC2 calls is answered by the proxy itself with HTTP 503 and EC2's
  `RequestLimitExceeded` error body; the emulator never sees them.
- `drop_response_for` (a set of EC2 actions, e.g. {"CreateTrafficMirrorSession"}) with `drop_ratio`: the request
  is forwarded and completed by the emulator (AWS did the work), but the response is thrown away and the client's
  connection closed, so the caller sees a connection error and cannot know whether the create happened.

Decisions come from one seeded RNG, drawn in arrival order, so a run is repeatable up to thread scheduling.
Every EC2 call is counted per action (`calls`), and the faults too (`throttled`, `dropped`).

From pytest:  `with FaultProxy(emulator.endpoint_url, seed=7) as proxy: ...` then point the client's
`AWS_ENDPOINT_URL` at `proxy.endpoint_url` and flip the switches at run time with `proxy.configure(...)`.
"""

from __future__ import annotations

import http.client
import http.server
import random
import sys
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from typing import Any

THROTTLE_STATUS = 503
# What EC2 answers when an account's API request rate is exceeded [EC2 API "Request throttling"].
THROTTLE_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    "</Error></Errors><RequestID>{request_id}</RequestID></Response>"
)
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
        # What was seen: EC2 actions → number of calls, of calls throttled, of responses dropped.
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
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
    ) -> None:
        """Change the faults at run time; what is not named stays as it is."""
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

    def heal(self) -> None:
        """No more faults: every call is forwarded and answered."""
        self.configure(throttle_ratio=0.0, drop_response_for=())

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.throttled.clear()
            self.dropped.clear()

    def total_calls(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def counters(self) -> dict[str, dict[str, int]]:
        """A consistent copy of the counters: {"calls": {action: n}, "throttled": {...}, "dropped": {...}}."""
        with self._lock:
            return {"calls": dict(self.calls), "throttled": dict(self.throttled), "dropped": dict(self.dropped)}

    # -- the decisions -------------------------------------------------------------------------------------
    def _decide(self, action: str | None) -> tuple[str, str]:
        """("throttle" | "drop" | "forward", a request ID) for one call; non-EC2 requests are only forwarded."""
        with self._lock:
            request_id = "%08x-%04x-%04x-%04x-%012x" % tuple(  # noqa: UP031
                self._rng.getrandbits(bits) for bits in (32, 16, 16, 16, 48)
            )
            if action is None:
                return "forward", request_id
            self.calls[action] += 1
            if self.throttle_ratio and self._rng.random() < self.throttle_ratio:
                self.throttled[action] += 1
                return "throttle", request_id
            if action in self.drop_response_for and self._rng.random() < self.drop_ratio:
                self.dropped[action] += 1
                return "drop", request_id
            return "forward", request_id

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
                verdict, request_id = proxy._decide(_action(self.path, self.headers.get("Content-Type"), body))
                if verdict == "throttle":
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


def _action(path: str, content_type: str | None, body: bytes) -> str | None:
    """The EC2 action of a query-protocol request (form body or query string); None for anything else."""
    query = urllib.parse.urlsplit(path).query
    fields = urllib.parse.parse_qs(query)
    if body and (content_type or "").startswith("application/x-www-form-urlencoded"):
        fields.update(urllib.parse.parse_qs(body.decode("utf-8", errors="replace")))
    actions = fields.get("Action")
    return actions[0] if actions else None
