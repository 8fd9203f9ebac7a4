"""The per-file work as a pure function: bytes in, a verdict with a one-line reason out."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zstandard
from fsprobe import touches

from assetmgr.limits import Limits
from assetmgr.messages import Accepted, Missing, Rejected
from assetmgr.pipeline import schemas
from assetmgr.pipeline.worker import evaluate, inspect, parse_strict
from assetmgr.printable import shown
from conftest import EXAMPLES, REPO, SCHEMAS, disk_assets, sha256

LIMITS = Limits()
# Root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH obeys file modes like anyone else.
DROP_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]
COST = (EXAMPLES / "weights" / "cost.json").read_bytes()


@pytest.fixture(scope="module")
def registry() -> schemas.Registry:
    return schemas.load(SCHEMAS)


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    """A document `depth` containers deep, wrapped in an object for the _default schema."""
    return ('{"a":' + open_ * (depth - 1) + close * (depth - 1) + "}").encode()


def deep_objects(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode()


def assert_rejected(verdict: object, path: str, code: str, *fragments: str) -> Rejected:
    assert isinstance(verdict, Rejected), verdict
    assert verdict.path == path
    assert verdict.code == code, verdict
    assert verdict.reason and "\n" not in verdict.reason and "\r" not in verdict.reason
    for fragment in fragments:
        assert fragment in verdict.reason, verdict.reason
    return verdict


BAD = [
    ("empty", b"", "empty", ["empty"]),
    ("whitespace only", b"  \n", "syntax", ["invalid JSON"]),
    ("truncated", COST[: len(COST) // 2], "syntax", ["invalid JSON", "line"]),
    ("not utf-8", b'{"a": "caf\xe9"}', "encoding", ["not UTF-8", "offset 10"]),
    ("utf-8 BOM", b"\xef\xbb\xbf" + COST, "encoding", ["byte order mark"]),
    ("duplicate key", b'{"a": 1, "b": 2, "a": 3}', "duplicate_key", ["'a'"]),
    ("nested duplicate key", b'{"a": {"x": [{"k": 1, "k": 1}]}}', "duplicate_key", ["'k'"]),
    ("NaN", b'{"a": NaN}', "non_finite", ["NaN"]),
    ("Infinity", b'{"a": [1, Infinity]}', "non_finite", ["Infinity"]),
    ("-Infinity", b'{"a": -Infinity}', "non_finite", ["-Infinity"]),
    ("10,000 deep arrays", nested(10_000), "depth", ["nesting deeper than 64"]),
    ("10,000 deep objects", deep_objects(10_000), "depth", ["nesting deeper than 64"]),
    ("one over max depth", nested(65), "depth", ["nesting deeper than 64"]),
    ("not an object", b"[1, 2]", "schema", ["_default.schema.json", "must be object"]),
    # Valid JSON grammar that a double cannot hold: orjson (the shipped client) and JavaScript
    # read infinity or fail, so such an asset would break its consumers.
    ("1e400", b'{"a": 1e400}', "non_finite", ["1e400", "out of range"]),
    ("-1e400 in a list", b'{"a": [1, -1e400]}', "non_finite", ["-1e400"]),
    ("400-digit integer", b'{"a": 1' + b"0" * 399 + b"}", "non_finite", ["400 digits"]),
    ("10^100000", b'{"a": 1' + b"0" * 100_000 + b"}", "non_finite", ["100001 digits"]),
    ("long float", b'{"a": 1' + b"0" * 400 + b".5}", "non_finite", ["(403 characters)"]),
    ("lone surrogate", b'{"a": "x\\ud800y"}', "encoding", ["surrogate"]),
    ("lone surrogate key", b'{"\\udfff": 1}', "encoding", ["surrogate"]),
]


@pytest.mark.parametrize(
    ("data", "code", "fragments"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_bytes_are_rejected_with_code_and_one_line_reason(registry, data, code, fragments):
    verdict = evaluate("settings.json", data, registry, LIMITS)
    assert_rejected(verdict, "settings.json", code, *fragments)


def test_nesting_past_the_interpreter_recursion_limit_is_a_rejection_not_a_crash(registry):
    # With a depth limit far above Python's recursion limit, the parser itself gives up
    # (RecursionError); that must still come back as a rejection.
    generous = Limits(max_depth=1_000_000)
    for data in (nested(10_000), deep_objects(10_000), nested(200_000)):
        verdict = evaluate("settings.json", data, registry, generous)
        assert_rejected(verdict, "settings.json", "depth", "nesting deeper than")


def test_numbers_at_the_edge_of_a_double_and_of_64_bits_are_accepted_exactly(registry):
    # The largest finite double, a surrogate pair and integers orjson reads as floats: all
    # valid, and the document is the exact one (an integer stays an integer).
    big = 2**64
    data = (
        f'{{"max": 1.7976931348623157e308, "big": {big}, "neg": {-(2**63) - 1}, '
        f'"int309": {2**1023}, "pair": "\\ud83d\\ude00"}}'
    ).encode()
    verdict = evaluate("settings.json", data, registry, LIMITS)
    assert isinstance(verdict, Accepted), verdict
    document = parse_strict(data, LIMITS)
    assert document["big"] == big and isinstance(document["big"], int)
    assert document["int309"] == 2**1023 and document["pair"] == "\U0001f600"


def test_nesting_reason_never_claims_more_than_the_parser_can_check(registry):
    limits = Limits(max_depth=1_000_000, max_values=10_000_000)
    verdict = evaluate("settings.json", nested(1_000_000), registry, limits)
    reason = assert_rejected(verdict, "settings.json", "depth").reason
    assert reason == f"nesting deeper than {sys.getrecursionlimit()}"


def test_depth_limit_is_exact(registry):
    limits = Limits(max_depth=5)
    assert isinstance(evaluate("settings.json", nested(5), registry, limits), Accepted)
    assert_rejected(
        evaluate("settings.json", nested(6), registry, limits), "settings.json", "depth"
    )
    # Brackets inside strings are text, not nesting.
    text = b'{"a": "' + b"[[[[[[[[[[{{{{{{{{" + b'"}'
    assert isinstance(evaluate("settings.json", text, registry, limits), Accepted)


def test_value_count_limit_bounds_the_parse_before_it_starts(registry):
    limits = Limits(max_values=1000)

    def values(n: int) -> bytes:  # `{`, `:`, `[` and n - 3 commas
        return b'{"a": [' + b",".join([b"0"] * (n - 2)) + b"]}"

    assert isinstance(evaluate("x.json", values(1000), registry, limits), Accepted)
    for data in (values(1001), b'{"a": "' + b"," * 2000 + b'"}'):
        verdict = evaluate("settings.json", data, registry, limits)
        assert_rejected(verdict, "settings.json", "too_large", "more than 1000 JSON values")


def test_size_limit_is_exact(registry):
    data = b'{"a": "' + b"x" * 93 + b'"}'
    assert len(data) == 102
    assert isinstance(evaluate("settings.json", data, registry, Limits(max_size=102)), Accepted)
    verdict = evaluate("settings.json", data, registry, Limits(max_size=101))
    assert_rejected(verdict, "settings.json", "too_large", "102", "101")


def test_schema_violation_names_the_schema_and_the_field(registry):
    doc = json.loads(COST)
    doc["weights"]["pool-general"] = -1
    verdict = evaluate("weights/cost.json", json.dumps(doc).encode(), registry, LIMITS)
    assert_rejected(verdict, "weights/cost.json", "schema", "weights.schema.json", "pool-general")


def test_kind_schema_is_applied_not_the_default(registry):
    # Valid for _default (any object) but not a card: the kind decides.
    verdict = evaluate("cards/core/x.json", b'{"anything": 1}', registry, LIMITS)
    assert_rejected(verdict, "cards/core/x.json", "schema", "cards.schema.json")


def test_no_schema_for_path_without_a_default(tmp_path):
    only_weights = tmp_path / "schemas"
    only_weights.mkdir()
    for name in ("weights.schema.json", "common.schema.json"):
        shutil.copy(SCHEMAS / name, only_weights / name)
    registry = schemas.load(only_weights)
    assert isinstance(evaluate("weights/cost.json", COST, registry, LIMITS), Accepted)
    for path in ("cards/x.json", "settings.json"):
        assert_rejected(evaluate(path, b"{}", registry, LIMITS), path, "no_schema", "no schema")


# Logic validators are named `module:callable` in the config; these live in this module.
def no_free_gpu(path: str, document: dict) -> str | None:
    if document.get("weights", {}).get("pool-gpu-h100", 1) == 0:
        return "pool-gpu-h100 must not be free\n(the GPU budget would be gone)"
    return None


def broken_validator(path: str, document: dict) -> str | None:
    return document["no such field"]


def test_logic_validator_reason_becomes_a_one_line_rejection(registry):
    logic = schemas.load(SCHEMAS, validators={"weights": ["test_worker:no_free_gpu"]})
    doc = json.loads(COST)
    doc["weights"]["pool-gpu-h100"] = 0
    data = json.dumps(doc).encode()
    verdict = evaluate("weights/cost.json", data, logic, LIMITS)
    assert_rejected(verdict, "weights/cost.json", "logic", "no_free_gpu", "must not be free")
    assert isinstance(evaluate("weights/cost.json", COST, logic, LIMITS), Accepted)
    # Only its kind is checked by it; without the validator the same bytes pass.
    assert isinstance(evaluate("weights/cost.json", data, registry, LIMITS), Accepted)
    other_kind = schemas.load(SCHEMAS, validators={"cards": ["test_worker:no_free_gpu"]})
    assert isinstance(evaluate("weights/cost.json", data, other_kind, LIMITS), Accepted)


def test_logic_validator_that_raises_is_a_rejection_not_a_crash():
    logic = schemas.load(SCHEMAS, validators={"weights": ["test_worker:broken_validator"]})
    verdict = evaluate("weights/cost.json", COST, logic, LIMITS)
    assert_rejected(verdict, "weights/cost.json", "logic", "KeyError", "no such field")


@pytest.mark.parametrize("path", sorted(disk_assets(EXAMPLES)))
def test_every_example_is_accepted_with_exact_blob_and_hash(registry, path):
    data = (EXAMPLES / path).read_bytes()
    verdict = evaluate(path, data, registry, LIMITS)
    assert isinstance(verdict, Accepted), verdict
    assert verdict.path == path
    assert zstandard.ZstdDecompressor().decompress(verdict.blob) == data
    assert verdict.hash == sha256(data)
    assert verdict.size == len(data)
    kind = path.split("/")[0] if "/" in path else "_default"
    assert verdict.schema == f"{kind}.schema.json"


def test_parse_strict_returns_the_document_and_raises_with_a_code():
    assert parse_strict(COST, LIMITS) == json.loads(COST)
    with pytest.raises(Exception, match="duplicate object key") as caught:
        parse_strict(b'{"a": 1, "a": 1}', LIMITS)
    assert getattr(caught.value, "code", None) == "duplicate_key"


def test_file_name_that_is_not_utf8_is_rejected_printably(registry):
    path = os.fsdecode(b"weights/caf\xe9.json")
    verdict = evaluate(path, COST, registry, LIMITS)
    # The real path, so the reader and the writer can match it; printed escaped.
    assert_rejected(verdict, path, "encoding", "file name is not valid UTF-8")
    assert shown(verdict.path) == "weights/caf\\xe9.json"
    shown(verdict.path).encode("utf-8")  # printable, and fit for a JSON report


@pytest.mark.parametrize(
    ("path", "printed"),
    [
        ("new\nline.json", "new\\nline.json"),
        ("tab\there.json", "tab\\there.json"),
        ("esc\x1b[31m.json", "esc\\x1b[31m.json"),
        ("nel\x85.json", "nel\\x85.json"),
    ],
)
def test_file_name_with_a_control_character_is_rejected_printably(registry, path, printed):
    verdict = evaluate(path, b"{}", registry, LIMITS)
    assert_rejected(verdict, path, "encoding", "file name has a control character")
    assert shown(path) == printed


def test_printable_names_are_shown_as_they_are():
    for path in ("weights/cost.json", "über/ß.json", "a b/c.json", "x" * 255 + ".json"):
        assert shown(path) == path
    assert shown("line\u2028sep.json") == "line\\u2028sep.json"  # a line break to some viewers


# inspect: the one careful read from disk.


def test_inspect_reads_the_file_and_records_its_mtime(registry, tmp_path):
    (tmp_path / "weights").mkdir()
    target = tmp_path / "weights" / "cost.json"
    target.write_bytes(COST)
    verdict = inspect(str(tmp_path), "weights/cost.json", registry, LIMITS)
    assert isinstance(verdict, Accepted), verdict
    assert verdict.hash == sha256(COST)
    assert verdict.mtime_ns == target.stat().st_mtime_ns


@pytest.mark.timeout(20)
def test_inspect_never_opens_a_fifo(registry, tmp_path):
    os.mkfifo(tmp_path / "pipe.json")
    verdict = inspect(str(tmp_path), "pipe.json", registry, LIMITS)
    assert_rejected(verdict, "pipe.json", "not_regular", "FIFO")


def test_inspect_rejects_a_directory_named_like_an_asset(registry, tmp_path):
    (tmp_path / "dir.json").mkdir()
    verdict = inspect(str(tmp_path), "dir.json", registry, LIMITS)
    assert_rejected(verdict, "dir.json", "not_regular", "directory")


def test_inspect_follows_symlinks_only_inside_the_root(registry, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "real.json").write_bytes(b'{"inside": true}')
    (tmp_path / "outside.json").write_bytes(b'{"outside": true}')
    (root / "alias.json").symlink_to("real.json")
    (root / "escape.json").symlink_to(tmp_path / "outside.json")
    (root / "sneaky.json").symlink_to("../outside.json")
    inside = inspect(str(root), "alias.json", registry, LIMITS)
    assert isinstance(inside, Accepted) and inside.hash == sha256(b'{"inside": true}')
    for name in ("escape.json", "sneaky.json"):
        verdict = inspect(str(root), name, registry, LIMITS)
        assert_rejected(verdict, name, "symlink_outside", "outside the root")


def test_inspect_reports_a_vanished_file_as_missing_not_rejected(registry, tmp_path):
    assert inspect(str(tmp_path), "gone.json", registry, LIMITS) == Missing("gone.json")
    assert inspect(str(tmp_path), "no/dir/gone.json", registry, LIMITS) == Missing(
        "no/dir/gone.json"
    )


def test_inspect_refuses_a_large_file_without_reading_it_all(registry, tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(64 * 1024**2)  # sparse: cheap to make, would be costly to read
    verdict = inspect(str(tmp_path), "big.json", registry, Limits(max_size=1024))
    assert_rejected(verdict, "big.json", "too_large", "1024-byte limit")


def test_inspect_reports_an_unreadable_file(registry, tmp_path):
    locked = tmp_path / "locked.json"
    locked.write_bytes(b"{}")
    locked.chmod(0)
    if os.geteuid() != 0:
        verdict = inspect(str(tmp_path), "locked.json", registry, LIMITS)
        assert_rejected(verdict, "locked.json", "unreadable", "Permission denied")
        return
    # Root reads mode-000 files: ask in a process without the capabilities that allow it.
    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is not installed")
    code = (
        "import sys; from assetmgr.limits import Limits; "
        "from assetmgr.pipeline import schemas, worker; "
        "registry = schemas.load(sys.argv[2]); "
        "r = worker.inspect(sys.argv[1], 'locked.json', registry, Limits()); "
        "print(type(r).__name__, r.code, r.reason, sep='|')"
    )
    out = subprocess.run(
        [*DROP_DAC, sys.executable, "-c", code, str(tmp_path), str(SCHEMAS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Rejected|unreadable|cannot read: Permission denied"


def test_inspect_rejects_a_non_utf8_file_name_before_reading(registry, tmp_path):
    raw = os.fsdecode(b"caf\xe9.json")
    Path(tmp_path, raw).write_bytes(b"{}")
    verdict = inspect(str(tmp_path), raw, registry, LIMITS)
    assert_rejected(verdict, raw, "encoding", "file name")


# inspect against a hostile tree: nothing outside the root is read, nothing torn is returned.


def test_a_directory_on_the_path_that_leads_out_is_caught_before_any_read(registry, tmp_path):
    # The walk saw a real `settings/` directory; by the time the worker reads, it is a
    # symlink out (a tree writer racing the daemon). The lstat of the file itself looks fine.
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "settings").mkdir(parents=True)
    outside.mkdir()
    secret = outside / "app.json"
    secret.write_bytes(b'{"token": "s3cret"}')
    (root / "settings").rmdir()
    (root / "settings").symlink_to(outside)
    with touches(secret) as seen:
        verdict = inspect(str(root), "settings/app.json", registry, LIMITS)
    assert_rejected(verdict, "settings/app.json", "symlink_outside", "outside the root")
    assert not seen.read


def test_a_symlink_out_is_rejected_without_being_opened(registry, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret.json"
    secret.write_bytes(b'{"token": "s3cret"}')
    (root / "secret.json").symlink_to(secret)
    (root / "shadow.json").symlink_to("/etc/shadow")
    with touches(secret) as seen:
        for name in ("secret.json", "shadow.json"):
            verdict = inspect(str(root), name, registry, LIMITS)
            assert_rejected(verdict, name, "symlink_outside", "symlink points outside the root")
    assert not seen.opened and not seen.read


def test_a_root_that_is_itself_a_symlink_is_the_root(registry, tmp_path):
    (tmp_path / "releases" / "7").mkdir(parents=True)
    (tmp_path / "releases" / "7" / "app.json").write_bytes(b"{}")
    (tmp_path / "current").symlink_to("releases/7")
    verdict = inspect(str(tmp_path / "current"), "app.json", registry, LIMITS)
    assert isinstance(verdict, Accepted), verdict


def test_symlink_loops_are_rejected_as_loops(registry, tmp_path):
    (tmp_path / "self.json").symlink_to("self.json")
    (tmp_path / "a.json").symlink_to("b.json")
    (tmp_path / "b.json").symlink_to("a.json")
    for name in ("self.json", "a.json"):
        verdict = inspect(str(tmp_path), name, registry, LIMITS)
        assert_rejected(verdict, name, "unreadable", "symlink loop")


def test_hard_links_follow_the_kernels_protected_hardlinks(registry, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_bytes(b'{"linked": true}')
    root = tmp_path / "root"
    root.mkdir()
    os.link(outside, root / "linked.json")
    allowed = inspect(str(root), "linked.json", registry, Limits(hard_links=True))
    assert isinstance(allowed, Accepted), allowed
    refused = inspect(str(root), "linked.json", registry, Limits(hard_links=False))
    assert_rejected(refused, "linked.json", "hard_link", "2 hard links", "protected_hardlinks")
    # The default is what the kernel says.
    protected = Path("/proc/sys/fs/protected_hardlinks").read_text().strip() != "0"
    assert Limits().hard_links is protected


@pytest.mark.timeout(60)
def test_a_file_that_grows_and_shrinks_while_read_is_never_returned_torn(registry, tmp_path):
    # A log-style writer: truncate, append the new version in pieces, cut it back (shrink)
    # halfway, append the rest. Every state of the file is a prefix of one version, so a read
    # gets a whole version, or is caught changing, or sees an incomplete file (invalid JSON);
    # a torn read (pieces of two states) would be valid JSON matching neither.
    versions = [b'{"v": "' + bytes([c]) * n + b'"}' for c, n in ((97, 3 << 20), (98, 5 << 20))]
    hashes = {sha256(v) for v in versions}
    target = tmp_path / "big.json"
    target.write_bytes(versions[0])
    stop = threading.Event()

    def rewrite() -> None:
        with open(target, "r+b", buffering=0) as f:
            for i in itertools.count():
                if stop.is_set():
                    return
                data, at, shrunk = versions[i % 2], 0, False
                f.truncate(0)
                f.seek(0)
                while at < len(data):
                    f.write(data[at : at + (1 << 18)])
                    at += 1 << 18
                    if at >= 1 << 20 and not shrunk:
                        at, shrunk = 1 << 19, True
                        f.truncate(at)
                        f.seek(at)
                stop.wait(0.002)

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    outcomes: dict[str, int] = {}
    try:
        for _ in range(150):
            verdict = inspect(str(tmp_path), "big.json", registry, LIMITS)
            if isinstance(verdict, Accepted):
                assert verdict.hash in hashes, "a torn read was accepted"
                assert verdict.size in {len(v) for v in versions}
            else:
                assert isinstance(verdict, Rejected), verdict
                assert verdict.code in ("changing", "syntax", "empty"), verdict
            kind = type(verdict).__name__
            outcomes[kind] = outcomes.get(kind, 0) + 1
    finally:
        stop.set()
        writer.join(10)
    assert outcomes.get("Accepted", 0) + outcomes.get("Rejected", 0) == 150, outcomes
