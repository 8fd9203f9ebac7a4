"""Hypothesis profiles and strategies shared by the property tests (tests/test_fuzz_*.py).

`HYPOTHESIS_PROFILE=ci` (the default, part of `make test`) keeps every property test to a few
seconds; `make fuzz` sets `HYPOTHESIS_PROFILE=fuzz` for a long run. Each example is bounded in
CPU time (`bounded`): a wall-clock deadline would flake on a busy 2-core host, CPU time does not.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "250")),
    deadline=None,  # CPU time is bounded by `bounded` instead
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples every run: `make test` does not flake
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CPU_SECONDS = float(os.environ.get("FUZZ_CPU_SECONDS", "5"))


def examples(share: float) -> int:
    """A share of the profile's examples, for a test much slower or faster per example."""
    return max(10, int((settings.default.max_examples or 100) * share))


class Hang(Exception):
    """One example used more CPU time than any input may."""


@contextmanager
def bounded(seconds: float = CPU_SECONDS) -> Iterator[None]:
    """Fail (with a shrinkable exception) when the block uses more than `seconds` of CPU.
    SIGPROF, not SIGALRM: pytest-timeout owns the real-time alarm."""

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"over {seconds}s of CPU for one input")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def one_line(text: str) -> bool:
    """A reason fit for a log line, a metric-free report, a terminal: one printable line."""
    return bool(text) and text.isprintable()


# -- JSON-ish bytes -------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=24,
)


objects = st.dictionaries(st.text(max_size=6), values, max_size=5)


@st.composite
def rendered(draw: Callable[..., Any], of: st.SearchStrategy[Any] = objects | values) -> bytes:
    """A valid JSON document, formatted one of several ways."""
    value = draw(of)
    style = draw(st.sampled_from(["compact", "spaced", "indented", "ascii"]))
    if style == "compact":
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    elif style == "spaced":
        text = json.dumps(value, ensure_ascii=False)
    elif style == "indented":
        text = json.dumps(value, indent=draw(st.integers(0, 4)), ensure_ascii=False)
    else:
        text = json.dumps(value)
    return text.encode("utf-8", "surrogatepass")


def _truncate(data: bytes, at: int, extra: bytes) -> bytes:
    return data[: at % (len(data) + 1)]


def _splice(data: bytes, at: int, extra: bytes) -> bytes:
    at %= len(data) + 1
    return data[:at] + extra + data[at:]


def _duplicate_key(data: bytes, at: int, extra: bytes) -> bytes:
    brace = data.find(b"{", at % (len(data) + 1))
    if brace < 0:
        return b'{"k": 1, "k": 2, "v": ' + data + b"}"
    return data[: brace + 1] + b'"dup": 1, "dup": 2, ' + data[brace + 1 :]


def _as_value(data: bytes, at: int, extra: bytes) -> bytes:
    return b'{"x": ' + extra + b', "v": ' + data + b"}"


def _wrap_deep(data: bytes, at: int, extra: bytes) -> bytes:
    depth = 1 + at % 3000
    return b'{"d": ' + b"[" * depth + data + b"]" * depth + b"}"


# Byte strings a lenient or a confused parser gets wrong.
NASTY = [
    b'"\\u0022"',
    b'"\\\\"',
    b'\\"',
    b'"a\\"b"',
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'"\\ud83d\\ude00"',
    b"NaN",
    b"-Infinity",
    b"Infinity",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1" + b"0" * 400,
    b"9" * 5000,
    b"0." + b"1" * 40,
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\x00",
    b'":"',
    b"::",
    b",",
    b"]",
    b"}",
    b"[",
    b"{",
    b"//",
    b"\t\r\n ",
]
MUTATIONS = [_truncate, _splice, _duplicate_key, _as_value, _wrap_deep]
# Mostly the nasty tokens; now and then random bytes (mostly invalid UTF-8).
pieces = st.integers(0, 3).flatmap(
    lambda n: st.binary(min_size=1, max_size=4) if n == 0 else st.sampled_from(NASTY)
)


@st.composite
def json_ish(draw: Callable[..., Any]) -> bytes:
    """Valid JSON, then up to three mutations: a cut, a spliced nasty token or random bytes,
    a duplicated key, deep nesting."""
    data = draw(rendered())
    for _ in range(draw(st.integers(0, 3))):
        mutate = draw(st.sampled_from(MUTATIONS))
        data = mutate(data, draw(st.integers(0, 1 << 16)), draw(pieces))
    if draw(st.integers(0, 7)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data
