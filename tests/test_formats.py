"""`format` and regexes: draft-07 asserts every format with both engines and the same verdicts;
2019-09 and 2020-12 assert only with the format-assertion vocabulary or `format_assertion`;
regexes are ECMA-262's in `pattern`, `patternProperties` and `propertyNames`."""

from __future__ import annotations

import json

import pytest
import suite
from test_schemas import write_schemas

from assetmgr.limits import Limits
from assetmgr.messages import Accepted, Rejected
from assetmgr.pipeline import engines, schemas
from assetmgr.pipeline.worker import evaluate

OPTIONAL = [
    pytest.param(group, engine, id=f"{group.id}-{engine}")
    for draft in ("draft7", "draft2020-12")
    for group in suite.groups(draft, "optional/**/*.json")
    for engine in suite.engines_for(draft)
]


@pytest.mark.parametrize(("group", "engine"), OPTIONAL)
def test_the_suites_format_and_regex_cases_get_its_verdict(group, engine):
    """optional/format/*.json and optional/ecmascript-regex.json, formats asserted."""
    outcome = suite.run(group, engine, format_assertion=True)
    if outcome.refused and engine == engines.FAST:
        # Unicode property escapes: Python's re has none, so fastjsonschema refuses the schema.
        assert "'\\p'" in outcome.refused and engines.WAY_OUT in outcome.refused
        return
    assert outcome.refused is None, outcome.refused
    assert outcome.wrong == [], f"{group.description}: {outcome.wrong}"


DRAFT7 = "http://json-schema.org/draft-07/schema#"
D2020 = "https://json-schema.org/draft/2020-12/schema"
# A value each format must reject, and one it must accept; the rejects are where loose checkers
# (fastjsonschema's regexes) let things through.
FORMATS = {
    "date": ("2023-02-30", "2024-02-29"),
    "date-time": ("2023-01-01T25:00:00Z", "2023-01-01T23:59:59+01:00"),
    "time": ("12:00:00", "12:00:00Z"),
    "email": ("a..b@example.com", "a.b@example.com"),
    "hostname": ("-a.example.com", "a-b.example.com"),
    "ipv4": ("01.2.3.4", "1.2.3.4"),
    "ipv6": ("1::2::3", "::1"),
    "uri": ("//example.com/x", "https://example.com/x"),
    "uri-reference": ("\\\\x", "../x#y"),
    "uuid": ("2eb8aa08-aa98-11ea-b4aa-73b441d1638", "2eb8aa08-aa98-11ea-b4aa-73b441d16380"),
    "json-pointer": ("a/b", "/a/b~0"),
    "regex": ("^(abc]", "^a\\d$"),
}


def format_registry(tmp_path, dialect_uri: str, engine: str, **options) -> schemas.Registry:
    props = {name: {"type": "string", "format": name} for name in FORMATS}
    doc = {"$schema": dialect_uri, "type": "object", "properties": props}
    directory = write_schemas(tmp_path / engine, {"kind.schema.json": doc})
    return schemas.load(directory, options=schemas.Options(engine=engine, **options))


@pytest.mark.parametrize("engine", engines.ENGINES)
def test_draft_07_asserts_each_format_with_the_same_reason(tmp_path, engine):
    registry = format_registry(tmp_path, DRAFT7, engine)
    for name, (bad, good) in FORMATS.items():
        rejected = evaluate("kind/a.json", json.dumps({name: bad}).encode(), registry, Limits())
        assert isinstance(rejected, Rejected), (name, bad)
        assert rejected.reason == (
            f'schema kind.schema.json: /{name}: format: must be a valid {name}, got "{bad}"'
        )
        accepted = evaluate("kind/a.json", json.dumps({name: good}).encode(), registry, Limits())
        assert isinstance(accepted, Accepted), (name, good, accepted)


