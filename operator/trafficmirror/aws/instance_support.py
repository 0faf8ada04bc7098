"""Can an ENI on this EC2 instance type be a VPC Traffic Mirroring source? Data plus a pure decision.

AWS's answer has changed over the years and has no field in DescribeInstanceTypes, so it lives in
``instance_support.yaml`` (versioned, every entry cited) and users correct it without a release
through an override (a Helm value / ConfigMap). This module only reads that data: no boto3, no
I/O apart from reading the packaged YAML, so the reconciler can decide before asking AWS and tests
need no emulator.

Precedence, strongest first:

1. AWS's own rejection of the type (``NetworkInterfaceNotSupported``), remembered by the caller:
   AWS is the authority, no table or override can make it accept the type.
2. The user override for the exact type, then for the family (exact type beats family).
3. The packaged table: denied prefixes (t2., p4d.), AWS's Nitro denylist, bare metal, AWS's Xen
   allow list, the previous-generation families, the known Nitro families; only for a family the
   table does not know, the CurrentGeneration flag, then the hypervisor (Xen: no; Nitro: yes).
4. With no hypervisor fact and no table entry for the family: UNKNOWN, AWS decides when the session
   is created.

Override format (YAML text or an already parsed mapping)::

    allow: [c6i, m7i.large]   # a name with a dot is an exact type, without one a family
    deny: [c5.large]
"""

from __future__ import annotations

import datetime
import enum
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from trafficmirror.aws.cited import SourceDocument, SourceIds, StrictModel

AWS_REJECTION_CODE = "NetworkInterfaceNotSupported"
"""Error code of CreateTrafficMirrorSession for an ENI on an unsupported instance type."""

PACKAGED_TABLE_RESOURCE = ("aws", "instance_support.yaml")
"""Where the table sits inside the ``trafficmirror`` package (package data glob ``aws/*.yaml``)."""


class InstanceSupportConfigError(ValueError):
    """The support table or a user override is malformed; the message says what and where."""


class SupportVerdict(enum.StrEnum):
    SUPPORTED = "Supported"
    UNSUPPORTED = "Unsupported"
    UNKNOWN = "Unknown"


class SupportRule(enum.StrEnum):
    """Which rule decided, so callers can tell an AWS rejection from a table entry or an override."""

    REMEMBERED_REJECTION = "RememberedRejection"
    OVERRIDE_TYPE = "OverrideType"
    OVERRIDE_FAMILY = "OverrideFamily"
    DENIED_PREFIX = "DeniedPrefix"
    DENIED_FAMILY = "DeniedFamily"
    BARE_METAL = "BareMetal"
    SUPPORTED_XEN_FAMILY = "SupportedXenFamily"
    PREVIOUS_GENERATION = "PreviousGeneration"
    UNLISTED_XEN = "UnlistedXen"
    NITRO = "Nitro"
    NO_FACTS = "NoFacts"


# --------------------------------------------------------------------------- instance type names


def family_of(instance_type: str) -> str:
    """``"c6i.large"`` → ``"c6i"``; ``"u-6tb1.metal"`` → ``"u-6tb1"``; lower-cased."""
    return instance_type.strip().lower().partition(".")[0]


def size_of(instance_type: str) -> str:
    """``"c6i.large"`` → ``"large"``; ``"c7i.metal-24xl"`` → ``"metal-24xl"``; ``""`` without a dot."""
    return instance_type.strip().lower().partition(".")[2]


def _is_metal_size(size: str) -> bool:
    # Newer families have several bare metal sizes: c7i.metal-24xl, c7i.metal-48xl.
    return size == "metal" or size.startswith("metal-")


_NAMED_SIZE_CAPACITY = {"nano": 1, "micro": 2, "small": 4, "medium": 8, "large": 16, "xlarge": 32}
_MULTIPLE_XLARGE = re.compile(r"^(\d+)xlarge$")


def _size_capacity(size: str) -> int | None:
    """A number that orders sizes within a family (large < xlarge < 2xlarge ...); None if unknown."""
    if size in _NAMED_SIZE_CAPACITY:
        return _NAMED_SIZE_CAPACITY[size]
    multiple = _MULTIPLE_XLARGE.match(size)
    return int(multiple.group(1)) * _NAMED_SIZE_CAPACITY["xlarge"] if multiple else None


