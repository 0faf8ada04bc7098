"""Shipping to S3 (moto in server mode): SSE header, metadata, key layout, multipart with per-part
checksums; an outage (the emulator stopped mid-run, then restarted) loses nothing; SIGTERM
mid-stream ships the open file."""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from frames import ipv4_udp
from netbed import REPO, AgentProc, Bed, in_netns, tshark_clean

from trafficmirror.capture import pcapng, vxlan

pytestmark = [pytest.mark.emulator, pytest.mark.root]

T = TypeVar("T")
PORT = 5000
BUCKET = "mirror-captures"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{PORT}",
}


class Moto:
    """moto_server inside the agent's network namespace (where the agent reaches 127.0.0.1)."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.bed.agt,
                str(REPO / ".venv/bin/moto_server"),
                "-H",
                "127.0.0.1",
                "-p",
                str(PORT),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                self.call(lambda s3: s3.list_buckets())
                break
            except Exception:
                time.sleep(0.2)
        self.call(lambda s3: s3.create_bucket(Bucket=BUCKET))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def call(self, fn: Callable[[Any], T]) -> T:
        def go() -> T:
            s3 = boto3.client(
                "s3",
                endpoint_url=ENV["AWS_ENDPOINT_URL"],
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            return fn(s3)

        return in_netns(self.bed.agt, go)

    def objects(self) -> list[dict[str, Any]]:
        def go(s3: Any) -> list[dict[str, Any]]:
            out = []
            for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
                head = s3.head_object(Bucket=BUCKET, Key=o["Key"], ChecksumMode="ENABLED")
                body = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
                out.append({"key": o["Key"], "head": head, "body": body})
            return out

        return self.call(go)


@pytest.fixture
def moto(bed: Bed) -> Iterator[Moto]:
    m = Moto(bed)
    m.start()
    try:
        yield m
    finally:
        m.stop()


def _send(bed: Bed, n: int, tag: bytes, size: int = 200) -> None:
    for start in range(0, n, 200):
        frames = [
            ipv4_udp("10.0.0.1", "10.0.0.2", 5, 6, tag + b"%07d" % i + b"." * size)
            for i in range(start, min(n, start + 200))
        ]
        bed.send_datagrams([vxlan.header(77) + f for f in frames])
        time.sleep(0.005)


def _packets(objs: list[dict[str, Any]]) -> list[bytes]:
    out = []
    for o in objs:
        cap = pcapng.read_pcapng(io.BytesIO(o["body"]))
        out += [p.data for p in cap.packets]
    return out


def test_s3_outage_spools_and_uploads_later_and_sigterm_ships(bed: Bed, work: Path, moto: Moto) -> None:
    agent = AgentProc(
        bed,
        work,
        [
            "--session",
            "77=payments/api@eni-0feed",
            "--s3-bucket",
            BUCKET,
            "--s3-prefix",
            "captures",
            "--s3-sse",
            "aws:kms",
            "--s3-kms-key-id",
            KMS_KEY,
            "--s3-multipart-threshold",
            "5MiB",
            "--rotate-size",
            "6MiB",
            # Only the size rotates files here: a time boundary crossed during phase 1 would close the
            # file before it is large enough for a multipart upload.
            "--rotate-interval",
            "0",
            "--flush-interval",
            "0.2",
        ],
        env=ENV,
    )
    agent.wait_ready()

    # Phase 1: a file big enough for a multipart upload, then rotation closes it.
    _send(bed, 6000, b"one", size=1200)
    agent.wait_for(lambda m: m.get('trafficmirror_capture_uploads_total{destination="s3",result="ok"}', 0) >= 1)
    before = moto.objects()
    assert len(before) == 1
    big = before[0]
    assert re.fullmatch(r'"[0-9a-f]{32}-2"', big["head"]["ETag"])  # two parts
    assert big["head"]["ChecksumCRC32"]  # a checksum per part, combined by S3

    # Phase 2: S3 goes away; closed files wait in the spool and the failure is loud.
    moto.stop()
    _send(bed, 5500, b"two", size=1200)
    m = agent.wait_for(lambda m: m.get('trafficmirror_capture_uploads_total{destination="s3",result="failed"}', 0) >= 1)
    assert m["trafficmirror_capture_spool_files"] >= 1
    code, body = agent.get("/healthz")
    assert code == 503 and "shipping to s3 failing" in body
    assert "shipping" in agent.log() and "failed" in agent.log()

    # The emulator is back (empty: moto keeps no state across a restart, so phase 1's object was
    # counted above); the spool drains by itself.
    moto.start()
    agent.wait_for(lambda m: m["trafficmirror_capture_spool_files"] == 0, timeout=120)
    assert agent.get("/healthz")[0] == 200

    # Phase 3: SIGTERM with a file still open: it is closed and shipped before exit.
    _send(bed, 300, b"three")
    agent.quiesce()
    assert agent.stop() == 0
    after = moto.objects()

    all_objects = before + after
    got = _packets(all_objects)
    assert len(got) == 6000 + 5500 + 300
    assert sorted(p for p in got if b"one" in p[42:46]) == sorted(
        ipv4_udp("10.0.0.1", "10.0.0.2", 5, 6, b"one" + b"%07d" % i + b"." * 1200) for i in range(6000)
    )
    assert sum(1 for p in got if b"three" in p[42:48]) == 300
    node_prefix = "captures/test/payments/api/"
    for o in all_objects:
        head = o["head"]
        assert head["ServerSideEncryption"] == "aws:kms"  # moto does not check the key exists
        assert head["SSEKMSKeyId"] == KMS_KEY
        assert re.fullmatch(node_prefix + r"\d{4}/\d\d/\d\d/\d\d/node-a-\d{8}T\d{6}\.\d{3}Z-\d{6}\.pcapng", o["key"]), (
            o["key"]
        )
        meta = head["Metadata"]
        assert meta["vni"] == "77" and meta["session"] == "api" and meta["namespace"] == "payments"
        assert meta["node"] == "node-a" and meta["source-eni"] == "eni-0feed"
        assert int(meta["packets"]) == len(pcapng.read_pcapng(io.BytesIO(o["body"])).packets)
    last = max(after, key=lambda o: o["key"])
    path = work / "last.pcapng"
    path.write_bytes(last["body"])
    os.chmod(path, 0o644)
    tshark_clean(path)
    assert b"three" in _packets([last])[-1]
