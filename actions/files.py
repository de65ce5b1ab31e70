"""Safe edits of an instance's configuration files: atomic writes, value checks, quoting.

The Ultrabase manager renders its templates with envsubst, so a setting is baked literally
into several files: the registry record (instances.json), the env file (.env-<id>), the
rendered compose file and kong.yml. `FileSet` edits them in memory, checks every edit by
parsing the result again (only the intended value may differ), and writes each changed file
atomically. Edits change the text in place: comments, order and formatting stay.

How values are written (each rule has a round-trip test in tests/unit/actions/test_files.py):

- everywhere: NUL, newlines, other control or invisible format characters and the
  backslash are refused. python-dotenv (the doctor's env reader) and compose's own
  --env-file parser disagree about backslashes inside quotes, so no quoting of one is safe.
- env file: a plain token is written bare; anything else single-quoted, with `'` written
  as `\\'`. Both readers take single-quoted text literally (no `$` interpolation).
- compose file: `$` is doubled (`$$`) so compose does not interpolate it, then the value is
  a YAML scalar, single-quoted unless it is a plain token.
- kong.yml: Kong's entrypoint runs `eval "echo \\"$(cat temp.yml)\\""` over the file, so the
  text sits inside a double-quoted shell string. `$`, backquote, `"` and `\\` are refused in
  values written there: escaping them would work for Kong, but the file's text would then
  differ from what Kong loads, and every other reader of kong.yml (the doctor's discovery
  among them) would see another value. Everything else is left alone by that shell and is
  written as a YAML scalar, single-quoted unless a plain token.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import yaml
from dotenv import dotenv_values
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from exporter.discovery.model import Instance, InstanceFiles
from exporter.errors import DoctorError
from exporter.safefs import SymlinkRefused, kind, replace_file, within
from exporter.safefs import read_bytes as safe_read
from exporter.web.params import BadRequest

__all__ = [
    "FILE_KEYS", "FileSet", "InstanceFiles", "UnsafeEdit", "UnsafeValue", "atomic_write",
    "check_value", "compose_escape", "compose_scalar", "env_quote", "kong_scalar",
    "registry_record_span", "yaml_scalar",
]

log = logging.getLogger(__name__)

# The files that carry an instance's configuration, in the order they are written.
FILE_KEYS: tuple[str, ...] = ("compose_file", "kong_file", "env_file", "registry")
# Longest value any file takes; fields have their own, smaller limits.
MAX_VALUE_LENGTH = 4096

# Unicode categories refused in values: controls (NUL, newlines, tabs, C1), invisible
# format characters, surrogates, private use, unassigned, and the line/paragraph
# separators YAML treats as line breaks.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Characters the kong entrypoint's shell evaluation would interpret.
_KONG_SHELL_SPECIAL = frozenset("$`\"\\")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_LINE = re.compile(r"^(?P<lead>[ \t]*(?:export[ \t]+)?)(?P<key>[A-Za-z_][A-Za-z0-9_.]*)"
                       r"[ \t]*=")
# Bare in an env file: nothing either parser treats specially (quotes, `#`, `$`, spaces).
_ENV_PLAIN = re.compile(r"^[A-Za-z0-9_@%+:,./-]*$")
# Bare in YAML when it also reads back as the same string (or is a bool/int, as rendered).
_YAML_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./@+-]*(?::[A-Za-z0-9_./@+-]+)*$")
_YAML_INT = re.compile(r"^(?:0|[1-9][0-9]{0,9})$")


class UnsafeValue(BadRequest):
    """A value is refused: newline, NUL, control character, too long or not allowed."""

    code = "unsafe_value"


class UnsafeEdit(DoctorError):
    """A file is not in a shape that can be edited safely; nothing was written."""

    status: ClassVar[int] = 409
    code: ClassVar[str] = "unsafe_edit"


# --- values -----------------------------------------------------------------------------


def check_value(value: Any, *, max_length: int, pattern: str | None = None,
                name: str = "value") -> str:
    """The value when it is text that is safe to write anywhere; UnsafeValue otherwise.

    The message names the problem, never the value (it may be a secret).
    """
    if not isinstance(value, str):
        raise UnsafeValue(f"{name} must be a string")
    if len(value) > max_length:
        raise UnsafeValue(f"{name} is longer than {max_length} characters")
    if "\x00" in value:
        raise UnsafeValue(f"{name} contains a NUL character")
    if "\n" in value or "\r" in value:
        raise UnsafeValue(f"{name} contains a line break")
    for char in value:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise UnsafeValue(f"{name} contains a control or invisible character "
                              f"(U+{ord(char):04X})")
    if "\\" in value:
        raise UnsafeValue(f"{name} contains a backslash, which the env file's readers "
                          "do not agree on")
    if pattern is not None and re.fullmatch(pattern, value) is None:
        raise UnsafeValue(f"{name} has characters or a form that is not allowed")
    return value


def compose_escape(value: str) -> str:
    """`$` doubled, so compose takes the value literally instead of interpolating it."""
    return value.replace("$", "$$")


def yaml_scalar(value: str, *, typed: bool = False) -> str:
    """A YAML scalar that reads back as exactly this string.

    With typed, `true`, `false` and small integers stay bare, as the manager renders them
    in the compose file (compose hands them to the container as the same text).
    """
    if typed and (value in ("true", "false") or _YAML_INT.match(value)):
        return value
    if _YAML_PLAIN.match(value) and _plain_reads_back(value):
        return value
    return "'" + value.replace("'", "''") + "'"


def _plain_reads_back(value: str) -> bool:
    try:
        return bool(_yaml_load(value) == value)
    except yaml.YAMLError:
        return False


def compose_scalar(value: str) -> str:
    """The text to write for a value in a rendered compose file."""
    return yaml_scalar(compose_escape(value), typed=True)


def kong_scalar(value: str, name: str = "value") -> str:
    """The text to write for a value in kong.yml; refuses what the entrypoint's eval reads."""
    bad = sorted(_KONG_SHELL_SPECIAL.intersection(value))
    if bad:
        shown = " ".join(bad)
        raise UnsafeValue(f"{name} contains {shown}: kong's entrypoint evaluates kong.yml "
                          "in a shell, so these characters are not allowed there")
    return yaml_scalar(value)


