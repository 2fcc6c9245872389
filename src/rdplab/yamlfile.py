"""YAML loading that remembers where every value came from.

PyYAML composes the node tree (which carries line numbers) and constructs the data; we
walk both together to map each path (``("scenarios", 3, "faults", 0)``) to its line, so
validation errors can name file, line and field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from rdplab.errors import LabFileError

PathKey = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class Located:
    """Data loaded from a YAML file plus the line of every path in it."""

    def __init__(self, path: Path, data: Any, lines: dict[PathKey, int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines

    def line_of(self, loc: PathKey) -> int | None:
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)

    def error(self, loc: PathKey, message: str) -> LabFileError:
        return LabFileError(str(self.path), message, self.line_of(loc), field_name(loc))

    def validate(self, model: type[M], data: Any = None, base: PathKey = ()) -> M:
        try:
            return model.model_validate(self.data if data is None else data)
        except ValidationError as exc:
            # an unknown key usually explains a "missing" one next to it: report it first
            errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
            first = errors[0]
            loc = base + tuple(p for p in first["loc"] if isinstance(p, str | int))
            raise self.error(loc, _message(first)) from None


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    return str(err["msg"])


def field_name(loc: PathKey) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (libyaml's when PyYAML has it: several times faster) with YAML 1.2
    booleans: only true/false. YAML 1.1 would read the key ``on:`` (as in
    ``{fault: X, on: client}``) and ``yes``/``no`` as booleans."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class _CLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The same resolvers as _Loader over libyaml's parser."""


_CLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
_FastLoader: type[yaml.SafeLoader] = _CLoader if yaml.__with_libyaml__ else _Loader


def _walk(node: yaml.Node, loc: PathKey, lines: dict[PathKey, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*loc, key), lines)
            lines[(*loc, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*loc, i), lines)


def load(path: str | Path) -> Located:
    """Read a YAML file; raise LabFileError naming file and line on any syntax problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabFileError(str(p), "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabFileError(str(p), f"cannot read: {exc}") from None
    try:
        # one parse (libyaml's when PyYAML has it): the node tree gives the lines, the data
        # is constructed from the same tree
        loader = _FastLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise LabFileError(str(p), f"YAML syntax error: {exc.problem or exc}", line) from None
    except yaml.YAMLError as exc:
        raise LabFileError(str(p), f"YAML error: {exc}") from None
    lines: dict[PathKey, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return Located(p, data, lines)
