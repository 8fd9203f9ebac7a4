"""One rejection format for both engines: where in the document, which keyword, and why.

`Violation` is what `Schema.check` raises. Its line reads `/rows/1/cost: maximum: must be <= 10,
got 12`: the instance location as a JSON pointer, the failing keyword, and a message of at most
MESSAGE_MAX characters in which an offending value is shown truncated (jsonschema-rs's own
messages embed whole values: a wrong root type in a 1 MB document would make a 1 MB line).
The wording is assetmgr's, built from the keyword and its values, so it reads the same whatever
engine found the problem, and the same file gives the same line every time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import fastjsonschema
import jsonschema_rs

from assetmgr.pipeline import ecma
from assetmgr.printable import shown

MESSAGE_MAX = 200
POINTER_MAX = 200
VALUE_MAX = 40

Location = Sequence[str | int]


class Violation(Exception):
    """A document the schema rejects, as one line."""

    def __init__(self, where: Location, keyword: str, message: str) -> None:
        super().__init__(where, keyword, message)
        self.where = tuple(where)
        self.keyword = keyword
        self.message = cut(shown(message), MESSAGE_MAX)

    @property
    def pointer(self) -> str:
        """The instance location as a JSON pointer ('' is the whole document)."""
        return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in self.where)

    def __str__(self) -> str:
        pointer = shown(self.pointer)
        if len(pointer) > POINTER_MAX:
            pointer = "..." + pointer[-(POINTER_MAX - 3) :]
        return f"{pointer or '(root)'}: {self.keyword}: {self.message}"


def preview(value: Any, limit: int = VALUE_MAX) -> str:
    """`value` as JSON-like text, cut at `limit` characters without rendering all of it."""
    parts: list[str] = []
    budget = [limit + 1]

    def emit(text: str) -> bool:
        parts.append(text[: budget[0]])
        budget[0] -= len(text)
        return budget[0] > 0

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if not emit("{"):
                return False
            for i, (k, v) in enumerate(node.items()):
                if not (emit(", " if i else "") and walk(k) and emit(": ") and walk(v)):
                    return False
            return emit("}")
        if isinstance(node, list | tuple):
            if not emit("["):
                return False
            for i, v in enumerate(node):
                if not (emit(", " if i else "") and walk(v)):
                    return False
            return emit("]")
        if isinstance(node, str):
            return emit('"' + node[: budget[0]] + '"')
        return emit(_scalar(node))

    walk(value)
    return cut("".join(parts), limit)


def _scalar(node: Any) -> str:
    if node is None or isinstance(node, bool):
        return {None: "null", True: "true", False: "false"}[node]
    try:
        return str(node)
    except ValueError:  # an integer past Python's digit limit for str()
        return "(a very long number)"


def kind_of(value: Any) -> str:
    """The JSON type name of a parsed value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    for names, name in ((float, "number"), (str, "string"), (dict, "object"), (list, "array")):
        if isinstance(value, names):
            return name
    return "null" if value is None else type(value).__name__


def explain(keyword: str, expected: Any, value: Any) -> str:
    """The message for `keyword` (its schema value `expected`) failing on `value`."""
    words = _WORDING.get(keyword)
    if words is None:
        return f"fails {keyword}"
    return words(expected, value)


def _got(value: Any) -> str:
    return f", got {preview(value)}"


def _count(noun: str, bound: str) -> Callable[[Any, Any], str]:
    return lambda n, v: f"must have {bound} {preview(n)} {noun}, got {_size(v)}"


def _size(value: Any) -> str:
    return str(len(value)) if isinstance(value, dict | list | str) else kind_of(value)


def _types(expected: Any) -> str:
    names = expected if isinstance(expected, list) else [expected]
    return " or ".join(str(n) for n in names)


_WORDING: dict[str, Callable[[Any, Any], str]] = {
    "type": lambda e, v: f"must be {_types(e)}, got {kind_of(v)}",
    "enum": lambda e, v: f"must be one of {preview(e)}" + _got(v),
    "const": lambda e, v: f"must be {preview(e)}" + _got(v),
    "required": lambda e, v: f"must contain {preview(e)}",
    "dependencies": lambda e, v: f"must contain {preview(e)}",
    "dependentRequired": lambda e, v: f"must contain {preview(e)}",
    "minimum": lambda e, v: f"must be >= {preview(e)}" + _got(v),
    "maximum": lambda e, v: f"must be <= {preview(e)}" + _got(v),
    "exclusiveMinimum": lambda e, v: f"must be > {preview(e)}" + _got(v),
    "exclusiveMaximum": lambda e, v: f"must be < {preview(e)}" + _got(v),
    "multipleOf": lambda e, v: f"must be a multiple of {preview(e)}" + _got(v),
    "minLength": lambda e, v: f"must be at least {preview(e)} characters long" + _got(v),
    "maxLength": lambda e, v: f"must be at most {preview(e)} characters long" + _got(v),
    "minItems": _count("items", "at least"),
    "maxItems": _count("items", "at most"),
    "minProperties": _count("properties", "at least"),
    "maxProperties": _count("properties", "at most"),
    "pattern": lambda e, v: f"must match pattern {preview(e, 60)}" + _got(v),
    "format": lambda e, v: f"must be a valid {e}" + _got(v),
    "uniqueItems": lambda e, v: "must not contain the same item twice",
    "additionalProperties": lambda e, v: f"must not contain {preview(e)}",
    "unevaluatedProperties": lambda e, v: f"must not contain {preview(e)}",
    "additionalItems": lambda e, v: f"must have at most {preview(e)} items, got {_size(v)}",
    "unevaluatedItems": lambda e, v: f"must not have the items at {preview(e)}",
    "false": lambda e, v: "is not allowed here (the schema is false)" + _got(v),
    "contains": lambda e, v: "must contain an item that matches contains",
    "minContains": lambda e, v: "must contain more items that match contains",
    "maxContains": lambda e, v: "must contain fewer items that match contains",
    "anyOf": lambda e, v: "must match at least one schema of anyOf" + _got(v),
    "oneOf": lambda e, v: f"must match exactly one schema of oneOf{e or ''}" + _got(v),
    "not": lambda e, v: "must not match the schema of not" + _got(v),
    "propertyNames": lambda e, v: f"property name {preview(e)} is not allowed by propertyNames",
    "contentEncoding": lambda e, v: f"must be {preview(e)}-encoded" + _got(v),
    "contentMediaType": lambda e, v: f"must be {preview(e)}" + _got(v),
}