def env_quote(value: str) -> str:
    """The text to write after `KEY=` in an env file."""
    if _ENV_PLAIN.match(value):
        return value
    return "'" + value.replace("'", "\\'") + "'"


def _check_file_value(value: str, name: str) -> str:
    return check_value(value, max_length=MAX_VALUE_LENGTH, name=name)


# --- atomic writes ----------------------------------------------------------------------


def atomic_write(path: Path, data: str | bytes, *, mode: int | None = None,
                 root: Path | None = None) -> None:
    """Replace path's content: temp file in the same dir, fsync, rename, fsync the dir.

    The original mode (and owner, when allowed) is kept unless `mode` is given; a new file
    gets 0600. Every directory from `root` (default: path's own directory) down is opened
    without following a symbolic link, and a link at the path itself is refused. On any
    failure the original is untouched and no temp file is left behind.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        replace_file(within(root, path), path, payload, mode=mode)
    except SymlinkRefused as exc:
        raise UnsafeEdit(f"{exc}; nothing written") from None


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in directory durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the registry (JSON) ----------------------------------------------------------------

_DECODER = json.JSONDecoder()


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _object_members(text: str, start: int) -> list[tuple[str, int, int]]:
    """(key, value start, value end) of each member of the JSON object at text[start]."""
    members: list[tuple[str, int, int]] = []
    i = _skip_ws(text, start + 1)
    if i < len(text) and text[i] == "}":
        return members
    while True:
        if i >= len(text) or text[i] != '"':
            raise ValueError("expected a member name")
        key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        i = _skip_ws(text, i)
        if i >= len(text) or text[i] != ":":
            raise ValueError("expected ':'")
        i = _skip_ws(text, i + 1)
        _, end = _DECODER.raw_decode(text, i)
        members.append((key, i, end))
        i = _skip_ws(text, end)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        if i < len(text) and text[i] == "}":
            return members
        raise ValueError("expected ',' or '}'")


def _array_items(text: str, start: int) -> list[tuple[int, int]]:
    """(start, end) of each item of the JSON array at text[start]."""
    items: list[tuple[int, int]] = []
    i = _skip_ws(text, start + 1)
    if i < len(text) and text[i] == "]":
        return items
    while True:
        _, end = _DECODER.raw_decode(text, i)
        items.append((i, end))
        i = _skip_ws(text, end)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        if i < len(text) and text[i] == "]":
            return items
        raise ValueError("expected ',' or ']'")


def registry_record_span(text: str, instance_id: str) -> tuple[int, int]:
    """Where this instance's record sits in the registry text, in either format.

    Raises UnsafeEdit when the registry is not valid JSON or holds the record zero or
    several times.
    """
    try:
        json.loads(text)
        top = _skip_ws(text, 0)
        if top >= len(text) or text[top] != "{":
            raise ValueError("not an object")
        members = _object_members(text, top)
        listed = [m for m in members if m[0] == "instances" and text[m[1]] == "["]
        spans: list[tuple[int, int]] = []
        if listed:
            for start, end in _array_items(text, listed[-1][1]):
                item = json.loads(text[start:end])
                if isinstance(item, dict) and item.get("id") == instance_id:
                    spans.append((start, end))
        else:
            spans = [(s, e) for key, s, e in members if key == instance_id]
    except ValueError as exc:
        raise UnsafeEdit(f"the registry is not valid JSON ({exc})") from None
    if len(spans) != 1:
        found = "not found" if not spans else "listed more than once"
        raise UnsafeEdit(f"instance {instance_id} is {found} in the registry")
    if text[spans[0][0]] != "{":
        raise UnsafeEdit(f"the registry record of {instance_id} is not an object")
    return spans[0]


def _dump_record_like(record: Mapping[str, Any], original: str, text: str, start: int) -> str:
    """The record as JSON, laid out like the original span (indent unit, nesting level)."""
    if "\n" not in original:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    line_start = text.rfind("\n", 0, start) + 1
    base = re.match(r"[ \t]*", text[line_start:start])
    base_indent = base.group(0) if base else ""
    second = original.split("\n", 1)[1]
    inner = re.match(r"[ \t]*", second)
    unit = (inner.group(0) if inner else "")[len(base_indent):] or "  "
    dumped = json.dumps(record, ensure_ascii=False, indent=unit if "\t" in unit else len(unit))
    return dumped.replace("\n", "\n" + base_indent)


def _manager_timestamp() -> str:
    """Now, as the manager writes updated_at (JavaScript's toISOString)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- YAML nodes -------------------------------------------------------------------------


def _compose_yaml(text: str, what: str) -> Node:
    try:
        node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise UnsafeEdit(f"the {what} is not valid YAML ({type(exc).__name__})") from None
    if node is None:
        raise UnsafeEdit(f"the {what} is empty")
    return node


def _member(mapping: Node, key: str) -> tuple[ScalarNode, Node] | None:
    """The (key node, value node) of a block mapping member; the last one wins, as in YAML."""
    if not isinstance(mapping, MappingNode):
        return None
    found: tuple[ScalarNode, Node] | None = None
    for key_node, value_node in mapping.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            found = (key_node, value_node)
    return found


def _replace_scalar(text: str, node: Node, scalar: str) -> str:
    """text with the scalar node's source replaced by `scalar`."""
    if not isinstance(node, ScalarNode):
        raise UnsafeEdit("the value to replace is not a plain value")
    start, end = node.start_mark.index, node.end_mark.index
    if start == end:  # an empty value: `KEY:` — write after the colon
        if start == 0 or text[start - 1] != ":":
            raise UnsafeEdit("cannot locate an empty value")
        return text[:start] + " " + scalar + text[end:]
    replacement = scalar + "\n" if text[start:end].endswith("\n") else scalar
    return text[:start] + replacement + text[end:]


def _insert_member(text: str, mapping: Node, key: str, scalar: str) -> str:
    """text with `key: scalar` added as the last member of a block mapping."""
    if not isinstance(mapping, MappingNode) or mapping.flow_style or not mapping.value:
        raise UnsafeEdit(f"cannot add {key}: its mapping is empty or written inline")
    column = mapping.value[0][0].start_mark.column
    line = " " * column + f"{key}: {scalar}"
    return _insert_line_after(text, mapping.value[-1][1].end_mark.index, line)


def _insert_item(text: str, sequence: Node, scalar: str) -> str:
    """text with `- scalar` added as the last item of a block sequence."""
    if not isinstance(sequence, SequenceNode) or sequence.flow_style or not sequence.value:
        raise UnsafeEdit("cannot add an item: the list is empty or written inline")
    last = sequence.value[-1]
    line_start = text.rfind("\n", 0, last.start_mark.index) + 1
    prefix = text[line_start:last.start_mark.index]
    if not re.fullmatch(r"[ \t]*-[ \t]+", prefix):
        raise UnsafeEdit("cannot add an item: the list is not one item per line")
    return _insert_line_after(text, last.end_mark.index, prefix + scalar)


def _insert_line_after(text: str, position: int, line: str) -> str:
    if position > 0 and text[position - 1] == "\n":
        return text[:position] + line + "\n" + text[position:]
    newline = text.find("\n", position)
    if newline == -1:
        return text + "\n" + line
    return text[:newline] + "\n" + line + text[newline:]


def _compose_text_value(value: Any) -> str | None:
    """An environment value as compose hands it to the container (None: not set)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unescape_compose(value: str | None) -> str | None:
    return None if value is None else value.replace("$$", "$")


def _has_interpolation(raw: str) -> bool:
    """True when compose would substitute a variable into this value."""
    i = 0
    while i < len(raw):
        if raw[i] == "$":
            nxt = raw[i + 1] if i + 1 < len(raw) else ""
            if nxt == "$":
                i += 2
                continue
            if nxt == "{" or nxt == "_" or nxt.isalpha():
                return True
        i += 1
    return False


# --- the file set -----------------------------------------------------------------------


class FileSet:
    """The four files that carry an instance's config; edits are applied on write()."""

    def __init__(self, instance: Instance) -> None:
        """Bind to the instance's files; nothing is read until needed."""
        self.instance_id = instance.id
        self.files = instance.files
        self._original: dict[str, bytes] = {}
        self._text: dict[str, str] = {}
        self._changed_services: set[str] = set()
        self._parsed: dict[str, tuple[str, dict[str, Any]]] = {}

    # paths and reading

    def _path(self, key: str) -> Path | None:
        path: Path | None = getattr(self.files, key)
        return path

    def paths(self) -> dict[str, Path]:
        """registry, env_file, compose_file, kong_file: those that exist as regular files.

        One reached through a symbolic link anywhere below the instance's root does not
        count as existing: it is neither read nor written.
        """
        out: dict[str, Path] = {}
        for key in ("registry", "env_file", "compose_file", "kong_file"):
            path = self._path(key)
            if path is not None and kind(self.files.root_of(path), path) == "file":
                out[key] = path
        return out

    def linked(self) -> list[str]:
        """Keys of the files that are, or are reached through, a symbolic link."""
        return [key for key in FILE_KEYS
                if (path := self._path(key)) is not None
                and kind(self.files.root_of(path), path) == "symlink"]

    def read_bytes(self, key: str) -> bytes:
        """A file's bytes as on disk now, read without following any link below the root."""
        path = self._path(key)
        if path is None:
            raise UnsafeEdit(f"instance {self.instance_id} has no {key.replace('_', ' ')}")
        try:
            return safe_read(self.files.root_of(path), path)
        except SymlinkRefused as exc:
            raise UnsafeEdit(f"{exc}; nothing read") from None

    def _load(self, key: str) -> str:
        if key in self._text:
            return self._text[key]
        path = self._path(key)
        if path is None:
            raise UnsafeEdit(f"instance {self.instance_id} has no {key.replace('_', ' ')}")
        try:
            raw = self.read_bytes(key)
        except FileNotFoundError:
            raise UnsafeEdit(f"{path} is missing") from None
        except OSError as exc:
            raise UnsafeEdit(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeEdit(f"{path} is not UTF-8 text") from None
        self._original[key] = raw
        self._text[key] = text
        return text

    def text(self, key: str) -> str:
        """The file's text with the pending edits applied."""
        return self._load(key)

    def get_env(self, key: str) -> str | None:
        """The env file's value for KEY, as the doctor reads it (no interpolation)."""
        values = dotenv_values(stream=io.StringIO(self._load("env_file")), interpolate=False)
        return values.get(key)

    def get_compose_env(self, service: str, key: str) -> str | None:
        """The value compose gives the container (`$$` unescaped); None when not set."""
        data = self._yaml_data("compose_file")
        env = ((data.get("services") or {}).get(service) or {}).get("environment")
        if isinstance(env, dict):
            return _unescape_compose(_compose_text_value(env.get(key)))
        if isinstance(env, list):
            for item in env:
                name, sep, value = str(item).partition("=")
                if name == key and sep:
                    return _unescape_compose(value)
        return None

    def compose_services(self) -> tuple[str, ...]:
        """The services the compose file defines."""
        services = self._yaml_data("compose_file").get("services")
        return tuple(services) if isinstance(services, dict) else ()

    def get_kong_basicauth(self) -> tuple[str | None, str | None]:
        """The dashboard's (username, password) in kong.yml."""
        item = self._basicauth_item_data(self._yaml_data("kong_file"))
        if item is None:
            return None, None
        user, password = item.get("username"), item.get("password")
        return (None if user is None else str(user), None if password is None else str(password))

    def get_registry(self, path: Sequence[str]) -> Any:
        """A field of this instance's registry record (None when absent)."""
        node: Any = self.registry_record()
        for part in path:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    def registry_record(self) -> dict[str, Any]:
        """This instance's registry record."""
        text = self._load("registry")
        start, end = registry_record_span(text, self.instance_id)
        record: dict[str, Any] = json.loads(text[start:end])
        return record

    def registry_record_text(self) -> str:
        """This instance's record exactly as it stands in the registry (valid JSON)."""
        text = self._load("registry")
        start, end = registry_record_span(text, self.instance_id)
        return text[start:end]

    def _yaml_data(self, key: str) -> dict[str, Any]:
        """The parsed file (cached per text; callers must not change it)."""
        text = self._load(key)
        cached = self._parsed.get(key)
        if cached is None or cached[0] is not text:
            try:
                data = _yaml_load(text)
            except yaml.YAMLError:
                raise UnsafeEdit(f"the {key.replace('_', ' ')} is not valid YAML") from None
            cached = (text, data if isinstance(data, dict) else {})
            self._parsed[key] = cached
        return cached[1]

    # edits

    def set_env(self, key: str, value: str) -> None:
        """The env file's KEY=value: replaced where it stands, else appended."""
        if not _ENV_KEY.match(key):
            raise UnsafeValue("invalid environment variable name")
        _check_file_value(value, key)
        text = self._load("env_file")
        before = dotenv_values(stream=io.StringIO(text), interpolate=False)
        if key in before and before[key] == value:
            return
        line = f"{key}={env_quote(value)}"
        lines = text.splitlines(keepends=True)
        hits = [i for i, raw in enumerate(lines)
                if (m := _ENV_LINE.match(raw)) is not None and m.group("key") == key]
        if hits:
            for i in hits:
                lead = _ENV_LINE.match(lines[i])
                assert lead is not None
                ending = lines[i][len(lines[i].rstrip("\r\n")):]
                lines[i] = lead.group("lead") + line + ending
        else:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.append(line + "\n")
        new = "".join(lines)
        after = dotenv_values(stream=io.StringIO(new), interpolate=False)
        expected = dict(before)
        expected[key] = value
        if dict(after) != expected:
            raise UnsafeEdit(f"editing {key} in the env file would change other entries "
                             "(a multi-line or unusual entry is in the way); nothing written")
        self._text["env_file"] = new

    def set_compose_env(self, services: Sequence[str], key: str, value: str, *,
                        only_where_present: bool = False) -> None:
        """The environment KEY of each named service in the rendered compose file.

        With only_where_present, services that do not define KEY are left alone.
        """
        if not _ENV_KEY.match(key):
            raise UnsafeValue("invalid environment variable name")
        _check_file_value(value, key)
        for service in services:
            if only_where_present and self.get_compose_env(service, key) is None:
                continue
            self._set_one_compose_env(service, key, value)

    def _set_one_compose_env(self, service: str, key: str, value: str) -> None:
        if self.get_compose_env(service, key) == value:
            return
        text = self._load("compose_file")
        root = _compose_yaml(text, "compose file")
        services = _member(root, "services")
        svc = _member(services[1], service) if services else None
        if svc is None:
            raise UnsafeEdit(f"the compose file has no service {service}")
        env = _member(svc[1], "environment")
        if env is None:
            raise UnsafeEdit(f"service {service} has no environment block in the compose file")
        env_node = env[1]
        if isinstance(env_node, MappingNode):
            new, mutate = _env_mapping_edit(text, env_node, service, key, value)
        elif isinstance(env_node, SequenceNode):
            new, mutate = _env_list_edit(text, env_node, service, key, value)
        else:
            raise UnsafeEdit(f"service {service}'s environment is neither a mapping nor a list")
        self._commit_yaml("compose_file", new, mutate)
        self._changed_services.add(service)

    def set_kong_basicauth(self, username: str | None, password: str | None) -> None:
        """The dashboard's basic-auth credential in kong.yml (None leaves a field as is)."""
        for field_name, value in (("username", username), ("password", password)):
            if value is None:
                continue
            _check_file_value(value, f"dashboard {field_name}")
            scalar = kong_scalar(value, f"dashboard {field_name}")
            current = self.get_kong_basicauth()[0 if field_name == "username" else 1]
            if current == value:
                continue
            text = self._load("kong_file")
            root = _compose_yaml(text, "kong.yml")
            item = self._basicauth_item_node(root)
            found = _member(item, field_name)
            new = (_replace_scalar(text, found[1], scalar) if found is not None
                   else _insert_member(text, item, field_name, scalar))

            def mutate(data: dict[str, Any], f: str = field_name, s: str = scalar) -> None:
                target = self._basicauth_item_data(data)
                assert target is not None
                target[f] = _yaml_load(s)
            self._commit_yaml("kong_file", new, mutate)

    def set_kong_key(self, consumer: str, key: str) -> None:
        """The key-auth key of a consumer (anon, service_role) in kong.yml."""
        check_value(key, max_length=MAX_VALUE_LENGTH, name=f"{consumer} key",
                    pattern=r"[A-Za-z0-9_=+/.-]+")
        text = self._load("kong_file")
        root = _compose_yaml(text, "kong.yml")
        consumers = _member(root, "consumers")
        matches = [n for n in (consumers[1].value if consumers and
                               isinstance(consumers[1], SequenceNode) else [])
                   if (u := _member(n, "username")) is not None and u[1].value == consumer]
        if len(matches) != 1:
            raise UnsafeEdit(f"kong.yml has {len(matches)} consumers named {consumer}")
        creds = _member(matches[0], "keyauth_credentials")
        if creds is None or not isinstance(creds[1], SequenceNode) or len(creds[1].value) != 1:
            raise UnsafeEdit(f"consumer {consumer} in kong.yml has not exactly one key")
        found = _member(creds[1].value[0], "key")
        if found is None:
            raise UnsafeEdit(f"consumer {consumer}'s key-auth credential has no key")
        if isinstance(found[1], ScalarNode) and found[1].value == key:
            return
        scalar = kong_scalar(key, f"{consumer} key")
        new = _replace_scalar(text, found[1], scalar)

        def mutate(data: dict[str, Any]) -> None:
            for entry in data["consumers"]:
                if isinstance(entry, dict) and entry.get("username") == consumer:
                    entry["keyauth_credentials"][0]["key"] = _yaml_load(scalar)
        self._commit_yaml("kong_file", new, mutate)

    def set_registry(self, path: Sequence[str], value: Any) -> None:
        """A field of this instance's registry record; other records stay byte-for-byte."""
        if not path or not all(isinstance(p, str) and p for p in path):
            raise UnsafeValue("invalid registry field")
        if isinstance(value, str):
            _check_file_value(value, ".".join(path))
        text = self._load("registry")
        start, end = registry_record_span(text, self.instance_id)
        original = text[start:end]
        record = json.loads(original)
        target = record
        for part in path[:-1]:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise UnsafeEdit(f"registry field {part} is not an object")
            target = child
        if path[-1] in target and target[path[-1]] == value:
            return
        target[path[-1]] = value
        if "updated_at" in record and tuple(path) != ("updated_at",):
            record["updated_at"] = _manager_timestamp()
        self.set_registry_record_text(_dump_record_like(record, original, text, start))

    def set_registry_record_text(self, record_text: str) -> None:
        """Replace this instance's record with the given JSON text (e.g. from a backup)."""
        try:
            record = json.loads(record_text)
        except ValueError:
            raise UnsafeEdit("the registry record is not valid JSON") from None
        if not isinstance(record, dict) or record.get("id", self.instance_id) != self.instance_id:
            raise UnsafeEdit("the registry record belongs to another instance")
        text = self._load("registry")
        start, end = registry_record_span(text, self.instance_id)
        new = text[:start] + record_text + text[end:]
        # Only this record may differ: the rest of the text is untouched by construction.
        if registry_record_span(new, self.instance_id) != (start, start + len(record_text)):
            raise UnsafeEdit("the edited registry does not read back as expected")
        self._text["registry"] = new

    def set_file_text(self, key: str, text: str) -> None:
        """Replace a whole env, compose or kong file (restoring a backup)."""
        if key not in ("env_file", "compose_file", "kong_file"):
            raise UnsafeEdit(f"{key} cannot be replaced whole")
        if self._load(key) == text:
            return
        if key == "compose_file":
            before, after = self._yaml_data(key), _safe_yaml(text)
            services = set(before.get("services") or {}) | set(after.get("services") or {})
            self._changed_services.update(
                s for s in services
                if (before.get("services") or {}).get(s) != (after.get("services") or {}).get(s))
        self._text[key] = text

    def _commit_yaml(self, key: str, new: str, mutate: Callable[[dict[str, Any]], None]) -> None:
        """Accept an edit only if the parsed result is the old document with `mutate` applied."""
        before = self._yaml_data(key)
        after = _safe_yaml(new)
        # A copy that does not keep YAML aliases shared: an edit reaching a second place
        # through an alias must show up as a difference.
        expected = _unshared_copy(before)
        mutate(expected)
        if after != expected:
            raise UnsafeEdit(f"the edit of the {key.replace('_', ' ')} does not read back as "
                             "intended; nothing written")
        self._text[key] = new

    @staticmethod
    def _basicauth_item_data(data: Mapping[str, Any]) -> dict[str, Any] | None:
        items = [i for i in (data.get("basicauth_credentials") or []) if isinstance(i, dict)]
        dashboard = [i for i in items if i.get("consumer") == "DASHBOARD"]
        chosen = dashboard or items
        return chosen[0] if len(chosen) == 1 else None

    @staticmethod
    def _basicauth_item_node(root: Node) -> Node:
        creds = _member(root, "basicauth_credentials")
        if creds is None or not isinstance(creds[1], SequenceNode):
            raise UnsafeEdit("kong.yml has no basicauth_credentials list")
        items = [n for n in creds[1].value if isinstance(n, MappingNode)]
        dashboard = [n for n in items
                     if (c := _member(n, "consumer")) is not None and c[1].value == "DASHBOARD"]
        chosen = dashboard or items
        if len(chosen) != 1:
            raise UnsafeEdit("kong.yml does not have exactly one dashboard credential")
        return chosen[0]

    # outcome

    def changed(self) -> list[str]:
        """Keys of the files whose text differs from what was read."""
        return [k for k in FILE_KEYS
                if k in self._text and self._text[k].encode("utf-8") != self._original[k]]

    def affected_services(self) -> tuple[str, ...]:
        """Compose services to recreate so the pending edits take effect."""
        services = set(self._changed_services)
        if "kong_file" in self.changed():
            services.add("kong")
        return tuple(sorted(services))

    def write(self) -> list[Path]:
        """Write every changed file atomically; the paths written.

        Refuses (UnsafeEdit, nothing written) when any file changed on disk since it was
        read, so a concurrent edit by the manager is never overwritten, or is a symlink.
        Files are replaced by rename: a container that bind-mounts one (kong.yml) keeps
        the old file until it is recreated.
        """
        changed = self.changed()
        for key in changed:
            path = self._path(key)
            assert path is not None
            if kind(self.files.root_of(path), path) == "symlink":
                raise UnsafeEdit(f"{path} is a symbolic link (or is reached through one); "
                                 "refusing to replace it; nothing written")
            try:
                current: bytes | None = self.read_bytes(key)
            except OSError:
                current = None
            if current != self._original[key]:
                raise UnsafeEdit(f"{path} changed on disk while the edit was prepared; "
                                 "nothing written")
        written: list[Path] = []
        for key in changed:
            path = self._path(key)
            assert path is not None
            atomic_write(path, self._text[key], root=self.files.root_of(path))
            self._original[key] = self._text[key].encode("utf-8")
            written.append(path)
        return written


def _unshared_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unshared_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared_copy(v) for v in value]
    return value


def _yaml_load(text: str) -> Any:
    """Parse YAML data safely, with libyaml when available (much faster)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # noqa: S506  (a safe loader)


def _safe_yaml(text: str) -> dict[str, Any]:
    try:
        data = _yaml_load(text)
    except yaml.YAMLError:
        raise UnsafeEdit("the edited file is not valid YAML; nothing written") from None
    return data if isinstance(data, dict) else {}


_Mutate = Callable[[dict[str, Any]], None]


def _env_mapping_edit(text: str, env_node: MappingNode, service: str, key: str,
                      value: str) -> tuple[str, _Mutate]:
    """KEY set in a service's `environment:` mapping: the new text, and the same on data."""
    scalar = compose_scalar(value)
    found = _member(env_node, key)
    if found is not None:
        if isinstance(found[1], ScalarNode) and _has_interpolation(found[1].value):
            raise UnsafeEdit(f"{service}'s {key} is taken from a variable in the "
                             "compose file; it is not a rendered file")
        new = _replace_scalar(text, found[1], scalar)
    else:
        new = _insert_member(text, env_node, key, scalar)

    def mutate(data: dict[str, Any]) -> None:
        data["services"][service]["environment"][key] = _yaml_load(scalar)
    return new, mutate


def _env_list_edit(text: str, env_node: SequenceNode, service: str, key: str,
                   value: str) -> tuple[str, _Mutate]:
    """KEY=value set in a service's `environment:` list: the new text, and the same on data."""
    entry = f"{key}={compose_escape(value)}"
    item_scalar = yaml_scalar(entry)
    items = [n for n in env_node.value if isinstance(n, ScalarNode)
             and n.value.partition("=")[0] == key]
    if items:
        if _has_interpolation(items[-1].value.partition("=")[2]):
            raise UnsafeEdit(f"{service}'s {key} is taken from a variable in the "
                             "compose file; it is not a rendered file")
        new = _replace_scalar(text, items[-1], item_scalar)
    else:
        new = _insert_item(text, env_node, item_scalar)

    def mutate(data: dict[str, Any]) -> None:
        env_list = data["services"][service]["environment"]
        positions = [i for i, v in enumerate(env_list) if str(v).partition("=")[0] == key]
        if positions:
            env_list[positions[-1]] = entry
        else:
            env_list.append(entry)
    return new, mutate