# --------------------------------------------------------------------------- facts and decisions


@dataclass(frozen=True)
class InstanceTypeFacts:
    """What DescribeInstanceTypes says about a type; None where it said nothing (or was not asked)."""

    instance_type: str
    hypervisor: str | None
    bare_metal: bool | None
    current_generation: bool | None

    @classmethod
    def from_instance_type_info(cls, info: Mapping[str, Any]) -> InstanceTypeFacts:
        """From one ``InstanceTypes[]`` item of a DescribeInstanceTypes response."""
        hypervisor = info.get("Hypervisor")
        bare_metal = info.get("BareMetal")
        current_generation = info.get("CurrentGeneration")
        return cls(
            instance_type=str(info["InstanceType"]),
            hypervisor=hypervisor if isinstance(hypervisor, str) else None,
            bare_metal=bare_metal if isinstance(bare_metal, bool) else None,
            current_generation=current_generation if isinstance(current_generation, bool) else None,
        )

    @classmethod
    def name_only(cls, instance_type: str) -> InstanceTypeFacts:
        """Only the name is known: decided by the table's family lists, else UNKNOWN."""
        return cls(instance_type=instance_type, hypervisor=None, bare_metal=None, current_generation=None)


@dataclass(frozen=True, kw_only=True)
class SupportDecision:
    verdict: SupportVerdict
    reason: str
    """A sentence naming the rule and its sources, for conditions, events and logs."""
    alternative: str | None = None
    """A type of similar size that the same table supports; only for UNSUPPORTED, None if none known."""
    rule: SupportRule


# --------------------------------------------------------------------------- user overrides


def _normalise_name(value: object) -> object:
    # Before the pattern check, so "C6I" from a hand-written ConfigMap means c6i.
    return value.strip().lower() if isinstance(value, str) else value


_FamilyOrTypeName = Annotated[
    str,
    BeforeValidator(_normalise_name),
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*(\.[a-z0-9-]+)?$"),
]


class _OverridesDocument(BaseModel):
    # Unknown keys are errors: a typo such as "allowed:" must not silently change nothing.
    model_config = ConfigDict(extra="forbid")

    allow: list[_FamilyOrTypeName] = Field(default_factory=list)
    deny: list[_FamilyOrTypeName] = Field(default_factory=list)


@dataclass(frozen=True)
class SupportOverrides:
    """The user's corrections to the packaged table: exact types (with a dot) and families."""

    allowed_types: frozenset[str] = frozenset()
    denied_types: frozenset[str] = frozenset()
    allowed_families: frozenset[str] = frozenset()
    denied_families: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, overrides: SupportOverrides | Mapping[str, Any] | str | None) -> SupportOverrides:
        """From YAML text (a ConfigMap value), a parsed mapping (a Helm value) or nothing."""
        if overrides is None:
            return cls()
        if isinstance(overrides, SupportOverrides):
            return overrides
        if isinstance(overrides, str):
            try:
                loaded = yaml.safe_load(overrides)
            except yaml.YAMLError as exc:
                raise InstanceSupportConfigError(f"instance-support override is not valid YAML: {exc}") from exc
            overrides = {} if loaded is None else loaded
        if not isinstance(overrides, Mapping):
            raise InstanceSupportConfigError(
                "instance-support override must be a mapping with allow: and/or deny: lists, "
                f"got {type(overrides).__name__}"
            )
        try:
            document = _OverridesDocument.model_validate(dict(overrides))
        except ValidationError as exc:
            raise InstanceSupportConfigError(f"instance-support override is invalid: {exc}") from exc
        contradictions = sorted(set(document.allow) & set(document.deny))
        if contradictions:
            raise InstanceSupportConfigError(
                f"instance-support override both allows and denies {', '.join(contradictions)}"
            )
        return cls(
            allowed_types=frozenset(name for name in document.allow if "." in name),
            denied_types=frozenset(name for name in document.deny if "." in name),
            allowed_families=frozenset(name for name in document.allow if "." not in name),
            denied_families=frozenset(name for name in document.deny if "." not in name),
        )


# --------------------------------------------------------------------------- the packaged table

