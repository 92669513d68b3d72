"""Reading config text: the strict YAML loader, `KEY=VALUE` overrides, and YAML written back.

`load_raw(path)` returns a config file's mapping as parsed, before any validation; `apply_overrides(raw,
["committee.members=8"])` sets dotted keys on a copy (each value parsed as YAML, as on the command line).
Config files are read with `_ConfigLoader`, which refuses duplicate keys and anchors/aliases (so loading and
validation stay bounded) and reads `1e-3` as a float. Loading is bounded before any work: a config file larger
than MAX_CONFIG_BYTES is refused unread, and a value nested deeper than MAX_NESTING_DEPTH (in a file or an
override) is refused as the parser meets it, instead of exhausting Python's recursion limit.
`PlainDumper` writes YAML that `load_raw` reads back.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from workers.errors import ConfigError

# A config is a few kilobytes (the largest shipped one is about 2 KB); a file far larger is a mistake, and
# parsing megabytes of YAML takes seconds before validation could say so.
MAX_CONFIG_BYTES = 256 * 1024
# Sections, a mapping of files per split, a list of columns, a sweep's space: configs nest a few levels deep.
# The YAML composer recurses once per level, so without a bound 100,000 nested `[` end in a RecursionError.
MAX_NESTING_DEPTH = 32


class _RefusedYaml(yaml.YAMLError):
    """YAML that parses but that a config refuses (duplicate key, anchor, alias); the text says where."""


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader for configs: duplicate keys and anchors/aliases are errors, `1e-3` is a float.

    Anchors and aliases are refused as soon as the composer meets one, so a small file cannot expand into
    a huge tree (nested aliases grow exponentially) and a config reads the same top to bottom.
    `_key_paths` maps a mapping node to its dotted key so a duplicate is named in full.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._key_paths: dict[int, str] = {}
        self._depth = 0  # how many collections the node being composed sits in

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise _RefusedYaml(f"line {line}: alias '*{event.anchor}' - anchors and aliases are not allowed in "
                               "configs; write the value out in full")
        if getattr(event, "anchor", None) is not None:
            raise _RefusedYaml(f"line {line}: anchor '&{event.anchor}' - anchors and aliases are not allowed in "
                               "configs; write the value out in full")
        if self._depth >= MAX_NESTING_DEPTH:
            raise _RefusedYaml(f"line {line}: a value nested more than {MAX_NESTING_DEPTH} levels deep (lists and "
                               f"mappings inside each other); a config nests a few levels, so this is not one")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self._check_keys(node)
        return super().construct_mapping(node, deep=deep)

    def _check_keys(self, node: yaml.MappingNode) -> None:
        """Refuse a key seen twice in one mapping (naming both lines) and `<<` merge keys."""
        prefix = self._key_paths.get(id(node), "")
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _RefusedYaml(f"line {line}: merge key '<<' is not allowed in configs; write the keys out")
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: SafeConstructor reports it
                continue
            dotted = f"{prefix}{key}"
            if seen is not None:
                raise _RefusedYaml(f"duplicate key '{dotted}' on line {seen} and line {line}; keep one")
            first_line[key] = line
            self._key_paths[id(value_node)] = dotted + "."


# YAML 1.1 reads `1e-3` (no dot) as a string; a config means the number, as YAML 1.2 does.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+.0123456789"))


# YAML 1.1 reads `012` as octal 10 and `1:30` as 90 (base 60). A config means neither: integers are read as
# YAML 1.2 reads them (decimal without a leading zero, 0x hex, 0o octal). A number written with a leading
# zero (`0012`) stays text, so `name: 0012` names the run "0012" and `seed: 012` is refused, not read as 10.
_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in _ConfigLoader.yaml_implicit_resolvers.items()
}
_CONFIG_INT = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0o[0-7_]+)$")
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:int", _CONFIG_INT, list("-+0123456789"))


def _yaml_load(text: str) -> Any:
    """Parse `text` with `_ConfigLoader` (raises yaml.YAMLError, `_RefusedYaml` included)."""
    loader = _ConfigLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_value(item: str, text: str) -> Any:
    """A command-line value, parsed as YAML: `8` -> 8, `true` -> True, `null` -> None, `a` -> 'a'.

    Text that is not YAML stays a string (validation then names the key); refused YAML is an error.
    """
    try:
        return _yaml_load(text)
    except _RefusedYaml as exc:
        raise ConfigError(f"override '{_shorten(item)}': {exc}") from None
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `a.b.c=value` applied (the value parsed as YAML)."""
    out = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not KEY=VALUE (e.g. committee.members=8)")
        dotted, text = item.split("=", 1)
        dotted = dotted.strip()
        if not dotted:
            raise ConfigError(f"override '{item}' has an empty key")
        if dotted.count(".") >= MAX_NESTING_DEPTH:
            raise ConfigError(f"override key '{_shorten(dotted)}' has {dotted.count('.') + 1} parts; a config key has "
                              f"a few (at most {MAX_NESTING_DEPTH}), e.g. committee.members")
        set_dotted(out, dotted, parse_value(item, text))
    return out


def _shorten(text: str, limit: int = 80) -> str:
    """`text` for a message: cut to `limit` characters with how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": value} for a nested mapping (lists are values): what `--resume` compares key by key."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `raw[a][b][c] = value` for `a.b.c` in place, adding missing sections; a value in the way is an error."""
    node = raw
    parts = dotted.split(".")
    for key in parts[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{dotted}': '{key}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _deep_copy(raw: Any) -> Any:
    """A copy of parsed YAML (dicts, lists, scalars), so overrides never change the caller's mapping."""
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def command_of(raw: dict[str, Any]) -> str:
    """Which command a config mapping is for: "sweep" or "distill" when it has that command's section, else
    "run"."""
    return next((name for name in ("sweep", "distill") if name in raw), "run")


def load_raw(path: str | Path) -> dict[str, Any]:
    """The config file's mapping, as parsed: refused when not YAML, not a non-empty mapping, or when it
    repeats a key or uses anchors/aliases (an empty file would otherwise mean "all defaults")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is {size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,} bytes "
                          f"({MAX_CONFIG_BYTES // 1024} KiB; configs are a few kilobytes): is it the right file?")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    try:
        raw = _yaml_load(text)
    except _RefusedYaml as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        got = "an empty mapping" if isinstance(raw, dict) else f"{raw!r}"
        raise ConfigError(f"{path} must be a non-empty mapping of config keys (got {got}); see configs/ "
                          "for examples")
    return raw


class PlainDumper(yaml.SafeDumper):
    """Never writes anchors/aliases, which `load_raw` refuses."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# Text that either YAML 1.1 or the config loader would read as a number is written in quotes, so that
# `load_raw` reads back exactly what was written (e.g. a name "0o17" or "1e-3").
PlainDumper.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+.0123456789"))
PlainDumper.add_implicit_resolver("tag:yaml.org,2002:int", _CONFIG_INT, list("-+0123456789"))

