"""The orjson fast path of parse_strict agrees with the exact stdlib path on every input."""

import json
import random

import pytest

from assetmgr.limits import Limits
from assetmgr.pipeline.jsonparse import _UNPROVEN, Invalid, _parse_fast, parse_exact, parse_strict

PIECES = [
    *('"a"', '"b"', '"k:v"', '":"', '"\\""', '"\\\\"', '"\\u0022"', '"\\u0022:"', '""'),
    *('"[{"', '"]"', '"}]"', '"1234567890123456789"'),  # brackets and long digits in strings
    *("1", "-2.5e3", "true", "null", "[]", "{}", "12345678901234567890", "-1234567890123456789"),
]


def _random_doc(rng: random.Random, depth: int = 0) -> str:
    """Random JSON-ish text: repeated keys, odd spacing, colons and escapes inside strings."""
    if depth > 4 or rng.random() < 0.3:
        return rng.choice(PIECES)
    space = rng.choice(["", " ", "\n  "])
    if rng.random() < 0.5:
        items = [_random_doc(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return "[" + f",{space}".join(items) + "]"
    keys = [
        rng.choice(['"a"', '"b"', '"c:d"', '"e\\"f"', '"\\u0022"', '"g"', '"["', '""'])
        for _ in range(rng.randint(0, 4))
    ]
    items = [f"{k}{rng.choice(['', ' '])}:{space}{_random_doc(rng, depth + 1)}" for k in keys]
    return "{" + ",".join(items) + "}"


def _outcome(parse, data: bytes, limits: Limits):
    try:
        return ("ok", json.dumps(parse(data, limits), sort_keys=True))
    except Invalid as e:
        return (e.code, None)


@pytest.mark.parametrize("seed", range(5))
def test_fast_and_exact_paths_agree(seed):
    rng = random.Random(seed)
    limits = Limits(max_depth=4)
    for _ in range(2000):
        data = _random_doc(rng).encode()
        assert _outcome(parse_strict, data, limits) == _outcome(parse_exact, data, limits), data


@pytest.mark.parametrize(
    "text, proven",
    [
        ('{"a": [1, {"b": "x"}], "c": ""}', True),
        ('{"a": 1, "b": {"a": 2}}', True),  # the same key in two objects
        ('{"a": 1, "a": 2}', False),
        ('{"a": {"x": "1", "y": "2"}, "a": 3}', False),  # the dropped value held strings too
        ('[[[["]]]]]]"]]]]', True),  # brackets in a string are not nesting
        ('["[[[[", [[[1]]]]', True),
        ("[[[[[1]]]]]", False),  # depth 5: the exact path names it
        ('{"n": 12345678901234567890}', False),  # orjson would read a float
        ('{"n": "12345678901234567890"}', True),
    ],
)
def test_fast_path_proves_what_it_can(text, proven):
    """The proofs settle ordinary documents without the slow parser, and only those."""
    assert (_parse_fast(text.encode(), Limits(max_depth=4)) is not _UNPROVEN) == proven
