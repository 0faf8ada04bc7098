"""The few API server calls ``trafficmirror capture`` makes, with errors a user can act on.

Authentication is the operator's and ``doctor``'s (kopf's kubeconfig or service account login).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

GROUP = "trafficmirror.io"
VERSION = "v1alpha1"


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str, verb: str, resource: str) -> None:
        super().__init__(message)
        self.status, self.verb, self.resource = status, verb, resource


class NotFound(KubeError):
    pass


class Forbidden(KubeError):
    pass


_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}


def _resource_parts(path: str) -> tuple[str, list[str]]:
    """The API group and what follows the namespace: ``[plural, name, subresource]``."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    group = parts[1] if parts[:1] == ["apis"] else ""
    rest = parts[3:] if group else parts[2:]
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    return group, rest


def resource_of(path: str) -> str:
    """``/apis/trafficmirror.io/v1alpha1/namespaces/x/mirrorsessions/y`` -> ``mirrorsessions.trafficmirror.io``;
    ``/api/v1/namespaces/x/pods/y/exec`` -> ``pods/exec``."""
    group, rest = _resource_parts(path)
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "") if rest else path
    return f"{resource}.{group}" if group else resource


def verb_of(method: str, path: str) -> str:
    if method == "GET" and len(_resource_parts(path)[1]) == 1:
        return "list"
    return _VERBS.get(method, method.lower())


@dataclass
class KubeApi:
    server: str
    headers: dict[str, str]
    context: Any
    namespace: str = "default"

    @classmethod
    def connect(cls) -> KubeApi:
        import kopf

        from trafficmirror.doctor import KubeReader

        reader = KubeReader.connect()
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
        namespace = (info.default_namespace if info else None) or "default"
        return cls(reader.server, reader.headers, reader.context, namespace)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, **({"Content-Type": content_type} if data is not None else {})}
        request = urllib.request.Request(f"{self.server}{path}{query}", data=data, headers=headers, method=method)
        verb = verb_of(method, path)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read()[:2000]
            try:
                message = str(json.loads(detail).get("message") or detail.decode(errors="replace"))
            except (ValueError, AttributeError):
                message = detail.decode(errors="replace").strip() or str(error.reason)
            kind = {404: NotFound, 403: Forbidden}.get(error.code, KubeError)
            raise kind(error.code, message, verb, resource_of(path)) from error
        except (urllib.error.URLError, OSError) as error:
            raise KubeError(0, f"{method} {self.server}{path}: {error}", verb, resource_of(path)) from error
        loaded: dict[str, Any] = json.loads(raw) if raw else {}
        return loaded

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return self.request("GET", path, params=params)


def crd_path(namespace: str, plural: str, name: str = "") -> str:
    tail = f"/{urllib.parse.quote(name)}" if name else ""
    return f"/apis/{GROUP}/{VERSION}/namespaces/{urllib.parse.quote(namespace)}/{plural}{tail}"
