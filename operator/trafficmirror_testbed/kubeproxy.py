"""A FAULT INJECTOR for tests: a proxy in front of the kube-apiserver with two faults a real cluster has.

- A late watch (`lag`). When thousands of objects change at once, the apiserver and the operator's own
  event loop fall behind and the watch brings each change seconds after it was written. A client that writes
  an object and then acts on the next watch event it gets may act on a body from before its own write. Every
  byte of a watch response (`?watch=true`) is passed on `lag` seconds after it arrived, in order.
- A lost answer (`lose_answer`). An apiserver that stops (a restart, an upgrade, a failover) can apply a
  write and close the connection before its answer is sent: the client sees a dropped connection for a
  write that was made, and its retry meets the object already changed. The requests the predicate picks are
  passed on, and their connection is closed once the apiserver has answered, without the answer.

Every other request (GET, LIST, PATCH, ...) is passed through at once.

The client speaks plain HTTP to the proxy (`kubeconfig` writes a kubeconfig for it, with the control plane's
token); the proxy speaks TLS to the apiserver, trusting the control plane's CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from trafficmirror_testbed.kube import ADMIN_USER, ControlPlane, free_port, kubeconfig_text

# Hop-by-hop headers, and those that describe the upstream's encoding of a body the proxy re-encodes.
_NOT_FORWARDED = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "upgrade"}
)


# Which requests lose their answer: (method, path, content type) → whether this one does.
LoseAnswer = Callable[[str, str, str], bool]


class KubeFaultProxy:
    def __init__(self, plane: ControlPlane, lag: float = 0.0, lose_answer: LoseAnswer | None = None) -> None:
        self.plane = plane
        self.lag = lag
        self.lose_answer = lose_answer
        self.port = free_port()
        self.watch_bytes = 0  # bytes of watch streams passed on, late
        self.lost: list[tuple[str, str, str]] = []  # (method, path, content type) of each write made, answer dropped
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-fault-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(kubeconfig_text(self.url, str(self.plane.ca_file), self.plane.admin_token, user=ADMIN_USER))
        return path

    def start(self) -> KubeFaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    async def _start(self) -> None:
        context = ssl.create_default_context(cafile=str(self.plane.ca_file))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        # The open watch streams end first (their handlers are cancelled), so that the server's cleanup
        # has no handler left to wait on.
        handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        body = await request.read()
        watching = request.query.get("watch", "").lower() in ("true", "1")
        lose = self.lose_answer is not None and self.lose_answer(request.method, request.path, request.content_type)
        async with self._session.request(
            request.method, f"{self.plane.url}{request.rel_url}", headers=headers, data=body or None
        ) as upstream:
            answer_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _NOT_FORWARDED}
            if lose:
                await upstream.read()  # the apiserver has done it
                self.lost.append((request.method, request.path, request.content_type))
                assert request.transport is not None
                request.transport.abort()  # the client sees the connection drop, no answer
                return web.Response(status=502)  # never sent: the connection is gone
            if not watching:
                return web.Response(status=upstream.status, headers=answer_headers, body=await upstream.read())
            answer = web.StreamResponse(status=upstream.status, headers=answer_headers)
            await answer.prepare(request)
            await self._pass_late(upstream, answer)
            return answer

    async def _pass_late(self, upstream: aiohttp.ClientResponse, answer: web.StreamResponse) -> None:
        """Each chunk `lag` seconds after it arrived, in order; the stream ends when the upstream's does."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for chunk in upstream.content.iter_any():
                    await chunks.put((loop.time() + self.lag, chunk))
            except aiohttp.ClientError:
                pass  # the upstream went away (the proxy stops): the stream ends here
            finally:
                await chunks.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (item := await chunks.get()) is not None:
                due, chunk = item
                await asyncio.sleep(max(0.0, due - loop.time()))
                await answer.write(chunk)
                self.watch_bytes += len(chunk)
        except (ConnectionResetError, aiohttp.ClientConnectionError):
            pass  # the client went away (the operator stopped): so does its stream
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await reader
