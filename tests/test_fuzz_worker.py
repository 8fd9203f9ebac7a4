"""Property tests of the per-file function: any bytes in, a verdict out, within bounded CPU.

Every input is either accepted — the blob is one zstd frame of exactly the input, the hash is
its SHA-256, and an independent strict reading (stdlib json, orjson as a consumer reads it)
agrees the bytes are valid — or rejected with a code from REASONS and one printable line.
The orjson fast path and the exact parser agree on every input.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import orjson
import pytest
import zstandard
from fuzzing import bounded, examples, json_ish, objects, one_line, pieces, rendered
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from assetmgr.limits import Limits
from assetmgr.messages import REASONS, Accepted, Rejected
from assetmgr.pipeline import schemas
from assetmgr.pipeline.jsonparse import Invalid, parse_exact, parse_strict
from assetmgr.pipeline.worker import evaluate
from conftest import EXAMPLES, SCHEMAS

REGISTRY = schemas.load(SCHEMAS)
LIMITS = Limits()
SHALLOW = Limits(max_depth=4)
# One path per schema the examples use, plus top-level (_default) and odd names.
PATHS = ["settings.json", "weights/cost.json", "cards/core/x.json", "routes/api.json"]
names = st.sampled_from(PATHS) | st.text(min_size=1, max_size=20).map(lambda t: t + ".json")
seeds = sorted(p.read_bytes() for p in EXAMPLES.rglob("*.json") if p.stat().st_size < 8192)


def strictly_valid(data: bytes, limits: Limits) -> Any:
    """An independent reading of the strictness rules; raises when one fails."""
    assert not data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in pairs}) == len(pairs), "duplicate key"
        return dict(pairs)

    def refuse(name: str) -> None:
        raise AssertionError(name)

    document = json.loads(text, object_pairs_hook=unique, parse_constant=refuse)
    orjson.loads(data)  # what assetmgr.client hands a consumer
    return document


def check(path: str, data: bytes, limits: Limits = LIMITS) -> None:
    with bounded():
        verdict = evaluate(path, data, REGISTRY, limits)
    assert isinstance(verdict, Accepted | Rejected), verdict
    assert verdict.path == path
    event("accepted" if isinstance(verdict, Accepted) else verdict.code)
    if isinstance(verdict, Accepted):
        assert zstandard.ZstdDecompressor().decompress(verdict.blob) == data
        assert verdict.hash == hashlib.sha256(data).hexdigest()
        assert verdict.size == len(data)
        schema = REGISTRY.schema_for(path)
        assert schema is not None and verdict.schema == schema.id
        strictly_valid(data, limits)
    else:
        assert verdict.code in REASONS, verdict
        assert one_line(verdict.reason), verdict


@settings(max_examples=examples(4))
@given(names, st.binary(max_size=4096))
@example("settings.json", b"")
@example("settings.json", b"\xef\xbb\xbf{}")
def test_any_bytes_get_a_verdict(path, data):
    check(path, data)


@given(rendered(objects))
def test_every_valid_object_is_accepted_for_the_default_schema(data):
    # No false rejections: any JSON object within the limits is a valid top-level asset.
    with bounded():
        verdict = evaluate("settings.json", data, REGISTRY, LIMITS)
    assert isinstance(verdict, Accepted), (verdict, data)
    check("settings.json", data)


@given(st.sampled_from(PATHS), json_ish())
@example("settings.json", b'{"a": 1e400}')
@example("settings.json", b'{"a": "\\ud800"}')
@example("settings.json", b'{"a": ' + b"9" * 5000 + b"}")
@example("settings.json", b'{"\\u0022": 1, "\\"": 2}')
def test_json_ish_text_gets_a_verdict(path, data):
    check(path, data)
    check(path, data, SHALLOW)


@settings(max_examples=examples(2))
@given(st.sampled_from(seeds), st.integers(0, 1 << 16), pieces)
def test_real_assets_with_one_byte_run_changed_get_a_verdict(seed, at, patch):
    at %= len(seed)
    check("weights/cost.json", seed[:at] + patch + seed[at + len(patch) :])


def outcome(parse: Any, data: bytes, limits: Limits) -> tuple[str, str | None]:
    with bounded():
        try:
            return "ok", json.dumps(parse(data, limits), sort_keys=True)
        except Invalid as e:
            return e.code, None


@given(json_ish())
@example(b'{"big": 18446744073709551616}')
@example(b'{"neg": -9223372036854775809}')
@example(b'{"a": [[[[[1]]]]]}')
def test_fast_path_agrees_with_the_exact_parser(data):
    for limits in (LIMITS, SHALLOW):
        assert outcome(parse_strict, data, limits) == outcome(parse_exact, data, limits)


@pytest.mark.skipif(not os.environ.get("FUZZ_LARGE"), reason="make fuzz only (FUZZ_LARGE=1)")
@given(st.sampled_from(PATHS), json_ish(), st.integers(1, 16))
def test_large_repetitions_get_a_verdict(path, data, times):
    check(path, b"[" + b",".join([data] * times * 1000) + b"]")
