"""The base of every policy document: a frozen pydantic model read from YAML text."""

from __future__ import annotations

from typing import Self

import yaml
from pydantic import BaseModel, ConfigDict


class PolicyDocument(BaseModel):
    """Frozen, no unknown keys; `from_yaml` validates a document's text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_yaml(cls, text: str) -> Self:
        return cls.model_validate(yaml.safe_load(text))
