"""The JSON Schema dialects assetmgr enforces, what names them and what each one defines.

A schema's dialect is its own `$schema`; a schema without one has the configured default. A
keyword that another dialect defines but the schema's own ignores (`unevaluatedProperties` in a
draft-07 schema) would be dropped without a word by either engine: `foreign_keywords` finds them
so that loading refuses the schema and says which `$schema` would enforce it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

NAMES = ("draft-04", "draft-06", "draft-07", "2019-09", "2020-12")
DEFAULT = "draft-07"
# Dialects that only jsonschema-rs compiles (fastjsonschema would read them as draft-07).
MODERN = ("2019-09", "2020-12")

CANONICAL = {
    "draft-04": "http://json-schema.org/draft-04/schema#",
    "draft-06": "http://json-schema.org/draft-06/schema#",
    "draft-07": "http://json-schema.org/draft-07/schema#",
    "2019-09": "https://json-schema.org/draft/2019-09/schema",
    "2020-12": "https://json-schema.org/draft/2020-12/schema",
}
_URI = re.compile(
    r"https?://json-schema\.org/(?:(draft-0[467])/schema|draft/(2019-09|2020-12)/schema)#?"
)

_D4 = frozenset(
    (
        *("type", "enum", "allOf", "anyOf", "oneOf", "not", "minLength", "maxLength"),
        *("pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
        *("multipleOf", "minItems", "maxItems", "uniqueItems", "items", "additionalItems"),
        *("minProperties", "maxProperties", "required", "dependencies", "properties"),
        *("patternProperties", "additionalProperties"),
    )
)
_D6 = _D4 | {"const", "contains", "propertyNames"}
_D7 = _D6 | {"if", "then", "else"}
_D2019 = (_D7 - {"dependencies"}) | {
    *("dependentRequired", "dependentSchemas", "unevaluatedProperties", "unevaluatedItems"),
    *("minContains", "maxContains", "$recursiveRef"),
}
_D2020 = (_D2019 - {"additionalItems", "$recursiveRef"}) | {"prefixItems", "$dynamicRef"}
KEYWORDS = {"draft-04": _D4, "draft-06": _D6, "draft-07": _D7, "2019-09": _D2019, "2020-12": _D2020}
_EVERY = frozenset().union(*KEYWORDS.values())

# Where a schema holds subschemas, in any dialect: a map of them, a list, or one.
_MAPS = (
    "properties",
    "patternProperties",
    "definitions",
    "$defs",
    "dependentSchemas",
    "dependencies",
)
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_ONE = (
    *("additionalProperties", "additionalItems", "unevaluatedProperties", "unevaluatedItems"),
    *("contains", "propertyNames", "not", "if", "then", "else"),
)


def named_by(uri: str) -> str | None:
    """The dialect a `$schema` URI names (http or https, with or without the empty fragment)."""
    match = _URI.fullmatch(uri)
    return (match.group(1) or match.group(2)) if match else None


_BUNDLED = re.compile(
    r"https?://json-schema\.org/(?:draft-0[467]/schema|draft/(?:2019-09|2020-12)/(?:schema|meta/[a-z-]+))#?"
)


def bundled(uri: str) -> bool:
    """Is `uri` one of the official metaschemas (and vocabulary schemas) jsonschema-rs ships?"""
    return _BUNDLED.fullmatch(uri) is not None


def foreign_keywords(doc: Any, dialect: str) -> Iterator[tuple[str, str]]:
    """(JSON pointer, keyword) of each keyword in `doc` that `dialect` does not define but
    another dialect does (and so would be ignored where it was surely meant)."""
    own = KEYWORDS[dialect]
    for pointer, node in subschemas(doc):
        for key in node:
            if key in _EVERY and key not in own:
                yield pointer, key


def subschemas(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(JSON pointer, schema object) of `node` and of every schema inside it."""
    stack = [(node, "")]
    while stack:
        item, here = stack.pop()
        if not isinstance(item, dict):
            continue
        yield here, item
        for key in _MAPS:
            if isinstance(item.get(key), dict):
                stack.extend((v, f"{here}/{_token(key)}/{_token(k)}") for k, v in item[key].items())
        for key in (*_LISTS, "items"):
            if isinstance(item.get(key), list):
                stack.extend((v, f"{here}/{key}/{i}") for i, v in enumerate(item[key]))
        for key in (*_ONE, "items"):
            stack.append((item.get(key), f"{here}/{key}"))


def _token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
