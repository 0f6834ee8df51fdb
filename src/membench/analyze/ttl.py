"""Expiration times as memcached reads them: 0 never expires, a negative value expires at once, up to 30 days is
seconds from now, and anything larger is an absolute Unix time. The distribution is of the relative ones; the
others are counted apart, since mixing them would put timestamps among durations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from membench.analyze.histogram import CountHistogram, Distribution

RELATIVE_MAX_S = 60 * 60 * 24 * 30  # memcached's REALTIME_MAXDELTA


@dataclass
class TtlStats:
    operations: int  # operations that carried an expiration (storage, touch, gat, meta T)
    never: int  # 0: no expiration
    immediate: int  # negative: expired at once
    absolute: int  # beyond 30 days: a Unix time, not a duration
    relative_s: Distribution  # the durations, in seconds


class TtlCollector:
    def __init__(self) -> None:
        self._relative = CountHistogram()
        self._never = self._immediate = self._absolute = self._operations = 0

    def add(self, column: pa.Array) -> None:
        ttl = column.drop_null().to_numpy()
        if ttl.size == 0:
            return
        self._operations += int(ttl.size)
        self._never += int(np.count_nonzero(ttl == 0))
        self._immediate += int(np.count_nonzero(ttl < 0))
        self._absolute += int(np.count_nonzero(ttl > RELATIVE_MAX_S))
        self._relative.add(ttl[(ttl > 0) & (ttl <= RELATIVE_MAX_S)])

    def stats(self) -> TtlStats:
        return TtlStats(operations=self._operations, never=self._never, immediate=self._immediate,
                        absolute=self._absolute, relative_s=self._relative.distribution())
