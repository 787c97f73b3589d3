"""Loading a YAML input file while remembering which line every key and list item came from.

pydantic reports a problem at a location such as `('clusters', 1, 'lb', 'idle_timeout')`; a user
needs `matrix.yaml:14`. The loader below composes the YAML node tree (which carries marks), builds
the plain Python data from it, and then walks both together once to record `location -> line`.

Everything that can go wrong with the file itself (missing, a directory, empty, not UTF-8, binary,
too big, not YAML, duplicate keys, aliases that explode) becomes a `MatrixError` whose problems are
single lines `PATH:LINE: what is wrong; fix: how`, never a traceback: these files are typed by
hand, and the first thing a user sees must point at the line to change. `located_problems`
turns pydantic's errors for the loaded data into the same lines, using the recorded marks.
"""

from __future__ import annotations

import difflib
import reprlib
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeGuard, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.errors import MatrixError

#: Input files are a few kilobytes; a bigger one is a mistake (a log or a binary given by accident),
#: and refusing it early keeps the pure-Python YAML parser from chewing on it.
MAX_BYTES = 1024 * 1024

#: Upper bound on keys + items after aliases are expanded. A matrix has a few hundred; the bound
#: stops "billion laughs" alias bombs and self-referencing aliases before anything walks them.
MAX_NODES = 100_000

#: Deepest nesting accepted (a matrix needs 5). Also ends the walk of an alias that contains itself.
MAX_DEPTH = 32

Loc = tuple[int | str, ...]

_short = reprlib.Repr()
_short.maxstring = 40
_short.maxother = 40
_short.maxlevel = 2


def short_repr(value: Any) -> str:
    """A bounded repr for error lines: safe on deep, huge or self-referencing values."""
    return _short.repr(value)


def format_loc(loc: Sequence[int | str]) -> str:
    """`('clients', 1, 'env')` -> `clients[1].env` (the field part of an error line)."""
    out = ""
    for seg in loc:
        if isinstance(seg, int) and not isinstance(seg, bool):
            out += f"[{seg}]"
        else:
            out += ("." if out else "") + str(seg)
    return out