_FamilyName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$")]
_SizeName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+$")]


class _CitedFamiliesDocument(StrictModel):
    sources: SourceIds
    families: list[_FamilyName]


class _DeniedFamiliesDocument(_CitedFamiliesDocument):
    since: datetime.date | str


class _DeniedPrefixDocument(StrictModel):
    prefix: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]*$")]
    sources: SourceIds
    note: str | None = None


class _CitedRuleDocument(StrictModel):
    sources: SourceIds


class _TableDocument(StrictModel):
    version: datetime.date | str
    sources: Annotated[list[SourceDocument], Field(min_length=1)]
    supported_xen_families: _CitedFamiliesDocument
    denied_families: list[_DeniedFamiliesDocument]
    denied_prefixes: list[_DeniedPrefixDocument]
    bare_metal: _CitedRuleDocument
    previous_generation: _CitedFamiliesDocument
    supported_nitro_families: _CitedFamiliesDocument
    alternatives: dict[_FamilyName, list[_FamilyName]]
    alternatives_by_class: dict[Annotated[str, StringConstraints(pattern=r"^[a-z]$")], list[_FamilyName]]
    family_sizes: dict[_FamilyName, Annotated[list[_SizeName], Field(min_length=1)]]


@dataclass(frozen=True)
class Citation:
    source_id: str
    cite: str
    """Short label used inside reasons, e.g. "AWS docs, Traffic Mirroring limitations"."""
    url: str | None
    says: str


@dataclass(frozen=True)
class DeniedFamily:
    since: str
    source_ids: tuple[str, ...]


@dataclass(frozen=True)
class DeniedPrefix:
    prefix: str
    """Matched against the start of the type name, dot included ("t2.")."""
    source_ids: tuple[str, ...]
    note: str | None


_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


def _frozen_mapping(items: Mapping[_Key, _Value]) -> Mapping[_Key, _Value]:
    # Read-only so a shared (cached) table cannot be changed by one caller under another.
    return MappingProxyType(dict(items))


