"""The schema registry: which schema checks a path, and `$ref` confined to the schemas directory."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from assetmgr.limits import Limits
from assetmgr.messages import Accepted, Rejected
from assetmgr.pipeline import engines, schemas
from assetmgr.pipeline.schemas import SchemaError
from assetmgr.pipeline.worker import evaluate
from conftest import EXAMPLES, SCHEMAS, run_cli, stored


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket that records whether anyone connected: the would-be schema server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def assert_no_connection(sock: socket.socket) -> None:
    try:
        conn, peer = sock.accept()
    except BlockingIOError:
        return
    conn.close()
    raise AssertionError(f"a connection was attempted from {peer}")


def write_schemas(directory: Path, docs: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        text = doc if isinstance(doc, str) else json.dumps(doc)
        (directory / name).write_text(text)
    return directory


# Which schema checks a path.


def test_kind_is_the_first_directory_component():
    registry = schemas.load(SCHEMAS)
    assert registry.schema_for("weights/cost.json").name == "weights.schema.json"
    assert registry.schema_for("weights/regions/eu/latency.json").name == "weights.schema.json"
    assert registry.schema_for("cards/decks/promo/ember_dragon.json").name == "cards.schema.json"
    assert registry.schema_for("routes/table.json").name == "routes.schema.json"
    # A file named like a kind is not in that kind: only directories are kinds.
    assert registry.schema_for("weights.json").name == "_default.schema.json"


def test_default_schema_covers_unknown_kinds_and_top_level_files():
    registry = schemas.load(SCHEMAS)
    assert registry.schema_for("settings.json").name == "_default.schema.json"
    assert registry.schema_for("unknown/deep/x.json").name == "_default.schema.json"


def test_without_a_default_unknown_kinds_have_no_schema(tmp_path):
    directory = write_schemas(tmp_path / "s", {"weights.schema.json": {"type": "object"}})
    registry = schemas.load(directory)
    assert registry.schema_for("weights/a.json").name == "weights.schema.json"
    assert registry.schema_for("settings.json") is None
    assert registry.schema_for("cards/a.json") is None


def test_glob_rules_come_first_and_in_order():
    rules = [
        ("weights/regions/*", "_default.schema.json"),
        ("weights/*", "cards.schema.json"),  # never reached for regions: the first rule won
        ("*/legacy/*.json", "_default"),
    ]
    registry = schemas.load(SCHEMAS, rules)
    assert registry.schema_for("weights/regions/eu/latency.json").name == "_default.schema.json"
    assert registry.schema_for("weights/cost.json").name == "cards.schema.json"
    assert registry.schema_for("routes/legacy/old.json").name == "_default.schema.json"
    assert registry.schema_for("routes/api.json").name == "routes.schema.json"
    # The rule decides validation: a weights file checked as a card fails as a card.
    data = (EXAMPLES / "weights" / "cost.json").read_bytes()
    verdict = evaluate("weights/cost.json", data, registry, Limits())
    assert isinstance(verdict, Rejected) and "cards.schema.json" in verdict.reason


def test_rule_naming_a_missing_schema_is_a_configuration_error():
    with pytest.raises(SchemaError, match="nope"):
        schemas.load(SCHEMAS, [("weights/*", "nope.schema.json")])


def test_cross_file_refs_inside_the_directory_resolve(tmp_path):
    """The shipped schemas `$ref` common.schema.json; a copy elsewhere must still work."""
    copy = tmp_path / "elsewhere"
    shutil.copytree(SCHEMAS, copy)
    registry = schemas.load(copy)
    data = json.loads((EXAMPLES / "weights" / "cost.json").read_bytes())
    data["version"] = "not semver"  # defined in common.schema.json
    verdict = evaluate("weights/cost.json", json.dumps(data).encode(), registry, Limits())
    assert isinstance(verdict, Rejected) and "version" in verdict.reason


def test_canonical_https_id_still_resolves_relative_refs_to_sibling_files(tmp_path, listener):
    port = listener.getsockname()[1]
    directory = write_schemas(
        tmp_path / "s",
        {
            "a.schema.json": {
                "$id": f"http://127.0.0.1:{port}/schemas/a.schema.json",
                "type": "object",
                "properties": {"x": {"$ref": "b.schema.json"}},
            },
            "b.schema.json": {"$id": f"http://127.0.0.1:{port}/schemas/b.json", "type": "string"},
        },
    )
    registry = schemas.load(directory)
    assert registry.schemas["a"].id == f"http://127.0.0.1:{port}/schemas/a.schema.json"
    assert isinstance(evaluate("a/1.json", b'{"x": "s"}', registry, Limits()), Accepted)
    wrong = evaluate("a/1.json", b'{"x": 1}', registry, Limits())
    assert isinstance(wrong, Rejected) and "must be string" in wrong.reason
    assert_no_connection(listener)


# `$ref` never leaves the directory; no network connection is ever attempted.

REMOTE_CASES = {
    "top-level remote ref": lambda port: {"$ref": f"http://127.0.0.1:{port}/x.json"},
    "nested remote ref": lambda port: {
        "type": "object",
        "properties": {"a": {"items": {"$ref": f"http://127.0.0.1:{port}/x.json#/d"}}},
    },
    "https remote ref": lambda port: {"$ref": f"https://127.0.0.1:{port}/x.json"},
    "relative ref under a remote nested $id": lambda port: {
        "properties": {"a": {"$id": f"http://127.0.0.1:{port}/dir/", "$ref": "x.json"}}
    },
}


@pytest.mark.parametrize("make", REMOTE_CASES.values(), ids=REMOTE_CASES.keys())
def test_remote_ref_is_a_configuration_error_and_nothing_connects(tmp_path, listener, make):
    port = listener.getsockname()[1]
    directory = write_schemas(tmp_path / "s", {"kind.schema.json": make(port)})
    with pytest.raises(SchemaError) as caught:
        schemas.load(directory)
    message = str(caught.value)
    assert "kind.schema.json" in message and f"127.0.0.1:{port}" in message
    assert "\n" not in message
    assert_no_connection(listener)


def test_ref_to_a_file_outside_the_directory_is_refused_even_if_it_exists(tmp_path):
    write_schemas(tmp_path, {"x.json": {"type": "object"}})
    directory = write_schemas(tmp_path / "s", {"kind.schema.json": {"$ref": "../x.json"}})
    with pytest.raises(SchemaError, match="outside the schemas directory"):
        schemas.load(directory)


def test_ref_through_a_symlink_out_of_the_directory_is_refused(tmp_path):
    write_schemas(tmp_path, {"x.json": {"type": "object"}})
    directory = write_schemas(tmp_path / "s", {"kind.schema.json": {"$ref": "link.json"}})
    (directory / "link.json").symlink_to(tmp_path / "x.json")
    with pytest.raises(SchemaError, match="outside the schemas directory"):
        schemas.load(directory)


def test_absolute_file_ref_is_refused(tmp_path):
    directory = write_schemas(tmp_path / "s", {"kind.schema.json": {"$ref": "file:///etc/passwd"}})
    with pytest.raises(SchemaError, match="outside the schemas directory"):
        schemas.load(directory)


BROKEN = {
    "not JSON": ("{not json", "not JSON"),
    "not an object": ("[]", "not a JSON object"),
    "invalid schema": ({"type": 12}, "kind.schema.json"),
    "dangling ref": ({"$ref": "missing.schema.json"}, "missing.schema.json"),
    # Found by tests/test_fuzz_loading.py: the compiler's own TypeError / AttributeError
    # escaped load, and a cycle that consumes nothing loaded, then rejected every asset.
    "null properties": ({"properties": None}, "kind.schema.json"),
    "null pattern": ({"pattern": None}, "kind.schema.json"),
    "items a number": ({"items": 5}, "kind.schema.json"),
    "self reference": ({"$ref": "#"}, "$ref cycle"),
    "two-file cycle": ({"allOf": [{"$ref": "kind.schema.json"}]}, "$ref cycle"),
    "ref with a NUL": ({"$ref": "a\u0000b.schema.json"}, "kind.schema.json"),
    "ref with a newline": ({"$ref": "x\n.schema.json"}, "No such file"),
}


@pytest.mark.parametrize(("doc", "fragment"), BROKEN.values(), ids=BROKEN.keys())
def test_a_schema_that_does_not_load_is_a_configuration_error(tmp_path, doc, fragment):
    directory = write_schemas(tmp_path / "s", {"kind.schema.json": doc})
    with pytest.raises(SchemaError) as caught:
        schemas.load(directory)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_recursive_schema_that_consumes_the_document_still_loads(tmp_path):
    tree = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}
    directory = write_schemas(tmp_path / "s", {"_default.schema.json": tree})
    registry = schemas.load(directory)
    good = b'{"children": [{"children": []}, {}]}'
    assert isinstance(evaluate("x.json", good, registry, Limits()), Accepted)
    bad = evaluate("x.json", b'{"children": [{"children": 1}]}', registry, Limits())
    assert isinstance(bad, Rejected) and bad.code == "schema", bad


def test_missing_or_empty_schemas_directory_is_a_configuration_error(tmp_path):
    with pytest.raises(SchemaError, match="does not exist"):
        schemas.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SchemaError, match="holds no"):
        schemas.load(tmp_path / "empty")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no_colon", "module:callable"),
        ("no_such_module_xyz:check", "no_such_module_xyz"),
        ("json:no_such_function", "no_such_function"),
        ("json:__doc__", "not callable"),
    ],
)
def test_a_logic_validator_that_cannot_be_loaded_is_a_configuration_error(spec, fragment):
    with pytest.raises(SchemaError, match=fragment):
        schemas.load(SCHEMAS, validators={"weights": [spec]})


# The command line refuses to start with a bad schema set: exit 2, one line.


def test_cli_with_a_remote_ref_exits_2_with_one_line_and_connects_nowhere(
    tmp_path, listener, root, valkey
):
    port = listener.getsockname()[1]
    directory = tmp_path / "s"
    shutil.copytree(SCHEMAS, directory)
    doc = json.loads((directory / "weights.schema.json").read_text())
    doc["properties"]["owner"] = {"$ref": f"http://127.0.0.1:{port}/owner.json"}
    (directory / "weights.schema.json").write_text(json.dumps(doc))
    for args in (
        ("verify",),
        ("hydrate", "--valkey-url", valkey.url),
    ):
        result = run_cli(*args, "--root", root, "--schemas", directory)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("assetmgr: configuration error:")
        assert "weights.schema.json" in lines[0] and f"127.0.0.1:{port}" in lines[0]
        assert result.stdout == ""
    assert_no_connection(listener)
    assert stored(valkey.client()) == {}


@pytest.mark.parametrize(("doc", "fragment"), BROKEN.values(), ids=BROKEN.keys())
def test_cli_with_a_broken_schema_exits_2_with_one_line(tmp_path, root, doc, fragment):
    directory = tmp_path / "s"
    shutil.copytree(SCHEMAS, directory)
    write_schemas(directory, {"kind.schema.json": doc})
    result = run_cli("verify", "--root", root, "--schemas", directory)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("assetmgr: configuration error: ")
    assert fragment in result.stderr


# The compiled validator is fastjsonschema's code with its `$ref` names built as f-strings
# (schemas._compile_validator): it must accept, reject and word its errors exactly as the
# stock compiler does, names of array items and of keys inside loops included.
NAMED_IN_LOOPS = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {
        "id": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,7}$"},
        "n": {"type": "number", "minimum": 0, "maximum": 100},
        "row": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"$ref": "#/definitions/id"}, "n": {"$ref": "#/definitions/n"}},
            "additionalProperties": {"$ref": "#/definitions/n"},
        },
    },
    "type": "object",
    "properties": {
        "rows": {"type": "array", "items": {"$ref": "#/definitions/row"}},
        "by_key": {
            "type": "object",
            "propertyNames": {"$ref": "#/definitions/id"},
            "additionalProperties": {"type": "array", "items": {"$ref": "#/definitions/n"}},
        },
        "a{b}": {"$ref": "#/definitions/n"},
    },
}
KEYS = st.sampled_from(["id", "n", "x", "Bad", "a{b}", "{data_x}", 'q"', "é", ""])
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-5, 200), st.floats(-5, 200), KEYS)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)
DOCUMENTS = st.dictionaries(st.sampled_from(["rows", "by_key", "a{b}", "other"]), VALUES)


def _stock_in_document_order(schema: Any) -> Any:
    """The stock compiler's code, with its key sets iterating in document order as ours do
    (a set's order follows the hash seed, so which bad key stock names first is arbitrary)."""
    generator = fastjsonschema.draft07.CodeGeneratorDraft07(schema)
    code = generator.func_code.replace("_keys = set(", "_keys = OrderedKeys(")
    namespace = {**generator.global_state, "OrderedKeys": engines.OrderedKeys}
    exec(code, namespace)
    return namespace[generator._resolver.get_scope_name()]


STOCK = _stock_in_document_order(NAMED_IN_LOOPS)
OURS = engines._compile_validator(NAMED_IN_LOOPS, {})


def _verdict(check: Any, doc: Any) -> tuple[str, ...]:
    try:
        check(doc)
    except fastjsonschema.JsonSchemaValueException as e:
        return ("invalid", e.message, str(e.name), str(e.rule))
    except Exception as e:  # the stock code's own failure on an odd key must be matched too
        return ("error", type(e).__name__)
    return ("valid",)


@settings(max_examples=examples(1))
@given(DOCUMENTS | VALUES)
def test_the_compiled_validator_judges_and_words_errors_as_the_stock_compiler(doc):
    assert _verdict(OURS, doc) == _verdict(STOCK, doc)


def test_the_compiled_validator_names_the_item_in_a_loop():
    with pytest.raises(fastjsonschema.JsonSchemaValueException) as caught:
        OURS({"rows": [{"id": "a"}, {"id": "b", "extra": -1}]})
    assert caught.value.message == "data.rows[1].extra must be bigger than or equal to 0"
