"""Write docs/reference/openapi.json from the HTTP API, and the route list of
docs/reference/api.md from that document.

Run by `make docs`. The document is the one `idv serve` serves, made as the contract tests
make it (`create_app` over a runtime that opens nothing: no store, no key is touched), with
the development defaults whatever this shell's `IDV_*` variables say, so that it is the
same on every machine. The page's hand-written part (above the marker line) is kept; below
it, one table lists each path and method with what it does (its description) and the
statuses it answers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent / "reference"
DOCUMENT = HERE / "openapi.json"
PAGE = HERE / "api.md"
MARK = "<!-- Everything below is written by docs/gen_api.py (make docs): do not edit. -->"
METHODS = ("get", "post", "put", "patch", "delete")


def document() -> dict[str, Any]:
    for name in [n for n in os.environ if n.startswith("IDV_")]:
        del os.environ[name]
    from pydantic import SecretStr

    from flows.runtime import Runtime
    from flows.settings import Settings
    from idv.api import create_app

    # A service token, so that the app does not warn that it would serve without one; in
    # development its strength is not checked and it appears nowhere in the document.
    settings = Settings(
        env="development",
        home=Path("never-opened"),
        api_token=SecretStr("documentation-only-" + "x" * 24),
    )
    return create_app(Runtime(settings)).openapi()


def cell(text: str) -> str:
    """Text fit for one table cell: one line, no column break."""
    return " ".join(text.split()).replace("|", "\\|")


def routes(doc: dict[str, Any]) -> str:
    rows = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            does = op.get("description") or op.get("summary") or ""
            statuses = ", ".join(sorted(op.get("responses", {})))
            rows.append(f"| `{method.upper()}` | `{cell(path)}` | {cell(does)} | {statuses} |")
    info = doc["info"]
    return (
        "\n\n".join(
            [
                "## Every route",
                f"{info['title']} {info['version']}, OpenAPI {doc['openapi']}: "
                f"{len(rows)} operations on {len(doc['paths'])} paths, in the order the "
                "document gives them.",
                "| method | path | does | answers |\n| --- | --- | --- | --- |\n" + "\n".join(rows),
            ]
        )
        + "\n"
    )


def main() -> None:
    doc = document()
    DOCUMENT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    text = PAGE.read_text(encoding="utf-8")
    head, found, _ = text.partition(MARK)
    if not found:
        sys.exit(f"{PAGE}: the line {MARK!r} is missing")
    PAGE.write_text(f"{head}{MARK}\n\n{routes(doc)}", encoding="utf-8")


if __name__ == "__main__":
    main()
