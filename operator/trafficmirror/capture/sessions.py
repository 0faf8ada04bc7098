"""The VNI -> MirrorSession map: from a static file / CLI flags, or a read-only Kubernetes watch.

The watch speaks plain HTTP(S) to the apiserver (list, then watch from the list's
resourceVersion, relist on 410 Gone) so the agent image needs no Kubernetes client library.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from trafficmirror.api.common import GROUP, VERSION
from trafficmirror.capture.vxlan import MAX_VNI

log = logging.getLogger(__name__)

PLURAL = "mirrorsessions"
UNKNOWN_NAMESPACE = "_unknown"


@dataclass(frozen=True)
class Session:
    namespace: str
    name: str
    vni: int
    source_eni: str = ""
    # The outer source addresses the session's datagrams come from (its source ENI's private
    # addresses), when the MirrorSession status knows them: datagrams of this VNI from anywhere
    # else count as spoofed. Empty: not checked (e.g. an NLB target that does not preserve the
    # client address, where every datagram comes from the load balancer).
    source_addresses: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def known(self) -> bool:
        return self.namespace != UNKNOWN_NAMESPACE

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "vni": self.vni,
            "sourceEni": self.source_eni,
            "sourceAddresses": list(self.source_addresses),
        }

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Session:
        return Session(
            str(d["namespace"]),
            str(d["name"]),
            int(d["vni"]),
            str(d.get("sourceEni", "")),
            _addresses(d.get("sourceAddresses")),
        )


def _addresses(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(sorted({str(a) for a in raw if isinstance(a, str) and a}))


def source_checks(sessions: Iterable[Session]) -> dict[int, frozenset[str]]:
    """VNI -> the outer sources its datagrams may come from, for the sessions that know them."""
    return {s.vni: frozenset(s.source_addresses) for s in sessions if s.source_addresses}


def unknown_session(vni: int) -> Session:
    """The stream that collects a VNI no MirrorSession claims (so nothing is silently lost)."""
    return Session(UNKNOWN_NAMESPACE, f"vni-{vni}", vni)


_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_component(s: str) -> str:
    """Namespaces and names are DNS labels already; this only guards the filesystem and S3 keys."""
    return _SAFE.sub("_", s) or "_"


def parse_mapping(text: str) -> Session:
    """``VNI=namespace/name[@eni][:address,...]``, the CLI form of one mapping; the addresses
    are the outer sources the session's datagrams may come from."""
    m = re.fullmatch(r"\s*(\d+)\s*=\s*([^/\s]+)/([^@:\s]+)(?:@([^:\s]+))?(?::([0-9.,]+))?\s*", text)
    if not m:
        raise ValueError(f"bad session mapping {text!r}; expected VNI=namespace/name[@eni-...][:ipv4,...]")
    vni = int(m.group(1))
    if not 0 <= vni <= MAX_VNI:
        raise ValueError(f"VNI {vni} is not a 24-bit value")
    return Session(m.group(2), m.group(3), vni, m.group(4) or "", _addresses((m.group(5) or "").split(",")))


