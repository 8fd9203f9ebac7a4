"""A 20,000-file tree hydrates with every key right; a terminal sees progress."""

import os
import pty
import subprocess
import sys

from conftest import REPO, manifests, sha256, stored

sys.path.insert(0, str(REPO / "perf"))
from corpus import Shape, generate


def test_twenty_thousand_files_every_key_right(valkey, tmp_path):
    paths = generate(tmp_path, Shape(small=20000, mix="trial")).paths
    root, schemas = tmp_path / "assets", tmp_path / "schemas"
    result = subprocess.run(
        [sys.executable, "-m", "assetmgr", "hydrate", "--root", root, "--schemas", schemas,
         "--valkey-url", valkey.url],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "added=20000" in result.stderr

    client = valkey.client()
    blobs, hashes = stored(client), manifests(client)
    assert sorted(blobs) == sorted(paths)
    for path in paths:
        data = (root / path).read_bytes()
        assert blobs[path] == data
        assert hashes[path]["hash"] == sha256(data)


def test_hydrate_on_a_terminal_shows_progress(valkey, root):
    command = [sys.executable, "-m", "assetmgr", "hydrate", "--root", str(root),
               "--schemas", str(REPO / "schemas"), "--valkey-url", valkey.url]  # fmt: skip
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal on stdin/stdout/stderr
        os.chdir(REPO)
        os.execv(sys.executable, command)
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    text = output.decode(errors="replace")
    assert "20/20 files" in text and "/s" in text
