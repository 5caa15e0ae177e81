"""The base of every policy document: a frozen pydantic model read from YAML text.

`read_yaml` also records the line of every key and list item (from the YAML
node marks), so a policy that does not validate is refused with its file,
line and rule (`PolicyError`), never with a bare traceback.
"""

from __future__ import annotations

from typing import Any, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

Path_ = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class PolicyError(ValueError):
    """A policy file that does not validate: where (file, line, path) and which rule."""

    def __init__(self, source: str, line: int | None, path: Path_, rule: str) -> None:
        self.source = source
        self.line = line
        self.path = ".".join(str(p) for p in path) or "(document)"
        self.rule = rule
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {self.path}: {rule}")


def _index(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            _index(value, sub, lines)
            lines[sub] = key.start_mark.line + 1  # the key's line reads best in an error
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines)


# libyaml's parser where PyYAML was built with it (the wheels are): the pure-Python one
# takes most of a second over the policies every command loads.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LinedYaml:
    """Parsed YAML plus the line of every path in it (`lines`, worked out when an error
    first needs one: a policy that validates never pays for it)."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self._text = text
        self._lines: dict[Path_, int] | None = None
        try:
            self.data: Any = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise PolicyError(
                source, mark.line + 1 if mark else None, (), "is not valid YAML"
            ) from None

    @property
    def lines(self) -> dict[Path_, int]:
        if self._lines is None:
            self._lines = {}
            node = yaml.compose(self._text, Loader=_LOADER)
            if node is not None:
                _index(node, (), self._lines)
        return self._lines

    def line(self, path: Path_) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        return self.lines.get(p)

    def error(self, path: Path_, rule: str) -> PolicyError:
        return PolicyError(self.source, self.line(path), path, rule)

    def validate(self, model: type[M], **extra: Any) -> M:
        """Validate into `model`; the first pydantic error becomes a `PolicyError`."""
        if not isinstance(self.data, dict):
            raise self.error((), "must be a mapping")
        try:
            return model.model_validate({**self.data, **extra})
        except ValidationError as exc:
            err = exc.errors(include_input=False, include_url=False)[0]
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            raise self.error(loc, err["msg"]) from None


class PolicyDocument(BaseModel):
    """Frozen, no unknown keys; `from_yaml` validates a document's text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<policy>") -> Self:
        return LinedYaml(text, source).validate(cls)
