"""Metadata patches the operator sends outside kopf's own handler cycle: a resync nudge, and the
create intent, which must be stored before the create is sent.

kopf has no public call for this; its own patch function is used, with the operator's credentials
(kopf's context) and settings (kept in `memo` at startup).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import kopf
from kopf._cogs.clients.patching import patch_obj

from trafficmirror.api import GROUP, VERSION, Kind


async def patch_annotations(
    settings: kopf.OperatorSettings,
    kind: Kind,
    namespace: str,
    name: str,
    annotations: Mapping[str, str | None],
    logger: logging.Logger,
) -> None:
    resource = kopf.Resource(
        GROUP, VERSION, kind.plural, kind=kind.kind, namespaced=True, subresources=frozenset({"status"})
    )
    await patch_obj(
        settings=settings,
        resource=resource,
        namespace=namespace,
        name=name,
        patch=kopf.Patch({"metadata": {"annotations": dict(annotations)}}),
        logger=logger,
    )
