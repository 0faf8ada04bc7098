"""Capture files kept on the capture nodes (the agent's --output-dir, or its spool), read through the API
server: ``cat`` in the capture agent pod of the file's node, over the exec subresource's WebSocket.

Authorization is the API server's: ``pods/exec`` (get and create) and ``pods`` (list) in the agent's namespace, the
ClusterRole ``trafficmirror-pcap-reader``. Nothing but the user's kubeconfig is needed on their machine.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import ssl
import struct
import urllib.parse
from typing import Any, BinaryIO

from trafficmirror.capture import fetch
from trafficmirror.kubecapture.kube import Forbidden, KubeApi, KubeError, NotFound

AGENT_SELECTOR = "app.kubernetes.io/name=trafficmirror,app.kubernetes.io/component=capture"
AGENT_CONTAINER = "capture"
CHANNEL_PROTOCOL = "v4.channel.k8s.io"
STDOUT, STDERR, ERROR = 1, 2, 3
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class AgentPodFiles:
    """A ``fetch.Source`` over the capture nodes' files, one exec per file opened."""

    def __init__(self, api: KubeApi, agent_namespace: str) -> None:
        self.api = api
        self.agent_namespace = agent_namespace
        self._pods: dict[str, str] | None = None

    def agent_pods(self) -> dict[str, str]:
        """node name -> the running capture agent pod on it."""
        if self._pods is None:
            listed = self.api.get(
                f"/api/v1/namespaces/{urllib.parse.quote(self.agent_namespace)}/pods",
                {"labelSelector": AGENT_SELECTOR},
            )
            self._pods = {
                item["spec"]["nodeName"]: item["metadata"]["name"]
                for item in listed.get("items", [])
                if (item.get("status") or {}).get("phase") == "Running" and (item.get("spec") or {}).get("nodeName")
            }
        return self._pods

    def refs(self, namespace: str, session: str, locations: list[tuple[str, str]]) -> list[fetch.FileRef]:
        pods = self.agent_pods()
        missing = sorted({node for node, _ in locations if node not in pods})
        if missing:
            raise KubeError(
                404,
                f"no running capture agent pod in namespace {self.agent_namespace} on node(s) {', '.join(missing)}, "
                "which hold the files (--agent-namespace names the agent's namespace)",
                "list",
                "pods",
            )
        return [
            fetch.FileRef(
                namespace, session, os.path.basename(path), 0, fetch.start_of(os.path.basename(path)), f"{node}:{path}"
            )
            for node, path in locations
        ]

    def list(self, namespace: str | None = None, session: str | None = None) -> list[fetch.FileRef]:
        return []

    def open(self, ref: fetch.FileRef) -> BinaryIO:
        node, _, path = ref.location.partition(":")
        pod = self.agent_pods()[node]
        stream = ExecStream.open(self.api, self.agent_namespace, pod, AGENT_CONTAINER, ["cat", "--", path])
        return io.BufferedReader(stream, buffer_size=fetch.READ_CHUNK)  # type: ignore[return-value]


def exec_path(namespace: str, pod: str, container: str, command: list[str]) -> str:
    query = urllib.parse.urlencode(
        [("container", container), ("stdout", "true"), ("stderr", "true")] + [("command", c) for c in command]
    )
    return f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/pods/{urllib.parse.quote(pod)}/exec?{query}"


class ExecStream(io.RawIOBase):
    """The stdout of a command run in a pod: the exec subresource's WebSocket (channel protocol v4), read as
    a stream. stderr and the final status are kept: a failed command raises at the end of its output."""

    def __init__(self, sock: ssl.SSLSocket | socket.socket, what: str) -> None:
        self.sock = sock
        self.what = what
        self.pending = b""
        self.stderr = b""
        self.finished = False
        self.buffer = b""

    @classmethod
    def open(cls, api: KubeApi, namespace: str, pod: str, container: str, command: list[str]) -> ExecStream:
        path = exec_path(namespace, pod, container, command)
        url = urllib.parse.urlsplit(api.server)
        host, port = url.hostname or "localhost", url.port or (443 if url.scheme == "https" else 80)
        raw = socket.create_connection((host, port), timeout=60)
        sock: ssl.SSLSocket | socket.socket = (
            api.context.wrap_socket(raw, server_hostname=host) if url.scheme == "https" else raw
        )
        key = base64.b64encode(os.urandom(16)).decode()
        headers = {
            k: v for k, v in api.headers.items() if k.lower() not in ("accept", "connection", "upgrade", "content-type")
        }
        request = [
            f"GET {url.path.rstrip('/')}{path} HTTP/1.1",
            f"Host: {url.netloc}",
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Key: {key}",
            f"Sec-WebSocket-Protocol: {CHANNEL_PROTOCOL}",
            *(f"{k}: {v}" for k, v in headers.items()),
            "",
            "",
        ]
        sock.sendall("\r\n".join(request).encode())
        stream = cls(sock, f"pods/{pod} in {namespace}")
        status, body = stream._handshake()
        if status != 101:
            try:
                message = str(json.loads(body).get("message") or body.decode(errors="replace"))
            except ValueError:
                message = body.decode(errors="replace").strip()
            sock.close()
            kind = {403: Forbidden, 404: NotFound}.get(status, KubeError)
            raise kind(status, message, "create", "pods/exec")
        return stream

    def _handshake(self) -> tuple[int, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            return 0, head
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status != 101:
            length = int(headers.get("content-length", "0") or 0)
            while len(rest) < length:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            return status, rest
        self.buffer = rest
        return status, b""

    def _recv_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            if not chunk:
                raise KubeError(0, f"exec in {self.what}: the connection closed mid-frame", "create", "pods/exec")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._recv_exact(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._recv_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._recv_exact(8))[0]
        mask = self._recv_exact(4) if b1 & 0x80 else b""
        payload = self._recv_exact(length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _send_control(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def _message(self) -> bytes | None:
        """The next data message (fragments joined), answering pings; None at close."""
        parts: list[bytes] = []
        while True:
            fin, opcode, payload = self._frame()
            if opcode == OP_PING:
                self._send_control(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                return None
            parts.append(payload)
            if fin:
                return b"".join(parts)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self.pending and not self.finished:
            message = self._message()
            if message is None:
                self.finished = True
                break
            if not message:
                continue
            channel, data = message[0], message[1:]
            if channel == STDOUT:
                self.pending = data
            elif channel == STDERR:
                self.stderr += data[-4096:]
            elif channel == ERROR:
                self._check_status(data)
        n = min(len(buf), len(self.pending))
        buf[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def _check_status(self, data: bytes) -> None:
        try:
            status = json.loads(data)
        except ValueError:
            return
        if status.get("status") != "Success":
            detail = self.stderr.decode(errors="replace").strip() or status.get("message", "")
            raise KubeError(0, f"reading a file in {self.what}: {detail}", "create", "pods/exec")

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                self._send_control(OP_CLOSE, struct.pack("!H", 1000))
            self.sock.close()
        super().close()
