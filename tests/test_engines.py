"""The engines behind `Schema.check`: which one compiles a directory, what each refuses, where
`$ref` may lead under jsonschema-rs, what a panic becomes, and what the fingerprint holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema_rs
import pytest
from fsprobe import touches
from test_schemas import REMOTE_CASES, assert_no_connection, listener, write_schemas  # noqa: F401

from assetmgr.limits import Limits
from assetmgr.messages import Accepted, Rejected
from assetmgr.pipeline import engines, schemas
from assetmgr.pipeline.rejections import Violation
from assetmgr.pipeline.worker import evaluate, fingerprint
from assetmgr.store.keyspace import Keyspace
from conftest import SCHEMAS, run_cli

RUST = schemas.Options(engine=engines.RUST)
D2020 = "https://json-schema.org/draft/2020-12/schema"
DRAFT4 = "http://json-schema.org/draft-04/schema#"

# -- which engine, which dialect --------------------------------------------------------------


def test_a_2020_12_schema_is_enforced_and_makes_the_directory_jsonschema_rs(tmp_path):
    """The issue's new user: unevaluatedProperties in a 2020-12 schema was ignored."""
    strict = {"$schema": D2020, "properties": {"a": {"type": "integer"}}}
    strict["unevaluatedProperties"] = False
    directory = write_schemas(tmp_path, {"kind.schema.json": strict, "old.schema.json": {}})
    registry = schemas.load(directory)
    assert registry.engine == engines.RUST
    assert {s.engine for s in registry.schemas.values()} == {engines.RUST}
    assert registry.schemas["old"].dialect == "draft-07"  # no $schema: the default dialect
    verdict = evaluate("kind/a.json", b'{"a": 1, "extra": true}', registry, Limits())
    assert isinstance(verdict, Rejected)
    assert verdict.reason == (
        'schema kind.schema.json: (root): unevaluatedProperties: must not contain ["extra"]'
    )
    assert isinstance(evaluate("kind/a.json", b'{"a": 1}', registry, Limits()), Accepted)


def test_a_keyword_the_dialect_would_ignore_is_refused_with_the_schema_that_enforces_it(tmp_path):
    doc = {"properties": {"a": {"unevaluatedProperties": False}}}  # no $schema: draft-07
    directory = write_schemas(tmp_path, {"kind.schema.json": doc})
    for options in (schemas.Options(), RUST):
        with pytest.raises(schemas.SchemaError) as refused:
            schemas.load(directory, options=options)
        assert str(refused.value) == (
            "schema kind.schema.json: /properties/a: unevaluatedProperties is not a draft-07 "
            'keyword and would be ignored; declare "$schema": "https://json-schema.org/draft/'
            '2020-12/schema" to enforce it'
        )


def test_the_default_dialect_setting_reads_a_schema_without_schema(tmp_path):
    doc = {"properties": {"n": {"minimum": 5, "exclusiveMinimum": True}}}  # draft-04's form
    directory = write_schemas(tmp_path, {"kind.schema.json": doc})
    for engine in engines.ENGINES:
        options = schemas.Options(default_dialect="draft-04", engine=engine)
        registry = schemas.load(directory, options=options)
        assert registry.schemas["kind"].dialect == "draft-04"
        verdict = evaluate("kind/a.json", b'{"n": 5}', registry, Limits())
        assert (
            isinstance(verdict, Rejected) and "/n: exclusiveMinimum: must be > 5" in verdict.reason
        )
    with pytest.raises(schemas.SchemaError, match="exclusiveMinimum"):
        schemas.load(directory)  # as draft-07, a boolean exclusiveMinimum is not a schema


@pytest.mark.parametrize(
    "uri", ["http://json-schema.org/draft-03/schema#", "https://example.com/meta", 7, ""]
)
def test_an_unknown_schema_is_a_configuration_error(tmp_path, uri):
    directory = write_schemas(tmp_path, {"kind.schema.json": {"$schema": uri}})
    with pytest.raises(schemas.SchemaError, match="unknown \\$schema"):
        schemas.load(directory)