def from_object(obj: Mapping[str, Any]) -> Session | None:
    """A MirrorSession custom object -> Session, or None while it has no VNI yet."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    vni = status.get("virtualNetworkId")
    if vni is None or not isinstance(vni, int) or not 0 <= vni <= MAX_VNI:
        return None
    return Session(
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
        vni,
        str(status.get("sourceNetworkInterfaceId") or ""),
        _addresses(status.get("sourceAddresses")),
    )


def load_file(path: str) -> list[Session]:
    """A YAML/JSON list of {vni, namespace, name, sourceEni} or a list of MirrorSession objects."""
    with open(path) as f:
        doc: Any = yaml.safe_load(f) or []
    if isinstance(doc, dict):
        doc = doc.get("items", doc.get("sessions")) or []
    out = []
    for item in doc:
        if "metadata" in item:
            s = from_object(item)
            if s is not None:
                out.append(s)
        else:
            out.append(Session.from_json(item))
    return out


def build_map(sessions: Iterable[Session]) -> dict[int, Session]:
    """Two sessions claiming one VNI cannot be told apart on the wire; the first (by name) wins."""
    out: dict[int, Session] = {}
    for s in sorted(sessions, key=lambda s: s.key):
        if s.vni in out:
            log.warning("VNI %d claimed by both %s and %s; using %s", s.vni, out[s.vni].key, s.key, out[s.vni].key)
            continue
        out[s.vni] = s
    return out


class KubeWatcher:
    """Read-only list+watch of MirrorSessions; calls ``on_change(map)`` with the whole new map."""

    def __init__(
        self,
        on_change: Callable[[dict[int, Session]], None],
        *,
        server: str | None = None,
        token_file: str | None = None,
        ca_file: str | None = None,
        namespace: str | None = None,
        insecure: bool = False,
    ) -> None:
        sa = "/var/run/secrets/kubernetes.io/serviceaccount"
        if server is None:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
            if not host:
                raise RuntimeError("no apiserver: not in a cluster and no --kube-server given")
            server = f"https://{host}:{port or 443}" if ":" not in host else f"https://[{host}]:{port or 443}"
        self.server = server.rstrip("/")
        self.token_file = token_file or (f"{sa}/token" if os.path.exists(f"{sa}/token") else None)
        ca = ca_file or (f"{sa}/ca.crt" if os.path.exists(f"{sa}/ca.crt") else None)
        self.ctx = ssl.create_default_context(cafile=ca)
        if insecure:
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE
        self.namespace = namespace
        self.on_change = on_change
        self.objects: dict[str, Session] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.errors = 0

    def _url(self, **query: str) -> str:
        ns = f"/namespaces/{self.namespace}" if self.namespace else ""
        q = urllib.parse.urlencode(query)
        return f"{self.server}/apis/{GROUP}/{VERSION}{ns}/{PLURAL}" + (f"?{q}" if q else "")

    def _open(self, url: str, timeout: float) -> Any:
        req = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.token_file:
            with open(self.token_file) as f:  # re-read: projected tokens rotate
                req.add_header("Authorization", f"Bearer {f.read().strip()}")
        return urllib.request.urlopen(req, timeout=timeout, context=self.ctx)

    def _publish(self) -> None:
        self.on_change(build_map(self.objects.values()))

    def run(self) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                with self._open(self._url(), 30) as resp:
                    body = json.load(resp)
                self.objects = {}
                for item in body.get("items", []):
                    s = from_object(item)
                    if s is not None:
                        self.objects[s.key] = s
                self._publish()
                self.ready.set()
                rv = body.get("metadata", {}).get("resourceVersion", "")
                self._watch(rv)
                backoff = 1.0
            except Exception as exc:  # the watch must survive any apiserver hiccup
                self.errors += 1
                log.warning("MirrorSession watch failed (%s); retrying in %.0fs", exc, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _watch(self, rv: str) -> None:
        while not self.stop.is_set():
            url = self._url(watch="1", resourceVersion=rv, timeoutSeconds="240", allowWatchBookmarks="true")
            with self._open(url, 300) as resp:
                for line in resp:
                    ev = json.loads(line)
                    kind, obj = ev.get("type"), ev.get("object", {})
                    if kind == "ERROR":
                        if obj.get("code") == 410:  # our resourceVersion is too old: relist
                            raise RuntimeError("watch expired (410)")
                        raise RuntimeError(f"watch error: {obj.get('message')}")
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if kind == "BOOKMARK":
                        continue
                    meta = obj.get("metadata", {})
                    key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
                    s = from_object(obj) if kind != "DELETED" else None
                    if s is None:
                        changed = self.objects.pop(key, None) is not None
                    else:
                        changed = self.objects.get(key) != s
                        self.objects[key] = s
                    if changed:
                        self._publish()
            time.sleep(0)
