"""Shipping closed files from the spool to a directory (PVC/hostPath) and/or S3.

The spool is ``<work>/spool/<ns>/<session>/<file>`` + ``<file>.json``. Every destination that
has taken a file is recorded in the JSON ("done"); the file leaves the spool only when all have.
A failure is retried with exponential backoff, logged, counted, and shows in /healthz; a restart
picks the spool up where it was, so neither an outage nor a restart loses a file.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from trafficmirror.capture import pcapng
from trafficmirror.capture.sessions import pod_dir_name, safe_component
from trafficmirror.capture.writer import write_meta

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0


# --- pure decisions -------------------------------------------------------------------------


def pod_dir(meta: dict[str, Any]) -> str:
    """A pod's file (perPod) lives one level below its session: ``<pod namespace>_<pod>``."""
    pod = str(meta.get("pod") or "")
    if not pod:
        return ""
    ns, _, name = pod.partition("/")
    return pod_dir_name(ns, name)


def s3_key(prefix: str, meta: dict[str, Any]) -> str:
    """``<prefix>/<cluster>/<namespace>/<session>/[<pod namespace>_<pod>/]<YYYY>/<MM>/<DD>/<HH>/
    <node>-<start>-<seq>.<ext>``."""
    t = time.gmtime(int(meta["start"]) // 1_000_000_000)
    parts = [
        prefix.strip("/"),
        safe_component(meta.get("cluster") or "default"),
        safe_component(meta["namespace"]),
        safe_component(meta["session"]),
        pod_dir(meta),
        f"{t.tm_year:04d}",
        f"{t.tm_mon:02d}",
        f"{t.tm_mday:02d}",
        f"{t.tm_hour:02d}",
        meta["file"],
    ]
    return "/".join(p for p in parts if p)


def s3_metadata(meta: dict[str, Any]) -> dict[str, str]:
    return {
        "vni": str(meta["vni"]),
        "namespace": str(meta["namespace"]),
        "session": str(meta["session"]),
        "node": str(meta.get("node", "")),
        "packets": str(meta["packets"]),
        "first-packet-ns": str(meta.get("firstPacket", "")),
        "last-packet-ns": str(meta.get("lastPacket", "")),
        "source-eni": str(meta.get("sourceEni", "")),
        **({"pod": str(meta["pod"]), "pod-ip": str(meta.get("podIp", ""))} if meta.get("pod") else {}),
    }


def backoff_s(failures: int, base: float = 1.0) -> float:
    return float(min(base * 2 ** max(failures - 1, 0), MAX_BACKOFF_S))


def retention_victims(files: list[tuple[str, int]], max_files: int | None, max_bytes: int | None) -> list[str]:
    """Oldest-first names to delete so at most ``max_files`` files / ``max_bytes`` bytes remain.

    Names start with ``<node>-<UTC start>``; ordering is by the start time part, so several nodes'
    files for one session age together.
    """

    def start_of(name: str) -> str:
        parts = name.split("-")
        return parts[-2] if len(parts) >= 3 else name

    ordered = sorted(files, key=lambda f: (start_of(f[0]), f[0]))
    victims: list[str] = []
    total = sum(size for _, size in ordered)
    count = len(ordered)
    for name, size in ordered:
        over_files = max_files is not None and count > max_files
        over_bytes = max_bytes is not None and total > max_bytes
        # The newest file always stays, even alone over the byte limit: it is the capture the
        # user most likely wants, and deleting it would make the ring empty.
        if count <= 1 or not (over_files or over_bytes):
            break
        victims.append(name)
        count -= 1
        total -= size
    return victims


# --- destinations ---------------------------------------------------------------------------


class Destination(Protocol):
    name: str

    def ship(self, path: str, meta: dict[str, Any]) -> str:
        """Ship one closed file; returns where it now is (a path, an s3:// URI)."""
        ...


class DirDestination:
    """``<root>/<namespace>/<session>/[<pod namespace>_<pod>/]<file>``, with a retention ring per
    session (per pod for a perPod session's files)."""

    name = "dir"

    def __init__(self, root: str, max_files: int | None = None, max_bytes: int | None = None) -> None:
        self.root = root
        self.max_files = max_files
        self.max_bytes = max_bytes

    def ship(self, path: str, meta: dict[str, Any]) -> str:
        d = os.path.join(self.root, safe_component(meta["namespace"]), safe_component(meta["session"]))
        if pod_dir(meta):
            d = os.path.join(d, pod_dir(meta))
        os.makedirs(d, exist_ok=True)
        dest = os.path.join(d, meta["file"])
        tmp = os.path.join(d, "." + meta["file"] + ".tmp")
        try:
            os.link(path, tmp)  # same filesystem: no copy, and the spool keeps its own link
        except OSError:
            shutil.copyfile(path, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
        self.apply_retention(d)
        return dest

    def apply_retention(self, d: str) -> list[str]:
        if self.max_files is None and self.max_bytes is None:
            return []
        files = []
        for n in os.listdir(d):
            if n.startswith(".") or os.path.isdir(os.path.join(d, n)):  # a pod's directory
                continue
            try:
                files.append((n, os.stat(os.path.join(d, n)).st_size))
            except OSError:
                continue
        victims = retention_victims(files, self.max_files, self.max_bytes)
        for v in victims:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(d, v))
        return victims


class S3Destination:
    """boto3 managed transfer: multipart above the threshold, a checksum per part, SSE option."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        sse: str = "",
        kms_key_id: str = "",
        checksum: str = "CRC32",
        multipart_threshold: int = 16 << 20,
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self.extra: dict[str, Any] = {}
        if sse:
            self.extra["ServerSideEncryption"] = sse  # "AES256" (SSE-S3) or "aws:kms" (SSE-KMS)
            if kms_key_id:
                self.extra["SSEKMSKeyId"] = kms_key_id
        if checksum:
            self.extra["ChecksumAlgorithm"] = checksum
        # Our own retry loop owns backoff across minutes; botocore's is kept short so one
        # attempt fails fast during an outage instead of hanging the shipper.
        cfg = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=60)
        self.client = boto3.client("s3", region_name=region, endpoint_url=endpoint_url, config=cfg)
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_threshold, use_threads=True
        )

    def ship(self, path: str, meta: dict[str, Any]) -> str:
        extra = dict(self.extra)
        extra["Metadata"] = s3_metadata(meta)
        extra["ContentType"] = "application/vnd.tcpdump.pcap"
        if meta["file"].endswith(".gz"):
            extra["ContentEncoding"] = "gzip"
        key = s3_key(self.prefix, meta)
        self.client.upload_file(path, self.bucket, key, ExtraArgs=extra, Config=self.transfer)
        return f"s3://{self.bucket}/{key}"


# --- the shipper ----------------------------------------------------------------------------


@dataclass
class ShipStats:
    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    spool_files: int = 0
    spool_bytes: int = 0
    failing: dict[str, str] = field(default_factory=dict)  # destination -> last error, while failing
    compressed: int = 0


@dataclass
class _Entry:
    failures: int = 0
    next_try: float = 0.0


def rebuild_meta(path: str, spool: str = "") -> dict[str, Any]:
    """Metadata for a spooled file whose JSON never got written (disk full, crash). ``spool``:
    the spool's root, to tell a pod's file (one directory deeper) from a session's."""
    rel = os.path.relpath(path, spool).split(os.sep) if spool else path.split(os.sep)
    pod = ""
    if spool and len(rel) == 4:
        namespace, session, pod_name, name = rel
        ns, _, name_of_pod = pod_name.partition("_")
        pod = f"{ns}/{name_of_pod}"
    else:
        namespace, session, name = rel[-3], rel[-2], rel[-1]
    meta: dict[str, Any] = {
        "namespace": namespace,
        "session": session,
        "file": name,
        "done": [],
        "vni": 0,
        "node": "",
        "cluster": "",
        "packets": 0,
        "sourceEni": "",
    }
    if pod:
        meta["pod"] = pod
    try:
        cap = pcapng.read_file(path)
        meta["packets"] = len(cap.packets)
        if cap.packets:
            meta["firstPacket"] = cap.packets[0].ts_ns
            meta["lastPacket"] = cap.packets[-1].ts_ns
        for token in cap.interfaces[0].description.split() if cap.interfaces else []:
            k, _, v = token.partition("=")
            if k == "vni":
                meta["vni"] = int(v)
            elif k in ("node", "cluster"):
                meta[k] = "" if v == "-" else v
            elif k == "eni":
                meta["sourceEni"] = "" if v == "-" else v
    except (OSError, ValueError, IndexError, EOFError):
        pass
    meta["start"] = meta.get("firstPacket") or int(os.stat(path).st_mtime * 1e9)
    return meta


class Shipper:
    def __init__(
        self,
        work_dir: str,
        destinations: list[Destination],
        *,
        compress: bool = False,
        poll_s: float = 0.5,
        on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.spool = os.path.join(work_dir, "spool")
        self.destinations = destinations
        self.compress = compress
        self.poll_s = poll_s
        self.stats = ShipStats()
        self.entries: dict[str, _Entry] = {}
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.on_event = on_event

    def pending(self) -> list[str]:
        out = []
        for dirpath, _dirs, files in os.walk(self.spool):
            for f in files:
                if f.endswith((".json", ".tmp")) or f.startswith("."):
                    continue
                out.append(os.path.join(dirpath, f))
        return sorted(out)

    def pending_of(self, namespace: str, session: str) -> list[str]:
        """One session's files still in the spool (a failed upload keeps them there)."""
        root = os.path.join(self.spool, safe_component(namespace), safe_component(session))
        out = []
        for dirpath, _dirs, files in os.walk(root):
            out += [os.path.join(dirpath, f) for f in files if not f.endswith((".json", ".tmp")) and f[0] != "."]
        return sorted(out)

    def run(self) -> None:
        while not self.stop.is_set():
            self.pass_once()
            self.wake.wait(self.poll_s)
            self.wake.clear()

    def pass_once(self, force: bool = False) -> int:
        """Try every due spool entry once; returns how many are still pending."""
        with self.lock:
            left = 0
            files = self.pending()
            now = time.monotonic()
            for path in files:
                e = self.entries.setdefault(path, _Entry())
                if not force and now < e.next_try:
                    left += 1
                    continue
                if not self._ship_one(path, e):
                    left += 1
            size = 0
            remaining = self.pending()
            for p in remaining:
                with contextlib.suppress(OSError):
                    size += os.stat(p).st_size
            self.stats.spool_files, self.stats.spool_bytes = len(remaining), size
            for p in list(self.entries):
                if p not in remaining:
                    del self.entries[p]
            return left

    def _ship_one(self, path: str, e: _Entry) -> bool:
        meta_path = path + ".json"
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            meta = rebuild_meta(path, self.spool)
            if time.time() - os.stat(path).st_mtime < 2.0 and not self.stop.is_set():
                return False  # the writer may still be writing the JSON
        if self.compress and not path.endswith(".gz"):
            try:
                path = self._gzip(path, meta)
            except OSError as exc:
                log.error("cannot compress %s: %s", path, exc)
                e.failures += 1
                e.next_try = time.monotonic() + backoff_s(e.failures)
                return False
            meta_path = path + ".json"
        done = set(meta.get("done", []))
        all_ok = True
        for d in self.destinations:
            if d.name in done:
                continue
            try:
                location = d.ship(path, meta)
            except Exception as exc:  # any failure of a destination is retried, never fatal
                all_ok = False
                e.failures += 1
                e.next_try = time.monotonic() + backoff_s(e.failures)
                self.stats.failed[d.name] += 1
                self.stats.failing[d.name] = f"{type(exc).__name__}: {exc}"
                log.error(
                    "shipping %s to %s failed (attempt %d, retry in %.0fs): %s",
                    os.path.basename(path),
                    d.name,
                    e.failures,
                    backoff_s(e.failures),
                    exc,
                )
                if self.on_event:
                    self.on_event("failed", d.name, meta)
                continue
            done.add(d.name)
            meta["done"] = sorted(done)
            write_meta(meta_path, meta)
            self.stats.ok[d.name] += 1
            self.stats.failing.pop(d.name, None)
            if self.on_event:
                self.on_event("ok", d.name, {**meta, "location": location})
            log.info("shipped %s to %s", meta["file"], d.name)
        if not all_ok:
            return False
        for p in (path, meta_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        return True

    def _gzip(self, path: str, meta: dict[str, Any]) -> str:
        gz = path + ".gz"
        tmp = gz + ".tmp"
        with open(path, "rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.rename(tmp, gz)
        meta["file"] = os.path.basename(gz)
        write_meta(gz + ".json", meta)
        os.unlink(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + ".json")
        self.stats.compressed += 1
        return gz

    def drain(self, deadline_s: float) -> int:
        """Ship everything now (shutdown); returns what is still spooled when time runs out."""
        end = time.monotonic() + deadline_s
        left = self.pass_once(force=True)
        while left and time.monotonic() < end:
            time.sleep(min(1.0, max(end - time.monotonic(), 0)))
            left = self.pass_once(force=True)
        return left


def recover_open_files(work_dir: str) -> list[str]:
    """Files a crashed run left open: cut to their last whole block and move them to the spool."""
    moved = []
    open_root = os.path.join(work_dir, "open")
    for dirpath, _dirs, files in os.walk(open_root):
        for f in files:
            if not f.endswith(".part"):
                continue
            src = os.path.join(dirpath, f)
            rel = os.path.relpath(dirpath, open_root)
            try:
                if f.endswith(".pcapng.part"):
                    good = pcapng.valid_prefix_length(src)
                    os.truncate(src, good)
                else:
                    good = os.stat(src).st_size
                if good == 0:
                    os.unlink(src)
                    continue
                dest_dir = os.path.join(work_dir, "spool", rel)
                os.makedirs(dest_dir, exist_ok=True)
                dest = os.path.join(dest_dir, f[: -len(".part")])
                os.rename(src, dest)
                moved.append(dest)
            except OSError as exc:
                log.error("cannot recover %s: %s", src, exc)
    return moved
