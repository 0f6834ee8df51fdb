"""The salt passphrase: from a file or the environment (not the command line, which `ps` shows every user), and
stretched with scrypt so that the stored fingerprint costs an attacker what a password hash would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from membench.profile.metadata import METADATA_FILE
from tests.conftest import PCAP_CORPUS, read_profile, require_ebpf

PCAP = PCAP_CORPUS / "memcache_text_tcp_multi_store_load.pcap"
PASSPHRASE = "correct horse battery staple 7391"


def record(out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "membench", "record", str(PCAP), str(out), "--quiet", *extra],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_a_salt_file_the_environment_and_the_command_line_hash_alike(tmp_path: Path) -> None:
    salt_file = tmp_path / "team.salt"
    salt_file.write_text(PASSPHRASE + "\n")
    by_file = record(tmp_path / "file.profile", "--salt-file", str(salt_file))
    by_env = record(tmp_path / "env.profile", env={"MEMBENCH_SALT": PASSPHRASE})
    by_argument = record(tmp_path / "arg.profile", "--salt", PASSPHRASE)
    assert by_file.returncode == by_env.returncode == by_argument.returncode == 0
    assert "warning" not in by_file.stderr + by_env.stderr
    assert by_argument.stderr.startswith("membench: warning: --salt is visible to every user")
    hashes = [read_profile(tmp_path / name)["key_hash"].to_pylist() for name in ("file.profile", "env.profile",
                                                                                 "arg.profile")]
    assert hashes[0] == hashes[1] == hashes[2] and any(hashes[0])
    stored = [json.loads((tmp_path / name / METADATA_FILE).read_text()) for name in ("file.profile", "env.profile")]
    assert stored[0]["salt_fingerprint"] == stored[1]["salt_fingerprint"]
    assert stored[0]["salt_kdf"]["name"] == "scrypt" and stored[0]["salt_kdf"]["n"] >= 1 << 14


def test_without_a_passphrase_the_salt_is_random_and_no_kdf_is_claimed(tmp_path: Path) -> None:
    assert record(tmp_path / "a.profile").returncode == 0
    assert record(tmp_path / "b.profile").returncode == 0
    a, b = (json.loads((tmp_path / name / METADATA_FILE).read_text()) for name in ("a.profile", "b.profile"))
    assert a["salt_kdf"] is None and a["salt_fingerprint"] != b["salt_fingerprint"]


@pytest.mark.parametrize("content", ["", "\n"])
def test_an_empty_or_missing_salt_file_is_a_one_line_error(tmp_path: Path, content: str) -> None:
    empty = tmp_path / "empty.salt"
    empty.write_text(content)
    for path in (empty, tmp_path / "missing.salt"):
        proc = record(tmp_path / "x.profile", "--salt-file", str(path))
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--salt-file" in proc.stderr


def test_a_salt_file_that_never_ends_is_a_one_line_error(tmp_path: Path) -> None:
    """/dev/zero was read until memory ran out (internal error: MemoryError)."""
    proc = record(tmp_path / "x.profile", "--salt-file", "/dev/zero")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "membench: --salt-file /dev/zero: more than 65,536 bytes, not a passphrase"), proc.stderr


@pytest.mark.ebpf
def test_another_user_does_not_see_a_salt_file_passphrase_in_ps(tmp_path: Path, memcached) -> None:
    require_ebpf()
    salt_file = tmp_path / "team.salt"
    salt_file.write_text(PASSPHRASE)
    salt_file.chmod(0o600)
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is not installed"

    def seen_by_nobody(*salt: str) -> str:
        recorder = subprocess.Popen([sys.executable, "-m", "membench", "record", "ebpf:any",
                                     str(tmp_path / f"{len(salt)}-{salt[0]}.profile".replace("/", "_")), "--port",
                                     str(memcached.port), "--quiet", "--duration", "20", *salt],
                                    stderr=subprocess.PIPE, text=True)
        try:
            assert recorder.stderr is not None
            while not recorder.stderr.readline().startswith("recording"):
                time.sleep(0.01)
            ps = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "ps", "-ww", "-eo", "args"]
            return subprocess.run(ps, capture_output=True, text=True, check=True).stdout
        finally:
            recorder.terminate()
            recorder.communicate(timeout=60)

    assert PASSPHRASE in seen_by_nobody("--salt", PASSPHRASE), "ps shows other users' arguments here"
    assert PASSPHRASE not in seen_by_nobody("--salt-file", str(salt_file))
