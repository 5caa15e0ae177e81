"""Privacy notices: versioned texts with metadata, identified by the hash of their text.

A notice file is YAML front matter (version, purposes, data categories, retention)
between `---` lines, then the text the person is shown. A consent records the
notice version and the hash of that text; a purpose or data category the notice
does not list is not covered by consents given under it (PIPL Art. 14, 17).
"""

from __future__ import annotations

import hashlib
from datetime import date

import yaml
from pydantic import BaseModel, ConfigDict, Field


class Notice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    published: date
    language: str
    purposes: frozenset[str] = Field(min_length=1)
    scopes: frozenset[str] = Field(min_length=1)  # the data categories it tells of
    retention_days: int = Field(gt=0)
    text_sha256: str

    def covers(self, purpose: str, scope: str) -> bool:
        return purpose in self.purposes and scope in self.scopes


class NoticeFormatError(ValueError):
    pass


def text_hash(text: str) -> str:
    """SHA-256 of the notice text as shown (UTF-8, line endings normalised to LF)."""
    return hashlib.sha256(text.replace("\r\n", "\n").strip().encode("utf-8")).hexdigest()


def parse_notice(source: str, *, name: str = "notice") -> Notice:
    """Front matter between the first two `---` lines, the shown text after them."""
    parts = source.split("\n---\n", 1)
    if not source.startswith("---\n") or len(parts) != 2:
        raise NoticeFormatError(f"{name}: must start with YAML front matter between --- lines")
    meta = yaml.safe_load(parts[0].removeprefix("---\n"))
    if not isinstance(meta, dict):
        raise NoticeFormatError(f"{name}: front matter must be a mapping")
    body = parts[1]
    if not body.strip():
        raise NoticeFormatError(f"{name}: the notice text is empty")
    return Notice.model_validate({**meta, "text_sha256": text_hash(body)})
