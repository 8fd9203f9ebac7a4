"""fastjsonschema and jsonschema-rs judge alike: on the draft-07 suite, on the examples, and on
schemas and documents generated where the two have differed (a trailing newline, Unicode
digits, "True" against true, 1 against 1.0 against true, formats, patternProperties).

Where they may differ, the difference is pinned in KNOWN_DIFFERENCES with its reason; the test
fails on any other, and on a pinned one that no longer occurs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import suite
from fuzzing import bounded, examples
from hypothesis import given, settings
from hypothesis import strategies as st

from assetmgr.limits import Limits
from assetmgr.messages import Rejected
from assetmgr.pipeline import engines, schemas
from assetmgr.pipeline.worker import evaluate
from conftest import EXAMPLES, SCHEMAS

# (schema, document) pairs on which the engines are known to disagree, and why. None so far:
# every generated pair and every suite case has had the same verdict from both.
KNOWN_DIFFERENCES: dict[str, str] = {}

DRAFT7 = "http://json-schema.org/draft-07/schema#"


def compiled(doc: Any) -> dict[str, Any] | None:
    """The schema's check by each engine; None when fastjsonschema refuses it (with the way
    out) — jsonschema-rs must then still load it."""
    checks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "kind.schema.json").write_text(json.dumps(doc))
        for engine in engines.ENGINES:
            try:
                registry = schemas.load(tmp, options=schemas.Options(engine=engine))
            except schemas.SchemaError as e:
                assert engine == engines.FAST and engines.WAY_OUT in str(e), str(e)
                return None
            checks[engine] = registry.schemas["kind"].check
    return checks


def verdicts(checks: dict[str, Any], document: Any) -> dict[str, bool]:
    return {engine: suite.verdict(check, document) for engine, check in checks.items()}


def assert_alike(doc: Any, documents: list[Any]) -> None:
    checks = compiled(doc)
    if checks is None:
        return
    for document in documents:
        found = verdicts(checks, document)
        key = json.dumps([doc, document], sort_keys=True)
        if len(set(found.values())) > 1:
            assert key in KNOWN_DIFFERENCES, f"engines differ: {found} on {key}"


def test_the_draft_07_suite_gets_the_same_verdicts_from_both_engines():
    compared = 0
    for group in suite.groups("draft7"):
        if not suite.needs_remote(group.schema):
            assert_alike(group.schema, [t["data"] for t in group.tests])
            compared += len(group.tests)
    assert compared == 892


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.json"))
)
def test_the_examples_get_the_same_verdicts_and_reasons_from_both_engines(path):
    data = (EXAMPLES / path).read_bytes()
    found = {}
    for engine in engines.ENGINES:
        registry = schemas.load(SCHEMAS, options=schemas.Options(engine=engine))
        found[engine] = evaluate(path, data, registry, Limits())
        broken = evaluate(path, data.replace(b'"', b'"\\u0661', 1), registry, Limits())
        found[engine + " broken"] = broken.reason if isinstance(broken, Rejected) else "ok"
    fast, rust = (found[e] for e in engines.ENGINES)
    assert type(fast) is type(rust) and getattr(fast, "reason", "") == getattr(rust, "reason", "")
    assert found[engines.FAST + " broken"] == found[engines.RUST + " broken"]


# -- generated where the engines have differed ----------------------------------------------

PATTERNS = [
    *("^a$", "^\\d+$", "^\\w+$", "^a.c$", "^[a-z]+$", "\\s", "^$", "^[^\\S]+$", "\\bx"),
    *("^\\D$", "a|b$", "^(ab)+$", "^[$]$", "^.$", "^\\S+$", "^[\\d.]+$", "1$"),
]
FORMATS = [
    *("date", "date-time", "time", "email", "hostname", "ipv4", "ipv6", "uri"),
    *("uri-reference", "uuid", "json-pointer", "regex", "relative-json-pointer", "duration"),
]
STRINGS = [
    *("", "a", "a\n", "\n", "True", "true", "1", "1.0", "\u0663", "12", "\u0661\u0662", "\u00e9"),
    *("abc", "a c", "ab", "abab", " ", "\u00a0", "\ufeff", "\x1c", "x", "$", "a.c", "a\nc", "\r"),
    *("2023-02-30", "2024-02-29", "2024-02-29T12:00:00Z", "12:00:00Z", "12:00:00", "23:59:60Z"),
    *("1.2.3.4", "01.2.3.4", "::1", "1::2::3", "a@b.co", "a..b@c.d", "https://x/y", "//x/y"),
    *("/a/b", "a/b", "0/a", "2eb8aa08-aa98-11ea-b4aa-73b441d16380", "^(abc]", "P1D", "PT1D"),
]
NUMBERS = [0, 1, -1, 1.0, 0.0, -0.0, 1.5, 0.1, 0.3, 2, 2**53, 2**53 + 1, float(2**53), 1e300, 10]
KEYS = ["a", "k", "a\n", "\u0663", "1", "True", "x", "ab", "", "$", "a.b", "a[0]"]

leaves = st.none() | st.booleans() | st.sampled_from(NUMBERS) | st.sampled_from(STRINGS)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)
patterns = st.sampled_from(PATTERNS)
types = st.sampled_from(["null", "boolean", "integer", "number", "string", "array", "object"])


def keyword_schemas(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(
            lambda t: {"type": t}, types | st.lists(types, min_size=2, max_size=2, unique=True)
        ),
        st.builds(lambda v: {"const": v}, values),
        st.builds(lambda v: {"enum": v}, st.lists(values, min_size=1, max_size=3)),
        st.builds(lambda p: {"pattern": p}, patterns),
        st.builds(lambda p: {"propertyNames": {"pattern": p}}, patterns),
        st.builds(
            lambda p, s, extra: {"patternProperties": {p: s}, "additionalProperties": extra},
            patterns,
            inner,
            st.booleans() | inner,
        ),
        st.builds(
            lambda k, s, p: {
                "properties": {k: s},
                "patternProperties": {p: s},
                "additionalProperties": False,
            },
            st.sampled_from(KEYS),
            inner,
            patterns,
        ),
        st.builds(lambda f: {"format": f}, st.sampled_from(FORMATS)),
        st.just({"uniqueItems": True}),
        st.builds(lambda n: {"minimum": n}, st.sampled_from(NUMBERS)),
        st.builds(lambda n: {"exclusiveMaximum": n}, st.sampled_from(NUMBERS)),
        st.builds(lambda m: {"multipleOf": m}, st.sampled_from([1, 0.5, 2, 0.1, 1.0])),
        st.builds(lambda n: {"minLength": n}, st.integers(0, 2)),
        st.builds(lambda n: {"maxProperties": n}, st.integers(0, 1)),
        st.builds(lambda k: {"required": [k]}, st.sampled_from(KEYS)),
        st.builds(lambda s: {"contains": s}, inner),
        st.builds(
            lambda k, d: {"dependencies": {k: [d]}}, st.sampled_from(KEYS), st.sampled_from(KEYS)
        ),
        st.builds(lambda s: {"items": s}, inner),
        st.builds(lambda s: {"items": [s], "additionalItems": False}, inner),
        st.builds(lambda a, b: {"allOf": [a, b]}, inner, inner),
        st.builds(lambda a, b: {"anyOf": [a, b]}, inner, inner),
        st.builds(lambda a, b: {"oneOf": [a, b]}, inner, inner),
        st.builds(lambda a: {"not": a}, inner),
        st.builds(lambda a, b, c: {"if": a, "then": b, "else": c}, inner, inner, inner),
    )


schema_docs = st.recursive(
    st.booleans() | keyword_schemas(st.just({})), keyword_schemas, max_leaves=4
)


@settings(max_examples=examples(1))
@given(schema_docs, st.lists(values, min_size=1, max_size=8))
def test_generated_schemas_and_documents_get_the_same_verdicts(schema, documents):
    doc = {"$schema": DRAFT7, "allOf": [schema]}
    with bounded():
        assert_alike(doc, documents)
