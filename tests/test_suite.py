"""The official JSON-Schema-Test-Suite (tests/json-schema-test-suite/): every required case of
draft-04 to 2020-12 gets the suite's verdict, with both engines where both run the draft, and
no group is refused at load. Groups that need a remote document are left out, and counted."""

from __future__ import annotations

import pytest
import suite

CASES = [
    pytest.param(group, engine, id=f"{group.id}-{engine}")
    for draft in suite.DRAFTS
    for group in suite.groups(draft)
    if not suite.needs_remote(group.schema)
    for engine in suite.engines_for(draft)
]

# Required cases per draft in the vendored suite, and those left out (a remote $ref/$schema).
EXPECTED = {
    "draft4": (597, 21),
    "draft6": (804, 35),
    "draft7": (892, 35),
    "draft2019-09": (1209, 50),
    "draft2020-12": (1236, 63),
}


@pytest.mark.parametrize(("group", "engine"), CASES)
def test_every_case_gets_the_suites_verdict(group, engine):
    outcome = suite.run(group, engine)
    assert outcome.refused is None, outcome.refused
    assert outcome.wrong == [], f"{group.description}: {outcome.wrong}"


@pytest.mark.parametrize("draft", EXPECTED)
def test_only_the_groups_that_need_remote_documents_are_left_out(draft):
    kept = left = 0
    for group in suite.groups(draft):
        if suite.needs_remote(group.schema):
            left += len(group.tests)
        else:
            kept += len(group.tests)
    assert (kept, left) == EXPECTED[draft]