@dataclass(frozen=True)
class SupportTable:
    """The packaged table, plus the user's override; build with ``packaged()`` / ``from_yaml()``."""

    version: str
    sources: Mapping[str, Citation]
    supported_xen_families: frozenset[str]
    supported_xen_source_ids: tuple[str, ...]
    denied_families: Mapping[str, DeniedFamily]
    denied_prefixes: tuple[DeniedPrefix, ...]
    bare_metal_source_ids: tuple[str, ...]
    previous_generation_families: frozenset[str]
    previous_generation_source_ids: tuple[str, ...]
    supported_nitro_families: frozenset[str]
    supported_nitro_source_ids: tuple[str, ...]
    alternatives: Mapping[str, tuple[str, ...]]
    alternatives_by_class: Mapping[str, tuple[str, ...]]
    family_sizes: Mapping[str, tuple[str, ...]]
    overrides: SupportOverrides = field(default_factory=SupportOverrides)

    @classmethod
    def packaged(cls) -> SupportTable:
        """The table shipped in the wheel, without overrides (parsed once per process)."""
        return _packaged_table()

    @classmethod
    def from_yaml(cls, text: str, *, origin: str = "instance-support table") -> SupportTable:
        try:
            document = _TableDocument.model_validate(yaml.safe_load(text))
        except (yaml.YAMLError, ValidationError) as exc:
            raise InstanceSupportConfigError(f"{origin} is invalid: {exc}") from exc
        table = cls._from_document(document)
        table._check_consistency(origin)
        return table

    @classmethod
    def _from_document(cls, document: _TableDocument) -> SupportTable:
        denied_families: dict[str, DeniedFamily] = {}
        for group in document.denied_families:
            for family in group.families:
                denied_families[family] = DeniedFamily(since=str(group.since), source_ids=tuple(group.sources))
        return cls(
            version=str(document.version),
            sources=_frozen_mapping(
                {
                    source.id: Citation(
                        source_id=source.id, cite=source.cite, url=source.url or source.ref, says=source.says
                    )
                    for source in document.sources
                }
            ),
            supported_xen_families=frozenset(document.supported_xen_families.families),
            supported_xen_source_ids=tuple(document.supported_xen_families.sources),
            denied_families=_frozen_mapping(denied_families),
            denied_prefixes=tuple(
                DeniedPrefix(prefix=entry.prefix, source_ids=tuple(entry.sources), note=entry.note)
                for entry in document.denied_prefixes
            ),
            bare_metal_source_ids=tuple(document.bare_metal.sources),
            previous_generation_families=frozenset(document.previous_generation.families),
            previous_generation_source_ids=tuple(document.previous_generation.sources),
            supported_nitro_families=frozenset(document.supported_nitro_families.families),
            supported_nitro_source_ids=tuple(document.supported_nitro_families.sources),
            alternatives=_frozen_mapping({k: tuple(v) for k, v in document.alternatives.items()}),
            alternatives_by_class=_frozen_mapping({k: tuple(v) for k, v in document.alternatives_by_class.items()}),
            family_sizes=_frozen_mapping({k: tuple(v) for k, v in document.family_sizes.items()}),
        )

    def _check_consistency(self, origin: str) -> None:
        """Cross-references pydantic cannot see; a broken table must fail at load, not mid-decision."""
        problems: list[str] = []
        cited = [
            *self.supported_xen_source_ids,
            *(source for entry in self.denied_families.values() for source in entry.source_ids),
            *(source for entry in self.denied_prefixes for source in entry.source_ids),
            *self.bare_metal_source_ids,
            *self.previous_generation_source_ids,
            *self.supported_nitro_source_ids,
        ]
        problems += [f"cites unknown source {source!r}" for source in sorted(set(cited) - set(self.sources))]
        supported = self.supported_xen_families | self.supported_nitro_families
        denied = set(self.denied_families) | self.previous_generation_families
        problems += [f"lists {family!r} as both supported and denied" for family in sorted(supported & denied)]
        suggested = {
            family
            for candidates in (*self.alternatives.values(), *self.alternatives_by_class.values())
            for family in candidates
        }
        problems += [
            f"suggests {family!r} but gives no family_sizes for it"
            for family in sorted(suggested - set(self.family_sizes))
        ]
        problems += [
            f"family_sizes[{family!r}] has unknown size {size!r}"
            for family, sizes in sorted(self.family_sizes.items())
            for size in sizes
            if not _is_metal_size(size) and _size_capacity(size) is None
        ]
        if problems:
            raise InstanceSupportConfigError(f"{origin} (version {self.version}): " + "; ".join(problems))

    def with_overrides(self, overrides: SupportOverrides | Mapping[str, Any] | str | None) -> SupportTable:
        """This table with the user's override (replacing any earlier one: it comes from one place)."""
        return replace(self, overrides=SupportOverrides.parse(overrides))

    def cite(self, source_ids: Iterable[str]) -> str:
        """Short labels of the sources, in order, each once: "AWS docs, ...; field report"."""
        return "; ".join(dict.fromkeys(self.sources[source_id].cite for source_id in source_ids))


@functools.cache
def _packaged_table() -> SupportTable:
    resource = resources.files("trafficmirror")
    for part in PACKAGED_TABLE_RESOURCE:
        resource = resource / part
    return SupportTable.from_yaml(resource.read_text(encoding="utf-8"), origin="packaged instance_support.yaml")


def load_support_table(overrides: SupportOverrides | Mapping[str, Any] | str | None = None) -> SupportTable:
    """The packaged table merged with the user's override (YAML text, a mapping, or None)."""
    return SupportTable.packaged().with_overrides(overrides)


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class _Judgement:
    verdict: SupportVerdict
    rule: SupportRule
    reason: str


def decide_support(
    facts: InstanceTypeFacts,
    table: SupportTable,
    remembered_rejections: frozenset[str] = frozenset(),
) -> SupportDecision:
    """Whether ``facts.instance_type`` can be a mirror source, why, and what to use instead."""
    rejected_types = frozenset(name.strip().lower() for name in remembered_rejections)
    judgement = _judge(facts, table, rejected_types)
    alternative = (
        _suggest_alternative(facts, table, rejected_types) if judgement.verdict is SupportVerdict.UNSUPPORTED else None
    )
    return SupportDecision(
        verdict=judgement.verdict, reason=judgement.reason, alternative=alternative, rule=judgement.rule
    )