def from_fast(error: fastjsonschema.JsonSchemaValueException, document: Any) -> Violation:
    """fastjsonschema's exception in assetmgr's words; its `name` is `data.a[1].b` text, so the
    location is found again by walking the document along it."""
    where = _locate(document, (error.name or "data")[4:])
    definition = error.definition if isinstance(error.definition, dict) else {}
    keyword, expected = _fast_keyword(error, definition)
    return Violation(where, keyword, explain(keyword, expected, error.value))


def _fast_keyword(error: Any, definition: Mapping[str, Any]) -> tuple[str, Any]:
    rule, value, message = error.rule, error.value, error.message
    if rule is None:  # draft-07 content keywords and the `false` schema name no rule
        for keyword in ("contentEncoding", "contentMediaType"):
            if keyword in definition and "must not be there" not in message:
                return keyword, definition[keyword]
        return "false", None
    if rule == "required":
        return rule, _first_missing(definition.get("required"), value)
    if rule == "dependencies":
        wanted = [d for k, d in definition.get("dependencies", {}).items() if k in value]
        return rule, _first_missing([n for d in wanted if isinstance(d, list) for n in d], value)
    if rule in ("minimum", "maximum") and definition.get("exclusive" + rule.title()) is True:
        return "exclusive" + rule.title(), definition[rule]  # draft-04's boolean form
    if rule == "additionalProperties":
        return rule, _unexpected(definition, value)
    if rule == "items" and isinstance(definition.get("items"), list):
        return "additionalItems", len(definition["items"])
    if rule == "items":
        return "false", None
    if rule == "oneOf":
        none = message.endswith("(0 matches found)")
        return rule, " (none matches)" if none else " (more than one matches)"
    if rule == "propertyNames":
        return rule, "(one of them)"
    return rule, definition.get(rule)


def _first_missing(names: Any, value: Any) -> Any:
    if not isinstance(names, list) or not isinstance(value, dict):
        return names
    return next((n for n in names if n not in value), names)


def _unexpected(definition: Mapping[str, Any], value: Any) -> list[str]:
    if not isinstance(value, dict):
        return []
    known = definition.get("properties", {})
    patterns = [ecma.compile(p) for p in definition.get("patternProperties", {})]
    return [k for k in value if k not in known and not any(p.search(k) for p in patterns)]


def _locate(node: Any, rest: str) -> list[str | int]:
    """The keys and indexes that `rest` (`.a.b[1]`) spells in `node`; keys may hold dots."""
    found = _walk(node, rest)
    if found is not None:
        return found
    return [p for p in rest.replace("[", ".").replace("]", "").split(".") if p]


def _walk(node: Any, rest: str) -> list[str | int] | None:
    if not rest:
        return []
    if rest[0] == "[" and isinstance(node, list):
        close = rest.find("]")
        index = rest[1:close]
        if index.isdigit() and int(index) < len(node):
            tail = _walk(node[int(index)], rest[close + 1 :])
            if tail is not None:
                return [int(index), *tail]
    if rest[0] == "." and isinstance(node, dict):
        for key in node:
            if isinstance(key, str) and rest.startswith(key, 1):
                tail = _walk(node[key], rest[1 + len(key) :])
                if tail is not None:
                    return [key, *tail]
    return None


def from_rust(error: jsonschema_rs.ValidationError) -> Violation:
    """jsonschema-rs's error in assetmgr's words, from its kind's values, not its message."""
    kind = error.kind
    where: list[str | int] = list(error.instance_path)
    keyword = _rust_keyword(kind, error.schema_path)
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.PropertyNames):
        inner = kind.error
        return Violation(where, keyword, explain(keyword, inner.instance, None))
    expected: Any = None
    for field in getattr(kind, "__match_args__", ()):
        if field != "context":
            expected = getattr(kind, field)
    if keyword == "oneOf":
        many = isinstance(kind, jsonschema_rs.ValidationErrorKind.OneOfMultipleValid)
        expected = " (more than one matches)" if many else " (none matches)"
    if type(kind).__name__ in _UNCHECKABLE:
        return Violation(where, keyword, f"cannot be checked: {cut(error.message, 120)}")
    return Violation(where, keyword, explain(keyword, expected, error.instance))


_UNCHECKABLE = ("Referencing", "BacktrackLimitExceeded", "RegexEngineFailure", "Custom", "FromUtf8")
_SPELLED = {
    "required": ("dependencies", "dependentRequired"),
    "contains": ("minContains", "maxContains"),
}


def _rust_keyword(kind: Any, schema_path: Location) -> str:
    """The keyword as the schema spells it: `dependencies` for a `required` inside it,
    `minContains` for a `contains` count; `false` for a false schema."""
    name = str(kind.name)
    last = schema_path[-1] if schema_path else None
    if last in _SPELLED.get(name, ()):
        return str(last)
    return "false" if name == "falseSchema" else name


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
