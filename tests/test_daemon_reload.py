"""Schema hot reload and SIGHUP: the daemon revalidates, keeps last good values, stays up."""

import json
import signal

import pytest

from conftest import disk_assets, stored, subscribe, wait_for


def _status(daemon) -> dict:
    code, body = daemon.get("/status")
    assert code == 200
    return json.loads(body)


def _set_weights_enum(schemas, units):
    path = schemas / "weights.schema.json"
    doc = json.loads(path.read_text())
    doc["properties"]["unit"]["enum"] = units
    path.write_text(json.dumps(doc, indent=2))


def test_schema_change_revalidates_its_kind_and_keeps_last_good(
    valkey, root, schemas, start_daemon
):
    client = valkey.client()
    daemon = start_daemon(root, schemas=schemas)
    before = stored(client)

    # Tighten the weights schema: "money" is no longer a unit, so weights/cost.json is invalid.
    _set_weights_enum(schemas, ["ratio", "score", "ms", "requests_per_s"])
    wait_for(lambda: "weights/cost.json" in _status(daemon)["rejected"], what="cost.json rejected")
    assert "schema weights.schema.json" in _status(daemon)["rejected"]["weights/cost.json"]
    assert stored(client) == before  # invalid never deletes: the last good version stays
    assert "schemas reloaded" in daemon.log()

    # Loosen it again: the file is valid, and drops from the rejected list.
    _set_weights_enum(schemas, ["ratio", "score", "ms", "money", "requests_per_s"])
    wait_for(lambda: "weights/cost.json" not in _status(daemon)["rejected"], what="cost.json ok")


BROKEN_SCHEMAS = {
    "not JSON": "{ not json",
    "unknown $schema": '{"$schema": "https://example.com/my-dialect", "type": "object"}',
    "a keyword the dialect ignores": '{"type": "object", "unevaluatedProperties": false}',
}


@pytest.mark.parametrize("text", BROKEN_SCHEMAS.values(), ids=BROKEN_SCHEMAS.keys())
def test_broken_schema_keeps_the_old_set(valkey, root, schemas, start_daemon, text):
    client = valkey.client()
    daemon = start_daemon(root, schemas=schemas)
    (schemas / "cards.schema.json").write_text(text)
    wait_for(lambda: "schema reload failed" in daemon.log(), what="reload failure logged")

    # The old cards schema still applies: a valid edit propagates, an invalid one is rejected.
    card = root / "cards" / "core" / "fireball.json"
    doc = json.loads(card.read_text())
    doc["cost"] = 3 if doc["cost"] != 3 else 4
    with subscribe(client) as published:
        card.write_text(json.dumps(doc, indent=2) + "\n")
        wait_for(lambda: stored(client)["cards/core/fireball.json"] == card.read_bytes())
    assert published.items == ["cards/core/fireball.json"]
    doc["cost"] = 99  # over the schema's maximum of 10
    card.write_text(json.dumps(doc))
    wait_for(lambda: "cards/core/fireball.json" in _status(daemon)["rejected"], what="rejected")
    assert daemon.proc.poll() is None


def test_a_schema_reloaded_as_2020_12_is_enforced_by_jsonschema_rs(
    valkey, root, schemas, start_daemon
):
    daemon = start_daemon(root, schemas=schemas)
    path = schemas / "weights.schema.json"
    doc = json.loads(path.read_text())
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc.pop("additionalProperties", None)
    doc["unevaluatedProperties"] = False
    doc["properties"].pop("owner")  # weights/*.json have an owner: now unevaluated, rejected
    path.write_text(json.dumps(doc))
    wait_for(lambda: "weights/cost.json" in _status(daemon)["rejected"], what="cost.json rejected")
    reason = _status(daemon)["rejected"]["weights/cost.json"]
    assert reason.endswith('(root): unevaluatedProperties: must not contain ["owner"]'), reason


def test_sighup_reloads_config_and_rescans(valkey, root, schemas, start_daemon, tmp_path):
    client = valkey.client()
    config = tmp_path / "assetmgr.toml"
    config.write_text("max_depth = 64\n")
    deep = root / "deep.json"
    deep.write_text(json.dumps({"a": {"b": {"c": {"d": 1}}}}))
    daemon = start_daemon(root, "--config", str(config), schemas=schemas)
    assert stored(client) == disk_assets(root)

    config.write_text("max_depth = 3\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "deep.json" in _status(daemon).get("rejected", {}), what="deep.json rejected")
    assert "nesting deeper than 3" in _status(daemon)["rejected"]["deep.json"]
    assert stored(client)["deep.json"] == deep.read_bytes()  # kept
    assert daemon.get("/readyz")[0] == 200

    # A config that does not parse is refused; the daemon keeps running the old one.
    config.write_text("max_depth = [")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in daemon.log(), what="reload refused")
    assert daemon.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("name", ["broken.json", "broken\u2028line.json"])
def test_a_rejected_file_is_warned_about_once_not_at_every_rescan(
    valkey, root, schemas, start_daemon, name
):
    """Also when its name does not print (U+2028): reports escape it, the memory must not."""
    (root / "weights" / name).write_bytes(b'{"id": ')

    def count(text: str, *also: str) -> int:
        lines = daemon.log().splitlines()
        return sum(text in line and all(a in line for a in also) for line in lines)

    daemon = start_daemon(root, "--reconcile-interval", "0.3", schemas=schemas)
    wait_for(lambda: count("full scan") >= 4, what="three periodic rescans")
    wait_for(lambda: count("full scan") >= 5, what="and one more, committed before it")
    assert count("WARNING", "rejected") == 1, daemon.log()