def test_fastjsonschema_refuses_a_ref_across_dialects(tmp_path):
    a = {"$schema": DRAFT4, "properties": {"b": {"$ref": "b.schema.json"}}}
    b = {"$schema": "http://json-schema.org/draft-07/schema#", "const": 1}
    directory = write_schemas(tmp_path, {"a.schema.json": a, "b.schema.json": b})
    with pytest.raises(schemas.SchemaError) as refused:
        schemas.load(directory)
    assert "is a draft-07 schema" in str(refused.value) and engines.WAY_OUT in str(refused.value)
    registry = schemas.load(directory, options=RUST)  # each document read in its own dialect
    assert isinstance(evaluate("a/x.json", b'{"b": 2}', registry, Limits()), Rejected)
    assert isinstance(evaluate("a/x.json", b'{"b": 1}', registry, Limits()), Accepted)


def test_defaults_never_reach_the_logic_validators(tmp_path):
    """fastjsonschema's use_default would add `{"level": 3}` to the document they get."""
    doc = {"properties": {"level": {"type": "integer", "default": 3}}}
    directory = write_schemas(tmp_path, {"kind.schema.json": doc})
    for engine in engines.ENGINES:
        registry = schemas.load(
            directory,
            validators={"kind": ["test_engines:level_must_be_given"]},
            options=schemas.Options(engine=engine),
        )
        verdict = evaluate("kind/a.json", b"{}", registry, Limits())
        assert isinstance(verdict, Rejected) and "level is not given" in verdict.reason, engine


@pytest.mark.parametrize("engine", engines.ENGINES)
@pytest.mark.parametrize(
    ("schema", "document", "valid"),
    [
        ({"uniqueItems": True}, [True, "True"], True),  # fastjsonschema < 2.22.3: duplicates
        ({"uniqueItems": True}, [1, True], True),
        ({"uniqueItems": True}, [[1], [True]], True),
        ({"uniqueItems": True}, [1, 1.0], False),
        ({"uniqueItems": True}, [{"a": 1, "b": [0]}, {"b": [0.0], "a": 1}], False),
        ({"const": False}, 0, False),  # fastjsonschema < 2.22.0 matched it
        ({"enum": [1]}, True, False),
        ({"const": 1}, 1.0, True),
    ],
)
def test_equality_is_json_equality(tmp_path, engine, schema, document, valid):
    directory = write_schemas(tmp_path, {"kind.schema.json": schema})
    check = schemas.load(directory, options=schemas.Options(engine=engine)).schemas["kind"].check
    try:
        check(document)
    except Violation:
        assert not valid
    else:
        assert valid


def level_must_be_given(path: str, doc: dict[str, object]) -> str | None:
    return None if "level" in doc else "level is not given"


# -- one rejection format -----------------------------------------------------------------


@pytest.mark.parametrize("engine", engines.ENGINES)
def test_a_rejection_cuts_the_offending_value(tmp_path, engine):
    directory = write_schemas(tmp_path, {"kind.schema.json": {"type": "string"}})
    registry = schemas.load(directory, options=schemas.Options(engine=engine))
    data = json.dumps({f"key{i}": "x" * 100 for i in range(10_000)}).encode()  # ~1.1 MB
    verdicts = {evaluate("kind/a.json", data, registry, Limits()) for _ in range(3)}
    (verdict,) = verdicts  # the same line every time
    assert isinstance(verdict, Rejected)
    assert verdict.reason == "schema kind.schema.json: (root): type: must be string, got object"
    const = write_schemas(tmp_path / "c", {"kind.schema.json": {"const": "a"}})
    registry = schemas.load(const, options=schemas.Options(engine=engine))
    verdict = evaluate("kind/a.json", json.dumps(["y" * 10**6]).encode(), registry, Limits())
    assert isinstance(verdict, Rejected) and len(verdict.reason) < 300, verdict.reason
    assert verdict.reason.startswith(
        'schema kind.schema.json: (root): const: must be "a", got ["yyy'
    )


@pytest.mark.parametrize("engine", engines.ENGINES)
def test_the_location_is_a_json_pointer_to_the_exact_key(tmp_path, engine):
    doc = {"additionalProperties": {"type": "array", "items": {"type": "integer"}}}
    directory = write_schemas(tmp_path, {"kind.schema.json": doc})
    registry = schemas.load(directory, options=schemas.Options(engine=engine))
    data = json.dumps({"a.b": [1], "a": {"b": 0}, "x/y~": [1, "2"]}).encode()
    verdict = evaluate("kind/a.json", data, registry, Limits())
    assert isinstance(verdict, Rejected)
    assert verdict.reason.startswith("schema kind.schema.json: /a: type: must be array")
    del_a = json.dumps({"a.b": [1], "x/y~": [1, "2"]}).encode()
    verdict = evaluate("kind/a.json", del_a, registry, Limits())
    assert isinstance(verdict, Rejected)
    assert verdict.reason == "schema kind.schema.json: /x~1y~0/1: type: must be integer, got string"


