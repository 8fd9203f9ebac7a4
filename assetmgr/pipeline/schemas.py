"""The schema registry: which schema checks a path, compiled once with fastjsonschema.

`$ref` resolves only to files inside the schemas directory. Every reference is checked before
compiling, and the resolver's handlers refuse anything else, so no network connection is ever
attempted. A schema that fails to load or compile is a configuration error.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import inspect
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import fastjsonschema
import orjson

from assetmgr.printable import shown

SUFFIX = ".schema.json"
DEFAULT = "_default"

# A logic validator gets the asset's path and parsed document; it returns None when the
# document is fine, or a one-line reason when it is not.
LogicValidator = Callable[[str, Any], str | None]


class SchemaError(Exception):
    """A schema or validator that cannot be loaded: refuse to start, keep the old set on reload."""


@dataclass(frozen=True)
class Schema:
    name: str  # file name, e.g. "weights.schema.json"
    id: str  # the schema's $id, or its file name
    check: Callable[[Any], Any]
    digest: str = ""  # of the document as loaded, to tell which kinds a reload changed
    refs: frozenset[str] = frozenset()  # file names of the documents its $refs point into


@dataclass
class Registry:
    """Compiled schemas of one directory plus the path → schema mapping rules."""

    directory: Path
    schemas: dict[str, Schema]
    rules: Sequence[tuple[str, str]] = ()
    validators: Mapping[str, Sequence[LogicValidator]] = field(default_factory=dict)
    documents_digest: str = ""

    def schema_for(self, path: str) -> Schema | None:
        """First matching glob rule, else the kind (first component), else `_default`."""
        for pattern, name in self.rules:
            if fnmatch.fnmatchcase(path, pattern):
                return self.schemas.get(name.removesuffix(SUFFIX))
        kind, sep, _ = path.partition("/")
        if sep and kind in self.schemas:
            return self.schemas[kind]
        return self.schemas.get(DEFAULT)

    def fingerprint(self) -> str:
        """The schema documents as loaded, the rules and the validator names, hashed."""
        digest = hashlib.sha256(self.documents_digest.encode())
        digest.update(repr(list(self.rules)).encode())
        for kind in sorted(self.validators):
            digest.update(kind.encode() + repr([_name(v) for v in self.validators[kind]]).encode())
        return digest.hexdigest()

    def logic_for(self, path: str) -> Sequence[LogicValidator]:
        kind, sep, _ = path.partition("/")
        return self.validators.get(kind if sep else "", ())

    def kinds_differing(self, other: Registry) -> set[str]:
        """Kinds whose schema text changed between two registries (for revalidation)."""
        names = set(self.schemas) | set(other.schemas)
        changed = {n for n in names if _digest(self, n) != _digest(other, n)}
        files = {n + SUFFIX for n in changed}
        return changed | {n for n, s in other.schemas.items() if s.refs & files}


def _digest(registry: Registry, name: str) -> str | None:
    schema = registry.schemas.get(name)
    return schema.digest if schema else None


def _name(function: Callable[..., Any]) -> str:
    """A validator's name and the digest of its module's source: editing its code changes the
    fingerprint, so unchanged files are validated again by the new code."""
    name = f"{getattr(function, '__module__', '')}:{getattr(function, '__qualname__', function)}"
    try:
        source = inspect.getsourcefile(function)
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16] if source else ""
    except (OSError, TypeError):
        digest = ""
    return f"{name}@{digest}"


def load(
    directory: str | os.PathLike[str],
    rules: Sequence[tuple[str, str]] = (),
    validators: Mapping[str, Sequence[str]] | None = None,
) -> Registry:
    """Load and compile every `*.schema.json`; raise SchemaError with a one-line reason."""
    root = Path(directory).resolve()
    if not root.is_dir():
        raise SchemaError(f"schemas directory {directory} does not exist")
    docs = {p.name: _read(p) for p in sorted(root.glob("*" + SUFFIX)) if p.is_file()}
    if not docs:
        raise SchemaError(f"schemas directory {directory} holds no *{SUFFIX} file")
    handlers = _handlers(root)
    schemas: dict[str, Schema] = {}
    for name, doc in docs.items():
        schemas[name.removesuffix(SUFFIX)] = _compile(root, name, doc, handlers)
    for _, target in rules:
        if target.removesuffix(SUFFIX) not in schemas:
            raise SchemaError(f"schema rule names {target!r}, which is not in {directory}")
    digest = hashlib.sha256(orjson.dumps(docs, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return Registry(root, schemas, tuple(rules), _load_validators(validators or {}), digest)


def _compile(
    root: Path, name: str, doc: dict[str, Any], handlers: dict[str, Callable[[str], Any]]
) -> Schema:
    """Confine the document's `$ref`s to the directory, then compile it. A malformed schema
    can make the compiler fail in any way (TypeError on `"required": null`, RecursionError on
    a cycle): each is this file's configuration error, in one line."""
    base = (root / name).as_uri()
    try:
        refs = list(_refs(doc, base))
        for ref in refs:
            _confine(ref, root)
        check = _compile_validator(_with_base(doc, base), handlers)
        _probe(check)
        targets = frozenset(Path(unquote(urlsplit(r).path)).name for r in refs) - {name}
    except Exception as e:  # also the compiler's own errors on a document it does not expect
        raise SchemaError(f"schema {name}: {_one_line(e)}") from None
    sid = doc["$id"] if isinstance(doc.get("$id"), str) else name
    digest = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return Schema(name, sid, check, digest, targets)


