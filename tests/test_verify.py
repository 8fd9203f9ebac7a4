"""`verify`: the CI gate. Three report formats, the exit codes, and where settings come from."""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, SCHEMAS, disk_assets, run_cli

BROKEN = {
    "weights/cost.json": (b'{"version": "1.0.0", "version": "1.0.1"}', "duplicate_key"),
    "cards/core/fireball.json": (b"", "empty"),
    "settings.json": (b'{"ratio": NaN}', "non_finite"),
}


def verify(root: Path, *extra: str | Path, env: dict[str, str] | None = None):
    return run_cli("verify", "--root", root, "--schemas", SCHEMAS, *extra, env=env)


@pytest.fixture
def broken(root: Path) -> Path:
    for path, (data, _) in BROKEN.items():
        (root / path).write_bytes(data)
    return root


def test_examples_pass_in_every_format():
    text = verify(EXAMPLES)
    assert text.returncode == 0, text.stderr
    assert text.stdout == "20 checked: 20 valid, 0 invalid\n"
    as_json = verify(EXAMPLES, "--format", "json")
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    kinds = report.pop("schemas")
    assert report == {"ok": True, "checked": 20, "valid": 20, "invalid": []}
    version = importlib.metadata.version("fastjsonschema")
    assert kinds["weights"] == {
        "file": "weights.schema.json",
        "dialect": "draft-07",
        "engine": "fastjsonschema",
        "engine_version": version,
    }
    assert sorted(kinds) == ["_default", "cards", "common", "routes", "weights"]
    github = verify(EXAMPLES, "--format", "github")
    assert github.returncode == 0 and github.stdout == ""


def test_text_format_lists_each_invalid_file_with_its_reason(broken):
    result = verify(broken)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in lines[:-1]] == sorted(BROKEN)
    assert "cards/core/fireball.json: empty file" in lines
    assert "weights/cost.json: duplicate object key 'version'" in lines
    assert lines[-1] == "20 checked: 17 valid, 3 invalid"


