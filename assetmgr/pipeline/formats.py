"""`format` checkers: one implementation of each format, the same verdicts in both engines.

jsonschema-rs's own checkers agree with every case of the official test suite's format tests
(optional/format, all drafts: tests/test_formats.py); fastjsonschema's are loose regexes (its
`date` accepts 2023-02-30, its `regex` is Python's syntax, not ECMA-262's). So fastjsonschema is
handed jsonschema-rs's checkers, one call per string it checks, and jsonschema-rs keeps its own.
A format a dialect's validator does not define (`uuid`, `duration` before 2019-09) is checked as
2020-12 defines it, so every format of the current specification is asserted in every dialect.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jsonschema_rs

Checker = Callable[[str], bool]

NAMES = (
    *("date", "date-time", "time", "duration", "email", "idn-email", "hostname", "idn-hostname"),
    *("ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uri-template", "uuid"),
    *("json-pointer", "relative-json-pointer", "regex"),
)
VALIDATORS: dict[str, type[jsonschema_rs.Validator]] = {
    "draft-04": jsonschema_rs.Draft4Validator,
    "draft-06": jsonschema_rs.Draft6Validator,
    "draft-07": jsonschema_rs.Draft7Validator,
    "2019-09": jsonschema_rs.Draft201909Validator,
    "2020-12": jsonschema_rs.Draft202012Validator,
}


@functools.cache
def known(dialect: str) -> frozenset[str]:
    """The formats jsonschema-rs's validator of `dialect` checks by itself."""
    found = set()
    for name in NAMES:
        try:
            VALIDATORS[dialect](
                {"format": name}, validate_formats=True, ignore_unknown_formats=False
            )
        except jsonschema_rs.ValidationError:
            continue
        found.add(name)
    return frozenset(found)


@functools.cache
def checkers(dialect: str) -> dict[str, Checker]:
    """Every format's checker as `dialect` defines it (as 2020-12 does where it is silent)."""
    return {
        name: _checker(dialect if name in known(dialect) else "2020-12", name) for name in NAMES
    }


def missing(dialect: str) -> dict[str, Checker]:
    """The checkers jsonschema-rs must be given for `dialect`: the formats it lacks there."""
    table = checkers(dialect)
    return {name: table[name] for name in NAMES if name not in known(dialect)}


def _checker(dialect: str, name: str) -> Checker:
    validator = VALIDATORS[dialect]({"format": name}, validate_formats=True)
    return validator.is_valid
