"""The inotify watch limit: not ready, a log line naming the sysctl, and still converging."""

import json
from pathlib import Path

import pytest

from conftest import disk_assets, stored, wait_for

pytestmark = pytest.mark.serial  # see the marker in conftest.py


LIMIT = Path("/proc/sys/fs/inotify/max_user_watches")


def _watches_in_use() -> int:
    """inotify watches held by every process we can see (the limit is per user)."""
    total = 0
    for fdinfo in Path("/proc").glob("[0-9]*/fdinfo/*"):
        try:
            total += fdinfo.read_text().count("inotify wd:")
        except OSError:
            continue
    return total


@pytest.fixture
def scarce_watches():
    try:
        original = LIMIT.read_text()
        LIMIT.write_text(original)
    except OSError:
        pytest.skip("cannot change fs.inotify.max_user_watches here")
    yield lambda spare: LIMIT.write_text(str(_watches_in_use() + spare))
    LIMIT.write_text(original)


def test_watch_limit_means_not_ready_and_periodic_rescans(
    valkey, root, start_daemon, scarce_watches
):
    scarce_watches(4)  # the schemas dir and a few of the tree's 13 directories
    daemon = start_daemon(root, "--reconcile-interval", "1", ready=False)
    wait_for(lambda: "fs.inotify.max_user_watches" in daemon.log(), what="the log line")
    wait_for(lambda: stored(valkey.client()) == disk_assets(root), what="hydrated anyway")
    code, body = daemon.get("/readyz")
    assert code == 503 and b"watch limit" in body

    # A change deep in an unwatched directory still arrives, by the periodic rescans.
    deep = root / "routes" / "edge" / "eu" / "failover.json"
    doc = json.loads(deep.read_text())
    doc["version"] = "9.9.9"
    deep.write_text(json.dumps(doc, indent=2))
    wait_for(lambda: stored(valkey.client()) == disk_assets(root), what="the edit via rescans")
    assert 'reason="watch_limit"' in daemon.get("/metrics")[1].decode()