def _is_bare_metal(facts: InstanceTypeFacts) -> bool:
    # The API's BareMetal flag wins; the size name is the fallback when the facts are missing.
    if facts.bare_metal is not None:
        return facts.bare_metal
    return _is_metal_size(size_of(facts.instance_type))


def _judge(facts: InstanceTypeFacts, table: SupportTable, rejected_types: frozenset[str]) -> _Judgement:
    instance_type = facts.instance_type.strip().lower()
    family = family_of(instance_type)
    hypervisor = (facts.hypervisor or "").strip().lower() or None
    overrides = table.overrides
    supported, unsupported = SupportVerdict.SUPPORTED, SupportVerdict.UNSUPPORTED

    if instance_type in rejected_types:
        return _Judgement(
            unsupported,
            SupportRule.REMEMBERED_REJECTION,
            f"AWS rejected {instance_type} for a traffic mirror session ({AWS_REJECTION_CODE}); "
            "its answer is remembered and beats the table",
        )

    if instance_type in overrides.denied_types:
        return _Judgement(
            unsupported,
            SupportRule.OVERRIDE_TYPE,
            f"{instance_type} is denied by the instance-support override (deny: {instance_type})",
        )
    if instance_type in overrides.allowed_types:
        return _Judgement(
            supported,
            SupportRule.OVERRIDE_TYPE,
            f"{instance_type} is allowed by the instance-support override (allow: {instance_type})",
        )
    if family in overrides.denied_families:
        return _Judgement(
            unsupported,
            SupportRule.OVERRIDE_FAMILY,
            f"{family} is denied by the instance-support override (deny: {family})",
        )
    if family in overrides.allowed_families:
        return _Judgement(
            supported,
            SupportRule.OVERRIDE_FAMILY,
            f"{family} is allowed by the instance-support override (allow: {family})",
        )

    for denied_prefix in table.denied_prefixes:
        if instance_type.startswith(denied_prefix.prefix):
            note = f"; {denied_prefix.note}" if denied_prefix.note else ""
            return _Judgement(
                unsupported,
                SupportRule.DENIED_PREFIX,
                f"{denied_prefix.prefix.rstrip('.')} is not supported by VPC Traffic Mirroring "
                f"({table.cite(denied_prefix.source_ids)}){note}",
            )

    denied_family = table.denied_families.get(family)
    if denied_family is not None:
        return _Judgement(
            unsupported,
            SupportRule.DENIED_FAMILY,
            f"{family} is on AWS's list of Nitro families without Traffic Mirroring, "
            f"listed since {denied_family.since} ({table.cite(denied_family.source_ids)})",
        )

    # Before the Xen allow list: i3 is an allowed Xen family but i3.metal is bare metal.
    if _is_bare_metal(facts):
        return _Judgement(
            unsupported,
            SupportRule.BARE_METAL,
            f"{instance_type} is bare metal, which VPC Traffic Mirroring does not support "
            f"({table.cite(table.bare_metal_source_ids)})",
        )

    # Before the previous-generation rule: AWS names these families explicitly.
    if family in table.supported_xen_families:
        return _Judgement(
            supported,
            SupportRule.SUPPORTED_XEN_FAMILY,
            f"{family} is one of the Xen families AWS lists as supported "
            f"({table.cite(table.supported_xen_source_ids)})",
        )

    # The table's family lists decide before the CurrentGeneration flag: AWS's list names families,
    # and the flag moves with time (AWS relabels whole families) and differs between data sources.
    if family in table.previous_generation_families:
        return _Judgement(
            unsupported,
            SupportRule.PREVIOUS_GENERATION,
            f"{family} is a previous-generation family, which VPC Traffic Mirroring does not support "
            f"({table.cite(table.previous_generation_source_ids)})",
        )
    if family in table.supported_nitro_families and hypervisor != "xen":
        return _Judgement(
            supported,
            SupportRule.NITRO,
            f"{family} is a Nitro family not on AWS's denylist as of table {table.version} "
            f"({table.cite(table.supported_nitro_source_ids)})",
        )

    # A family the table does not know: the flag, then the hypervisor.
    if facts.current_generation is False:
        return _Judgement(
            unsupported,
            SupportRule.PREVIOUS_GENERATION,
            f"{instance_type} is a previous-generation type (CurrentGeneration false) and {family} is not in "
            f"instance-support table {table.version}; VPC Traffic Mirroring does not support previous "
            f"generations ({table.cite(table.previous_generation_source_ids)})",
        )

    if hypervisor == "xen":
        return _Judgement(
            unsupported,
            SupportRule.UNLISTED_XEN,
            f"{instance_type} runs on Xen and {family} is not one of the Xen families VPC Traffic Mirroring "
            f"supports ({table.cite(table.supported_xen_source_ids)})",
        )

    # AWS documents Nitro as supported except its denylist; a Nitro family newer than this table is
    # therefore judged supported, and if AWS disagrees its rejection is remembered (rule 1).
    if hypervisor == "nitro":
        return _Judgement(
            supported,
            SupportRule.NITRO,
            f"{instance_type} runs on Nitro and {family} is not on AWS's denylist as of table "
            f"{table.version} ({table.cite(table.supported_nitro_source_ids)})",
        )
    return _Judgement(
        SupportVerdict.UNKNOWN,
        SupportRule.NO_FACTS,
        f"the hypervisor of {instance_type} is unknown and {family} is not in instance-support table {table.version}",
    )