# -- confinement under jsonschema-rs ------------------------------------------------------


@pytest.mark.parametrize("make", REMOTE_CASES.values(), ids=REMOTE_CASES.keys())
def test_jsonschema_rs_never_connects_for_a_remote_ref(tmp_path, listener, make):  # noqa: F811
    port = listener.getsockname()[1]
    for dialect in ("http://json-schema.org/draft-07/schema#", D2020):
        doc = {"$schema": dialect, **make(port)}
        directory = write_schemas(
            tmp_path / dialect[-12:].replace("/", "_"), {"kind.schema.json": doc}
        )
        with pytest.raises(schemas.SchemaError) as caught:
            schemas.load(directory, options=RUST)
        assert f"127.0.0.1:{port}" in str(caught.value) and "\n" not in str(caught.value)
    assert_no_connection(listener)


def test_jsonschema_rs_never_opens_a_file_outside_the_directory(tmp_path):
    outside = tmp_path / "outside.schema.json"
    outside.write_text('{"type": "object"}')
    directory = tmp_path / "s"
    refs = [
        "../outside.schema.json",
        outside.as_uri(),
        "link.json",
        "%2e%2e/outside.schema.json",
    ]
    write_schemas(directory, {"ok.schema.json": {}})
    (directory / "link.json").symlink_to(outside)
    for ref in refs:
        write_schemas(directory, {"kind.schema.json": {"$schema": D2020, "$ref": ref}})
        with (
            touches(outside) as seen,
            pytest.raises(schemas.SchemaError, match="outside the schemas"),
        ):
            schemas.load(directory, options=RUST)
        assert not seen.opened, ref


def test_the_retriever_itself_serves_only_files_of_the_directory(tmp_path, listener):  # noqa: F811
    """jsonschema-rs asks the retriever for what its registry lacks; the check before compiling
    should leave it nothing to ask, but the retriever refuses on its own too."""
    port = listener.getsockname()[1]
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    directory = write_schemas(tmp_path / "s", {"kind.schema.json": {}, "other.json": {"const": 1}})
    found = schemas._Directory(directory.resolve(), {"kind.schema.json": {}}, RUST)
    assert found.load((directory / "other.json").resolve().as_uri()) == {"const": 1}
    for uri in (f"http://127.0.0.1:{port}/x.json", outside.as_uri(), "urn:x", "ftp://127.0.0.1/x"):
        with touches(outside) as seen, pytest.raises(schemas.SchemaError):
            found.load(uri)
        assert not seen.opened
    assert_no_connection(listener)


def test_a_relative_ref_under_a_canonical_https_id_reaches_the_sibling_file(tmp_path, listener):  # noqa: F811
    port = listener.getsockname()[1]
    a = {
        "$schema": D2020,
        "$id": f"http://127.0.0.1:{port}/s/a.schema.json",
        "$ref": "b.schema.json",
    }
    directory = write_schemas(tmp_path, {"a.schema.json": a, "b.schema.json": {"type": "string"}})
    registry = schemas.load(directory)
    assert registry.schemas["a"].refs == {"b.schema.json"}
    assert isinstance(evaluate("a/x.json", b'"s"', registry, Limits()), Accepted)
    assert isinstance(evaluate("a/x.json", b"1", registry, Limits()), Rejected)
    assert_no_connection(listener)


# -- panics -------------------------------------------------------------------------------


class PanicException(BaseException):
    """pyo3's PanicException derives from BaseException, as this stand-in does."""


def panicking(text: str) -> bool:
    raise PanicException("called `Option::unwrap()` on a `None` value")


def test_a_panic_while_validating_is_a_rejection(tmp_path):
    validator = jsonschema_rs.Draft7Validator({"format": "date"}, formats={"date": panicking})
    check = engines.guarded(validator)
    with pytest.raises(Violation) as caught:
        check("2023-01-01")
    assert str(caught.value) == (
        "(root): engine: jsonschema-rs failed: PanicException: called `Option::unwrap()` on a "
        "`None` value"
    )
    assert check(1) is None  # a format applies to strings only: the rest still validates
    schema = schemas.Schema("kind.schema.json", "kind", check)
    registry = schemas.Registry(tmp_path, {"kind": schema})
    verdict = evaluate("kind/a.json", b'"2023-01-01"', registry, Limits())
    assert isinstance(verdict, Rejected) and verdict.code == "schema"