def test_json_format_is_machine_readable(broken):
    result = verify(broken, "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["checked"] == 20 and report["valid"] == 17
    assert [(i["path"], i["code"]) for i in report["invalid"]] == [
        (path, code) for path, (_, code) in sorted(BROKEN.items())
    ]
    assert all(i["reason"] and "\n" not in i["reason"] for i in report["invalid"])


def test_github_format_prints_one_annotation_per_invalid_file(broken):
    result = verify(broken, "--format", "github")
    assert result.returncode == 1
    reasons = {
        "cards/core/fireball.json": "empty file",
        "settings.json": "NaN is not valid JSON",
        "weights/cost.json": "duplicate object key 'version'",
    }
    assert result.stdout.splitlines() == [
        f"::error file={broken}/{path},title=assetmgr {BROKEN[path][1]}::{path}: {reason}"
        for path, reason in sorted(reasons.items())
    ]


def test_github_annotation_escapes_its_special_characters(tmp_path):
    root = tmp_path / "a,b"
    (root / "x:y").mkdir(parents=True)
    (root / "x:y" / "100%.json").write_bytes(b"[1,")
    result = verify(root, "--format", "github")
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    prop, _, message = line.partition("::x:y/")
    assert prop == f"::error file={tmp_path!s}/a%2Cb/x%3Ay/100%25.json,title=assetmgr syntax"
    assert message.startswith("100%25.json: invalid JSON")


def test_verify_needs_no_valkey(root):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Even told about an unreachable Valkey through the environment, verify never dials it.
    result = verify(root, env={"ASSETMGR_VALKEY_URL": f"redis://127.0.0.1:{port}/0"})
    assert result.returncode == 0, result.stderr


def test_an_empty_root_verifies_as_nothing_to_check(tmp_path):
    result = verify(tmp_path)
    assert result.returncode == 0
    assert result.stdout == "0 checked: 0 valid, 0 invalid\n"


USAGE = {
    "workers 0": (["--workers", "0"], {}, "workers"),
    "format xml": (["--format", "xml"], {}, "format"),
    "env workers abc": ([], {"ASSETMGR_WORKERS": "abc"}, "ASSETMGR_WORKERS"),
    "env max depth 0": ([], {"ASSETMGR_MAX_DEPTH": "0"}, "max_depth"),
    "size overflow": (["--max-size", "1e400"], {}, "max_size"),
    "size garbage": (["--max-size", "12parsecs"], {}, "max_size"),
    "unknown option": (["--valkey-url", "redis://127.0.0.1:1"], {}, "unrecognized"),
    "missing schemas": (["--schemas", "/nonexistent/schemas"], {}, "/nonexistent/schemas"),
    "missing root": (["--root", "/nonexistent/root"], {}, "/nonexistent/root"),
    "missing config": (["--config", "/nonexistent/assetmgr.toml"], {}, "assetmgr.toml"),
}


@pytest.mark.parametrize(("args", "env", "fragment"), USAGE.values(), ids=USAGE.keys())
def test_bad_settings_exit_2_with_one_line(root, args, env, fragment):
    result = verify(root, *args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("assetmgr: ") and fragment in result.stderr
    assert result.stdout == ""


TOML = {
    "not TOML": ("max_depth = \n", "config file"),
    "unknown setting": ("max_dept = 4\n", "max_dept"),
    "wrong type": ("max_depth = [4]\n", "max_depth"),
    "bad value": ('format = "xml"\n', "format"),
}


@pytest.mark.parametrize(("text", "fragment"), TOML.values(), ids=TOML.keys())
def test_bad_config_file_exits_2_with_one_line(root, tmp_path, text, fragment):
    config = tmp_path / "assetmgr.toml"
    config.write_text(text)
    result = verify(root, "--config", config)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr


# Precedence: command line > environment > config file > default, shown by the depth limit
# deciding whether a five-deep document passes.


@pytest.fixture
def deep_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "deep.json").write_text('{"a": [[[[1]]]]}')  # five containers deep
    return root


def write_config(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "assetmgr.toml"
    config.write_text(text)
    return config


LAYERS = {
    "default passes": ([], {}, None, 0),
    "file tightens": ([], {}, "max_depth = 4\n", 1),
    "file in an [assetmgr] table": ([], {}, "[assetmgr]\nmax-depth = 4\n", 1),
    "env beats file": ([], {"ASSETMGR_MAX_DEPTH": "5"}, "max_depth = 4\n", 0),
    "env tightens over a loose file": ([], {"ASSETMGR_MAX_DEPTH": "4"}, "max_depth = 9\n", 1),
    "cli beats env": (["--max-depth", "4"], {"ASSETMGR_MAX_DEPTH": "5"}, None, 1),
    "cli beats env and file": (
        ["--max-depth", "5"],
        {"ASSETMGR_MAX_DEPTH": "4"},
        "max_depth = 4\n",
        0,
    ),
}


@pytest.mark.parametrize(("args", "env", "toml", "code"), LAYERS.values(), ids=LAYERS.keys())
def test_settings_precedence(deep_tree, tmp_path, args, env, toml, code):
    if toml is not None:
        args = [*args, "--config", str(write_config(tmp_path, toml))]
    result = verify(deep_tree, *args, env=env)
    assert result.returncode == code, result.stdout + result.stderr
    if code:
        assert "deep.json: nesting deeper than 4" in result.stdout


def test_config_file_named_by_the_environment(deep_tree, tmp_path):
    config = write_config(tmp_path, f'max_depth = 4\nroot = "{deep_tree}"\n')
    result = run_cli("verify", "--schemas", SCHEMAS, env={"ASSETMGR_CONFIG": str(config)})
    assert result.returncode == 1 and "nesting deeper than 4" in result.stdout


def test_format_from_the_environment(root):
    result = verify(root, env={"ASSETMGR_FORMAT": "json"})
    assert result.returncode == 0
    assert json.loads(result.stdout)["checked"] == len(disk_assets(root))


def test_a_report_lost_to_a_closed_stdout_is_exit_status_120_not_success():
    """Buffered stdout (no PYTHONUNBUFFERED) into a pipe nobody reads: the flush at exit
    fails, and the command must not claim success (Python's own exit makes it 120)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSETMGR_", "PYTHONUNBUF"))}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "assetmgr", "verify", "--root", str(EXAMPLES),
             "--schemas", str(SCHEMAS)],
            stdout=write_end, stderr=subprocess.PIPE, env=env, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 120, done.stderr


def test_json_format_names_the_engine_and_dialect_of_each_kind(tmp_path):
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "weights.schema.json").write_text(
        json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"})
    )
    (schemas / "_default.schema.json").write_text("{}")
    result = run_cli("verify", "--root", EXAMPLES, "--schemas", schemas, "--format", "json")
    assert result.returncode == 0, result.stderr
    kinds = json.loads(result.stdout)["schemas"]
    version = importlib.metadata.version("jsonschema-rs")
    assert kinds == {
        "_default": {"file": "_default.schema.json", "dialect": "draft-07",
                     "engine": "jsonschema-rs", "engine_version": version},
        "weights": {"file": "weights.schema.json", "dialect": "2020-12",
                    "engine": "jsonschema-rs", "engine_version": version},
    }  # fmt: skip
