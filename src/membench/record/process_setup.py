"""How a `membench record` process is set up to take as little CPU as it can from the server it records.

Called before pyarrow is first imported: Arrow reads its allocator's name from the environment when it first
allocates.
"""

from __future__ import annotations

import os

ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def prepare_recording_process() -> None:
    """A user's own choice of allocator wins."""
    # Arrow's default allocator (mimalloc) hands freed pages back to the kernel within milliseconds, so each flush
    # of a live recording wrote its Parquet buffers into fresh pages that the kernel zeroed first: 13% of the
    # recorder's CPU. The C heap keeps them from one flush to the next.
    os.environ.setdefault(ARROW_POOL_VARIABLE, "system")