def test_an_interrupt_is_not_swallowed():
    def interrupted(text: str) -> bool:
        raise KeyboardInterrupt

    validator = jsonschema_rs.Draft7Validator({"format": "date"}, formats={"date": interrupted})
    with pytest.raises(KeyboardInterrupt):
        engines.guarded(validator)("x")


def test_a_real_panic_while_compiling_is_a_refusal():
    """A registry whose resource is filed under a URI that is not its `$id` made jsonschema-rs
    0.61 panic ("A named target lives in its resolver's resource"); found by the suite."""
    base, canonical = "file:///x/kind.schema.json", "https://example.com/s"
    doc = {"$id": base, "allOf": [{"$ref": canonical + "#foo"}]}
    doc["definitions"] = {"A": {"$id": "#foo", "type": "integer"}}
    registry = jsonschema_rs.Registry([(base, doc), (canonical, doc)])
    with pytest.raises(engines.Refused, match="PanicException"):
        engines.compile_rust(
            doc, "draft-07", base_uri=base, registry=registry, retriever=dict, assert_formats=True
        )


# -- the fingerprint --------------------------------------------------------------------------


def test_the_fingerprint_holds_the_engine_and_its_version(monkeypatch):
    fast, rust = (schemas.load(SCHEMAS, options=schemas.Options(engine=e)) for e in engines.ENGINES)
    assert fingerprint(fast, Limits()) != fingerprint(rust, Limits())
    before = fingerprint(rust, Limits())
    monkeypatch.setattr(engines, "version", lambda engine: f"{engine} 99.0")
    assert fingerprint(rust, Limits()) != before
    asserting = schemas.load(SCHEMAS, options=schemas.Options(format_assertion=True))
    assert fingerprint(asserting, Limits()) != fingerprint(fast, Limits())


def test_switching_engines_revalidates_once_then_the_fast_path_applies(valkey, root, tmp_path):
    """The stored fingerprint follows the new engine, so a second run judges nothing again
    (a logic validator that counts its calls tells which files were judged)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    calls = tmp_path / "calls"
    (rules / "counting.py").write_text(
        f"def check(path, doc):\n    open({str(calls)!r}, 'a').write(path + '\\n')\n"
    )
    config = tmp_path / "assetmgr.toml"
    config.write_text('[validators]\nweights = ["counting:check"]\n')
    args = ("hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", valkey.url,
            "--config", config)  # fmt: skip
    env = {"PYTHONPATH": str(rules)}
    client, keys = valkey.client(), Keyspace()

    def judged() -> list[str]:
        found = sorted(calls.read_text().split()) if calls.exists() else []
        calls.unlink(missing_ok=True)
        return found

    def fingerprints() -> dict[str, bytes]:
        return {p: client.hget(keys.manifest(p), "vfp") for p in keys.manifest_paths(client)}

    weights = sorted(str(p.relative_to(root)) for p in (root / "weights").rglob("*.json"))
    assert run_cli(*args, env=env).returncode == 0
    assert judged() == weights
    before = fingerprints()
    switched = run_cli(*args, "--schema-engine", "jsonschema-rs", env=env)
    assert switched.returncode == 0, switched.stderr
    assert judged() == weights  # judged again, by the new engine
    after = fingerprints()
    assert after.keys() == before.keys() and all(after[p] != before[p] for p in after)
    assert run_cli(*args, "--schema-engine", "jsonschema-rs", env=env).returncode == 0
    assert judged() == []  # the fast paths apply again
    assert fingerprints() == after


def test_the_first_error_is_the_same_under_every_hash_seed(tmp_path):
    """A set's order follows the process's hash seed: the reported key must not."""
    doc = {"additionalProperties": {"type": "integer"}}
    write_schemas(tmp_path, {"kind.schema.json": doc})
    keys = [f"k{i}" for i in range(20)]
    (tmp_path / "doc.json").write_text(json.dumps(dict.fromkeys(keys, "s")))
    code = (
        "import sys; from assetmgr.limits import Limits; from assetmgr.pipeline import schemas; "
        "from assetmgr.pipeline.worker import evaluate; "
        "r = schemas.load(sys.argv[1]); "
        "print(evaluate('kind/a.json', open(sys.argv[2], 'rb').read(), r, Limits()).reason)"
    )
    reasons = {
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path), str(tmp_path / "doc.json")],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()
        for seed in range(6)
    }  # fmt: skip
    assert reasons == {"schema kind.schema.json: /k0: type: must be integer, got string"}
