"""The two schema engines behind `Schema.check`: fastjsonschema and jsonschema-rs.

Each compiles one schema document once into a `check(document)` that returns when the document
is valid and raises `rejections.Violation` when it is not — for any failure of the engine too,
a Rust panic (a BaseException) included, so a worker never dies of a document. A schema that
an engine cannot enforce exactly as written is refused at compile time (`Refused`), with the
construct and the way out; it is never checked more loosely than it says.

fastjsonschema gets three repairs here: regexes with ECMA-262 semantics in `pattern`,
`patternProperties` and `propertyNames` (one compiled regex per pattern text, the same for all
three), the same `format` checkers as jsonschema-rs, and no `default` filling (`use_default`
would add properties to the document that logic validators then see).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin

import fastjsonschema
import jsonschema_rs
from fastjsonschema.draft04 import CodeGeneratorDraft04
from fastjsonschema.draft06 import CodeGeneratorDraft06
from fastjsonschema.draft07 import CodeGeneratorDraft07
from fastjsonschema.ref_resolver import RefResolver, normalize

from assetmgr.pipeline import dialects, ecma, formats, rejections
from assetmgr.pipeline.rejections import Violation

FAST = "fastjsonschema"
RUST = "jsonschema-rs"
ENGINES = (FAST, RUST)
WAY_OUT = 'set schema_engine = "jsonschema-rs"'

Check = Callable[[Any], None]
Handlers = Mapping[str, Callable[[str], Any]]
Retriever = Callable[[str], Any]


class Refused(Exception):
    """A schema this engine cannot enforce as written: the one-line reason and the way out."""


@functools.cache
def version(engine: str) -> str:
    """`engine` and its installed version, as it goes into the validation fingerprint."""
    return f"{engine} {importlib.metadata.version(engine)}"


# -- fastjsonschema -------------------------------------------------------------------------


class OrderedKeys(dict[str, None]):
    """An object's keys in document order, with the set operations fastjsonschema's code uses
    on them. Its own `set` iterates in hash order, which varies with each process's hash seed,
    so the first error reported for one file (an additionalProperties one) varied too."""

    def __init__(self, obj: dict[str, Any]) -> None:
        super().__init__(dict.fromkeys(obj))

    def remove(self, key: str) -> None:
        del self[key]

    def __str__(self) -> str:
        return "{" + ", ".join(map(repr, self)) + "}"


class _EcmaPatterns:
    """fastjsonschema's `pattern` and `patternProperties` with ECMA-262 regexes. Its own read
    `$` as Python does (a match before a final newline) in patternProperties, and both share one
    cache keyed by the pattern text, so whichever compiled last served both."""

    _definition: dict[str, Any]
    _compile_regexps: dict[str, re.Pattern[str]]
    _variable: str
    _variable_name: str
    l: Any  # noqa: E741 - fastjsonschema's name
    e: Any
    exc: Any
    create_variable_is_dict: Any
    _variables: dict[str, Any]
    _scope_stack: list[Any]
    _is_variable_in_scope: Any
    generate_func_code_block: Any

    def create_variable_keys(self) -> None:
        """`{variable}_keys` as OrderedKeys: errors reported in document order."""
        name = f"{self._variable}_keys"
        if self._is_variable_in_scope(name):
            return
        self._variables[name] = tuple(self._scope_stack)
        self.l("{variable}_keys = OrderedKeys({variable})")

    def generate_pattern(self) -> None:
        pattern = self._definition["pattern"]
        if not isinstance(pattern, str):
            raise fastjsonschema.JsonSchemaDefinitionException("pattern must be a string")
        with self.l("if isinstance({variable}, str):"):
            self._compile_regexps[pattern] = ecma.compile(pattern)
            with self.l("if not REGEX_PATTERNS[{}].search({variable}):", repr(pattern)):
                self.exc("{name} must match pattern {}", self.e(pattern), rule="pattern")

    def generate_pattern_properties(self) -> None:
        self.create_variable_is_dict()
        with self.l("if {variable}_is_dict:"):
            self.create_variable_keys()
            definitions = self._definition["patternProperties"]
            if not definitions:
                return
            for pattern in definitions:
                self._compile_regexps[pattern] = ecma.compile(pattern)
            with self.l("for {variable}_key, {variable}_val in {variable}.items():"):
                for pattern, definition in definitions.items():
                    with self.l("if REGEX_PATTERNS[{}].search({variable}_key):", repr(pattern)):
                        with self.l("if {variable}_key in {variable}_keys:"):
                            self.l("{variable}_keys.remove({variable}_key)")
                        self.generate_func_code_block(
                            definition,
                            f"{self._variable}_val",
                            f"{self._variable_name}.{{{self._variable}_key}}",
                            clear_variables=True,
                        )


class _Resolver(RefResolver):
    """fastjsonschema's resolver with its own walk of a document replaced. Its walk skips
    lists, so a `$id` in `allOf` is never found and a `$ref` there resolves against the wrong
    base; and it enters data, so a `$ref` key in a `const` object is rewritten. This walk goes
    where subschemas are, lists included, never into `const`, `enum`, `default`, `examples`."""

    id_key = "$id"  # draft-04's is "id"

    def walk(self, node: Any, depth: int = 0, rewrite_refs: bool = True) -> None:
        id_key = self.id_key
        stack = [(node, self.resolution_scope)]
        while stack:
            item, here = stack.pop()
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("$ref"), str):  # draft-07 and older: siblings are ignored
                item["$ref"] = urljoin(here, item["$ref"])
                continue
            if isinstance(item.get(id_key), str):
                here = urljoin(here, item[id_key])
                self.store[normalize(here)] = item
            for key, value in item.items():
                if key in _DATA:
                    continue
                if key in _MAPS and isinstance(value, dict):
                    stack.extend((v, here) for v in value.values())
                elif key in _LISTS and isinstance(value, list):
                    stack.extend((v, here) for v in value)
                elif isinstance(value, dict):
                    stack.append((value, here))


class _Draft04Resolver(_Resolver):
    id_key = "id"


_DATA = frozenset(("const", "enum", "default", "examples"))
_MAPS = frozenset(("properties", "patternProperties", "definitions", "$defs", "dependencies"))
_LISTS = frozenset(("allOf", "anyOf", "oneOf", "items"))
_BASES = {"draft-04": CodeGeneratorDraft04, "draft-06": CodeGeneratorDraft06}


@functools.cache
def _generator(dialect: str) -> type[CodeGeneratorDraft04]:
    base = _BASES.get(dialect, CodeGeneratorDraft07)
    return type(f"Ecma{base.__name__}", (_EcmaPatterns, base), {})


# `"[{data_x}]".format(**locals())`: how fastjsonschema's generated code names the value it
# passes to a `$ref`'s function, on every call, valid or not (a dict of all locals, then a
# format). The same literal as an f-string names the same value at a fraction of the cost;
# only literals whose every brace is a `{data…}` local are rewritten, so nothing else changes.
_NAME_BY_LOCALS = re.compile(r'"((?:[^"\\{}]|\\.|\{data\w*\})*)"\.format\(\*\*locals\(\)\)')


def _compile_validator(
    doc: Any, handlers: Handlers, dialect: str = "draft-07", base_uri: str = ""
) -> Callable[..., Any]:
    """fastjsonschema's validator for `doc` (called as `f(document, format_checkers)`), its
    names built as f-strings (_NAME_BY_LOCALS): the same checks and the same error messages,
    without a locals() dict per `$ref` call in a loop (a quarter of a small asset's time).
    `doc` is changed: fastjsonschema rewrites its `$ref`s to absolute URIs."""
    resolving = _Draft04Resolver if dialect == "draft-04" else _Resolver
    resolver = resolving(base_uri, doc, store={}, handlers=handlers)
    generator = _generator(dialect)(
        doc, resolver=resolver, formats=formats.checkers(dialect), use_default=False
    )
    namespace = {**generator.global_state, "OrderedKeys": OrderedKeys}
    code = _NAME_BY_LOCALS.sub(r'f"\1"', generator.func_code)
    exec(compile(code, f"<schema {resolver.base_uri}>", "exec"), namespace)
    return namespace[resolver.get_scope_name()]


def compile_fast(doc: Any, dialect: str, base_uri: str, handlers: Handlers) -> Check:
    """fastjsonschema's check of `doc` (draft-04, -06 or -07), its `$ref`s resolved against
    `base_uri` (which `doc` may change to its own `$id`)."""
    try:
        validate = _compile_validator(doc, handlers, dialect, base_uri)
    except ecma.Unsupported as e:
        raise Refused(f"{e}; {WAY_OUT}") from None
    table = formats.checkers(dialect)
    _probe(validate, table)

    def check(document: Any) -> None:
        try:
            validate(document, table)
        except fastjsonschema.JsonSchemaValueException as e:
            raise rejections.from_fast(e, document) from None
        except RecursionError:
            raise Violation((), "$ref", "validation recursed too deep") from None
        except Exception as e:  # the generated code's own failure on an unusual document
            raise Violation((), "engine", f"{FAST} failed: {type(e).__name__}: {e}") from None

    return check


def meta_validate(doc: Any, dialect: str) -> None:
    """Refuse a document that is not a schema of its dialect (`"exclusiveMinimum": true` in
    draft-07): fastjsonschema would compile it into some check, not the one written."""
    if isinstance(doc, dict) and "$schema" not in doc:
        doc = {**doc, "$schema": dialects.CANONICAL[dialect]}
    try:
        jsonschema_rs.meta.validate(doc)
    except jsonschema_rs.ValidationError as e:
        raise Refused(_schema_problem(e)) from None


def _probe(validate: Callable[..., Any], table: Mapping[str, Any]) -> None:
    """Validate a few trivial documents: a schema whose code fails on them (a `$ref` cycle
    that consumes nothing recurses on every document) would reject every asset."""
    trivial: tuple[Any, ...] = (None, {}, [], "", 0)
    for value in trivial:
        try:
            validate(value, table)
        except fastjsonschema.JsonSchemaValueException:
            pass
        except RecursionError:
            raise Refused("$ref cycle: validating any document recurses forever") from None


# -- jsonschema-rs --------------------------------------------------------------------------


def compile_rust(
    doc: Any,
    dialect: str,
    *,
    base_uri: str,
    registry: jsonschema_rs.Registry,
    retriever: Retriever,
    assert_formats: bool | None,
) -> Check:
    """jsonschema-rs's check of `doc`. `assert_formats` None: as the dialect and its
    vocabularies say (draft-07 asserts; 2020-12 only with the format-assertion vocabulary)."""
    try:
        validator = formats.VALIDATORS[dialect](
            doc,
            formats=formats.missing(dialect) or None,
            validate_formats=assert_formats,
            registry=registry,
            retriever=retriever,
            base_uri=base_uri,
        )
    except jsonschema_rs.ValidationError as e:  # the document is not a valid schema
        raise Refused(_schema_problem(e)) from None
    except Exception as e:
        raise Refused(f"{RUST}: {type(e).__name__}: {e}") from None
    except BaseException as e:
        _reraise_interrupt(e)
        raise Refused(f"{RUST} failed: {type(e).__name__}: {e}") from None

    return guarded(validator)


def guarded(validator: jsonschema_rs.Validator) -> Check:
    """The check of a jsonschema-rs validator: `is_valid` first (no error is built for a valid
    document), the first error only for an invalid one; the engine's own failure, a Rust panic
    included, is a rejection of the document."""

    def check(document: Any) -> None:
        try:
            if validator.is_valid(document):
                return
            error = next(validator.iter_errors(document), None)
        except BaseException as e:  # a Rust panic is a BaseException (pyo3's PanicException)
            _reraise_interrupt(e)
            raise Violation((), "engine", f"{RUST} failed: {type(e).__name__}: {e}") from None
        if error is None:
            raise Violation((), "engine", f"{RUST} judged the document invalid but named no error")
        raise rejections.from_rust(error)

    return check


def _reraise_interrupt(error: BaseException) -> None:
    if isinstance(error, KeyboardInterrupt | SystemExit | GeneratorExit):
        raise error


def _schema_problem(error: jsonschema_rs.ValidationError) -> str:
    where = "".join(f"/{p}" for p in error.instance_path) or "(root)"
    first = error.message.splitlines()[0] if error.message else type(error).__name__
    return f"{where}: {rejections.cut(first, 160)}"
