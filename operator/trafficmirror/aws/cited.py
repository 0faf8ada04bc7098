"""The shape shared by the packaged, cited data tables (instance support, target quotas): every fact
names the AWS sources that state it, and a source says where it was read and what it says."""

from __future__ import annotations

import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    # Unknown keys are errors: a typo in a table must not silently drop a fact.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceDocument(StrictModel):
    id: str
    cite: str
    """Short label used inside reasons, e.g. "AWS docs, Traffic Mirroring limitations"."""
    says: str
    url: str | None = None
    also: str | None = None
    ref: str | None = None
    date: datetime.date | None = None
    retrieved: datetime.date | None = None


SourceIds = Annotated[list[str], Field(min_length=1)]
"""The ids of the sources a fact rests on: at least one."""
