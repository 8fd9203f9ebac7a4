"""The official JSON-Schema-Test-Suite, vendored in tests/json-schema-test-suite/, run in-process.

Each test group's schema is written as `kind.schema.json` into a directory of its own and loaded
with `schemas.load`, as assetmgr loads a schema directory; its cases are then checked with the
compiled `Schema.check`. A group whose schema needs a document from outside itself (a `$ref`,
`$dynamicRef` or `$schema` to `http://localhost:1234/...` or to a metaschema) is left out:
assetmgr never fetches. `python tests/suite.py` prints the figures per draft and engine.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT)]

from assetmgr.pipeline import dialects, engines, schemas  # noqa: E402
from assetmgr.pipeline.rejections import Violation  # noqa: E402

SUITE = ROOT / "json-schema-test-suite" / "tests"
DRAFTS = {
    "draft4": "draft-04",
    "draft6": "draft-06",
    "draft7": "draft-07",
    "draft2019-09": "2019-09",
    "draft2020-12": "2020-12",
}
BASE = "file:///suite/kind.schema.json"


@dataclass(frozen=True)
class Group:
    draft: str  # the suite's directory name, e.g. "draft2020-12"
    file: str  # e.g. "ref.json", "optional/format/date.json"
    index: int
    description: str
    schema: Any
    tests: list[dict[str, Any]]

    @property
    def id(self) -> str:
        return f"{self.draft}/{self.file}#{self.index}"


def groups(draft: str, pattern: str = "*.json") -> Iterator[Group]:
    """Every test group of one draft's files matching `pattern` (required tests: `*.json`)."""
    directory = SUITE / draft
    for path in sorted(directory.glob(pattern)):
        for index, group in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            rel = path.relative_to(directory).as_posix()
            yield Group(draft, rel, index, group["description"], group["schema"], group["tests"])


def needs_remote(schema: Any) -> bool:
    """Does the schema reach a document outside itself (so a test server or a metaschema)?"""
    own = {BASE}
    refs: list[str] = []
    stack = [(schema, BASE)]
    while stack:
        node, base = stack.pop()
        if isinstance(node, dict):
            for key in ("$id", "id"):
                if isinstance(node.get(key), str) and not node[key].startswith("#"):
                    base = urljoin(base, node[key])
                    own.add(urldefrag(base).url)
            for key in ("$ref", "$dynamicRef", "$recursiveRef"):
                if isinstance(node.get(key), str):
                    refs.append(urljoin(base, node[key]))
            meta = node.get("$schema")
            if isinstance(meta, str) and dialects.named_by(meta) is None:
                return True
            stack.extend((v, base) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, base) for v in node)
    return any(urldefrag(r).url not in own for r in refs)


@dataclass
class Outcome:
    refused: str | None  # the load's one-line reason
    wrong: list[str]  # descriptions of the cases whose verdict differs from the suite's


def run(group: Group, engine: str, **options: Any) -> Outcome:
    """Load the group's schema as a schema directory of its own and judge every case."""
    dialect = DRAFTS[group.draft]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kind.schema.json").write_text(json.dumps(group.schema), encoding="utf-8")
        opts = schemas.Options(default_dialect=dialect, engine=engine, **options)
        try:
            registry = schemas.load(tmp, options=opts)
        except schemas.SchemaError as e:
            return Outcome(str(e), [])
    check = registry.schemas["kind"].check
    wrong = [t["description"] for t in group.tests if verdict(check, t["data"]) != t["valid"]]
    return Outcome(None, wrong)


def verdict(check: Any, document: Any) -> bool:
    try:
        check(document)
    except Violation:
        return False
    return True


def engines_for(draft: str) -> tuple[str, ...]:
    """2019-09 and 2020-12 run only on jsonschema-rs; the older drafts on both engines."""
    return (engines.RUST,) if DRAFTS[draft] in dialects.MODERN else engines.ENGINES


def tally(draft: str, engine: str) -> dict[str, int]:
    """cases, agree, disagree and refused (cases of groups refused at load), left out."""
    counts = dict.fromkeys(("cases", "agree", "disagree", "refused", "left_out"), 0)
    for group in groups(draft):
        if needs_remote(group.schema):
            counts["left_out"] += len(group.tests)
            continue
        outcome = run(group, engine)
        counts["cases"] += len(group.tests)
        if outcome.refused:
            counts["refused"] += len(group.tests)
        else:
            counts["disagree"] += len(outcome.wrong)
            counts["agree"] += len(group.tests) - len(outcome.wrong)
    return counts


if __name__ == "__main__":
    for name in DRAFTS:
        for engine in engines_for(name):
            print(name, engine, tally(name, engine))