# `"[{data_x}]".format(**locals())`: how fastjsonschema's generated code names the value it
# passes to a `$ref`'s function, on every call, valid or not (a dict of all locals, then a
# format). The same literal as an f-string names the same value at a fraction of the cost;
# only literals whose every brace is a `{data…}` local are rewritten, so nothing else changes.
_NAME_BY_LOCALS = re.compile(r'"((?:[^"\\{}]|\\.|\{data\w*\})*)"\.format\(\*\*locals\(\)\)')
_ENTRY = re.compile(r"^def (\w+)\(", re.MULTILINE)


def _compile_validator(
    doc: dict[str, Any], handlers: dict[str, Callable[[str], Any]]
) -> Callable[[Any], Any]:
    """fastjsonschema's validator for `doc`, its names built as f-strings (_NAME_BY_LOCALS):
    the same checks and the same error messages, without a locals() dict per `$ref` call in
    a loop (a quarter of a small asset's validation time)."""
    code = _NAME_BY_LOCALS.sub(r'f"\1"', fastjsonschema.compile_to_code(doc, handlers=handlers))
    entry = _ENTRY.search(code)
    if entry is None:
        raise SchemaError("the compiler produced no validator function")
    namespace: dict[str, Any] = {}
    exec(compile(code, f"<schema {doc.get('$id', '')}>", "exec"), namespace)
    return namespace[entry.group(1)]


def _probe(check: Callable[[Any], Any]) -> None:
    """Validate a few trivial documents: a schema whose code fails on them (a `$ref` cycle
    that consumes nothing recurses on every document) would reject every asset."""
    trivial: tuple[Any, ...] = (None, {}, [], "", 0)
    for value in trivial:
        try:
            check(value)
        except fastjsonschema.JsonSchemaValueException:
            pass
        except RecursionError:
            raise SchemaError("$ref cycle: validating any document recurses forever") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as e:
        raise SchemaError(f"schema {path.name}: {e.strerror}") from None
    except orjson.JSONDecodeError as e:
        raise SchemaError(f"schema {path.name}: not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise SchemaError(f"schema {path.name}: not a JSON object")
    return doc


def _with_base(doc: dict[str, Any], base: str) -> dict[str, Any]:
    """Resolve relative `$ref`s against the file's own URI, whatever its `$id` says.

    A canonical `$id` such as `https://example.com/weights.schema.json` is common; keeping it as
    the base would send `common.schema.json` refs to that host instead of the sibling file, which
    `_refs`/`_confine` already checked as local. The schema's reported id is read before this.
    """
    return {**doc, "$id": base}


def _refs(node: Any, base: str) -> Iterator[str]:
    """Every `$ref` in a schema document, resolved to an absolute URI."""
    stack = [(node, base)]
    while stack:
        item, here = stack.pop()
        if isinstance(item, dict):
            sid = item.get("$id")
            if isinstance(sid, str) and item is not node:
                here = urljoin(here, sid)
            ref = item.get("$ref")
            if isinstance(ref, str):
                yield urljoin(here, ref)
            stack.extend((v, here) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, here) for v in item)


def _confine(uri: str, root: Path) -> None:
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise SchemaError(f"$ref {uri!r} is outside the schemas directory")
    target = Path(unquote(parts.path)).resolve()
    if target.parent != root and root not in target.parents:
        raise SchemaError(f"$ref {uri!r} is outside the schemas directory")


def _handlers(root: Path) -> dict[str, Callable[[str], Any]]:
    def local(uri: str) -> Any:
        parts = urlsplit(uri)
        target = (root / unquote(parts.path)).resolve() if not parts.scheme else None
        if parts.scheme == "file":
            target = Path(unquote(parts.path)).resolve()
        if target is None or (target.parent != root and root not in target.parents):
            raise SchemaError(f"$ref {uri!r} is outside the schemas directory")
        return _read(target)

    def refuse(uri: str) -> Any:
        raise SchemaError(
            f"$ref {uri!r} is remote; only files in the schemas directory are allowed"
        )

    refused = ("http", "https", "ftp", "ftps", "data", "urn", "jar")
    return {"": local, "file": local, **dict.fromkeys(refused, refuse)}


def _load_validators(spec: Mapping[str, Sequence[str]]) -> dict[str, list[LogicValidator]]:
    loaded: dict[str, list[LogicValidator]] = {}
    for kind, names in spec.items():
        loaded[kind] = [_import(name) for name in names]
    return loaded


def _import(name: str) -> LogicValidator:
    module_name, sep, attr = name.partition(":")
    if not sep:
        raise SchemaError(f"validator {name!r}: expected module:callable")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise SchemaError(f"validator {name!r}: {_one_line(e)}") from None
    if not callable(target):
        raise SchemaError(f"validator {name!r} is not callable")
    return target


def _one_line(error: BaseException) -> str:
    """One printable line: a file name or `$ref` with a control character is escaped."""
    return shown(" ".join(str(error).split())) or type(error).__name__
