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


# A selector session's children (one MirrorSession per source ENI, made by the operator) carry
# this label; the agent reads their parent's status.sources[] instead of the children.
PARENT_LABEL = "trafficmirror.io/parent-session"
COMPLETED = "Completed"

# How a selector session's packets become files (``Session.files``): "" is a plain session (one
# stream per VNI, every packet written); the others are written under the session's name, one
# stream per session (ALL: a nodeSelector's sources, every packet; PER_SESSION: only the selected
# pods' packets) or one per pod (PER_POD).
PER_POD = "perPod"
PER_SESSION = "perSession"
ALL = "all"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    ip: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def dir_name(self) -> str:
        """The on-disk (and S3 key) form of ``<namespace>/<pod>``: namespaces and pod names are
        DNS names without an underscore, so ``<namespace>_<pod>`` reads back unambiguously."""
        return pod_dir_name(self.namespace, self.name)


def pod_dir_name(namespace: str, name: str) -> str:
    return f"{safe_component(namespace)}_{safe_component(name)}"


def pod_of_dir_name(dir_name: str) -> str:
    """``<namespace>_<pod>`` -> ``<namespace>/<pod>``."""
    ns, _, name = dir_name.partition("_")
    return f"{ns}/{name}" if name else dir_name


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
    # One source of a selector session (nodeSelector, podSelector): see PER_POD and friends.
    files: str = ""
    pods: tuple[Pod, ...] = ()
    source_node: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def known(self) -> bool:
        return self.namespace != UNKNOWN_NAMESPACE

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "namespace": self.namespace,
            "name": self.name,
            "vni": self.vni,
            "sourceEni": self.source_eni,
            "sourceAddresses": list(self.source_addresses),
        }
        if self.files:
            d["files"] = self.files
            d["sourceNode"] = self.source_node
            d["pods"] = [{"namespace": p.namespace, "name": p.name, "ip": p.ip} for p in self.pods]
        return d

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Session:
        return Session(
            str(d["namespace"]),
            str(d["name"]),
            int(d["vni"]),
            str(d.get("sourceEni", "")),
            _addresses(d.get("sourceAddresses")),
            str(d.get("files", "")),
            _pods(d.get("pods")),
            str(d.get("sourceNode", "")),
        )


def _pods(raw: Any) -> tuple[Pod, ...]:
    if not isinstance(raw, list):
        return ()
    out = set()
    for p in raw:
        if isinstance(p, Mapping) and p.get("ip") and p.get("name"):
            out.add(Pod(str(p.get("namespace") or ""), str(p["name"]), str(p["ip"])))
    return tuple(sorted(out, key=lambda p: (p.namespace, p.name, p.ip)))


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
    """A plain MirrorSession custom object -> Session, or None while it has no VNI yet."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    vni = _vni(status.get("virtualNetworkId"))
    if vni is None:
        return None
    return Session(
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
        vni,
        str(status.get("sourceNetworkInterfaceId") or ""),
        _addresses(status.get("sourceAddresses")),
    )


def _vni(raw: Any) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= MAX_VNI else None


def is_child(obj: Mapping[str, Any]) -> bool:
    return PARENT_LABEL in ((obj.get("metadata") or {}).get("labels") or {})


def is_completed(obj: Mapping[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") == COMPLETED


def selector_files(spec: Mapping[str, Any]) -> str:
    """ "" for a plain session; else how its packets become files (PER_POD, PER_SESSION, ALL)."""
    source = spec.get("source") or {}
    if source.get("podSelector") is not None:
        files = (spec.get("capture") or {}).get("files")
        return PER_SESSION if files == PER_SESSION else PER_POD
    if source.get("nodeSelector") is not None:
        return ALL
    return ""


def sessions_of(obj: Mapping[str, Any]) -> list[Session]:
    """The VNIs a MirrorSession object stands for: none for a child (its parent speaks for it)
    or a Completed session (its files are closed); one for a plain session with a VNI; one per
    source of a selector session (``status.sources[]``) that has a VNI."""
    if is_child(obj) or is_completed(obj):
        return []
    files = selector_files(obj.get("spec") or {})
    if not files:
        s = from_object(obj)
        return [] if s is None else [s]
    meta = obj.get("metadata") or {}
    out = []
    for src in (obj.get("status") or {}).get("sources") or []:
        if not isinstance(src, Mapping):
            continue
        vni = _vni(src.get("virtualNetworkId"))
        if vni is None:
            continue
        out.append(
            Session(
                str(meta.get("namespace", "")),
                str(meta.get("name", "")),
                vni,
                str(src.get("networkInterfaceId") or ""),
                _addresses(src.get("sourceAddresses")),
                files,
                _pods(src.get("pods")) if files != ALL else (),
                str(src.get("nodeName") or ""),
            )
        )
    return out


def load_file(path: str) -> list[Session]:
    """A YAML/JSON list of {vni, namespace, name, sourceEni} or a list of MirrorSession objects."""
    with open(path) as f:
        doc: Any = yaml.safe_load(f) or []
    if isinstance(doc, dict):
        doc = doc.get("items", doc.get("sessions")) or []
    out: list[Session] = []
    for item in doc:
        if "metadata" in item:
            out += sessions_of(item)
        else:
            out.append(Session.from_json(item))
    return out


def build_map(sessions: Iterable[Session]) -> dict[int, Session]:
    """Two sessions claiming one VNI cannot be told apart on the wire; the first (by name) wins."""
    out: dict[int, Session] = {}
    for s in sorted(sessions, key=lambda s: (s.key, s.vni)):
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
        self.objects: dict[str, list[Session]] = {}
        # Sessions whose phase is Completed: their files are closed and shipped, and the status
        # reporter lists where they went.
        self.completed: set[str] = set()
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
        self.on_change(build_map(s for group in self.objects.values() for s in group))

    def run(self) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                with self._open(self._url(), 30) as resp:
                    body = json.load(resp)
                self.objects = {}
                completed = set()
                for item in body.get("items", []):
                    key = _key(item)
                    if is_completed(item) and not is_child(item):
                        completed.add(key)
                    found = sessions_of(item)
                    if found:
                        self.objects[key] = found
                self.completed = completed
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
                    key = _key(obj)
                    done = kind != "DELETED" and is_completed(obj) and not is_child(obj)
                    changed = done != (key in self.completed)
                    if done:
                        self.completed.add(key)
                    else:
                        self.completed.discard(key)
                    found = sessions_of(obj) if kind != "DELETED" else []
                    if not found:
                        changed = self.objects.pop(key, None) is not None or changed
                    else:
                        changed = self.objects.get(key) != found or changed
                        self.objects[key] = found
                    if changed:
                        self._publish()
            time.sleep(0)


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
