"""``trafficmirror pcap ls|get``: find a session's files in the directory or S3 and merge them,
in time order, into one pcapng ready for Wireshark (no mergecap needed on the user's machine)."""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from trafficmirror.capture import pcapng
from trafficmirror.capture.sessions import safe_component

NAME_RESOLUTION_NS = 1_000_000
_NAME = re.compile(r"^(?P<node>.+)-(?P<start>\d{8}T\d{6}(?:\.\d{3})?Z)-(?P<seq>\d+)\.(?:pcapng|pcap)(?:\.gz)?$")


@dataclass(frozen=True)
class FileRef:
    namespace: str
    session: str
    name: str
    size: int
    start_ns: int  # from the name; 0 when the name is not ours
    location: str  # a path, or an S3 key


def start_of(name: str) -> int:
    m = _NAME.match(name)
    if not m:
        return 0
    s = m.group("start")
    fmt = "%Y%m%dT%H%M%S.%fZ" if "." in s else "%Y%m%dT%H%M%SZ"
    t = dt.datetime.strptime(s, fmt).replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def parse_time(text: str | None) -> int | None:
    """ISO 8601 (naive means UTC) or epoch seconds -> ns."""
    if not text:
        return None
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1e9)


def select(files: list[FileRef], since: int | None, until: int | None) -> list[FileRef]:
    """Files that may hold packets in [since, until]: a file covers its start up to the next
    file's start (per node), so the last file starting before ``since`` is kept too."""
    out = []
    by_node: dict[str, list[FileRef]] = {}
    for f in files:
        m = _NAME.match(f.name)
        by_node.setdefault(m.group("node") if m else "", []).append(f)
    for group in by_node.values():
        group.sort(key=lambda f: (f.start_ns, f.name))
        for i, f in enumerate(group):
            nxt = group[i + 1].start_ns if i + 1 < len(group) else None
            if until is not None and f.start_ns > until:
                continue
            # Names carry milliseconds: the next file may start up to 1 ms after its name says.
            if since is not None and nxt is not None and nxt + NAME_RESOLUTION_NS <= since:
                continue
            out.append(f)
    return sorted(out, key=lambda f: (f.start_ns, f.name))


class DirSource:
    def __init__(self, root: str) -> None:
        self.root = root

    def list(self, namespace: str | None = None, session: str | None = None) -> list[FileRef]:
        out = []
        for ns in sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []:
            if namespace is not None and ns != safe_component(namespace):
                continue
            nsdir = os.path.join(self.root, ns)
            if not os.path.isdir(nsdir):
                continue
            for sess in sorted(os.listdir(nsdir)):
                if session is not None and sess != safe_component(session):
                    continue
                sdir = os.path.join(nsdir, sess)
                for name in sorted(os.listdir(sdir)) if os.path.isdir(sdir) else []:
                    if name.startswith("."):
                        continue
                    p = os.path.join(sdir, name)
                    out.append(FileRef(ns, sess, name, os.stat(p).st_size, start_of(name), p))
        return out

    def open(self, ref: FileRef) -> str:
        return ref.location


class S3Source:
    def __init__(self, bucket: str, prefix: str, cluster: str, endpoint_url: str | None, region: str | None) -> None:
        import boto3

        self.bucket = bucket
        self.base = "/".join(p for p in (prefix.strip("/"), safe_component(cluster)) if p) + "/"
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self.tmp = tempfile.mkdtemp(prefix="trafficmirror-fetch-")

    def list(self, namespace: str | None = None, session: str | None = None) -> list[FileRef]:
        prefix = self.base
        if namespace is not None:
            prefix += safe_component(namespace) + "/"
            if session is not None:
                prefix += safe_component(session) + "/"
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                rel = o["Key"][len(self.base) :].split("/")
                if len(rel) < 3:
                    continue
                name = rel[-1]
                out.append(FileRef(rel[0], rel[1], name, int(o["Size"]), start_of(name), o["Key"]))
        return out

    def open(self, ref: FileRef) -> str:
        path = os.path.join(self.tmp, ref.name)
        self.client.download_file(self.bucket, ref.location, path)
        return path


def _packets(path: str, iface_base: int, since: int | None, until: int | None) -> Iterator[tuple[int, int, bytes]]:
    cap = pcapng.read_file(path)
    for p in cap.packets:
        if (since is None or p.ts_ns >= since) and (until is None or p.ts_ns <= until):
            yield (
                p.ts_ns,
                iface_base + p.interface_id,
                pcapng.enhanced_packet(p.ts_ns, p.data, p.orig_len, iface_base + p.interface_id, p.comment),
            )


def merge(paths: list[str], out: BinaryIO, since: int | None = None, until: int | None = None) -> int:
    """Write one pcapng with every input's interfaces and all packets in time order."""
    idbs: list[bytes] = []
    bases: list[int] = []
    for path in paths:
        cap = pcapng.read_file(path)
        bases.append(len(idbs))
        for iface in cap.interfaces:
            idbs.append(
                pcapng.interface_description(
                    iface.name or os.path.basename(path), iface.description, iface.snaplen, iface.linktype
                )
            )
    out.write(pcapng.section_header("trafficmirror pcap get"))
    for idb in idbs:
        out.write(idb)
    n = 0
    streams = [_packets(p, b, since, until) for p, b in zip(paths, bases, strict=True)]
    for _ts, _if, block in heapq.merge(*streams, key=lambda t: t[0]):
        out.write(block)
        n += 1
    return n


def _source(args: argparse.Namespace) -> Any:
    if bool(args.dir) == bool(args.s3_bucket):
        raise SystemExit("trafficmirror pcap: give exactly one of --dir and --s3-bucket")
    if args.dir:
        return DirSource(args.dir)
    return S3Source(args.s3_bucket, args.s3_prefix, args.cluster, args.s3_endpoint_url, args.s3_region)


def _split(target: str) -> tuple[str, str]:
    ns, sep, name = target.partition("/")
    if not sep or not ns or not name:
        raise SystemExit(f"trafficmirror pcap: expected NAMESPACE/SESSION, got {target!r}")
    return ns, name


def main(args: argparse.Namespace) -> int:
    src = _source(args)
    since, until = parse_time(args.since), parse_time(args.until)
    if args.pcap_command == "ls":
        if args.session:
            ns, name = _split(args.session)
            for f in select(src.list(ns, name), since, until):
                print(f"{f.name}\t{f.size}\t{_iso(f.start_ns)}")
            return 0
        sessions: dict[tuple[str, str], list[FileRef]] = {}
        for f in src.list():
            sessions.setdefault((f.namespace, f.session), []).append(f)
        print("NAMESPACE/SESSION\tFILES\tBYTES\tFIRST\tLAST")
        for (ns, name), fs in sorted(sessions.items()):
            starts = [f.start_ns for f in fs]
            print(f"{ns}/{name}\t{len(fs)}\t{sum(f.size for f in fs)}\t{_iso(min(starts))}\t{_iso(max(starts))}")
        return 0
    ns, name = _split(args.session)
    files = select(src.list(ns, name), since, until)
    if not files:
        print(f"trafficmirror pcap: no files for {ns}/{name}", file=sys.stderr)
        return 1
    paths = [src.open(f) for f in files]
    output = args.output or f"{ns}-{name}.pcapng"
    with open(output, "wb") as out:
        n = merge(paths, out, since, until)
    print(f"{output}: {n} packets from {len(files)} file(s)", file=sys.stderr)
    return 0


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds") if ns else "-"
