"""Capture files kept on the capture nodes (the agent's --output-dir), read through the API server."""

from __future__ import annotations

from typing import Any, BinaryIO

from trafficmirror.kubecapture.kube import KubeApi


class AgentPodFiles:
    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def refs(self, namespace: str, session: str, locations: list[tuple[str, str]]) -> list[Any]:
        raise NotImplementedError("reading files from the capture nodes")

    def open(self, ref: Any) -> BinaryIO:
        raise NotImplementedError
