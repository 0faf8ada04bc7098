"""How many sources a traffic mirror target takes, sessions per source ENI, and the price: cited data.

The numbers sit in ``target_quotas.yaml`` beside the instance-support table, each with its source;
this module reads them and answers with a reason that cites them. No boto3, no I/O apart from
reading the packaged YAML.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Literal

import yaml
from pydantic import Field, StringConstraints, ValidationError

from trafficmirror.aws.cited import SourceDocument, SourceIds, StrictModel

PACKAGED_QUOTAS_RESOURCE = ("aws", "target_quotas.yaml")


class TargetQuotasConfigError(ValueError):
    """The packaged quota table is malformed; the message says what."""


class _SourceDocument(SourceDocument):
    url: str  # every quota is read on a page: its address is required


_TypeName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*\.[a-z0-9-]+$")]


class _LimitDocument(StrictModel):
    limit: Annotated[int, Field(ge=1)]
    sources: SourceIds


class _DefaultDocument(StrictModel):
    default: Annotated[int, Field(ge=1)]
    sources: SourceIds


class _LargeTargetsDocument(_LimitDocument):
    types: Annotated[list[_TypeName], Field(min_length=1)]


class _CitedDocument(StrictModel):
    sources: SourceIds


class _PriceDocument(StrictModel):
    usd_per_eni_hour: Annotated[float, Field(gt=0)]
    region: str
    sources: SourceIds


class _QuotasDocument(StrictModel):
    version: datetime.date | str
    sources: Annotated[list[_SourceDocument], Field(min_length=1)]
    sessions_per_source_eni: _LimitDocument
    sources_per_target: _DefaultDocument
    large_targets: _LargeTargetsDocument
    load_balancer_targets: _CitedDocument
    price: _PriceDocument


TargetKind = Literal["network-interface", "network-load-balancer", "gateway-load-balancer-endpoint"]


@dataclass(frozen=True)
class TargetQuota:
    limit: int | None
    """Sources the target takes; None for no limit (load balancer targets)."""
    reason: str


@dataclass(frozen=True)
class Price:
    usd_per_eni_hour: float
    source: str
    """Where the price comes from: the cited page, or the user's setting."""


@dataclass(frozen=True)
class TargetQuotas:
    version: str
    cites: dict[str, tuple[str, str]]  # source id -> (short label, url)
    sessions_per_source_eni: int
    sessions_per_source_eni_sources: tuple[str, ...]
    default_sources_per_target: int
    default_sources: tuple[str, ...]
    large_target_limit: int
    large_target_types: frozenset[str]
    large_target_sources: tuple[str, ...]
    load_balancer_sources: tuple[str, ...]
    published_price: Price

    @classmethod
    def from_yaml(cls, text: str, *, origin: str = "target quota table") -> TargetQuotas:
        try:
            document = _QuotasDocument.model_validate(yaml.safe_load(text))
        except (yaml.YAMLError, ValidationError) as exc:
            raise TargetQuotasConfigError(f"{origin} is invalid: {exc}") from exc
        known = {source.id for source in document.sources}
        cited = [
            *document.sessions_per_source_eni.sources,
            *document.sources_per_target.sources,
            *document.large_targets.sources,
            *document.load_balancer_targets.sources,
            *document.price.sources,
        ]
        unknown = sorted(set(cited) - known)
        if unknown:
            raise TargetQuotasConfigError(f"{origin} cites unknown source(s) {', '.join(unknown)}")
        cites = {source.id: (source.cite, source.url) for source in document.sources}
        price_label, price_url = cites[document.price.sources[0]]
        return cls(
            version=str(document.version),
            cites=cites,
            sessions_per_source_eni=document.sessions_per_source_eni.limit,
            sessions_per_source_eni_sources=tuple(document.sessions_per_source_eni.sources),
            default_sources_per_target=document.sources_per_target.default,
            default_sources=tuple(document.sources_per_target.sources),
            large_target_limit=document.large_targets.limit,
            large_target_types=frozenset(document.large_targets.types),
            large_target_sources=tuple(document.large_targets.sources),
            load_balancer_sources=tuple(document.load_balancer_targets.sources),
            published_price=Price(
                usd_per_eni_hour=document.price.usd_per_eni_hour,
                source=f"{price_label}, {document.price.region} ({price_url})",
            ),
        )

    @classmethod
    def packaged(cls) -> TargetQuotas:
        return _packaged_quotas()

    def cite(self, source_ids: tuple[str, ...]) -> str:
        return "; ".join(dict.fromkeys(self.cites[source_id][0] for source_id in source_ids))

    def sources_per_target(self, kind: TargetKind, instance_type: str | None) -> TargetQuota:
        """How many source ENIs a target of this kind (and, for an ENI, this instance type) takes."""
        if kind != "network-interface":
            return TargetQuota(
                None, f"a {kind} target takes any number of sources ({self.cite(self.load_balancer_sources)})"
            )
        if instance_type is None:
            return TargetQuota(
                self.default_sources_per_target,
                f"instance type unknown: {self.default_sources_per_target} assumed, the smaller quota "
                f"({self.cite(self.default_sources)})",
            )
        name = instance_type.strip().lower()
        if name in self.large_target_types:
            return TargetQuota(
                self.large_target_limit,
                f"{name} is on AWS's list of types taking up to {self.large_target_limit} sources per target "
                f"({self.cite(self.large_target_sources)})",
            )
        return TargetQuota(
            self.default_sources_per_target,
            f"{name} is not on AWS's list of types taking {self.large_target_limit}: "
            f"{self.default_sources_per_target} sources per target ({self.cite(self.default_sources)})",
        )

    def price(self, usd_per_eni_hour: float | None = None) -> Price:
        """The published price, or the user's (their region's, their discount's)."""
        if usd_per_eni_hour is None:
            return self.published_price
        if usd_per_eni_hour < 0:
            raise ValueError(f"price per ENI-hour must not be negative, got {usd_per_eni_hour}")
        return Price(usd_per_eni_hour=usd_per_eni_hour, source="configured")


@functools.cache
def _packaged_quotas() -> TargetQuotas:
    resource = resources.files("trafficmirror")
    for part in PACKAGED_QUOTAS_RESOURCE:
        resource = resource / part
    return TargetQuotas.from_yaml(resource.read_text(encoding="utf-8"), origin="packaged target_quotas.yaml")