def _closest_size(wanted_size: str, offered_sizes: tuple[str, ...], *, largest: bool) -> str | None:
    """The offered virtualized size nearest to the wanted one, never smaller when avoidable."""
    virtualized = [size for size in offered_sizes if not _is_metal_size(size)]
    if not virtualized:
        return None
    by_capacity = sorted(virtualized, key=lambda size: _size_capacity(size) or 0)
    if largest:
        return by_capacity[-1]
    if wanted_size in virtualized:
        return wanted_size
    wanted_capacity = _size_capacity(wanted_size)
    if wanted_capacity is None:
        return by_capacity[0]
    at_least_as_big = [size for size in by_capacity if (_size_capacity(size) or 0) >= wanted_capacity]
    return at_least_as_big[0] if at_least_as_big else by_capacity[-1]


def _suggest_alternative(facts: InstanceTypeFacts, table: SupportTable, rejected_types: frozenset[str]) -> str | None:
    instance_type = facts.instance_type.strip().lower()
    family, size = family_of(instance_type), size_of(instance_type)
    bare_metal = _is_bare_metal(facts)
    # A bare metal type's own family is the closest match when its virtualized sizes are supported
    # (m5.metal → m5.24xlarge); otherwise the table's replacements, then the class fallback.
    candidate_families = [
        *([family] if bare_metal else []),
        *table.alternatives.get(family, ()),
        *table.alternatives_by_class.get(family[:1], ()),
    ]
    for candidate_family in dict.fromkeys(candidate_families):
        candidate_size = _closest_size(size, table.family_sizes.get(candidate_family, ()), largest=bare_metal)
        if candidate_size is None:
            continue
        candidate = f"{candidate_family}.{candidate_size}"
        # Judged by name only, exactly as a user reading the suggestion would get it judged.
        if candidate != instance_type and (
            _judge(InstanceTypeFacts.name_only(candidate), table, rejected_types).verdict is SupportVerdict.SUPPORTED
        ):
            return candidate
    return None


def unsupported_message(
    eni_id: str,
    instance_id: str,
    instance_type: str,
    decision: SupportDecision,
    *,
    role: Literal["source", "target"] = "source",
) -> str:
    """The sentence for the resource's condition and event; ``role`` is the ENI's part in the session."""
    if decision.verdict is SupportVerdict.SUPPORTED:
        raise ValueError(f"{instance_type} is supported; there is no unsupported message to write")
    doubt = "does not support" if decision.verdict is SupportVerdict.UNSUPPORTED else "may not support"
    message = (
        f"{role} {eni_id} is attached to instance {instance_id} of type {instance_type}, "
        f"which VPC Traffic Mirroring {doubt} ({decision.reason})"
    )
    if decision.alternative is not None:
        return f"{message}; use a supported type such as {decision.alternative}"
    if decision.verdict is SupportVerdict.UNKNOWN:
        return f"{message}; AWS decides when the session is created"
    return f"{message}; no supported alternative of similar size is known, see instance_support.yaml"
