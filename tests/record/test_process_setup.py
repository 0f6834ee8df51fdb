"""`membench record` sets its process up to take little CPU from the server it records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PCAP_CORPUS

# The record command run in-process, then the allocator Arrow ended up with. pyarrow is imported only after: Arrow
# picks its allocator once, so anything that imported it before the command would leave the choice unmade.
_RECORD_THEN_NAME_POOL = """
import sys
from membench.cli import main
status = main(["record", sys.argv[1], sys.argv[2], "-p", "11211", "-q"])
import pyarrow
print(status, pyarrow.default_memory_pool().backend_name)
"""


def _record_and_name_pool(tmp_path: Path, *, chosen: str | None = None) -> str:
    environment = {key: value for key, value in os.environ.items() if key != "ARROW_DEFAULT_MEMORY_POOL"}
    if chosen is not None:
        environment["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    capture = PCAP_CORPUS / "memcache_text_tcp_multi_store_load.pcap"
    result = subprocess.run([sys.executable, "-c", _RECORD_THEN_NAME_POOL, str(capture), str(tmp_path / "p.profile")],
                            capture_output=True, text=True, check=True, env=environment)
    return result.stdout.splitlines()[-1]


def test_a_recording_allocates_arrow_buffers_from_the_c_heap(tmp_path: Path) -> None:
    # mimalloc, Arrow's default, returned each flush's pages to the kernel, which zeroed them again for the next.
    assert _record_and_name_pool(tmp_path) == "0 system"


def test_a_users_own_choice_of_allocator_wins(tmp_path: Path) -> None:
    assert _record_and_name_pool(tmp_path, chosen="mimalloc") == "0 mimalloc"
