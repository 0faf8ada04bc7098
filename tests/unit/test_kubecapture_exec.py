"""Reading a file out of a capture agent pod: the exec WebSocket (channel protocol v4) as a byte stream, over
a real socket whose other end plays the API server's part with seeded random framing."""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
from typing import Any

import pytest

from trafficmirror.kubecapture.kube import Forbidden, KubeApi, KubeError
from trafficmirror.kubecapture.podfiles import ExecStream, exec_path


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def _server_stream(rng: random.Random, data: bytes, status: dict[str, Any], stderr: bytes = b"") -> bytes:
    """What the API server sends after 101: stdout in messages of random size, some fragmented, with
    pings and an empty message between, then stderr, the status on the error channel and a close."""
    out = b""
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 7, 125, 126, 4096, 65535, 65536, 70000])
        chunk, pos = data[pos : pos + size], pos + size
        message = b"\x01" + chunk
        if rng.random() < 0.3 and len(message) > 2:
            cut = rng.randrange(1, len(message))
            out += _frame(2, message[:cut], fin=False) + _frame(9, b"hb") + _frame(0, message[cut:])
        else:
            out += _frame(2, message)
        if rng.random() < 0.1:
            out += _frame(2, b"")
    if stderr:
        out += _frame(2, b"\x02" + stderr)
    out += _frame(2, b"\x03" + json.dumps(status).encode()) + _frame(8, struct.pack("!H", 1000))
    return out


class FakeApiServer:
    def __init__(self, response: bytes) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.request = b""
        self.client_frames = b""
        self.response = response
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            while b"\r\n\r\n" not in self.request:
                self.request += conn.recv(65536)
            # Dribble the response in random pieces: frame boundaries never line up with reads.
            rng = random.Random(len(self.response))
            pos = 0
            while pos < len(self.response):
                step = rng.randint(1, 9000)
                conn.sendall(self.response[pos : pos + step])
                pos += step
            conn.settimeout(2)
            try:
                while chunk := conn.recv(65536):
                    self.client_frames += chunk
            except OSError:
                pass

    def api(self) -> KubeApi:
        return KubeApi(
            f"http://127.0.0.1:{self.port}", {"Authorization": "Bearer t0ken", "Accept": "application/json"}, None
        )


UPGRADE = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"  # noqa: E501


@pytest.mark.parametrize("seed", range(6))
def test_a_files_bytes_come_through_whole_whatever_the_framing(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.choice([0, 1, 1000, 300_000]))
    server = FakeApiServer(UPGRADE + _server_stream(rng, data, {"metadata": {}, "status": "Success"}))
    stream = ExecStream.open(server.api(), "trafficmirror", "agent-x", "capture", ["cat", "--", "/f.pcapng"])
    received = b""
    while chunk := stream.read(rng.choice([1, 100, 65536])):
        received += chunk
    stream.close()
    server.thread.join(timeout=10)
    assert received == data
    request = server.request.decode()
    assert request.startswith(f"GET {exec_path('trafficmirror', 'agent-x', 'capture', ['cat', '--', '/f.pcapng'])} ")
    assert "Authorization: Bearer t0ken" in request and "Sec-WebSocket-Protocol: v4.channel.k8s.io" in request
    assert "command=cat&command=--&command=%2Ff.pcapng" in request
    # The client answered every ping and closed, in masked frames as RFC 6455 wants from a client.
    pings = server.response.count(_frame(9, b"hb"))
    assert _client_opcodes(server.client_frames) == [10] * pings + [8]


def _client_opcodes(data: bytes) -> list[int]:
    opcodes, pos = [], 0
    while pos < len(data):
        assert data[pos + 1] & 0x80, "a client frame without a mask"
        length = data[pos + 1] & 0x7F
        opcodes.append(data[pos] & 0x0F)
        pos += 2 + 4 + length
    return opcodes


def test_a_failed_command_raises_with_its_stderr() -> None:
    status = {"metadata": {}, "status": "Failure", "message": "command terminated with non-zero exit code"}
    body = _server_stream(random.Random(1), b"", status, stderr=b"cat: /gone.pcapng: No such file or directory\n")
    server = FakeApiServer(UPGRADE + body)
    stream = ExecStream.open(server.api(), "trafficmirror", "agent-x", "capture", ["cat", "--", "/gone.pcapng"])
    with pytest.raises(KubeError, match="No such file or directory"):
        stream.read()


def test_a_refused_upgrade_is_a_403_naming_pods_exec() -> None:
    message = 'pods "agent-x" is forbidden: User "alice" cannot create resource "pods/exec" in API group "" in the namespace "trafficmirror"'  # noqa: E501
    body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": 403}).encode()
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    server = FakeApiServer(refusal)
    with pytest.raises(Forbidden) as refused:
        ExecStream.open(server.api(), "trafficmirror", "agent-x", "capture", ["cat", "/f"])
    assert (refused.value.verb, refused.value.resource) == ("create", "pods/exec")
    assert 'cannot create resource "pods/exec"' in str(refused.value)
