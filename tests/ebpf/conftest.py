"""The `capture` fixture: start EbpfSources that are stopped even when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import require_ebpf
from tests.ebpf.ebpf_support import Capture


@pytest.fixture
def capture() -> Iterator[Callable[..., Capture]]:
    started: list[Capture] = []

    def start(**options: Any) -> Capture:
        require_ebpf()
        started.append(Capture(**options))
        return started[-1]

    yield start
    for running in started:
        running.source.stop()
        running.thread.join(timeout=30)
