"""Feeds the replay's links with planned groups: a bounded number queued, planned a slice at a time as they go."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Protocol

from membench.replay.plan import Planner
from membench.replay.requests import Group
from membench.replay.survey import BatchSource

HIGH_WATER = 65_536  # planned groups queued over all links before planning pauses
_LOW_WATER = HIGH_WATER // 2  # queued groups below which the next slices are planned ahead
CACHE_GROUPS = 250_000  # a plan this small is kept for the later loops (40 MiB compiled; 90 as tuples)


class FedLink(Protocol):
    """What the feeder needs of a link: its queue of planned chunks, and a way to wake it when some come."""

    queue: deque[Sequence[Group]]

    def poke(self) -> None: ...


class Feeder:
    """Plans one loop's rows into the links' queues, a slice at a time, keeping about HIGH_WATER groups queued.

    A link that finds its queue empty plans synchronously until it has something (it has nothing else to do);
    once the queues run low, the next slices are planned ahead one per event loop iteration, so no reply waits
    long behind planning. A link starved while the others hold HIGH_WATER groups waits for them to send some:
    memory stays bounded whatever the profile's interleaving.
    """

    def __init__(self, planner: Planner, source: BatchSource) -> None:
        self._planner = planner
        self._source = source
        self._loop: asyncio.AbstractEventLoop | None = None
        self.links: list[FedLink] = []
        self.exhausted = True
        self.planned = 0  # groups planned in the current loop
        self._queued = 0
        self._slices: Iterator[list[tuple[int, Sequence[Group]]]] | None = None
        self._cache: list[list[Sequence[Group]]] | None = None  # each link's chunks of the first loop
        self._cached = False
        self._refill_due = False
        self._starving: list[FedLink] = []

    def start_pass(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.planned = 0
        self._queued = 0
        self._starving.clear()
        for link in self.links:
            link.queue.clear()
        if self._cached and self._cache is not None:
            for link, chunks in zip(self.links, self._cache, strict=True):
                link.queue.extend(chunks)
                self.planned += sum(len(chunk) for chunk in chunks)
            self.exhausted = True
            return
        self._cache = [[] for _ in self.links]
        self._slices = self._planner.plan(self._source)
        self.exhausted = False
        self._schedule_refill()

    def take(self, link: FedLink) -> Sequence[Group] | None:
        """The link's next planned groups; None while there are none (it is poked when some come)."""
        queue = link.queue
        while not queue and not self.exhausted and self._queued < HIGH_WATER:
            self._plan_slice()
        if not queue:
            if not self.exhausted:
                self._starving.append(link)
            return None
        chunk = queue.popleft()
        self._queued -= len(chunk)
        if self._queued < _LOW_WATER:
            self._schedule_refill()
        return chunk

    def _plan_slice(self) -> None:
        assert self._slices is not None and self._loop is not None, "a pass has started"
        planned = next(self._slices, None)
        if planned is None:
            self.exhausted = True
            self._slices = None
            self._cached = self._cache is not None
            for link in self.links:
                self._loop.call_soon(link.poke)
            return
        links, cache = self.links, self._cache
        for index, groups in planned:
            links[index].queue.append(groups)
            self._queued += len(groups)
            self.planned += len(groups)
            if cache is not None:
                cache[index].append(groups)
        if cache is not None and self.planned > CACHE_GROUPS:
            self._cache = None
        if self._starving:
            starving, self._starving = self._starving, []
            for link in starving:
                self._loop.call_soon(link.poke)

    def _schedule_refill(self) -> None:
        if not self._refill_due and not self.exhausted:
            assert self._loop is not None, "a pass has started"
            self._refill_due = True
            self._loop.call_soon(self._refill)

    def _refill(self) -> None:
        """One slice ahead per event loop iteration, up to HIGH_WATER."""
        self._refill_due = False
        if not self.exhausted and self._queued < HIGH_WATER:
            self._plan_slice()
            if self._queued < HIGH_WATER:
                self._schedule_refill()