def test_2020_12_format_is_an_annotation_unless_asked_to_assert(tmp_path):
    data = json.dumps({name: bad for name, (bad, _) in FORMATS.items()}).encode()
    annotation = format_registry(tmp_path / "a", D2020, engines.FAST)
    assert annotation.engine == engines.RUST  # 2020-12 is always jsonschema-rs's
    assert isinstance(evaluate("kind/a.json", data, annotation, Limits()), Accepted)
    asserted = format_registry(tmp_path / "b", D2020, engines.FAST, format_assertion=True)
    assert isinstance(evaluate("kind/a.json", data, asserted, Limits()), Rejected)


def test_the_format_assertion_vocabulary_makes_2020_12_assert(tmp_path):
    meta = {
        "$schema": D2020,
        "$id": "https://example.com/meta/format-assertion",
        "$vocabulary": {
            "https://json-schema.org/draft/2020-12/vocab/core": True,
            "https://json-schema.org/draft/2020-12/vocab/applicator": True,
            "https://json-schema.org/draft/2020-12/vocab/format-assertion": True,
        },
        "$dynamicAnchor": "meta",
        "allOf": [
            {"$ref": "https://json-schema.org/draft/2020-12/meta/core"},
            {"$ref": "https://json-schema.org/draft/2020-12/meta/applicator"},
            {"$ref": "https://json-schema.org/draft/2020-12/meta/format-assertion"},
        ],
    }
    events = {
        "$schema": "https://example.com/meta/format-assertion",
        "properties": {"day": {"format": "date"}},
    }
    directory = write_schemas(tmp_path, {"meta.schema.json": meta, "events.schema.json": events})
    registry = schemas.load(directory)
    assert registry.schemas["events"].dialect == "2020-12"
    verdict = evaluate("events/a.json", b'{"day": "2023-02-30"}', registry, Limits())
    assert isinstance(verdict, Rejected) and "/day: format: must be a valid date" in verdict.reason
    assert isinstance(
        evaluate("events/a.json", b'{"day": "2023-02-28"}', registry, Limits()), Accepted
    )


# Where Python's re and ECMA-262 read one pattern differently: the ECMA-262 verdicts.
REGEXES = [
    ("^a$", "a\n", False),  # `$` is the end, not "before a final newline"
    ("^\\d+$", "\u0661\u0662", False),  # Arabic-Indic digits are not \d
    ("^\\w+$", "é", False),
    ("^.$", "\r", False),
    ("^\\s$", "\ufeff", True),
    ("^\\s$", "\x1c", False),
    ("^[^\\S]$", " ", True),
]


@pytest.mark.parametrize("engine", engines.ENGINES)
@pytest.mark.parametrize(("pattern", "text", "matches"), REGEXES)
def test_regexes_are_ecma_262_in_pattern_pattern_properties_and_property_names(
    tmp_path, engine, pattern, text, matches
):
    doc = {
        "$schema": DRAFT7,
        "properties": {"k": {"pattern": pattern}},
        "patternProperties": {pattern: {"const": 1}},
        "propertyNames": {"anyOf": [{"const": "k"}, {"pattern": pattern}]},
        "additionalProperties": False,
    }
    directory = write_schemas(tmp_path, {"kind.schema.json": doc})
    check = schemas.load(directory, options=schemas.Options(engine=engine)).schemas["kind"].check
    for document in ({"k": text}, {text: 1}):
        assert suite.verdict(check, document) is matches, (document, engine)


def test_fastjsonschema_refuses_a_regex_it_cannot_match_as_ecma_262(tmp_path):
    doc = {"$schema": DRAFT7, "patternProperties": {"^\\p{Lu}": {"type": "integer"}}}
    directory = write_schemas(tmp_path, {"kind.schema.json": doc})
    with pytest.raises(schemas.SchemaError) as refused:
        schemas.load(directory)
    assert "\\p{Lu}" in str(refused.value) and engines.WAY_OUT in str(refused.value)
    rust = schemas.load(directory, options=schemas.Options(engine=engines.RUST))
    assert suite.verdict(rust.schemas["kind"].check, {"Ab": "x"}) is False
    assert suite.verdict(rust.schemas["kind"].check, {"ab": "x"}) is True
