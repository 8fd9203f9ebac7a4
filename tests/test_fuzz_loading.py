"""Property tests of schema and config loading: whatever the files say, the result is a
registry or a Config, or a SchemaError / ConfigError of one printable line — never another
exception, never a hang, and a schema never makes assetmgr read a file outside its directory.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from fsprobe import touches
from fuzzing import bounded, examples, one_line, scalars, values
from hypothesis import example, given, settings
from hypothesis import strategies as st

from assetmgr import config
from assetmgr.config import ConfigError
from assetmgr.limits import Limits
from assetmgr.messages import REASONS, Accepted, Rejected
from assetmgr.pipeline import schemas
from assetmgr.pipeline.schemas import SchemaError
from assetmgr.pipeline.worker import evaluate

# -- schemas --------------------------------------------------------------------------------

KEYWORDS = [
    *("type", "properties", "items", "required", "additionalProperties", "enum", "const"),
    *("minimum", "maximum", "exclusiveMinimum", "multipleOf", "pattern", "format"),
    *("definitions", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$id", "$schema"),
    *("minLength", "maxItems", "uniqueItems", "contains", "propertyNames", "dependencies"),
    *("patternProperties", "default", "$comment"),
]
TYPES = ["object", "array", "string", "integer", "number", "boolean", "null", "nope"]
FILES = ["_default", "weights", "a", "b", "common"]
# References inside the directory, to missing places, in cycles, and out of it every way.
REFS = [
    *("#", "#/definitions/a", "#/definitions/missing", "#/properties", "#/0", "#%2Fx"),
    *("a.schema.json", "b.schema.json#", "common.schema.json#/definitions/a", "weights"),
    *("missing.schema.json", "./a.schema.json", "sub/../a.schema.json", "a.schema.json#/x/$ref"),
    *("../outside.schema.json", "%2e%2e/outside.schema.json", "..%2Foutside.schema.json"),
    *("/etc/passwd", "file:///etc/passwd", "file:OUTSIDE", "//host/share/x.json"),
    *("http://127.0.0.1:9/x.json", "https://example.com/s.json", "data:application/json,{}"),
    *("urn:uuid:0", "ftp://h/x", "jar:file:/x!/", "", " ", "\x00", "a.schema.json\nb"),
]


def refs(outside: str) -> st.SearchStrategy[str]:
    return st.sampled_from([r.replace("OUTSIDE", outside) for r in REFS]) | st.text(max_size=12)


def schema_docs(outside: str) -> st.SearchStrategy[Any]:
    leaf = scalars | st.sampled_from(TYPES) | refs(outside).map(lambda r: {"$ref": r})
    return st.recursive(
        leaf,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.sampled_from(KEYWORDS) | st.text(max_size=4), children, max_size=4)
            | st.builds(
                lambda r, d: {"$ref": r, **d},
                refs(outside),
                st.dictionaries(st.sampled_from(KEYWORDS), children, max_size=2),
            )
        ),
        max_leaves=16,
    )


def write_schemas(base: Path, draw: Any) -> Path:
    directory = base / "schemas"
    directory.mkdir()
    outside = base / "outside.schema.json"
    for name in draw(st.lists(st.sampled_from(FILES), min_size=1, max_size=4, unique=True)):
        doc = draw(schema_docs(outside.as_uri()))
        if draw(st.integers(0, 9)) == 0:
            text = draw(st.binary(max_size=40))  # not JSON at all
        else:
            text = json.dumps(doc, allow_nan=True).encode()
        (directory / f"{name}.schema.json").write_bytes(text)
    return directory


@settings(max_examples=examples(0.4))  # a compile is ~50 ms
@given(st.data())
@example(None)
def test_any_schema_directory_loads_or_is_refused_in_one_line(data):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        outside = base / "outside.schema.json"
        outside.write_text('{"type": "object"}')
        if data is None:  # a cycle of two files and a self-reference
            directory = base / "schemas"
            directory.mkdir()
            (directory / "a.schema.json").write_text('{"$ref": "b.schema.json"}')
            (directory / "b.schema.json").write_text(
                '{"properties": {"x": {"$ref": "#"}}, "allOf": [{"$ref": "a.schema.json"}]}'
            )
        else:
            directory = write_schemas(base, data.draw)
        with touches(outside) as seen, bounded():
            try:
                registry = schemas.load(directory)
            except SchemaError as e:
                assert one_line(str(e)), repr(str(e))
                registry = None
        assert not seen.opened, "a schema made assetmgr open a file outside its directory"
        if registry is not None:
            use(registry)


def use(registry: schemas.Registry) -> None:
    """A schema that loaded validates: every asset still gets a verdict with a known code."""
    for path in ("x.json", "a/x.json", "weights/x.json"):
        for doc in (b"{}", b'{"x": {"x": {}}}', b"[1, 2]", b'"s"'):
            with bounded():
                verdict = evaluate(path, doc, registry, Limits())
            assert isinstance(verdict, Accepted | Rejected)
            if isinstance(verdict, Rejected):
                assert verdict.code in REASONS and one_line(verdict.reason), verdict


# -- config ---------------------------------------------------------------------------------

NAMES = [s.name for s in config.SETTINGS if s.name != "config"]


def toml_value(value: Any) -> str:
    """TOML text for a scalar, array or inline table (TOML strings take JSON's escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("-inf" if value < 0 else "inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return '""'  # None has no TOML form


toml_values = (
    st.integers()
    | st.floats()
    | st.booleans()
    | st.text(max_size=30)
    | st.sampled_from(["1", "0", "-1", "16M", "1e400", "nan", "inf", "true", "auto", "json"])
    | st.sampled_from(["redis://u:p@h:1/0", "rediss://[::1]:6379", "unix:///tmp/s", "x://"])
    | values.filter(lambda v: v is not None)
    | st.lists(st.fixed_dictionaries({"glob": st.text(max_size=5), "schema": st.text(max_size=8)}))
)
setting_names = st.sampled_from(NAMES) | st.sampled_from(NAMES).map(lambda n: n.replace("_", "-"))


@st.composite
def config_files(draw: Any) -> str:
    keys = draw(st.lists(setting_names | st.text(max_size=8), max_size=6, unique=True))
    lines = [f"{json.dumps(k, ensure_ascii=False)} = {toml_value(draw(toml_values))}" for k in keys]
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return draw(st.text(max_size=80))  # not TOML
    if shape == 1:
        return "\n".join(["[assetmgr]", *lines]) + "\n"
    if shape == 2:
        return f"assetmgr = {toml_value(draw(toml_values))}\n"
    return "\n".join(lines) + "\n"


environments = st.dictionaries(
    st.sampled_from(NAMES).map(lambda n: config.ENV_PREFIX + n.upper()),
    st.text(max_size=30).filter(lambda t: "\x00" not in t),
    max_size=3,
)


@settings(max_examples=examples(2))
@given(st.sampled_from(config.ALL), config_files(), environments)
@example("daemon", "assetmgr = 1\n", {})
@example("verify", 'schema_rules = "a"\n', {})
@example("daemon", "lease_ttl = inf\n", {})
@example("daemon", "", {"ASSETMGR_REPLICAS_ACK_TIMEOUT": "1e999"})
def test_any_config_loads_or_is_refused_in_one_line(command, text, environ):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "assetmgr.toml"
        path.write_text(text)
        with bounded():
            try:
                cfg = config.load(command, {"config": str(path)}, environ)
            except ConfigError as e:
                assert one_line(str(e)), repr(str(e))
                return
    for name in NAMES:
        value = cfg.values[name]
        if isinstance(value, float):
            assert math.isfinite(value), (name, value)  # a timeout of inf breaks at runtime
