"""A logic validator's code is part of what validated an asset: editing it revalidates."""

from conftest import SCHEMAS, run_cli, stored


def test_editing_a_validators_code_revalidates_unchanged_files(valkey, root, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    module = rules / "costrules.py"
    module.write_text("def check(path, doc):\n    return None\n")
    config = tmp_path / "assetmgr.toml"
    config.write_text('[validators]\nweights = ["costrules:check"]\n')
    args = ("hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", valkey.url,
            "--config", config)  # fmt: skip
    env = {"PYTHONPATH": str(rules)}
    assert run_cli(*args, env=env).returncode == 0
    before = stored(valkey.client())

    # Same file name, same callable name, new rule: the unchanged files are judged again.
    module.write_text(
        "def check(path, doc):\n"
        "    return 'cost must not be money' if doc.get('unit') == 'money' else None\n"
    )
    result = run_cli(*args, env=env)
    assert result.returncode == 1, result.stderr
    assert "weights/cost.json" in result.stderr and "cost must not be money" in result.stderr
    assert stored(valkey.client()) == before  # rejected: the last good version stays
