"""The files shipped in this folder, read as text: the one place `policies/` reads a file.

It sits below every policy module, so that a module that judges by its shipped table when
given none (`identity`, `case_number`, `masking`) reads it here, and `catalog` (which
imports the policy types) is never imported back.
"""

from __future__ import annotations

from importlib import resources


def read_text(name: str) -> str:
    """A file of this folder by its relative name (`consent.yaml`, `risk/scorecard.yaml`)."""
    return resources.files("policies").joinpath(name).read_text(encoding="utf-8")


def folder_texts(folder: str, suffix: str) -> list[tuple[str, str]]:
    """Each file of a subfolder whose name ends with `suffix`, as (name, text), by name."""
    entries = sorted(resources.files("policies").joinpath(folder).iterdir(), key=lambda e: e.name)
    return [(e.name, e.read_text(encoding="utf-8")) for e in entries if e.name.endswith(suffix)]