def problem(path: Path | str, line: int | None, field: str | None, what: str, fix: str) -> str:
    """One error line: `PATH:LINE: field: what; fix: how` (line and field left out when unknown)."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    text = f"{where}: {field}: {what}; fix: {fix}" if field else f"{where}: {what}; fix: {fix}"
    # One problem is one line, whatever the input smuggled into a key or a value.
    return " ".join(text.split())


class MarkedLoader(yaml.SafeLoader):
    """SafeLoader that notes keys repeated within one mapping (PyYAML silently keeps the last one,
    which would hide a typo'd override)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicate_keys: list[tuple[int, str]] = []
        self._checked: set[int] = set()

    def flatten_mapping(self, node: MappingNode) -> None:
        # Checked before merges (`<<`) are flattened in: a merged key overridden by an explicit one
        # is the point of a merge, not a duplicate. A merged-in mapping gets flattened again when
        # it is constructed itself, so each node is checked only the first time.
        if id(node) in self._checked:
            super().flatten_mapping(node)
            return
        self._checked.add(id(node))
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                self.duplicate_keys.append((key_node.start_mark.line + 1, key_node.value))
            seen.add(ident)
        super().flatten_mapping(node)


@dataclass(frozen=True)
class MarkedYaml:
    """The data of one YAML file plus the line of every key and list item in it."""

    path: Path
    data: Any
    lines: dict[Loc, int]

    def line_of(self, loc: Sequence[int | str]) -> int | None:
        """Line of the deepest part of `loc` that exists in the file.

        A missing key points at its parent mapping, which is where it has to be added.
        """
        best = self.lines.get(())
        for end in range(1, len(loc) + 1):
            line = self.lines.get(tuple(loc[:end]))
            if line is None:
                break
            best = line
        return best

    def problem(self, loc: Sequence[int | str], what: str, fix: str) -> str:
        return problem(self.path, self.line_of(loc), format_loc(loc), what, fix)


def _fail(path: Path, line: int | None, what: str, fix: str) -> MatrixError:
    return MatrixError([problem(path, line, None, what, fix)])


def _read_text(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _fail(path, None, "no such file", "check the path, or create the file") from None
    except OSError as exc:
        raise _fail(path, None, f"cannot read: {exc.strerror}", "check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail(path, None, "is a directory, not a YAML file", "give the path of the .yaml file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, None, "is not a regular file", "give the path of a .yaml file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)  # never more: the file may grow or be huge
    except OSError as exc:
        raise _fail(path, None, f"cannot read: {exc.strerror}", "check the file's permissions") from None
    if len(raw) > MAX_BYTES:
        raise _fail(
            path,
            None,
            f"file is larger than {MAX_BYTES} bytes",
            "give the matrix/descriptor YAML file, not another file",
        )
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise _fail(path, line, "contains NUL bytes (a binary file?)", "give a UTF-8 text YAML file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _fail(
            path, line, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})", "save the file as UTF-8 text"
        ) from None
    if not text.strip():
        raise _fail(path, None, "file is empty", "write the YAML content (see the comments in matrix.yaml)")
    return text


def _yaml_line(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    return None


def _yaml_what(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character {exc.character!r} is not allowed in YAML"
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    text = ", ".join(p for p in parts if p) or str(exc).splitlines()[0]
    return f"invalid YAML: {text}"


def _yaml_fix(exc: yaml.YAMLError) -> str:
    if "expected a single document" in str(exc):
        return "keep one YAML document: remove the `---` line and what follows it"
    return "correct the YAML syntax at that line"


def _record_lines(loader: MarkedLoader, root: Node, path: Path) -> dict[Loc, int]:
    """Walk the (already flattened) node tree once and note the line of every key and item.

    Iterative with a node budget, so deep nesting cannot hit the recursion limit and aliases that
    expand exponentially (or refer to themselves) are refused instead of walked.
    """
    lines: dict[Loc, int] = {(): root.start_mark.line + 1}
    stack: list[tuple[Loc, Node]] = [((), root)]
    visited = 0
    while stack:
        loc, node = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise _fail(
                path,
                node.start_mark.line + 1,
                f"more than {MAX_NODES} values once aliases are expanded",
                "write the values out instead of nesting YAML aliases (*name)",
            )
        if len(loc) > MAX_DEPTH:
            raise _fail(
                path,
                node.start_mark.line + 1,
                f"nested more than {MAX_DEPTH} levels deep (or an alias that contains itself)",
                "flatten the structure; see the comments in matrix.yaml for its shape",
            )
        if isinstance(node, MappingNode):
            # After merges are flattened a key may appear twice (merged, then explicit); like
            # PyYAML's own construction, the last one is the value that counts.
            entries: dict[int | str, tuple[Node, Node]] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    continue  # complex keys are refused by the constructor already
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int):
                    key = str(key_node.value)
                entries[key] = (key_node, value_node)
            for key, (key_node, value_node) in entries.items():
                child: Loc = (*loc, key)
                lines[child] = key_node.start_mark.line + 1
                stack.append((child, value_node))
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                child = (*loc, index)
                lines.setdefault(child, item.start_mark.line + 1)
                stack.append((child, item))
    return lines


def load_marked(path: Path) -> MarkedYaml:
    """Read one YAML document with line marks, or raise MatrixError with one line per problem."""
    text = _read_text(path)
    loader: MarkedLoader | None = None
    try:
        # The loader's reader checks every character up front, so even creating it can fail.
        loader = MarkedLoader(text)
        root = loader.get_single_node()
        if root is None:
            raise _fail(path, None, "file is empty (only comments)", "write the YAML content")
        data = loader.construct_document(root)
        lines = _record_lines(loader, root, path)
    except yaml.YAMLError as exc:
        raise _fail(path, _yaml_line(exc), _yaml_what(exc), _yaml_fix(exc)) from None
    except RecursionError:
        raise _fail(path, None, "nesting is too deep", "flatten the YAML structure") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # SafeLoader's constructors raise these for values YAML accepts but Python cannot hold
        # (a 5000-digit integer, 2020-02-30 read as a date); they are the input's fault, not ours.
        raise _fail(path, None, f"value cannot be read: {exc}", "quote the value or correct it") from None
    finally:
        if loader is not None:
            loader.dispose()
    if loader.duplicate_keys:
        raise MatrixError(
            [
                problem(path, line, key, "key appears twice in the same mapping", "keep only one of them")
                for line, key in sorted(loader.duplicate_keys)
            ]
        )
    return MarkedYaml(path=path, data=data, lines=lines)


# --- pydantic errors -> located one-line problems ------------------------------------------------

#: Error type of the `PydanticCustomError`s that the schemas raise themselves; their ctx carries
#: `what` and `fix`.
CUSTOM_ERROR = "watchdrop"


def custom_error(what: str, fix: str) -> PydanticCustomError:
    """An error a validator raises when it knows both what is wrong and how to fix it."""
    return PydanticCustomError(CUSTOM_ERROR, "{what}", {"what": what, "fix": fix})


def _unwrap(annotation: Any) -> tuple[Any, FieldInfo | None]:
    """Strip Annotated[...] and `X | None` down to the type that decides what the next segment is,
    keeping any `Field(...)` found in Annotated metadata (it carries the fix hints)."""
    meta: FieldInfo | None = None
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            args = get_args(annotation)
            meta = next((m for m in args[1:] if isinstance(m, FieldInfo)), meta)
            annotation = args[0]
            continue
        if origin in (Union, UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation, meta


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _field_by_key(model: type[BaseModel], key: int | str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _tagged_member(annotation: Any, tag: int | str) -> type[BaseModel] | None:
    """The model of a tagged union whose Literal field takes `tag` (pydantic puts the tag in locs)."""
    if get_origin(annotation) not in (Union, UnionType):
        return None
    for member in get_args(annotation):
        member, _ = _unwrap(member)
        if _is_model(member):
            for info in member.model_fields.values():
                if get_origin(info.annotation) is Literal and tag in get_args(info.annotation):
                    return member
    return None


@dataclass
class _Place:
    """Where a pydantic location lands in a schema: the user-facing location (union tags and
    `[key]` markers dropped), the field describing the value there, and the model there if any."""

    loc: Loc
    field: FieldInfo | None
    model: type[BaseModel] | None
    #: `Field(...)` found in the Annotated type at this place (e.g. `Seconds | None`): its hints
    #: apply when the model field itself gives none.
    meta: FieldInfo | None = None


def _place(schema: type[BaseModel], raw_loc: Sequence[int | str]) -> _Place:
    clean: list[int | str] = []
    current: Any = schema
    field: FieldInfo | None = None
    meta: FieldInfo | None = None
    for seg in raw_loc:
        if seg == "[key]":
            continue
        member = _tagged_member(current, seg)
        if member is not None:
            current = member
            continue
        clean.append(seg)
        if _is_model(current):
            field = _field_by_key(current, seg)
            nxt = field.annotation if field is not None else None
            current, meta = _unwrap(nxt)
            continue
        if get_origin(current) in (list, tuple) and isinstance(seg, int):
            args = get_args(current)
            nxt = args[0] if args else None
        elif get_origin(current) is dict:
            args = get_args(current)
            nxt = args[1] if len(args) == 2 else None
        else:
            nxt = None
        current, field = _unwrap(nxt)
        meta = None
    return _Place(tuple(clean), field, current if _is_model(current) else None, meta)


def _hint(field: FieldInfo | None, key: str) -> str | None:
    extra = field.json_schema_extra if field is not None else None
    if isinstance(extra, dict):
        value = extra.get(key)
        return str(value) if value is not None else None
    return None


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return short_repr(value)


def _what_and_fix(err: ErrorDetails, place: _Place, schema: type[BaseModel], help_ref: str) -> tuple[str, str]:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    value = err.get("input")
    if kind == CUSTOM_ERROR:
        return str(ctx.get("what", err["msg"])), str(ctx.get("fix", f"see {help_ref}"))
    if kind == "extra_forbidden":
        key = str(place.loc[-1]) if place.loc else "?"
        model = _place(schema, tuple(err["loc"])[:-1]).model
        allowed = _allowed_keys(model) if model is not None else []
        close = difflib.get_close_matches(key, allowed, n=1)
        fix = f"did you mean {close[0]!r}? " if close else "remove it or check its spelling; "
        return "unknown key", fix + ("allowed here: " + ", ".join(allowed) if allowed else f"see {help_ref}")
    if kind == "missing":
        key = str(place.loc[-1]) if place.loc else "?"
        about = place.field.description if place.field is not None else None
        return "required key is missing", f"add `{key}:`" + (f" ({about})" if about else "")
    hint = _hint(place.field, "fix") or _hint(place.meta, "fix")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_type_name(value)}", hint or "write digits only, e.g. 30"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = {"greater_than": "> ", "greater_than_equal": ">= ", "less_than": "< ", "less_than_equal": "<= "}
        limit = next(iter(ctx.values()), "?")
        return f"must be {bound[kind]}{limit}, got {short_repr(value)}", hint or f"use a value {bound[kind]}{limit}"
    if kind == "string_type":
        if isinstance(value, int | float | bool):
            return f"expected text, got {short_repr(value)}", f'quote it: "{value}"'
        return f"expected text, got {_type_name(value)}", hint or "write a single text value"
    if kind == "string_pattern_mismatch":
        return f"{short_repr(value)} is not allowed here", hint or f"match the pattern {ctx.get('pattern')}"
    if kind == "string_too_short":
        return "must not be empty", hint or "write a value"
    if kind == "too_short":
        need = ctx.get("min_length", 1)
        return f"needs at least {need} entr{'y' if need == 1 else 'ies'}, has {ctx.get('actual_length', 0)}", (
            hint or "add the missing entries"
        )
    if kind == "too_long":
        return f"has more than {ctx.get('max_length')} entries", hint or "remove entries"
    if kind in ("dict_type", "model_type", "model_attributes_type", "dataclass_type"):
        what = f"expected a mapping of `key: value` lines, got {_type_name(value)}"
        if place.model is not None and "name" in place.model.model_fields and isinstance(value, str):
            return what, f"write `- name: {value}` (an entry is a mapping)"
        about = place.field.description if place.field is not None else None
        return what, hint or (f"write `key: value` lines ({about})" if about else f"see {help_ref}")
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_type_name(value)}", hint or "write a YAML list: [a, b] or `- a` lines"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        return f"{short_repr(value)} is not one of {expected}", f"use one of {expected}"
    if kind == "union_tag_invalid":
        # Every tagged union in these schemas is keyed by `kind` (pydantic would name the
        # discriminator function instead).
        return f"unknown kind {short_repr(ctx.get('tag'))}", f"use one of {ctx.get('expected_tags')}"
    if kind == "bool_type" or kind == "bool_parsing":
        return f"expected true or false, got {short_repr(value)}", "write true or false"
    return str(err["msg"]), hint or f"see {help_ref}"


def located_problems(
    exc: ValidationError, marked: MarkedYaml, schema: type[BaseModel], help_ref: str
) -> list[tuple[int, str]]:
    """`(line, 'PATH:LINE: field: what; fix: how')` for each pydantic error (line 0 when unknown)."""
    found: list[tuple[int, str]] = []
    for err in exc.errors(include_url=False):
        place = _place(schema, tuple(err["loc"]))
        what, fix = _what_and_fix(err, place, schema, help_ref)
        loc = place.loc
        value = err.get("input")
        if err["type"] == "union_tag_invalid" and isinstance(value, dict) and "kind" in value:
            loc = (*loc, "kind")  # point at the `kind:` line, not at the entry
        line = marked.line_of(loc)
        found.append((line or 0, problem(marked.path, line, format_loc(loc), what, fix)))
    return found


def unique_in_file_order(found: Sequence[tuple[int, str]]) -> list[str]:
    """Problems sorted by line (stable), each reported once."""
    seen: set[str] = set()
    out: list[str] = []
    for _, text in sorted(found, key=lambda item: item[0]):
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
