"""When the held dossiers are next checked: a min-heap of near checks and day buckets of far ones.

The scheduler never queries the store to find what is due: it holds the next checks of every
dossier this instance wrote or loaded when its partitions were assigned. docs/architecture.md,
"Scheduler".
"""
from __future__ import annotations

import heapq
from datetime import datetime
from typing import Iterable

from .heldstate import StateCache

# held dossiers whose next check is further than this go to day buckets instead of the heap
FAR_HORIZON_S = 6 * 3600
FAR_BUCKET_S = 86400


class Scheduler:
    """Next checks by time. A heap entry is (next_check_at as POSIX seconds, partition, code) and
    is current while the dossier's document still has that next_check_at (stale ones are
    skipped by the caller). Far checks of held dossiers wait as bare codes (far less memory than
    a heap entry) in day buckets, and enter the heap as their day nears."""

    def __init__(self, cache: StateCache, clock):
        self.cache = cache
        self.clock = clock
        self.heap: list[tuple[float, int | None, str]] = []
        self.far: dict[int, list[str]] = {}      # day bucket -> codes

    def push(self, code: str, t: datetime | None, partition: int | None) -> None:
        if t is None:
            return
        ts = t.timestamp()
        key = int(ts // FAR_BUCKET_S)
        # a far bucket only when promote() would not take it back at once: promoting decodes the
        # held document to read its next check, a cost paid again for every new dossier whose
        # next check falls later in the current bucket
        if self.cache.holds(partition) and \
                key > int((self.clock.now().timestamp() + FAR_HORIZON_S) // FAR_BUCKET_S):
            self.far.setdefault(key, []).append(code)
        else:
            heapq.heappush(self.heap, (ts, partition, code))

    def promote(self, now_ts: float) -> None:
        """Move the far buckets that come within FAR_HORIZON_S into the heap (their documents say
        when; a code no longer held, or without a next check, is dropped)."""
        if not self.far:
            return
        limit = int((now_ts + FAR_HORIZON_S) // FAR_BUCKET_S)
        for key in sorted(k for k in self.far if k <= limit):
            for code in self.far.pop(key):
                for p, part in self.cache.docs.items():
                    if code in part:
                        raw = part[code]
                        t = self.cache.decode(raw).get("next_check_at") if raw is not None else None
                        if t is not None:
                            heapq.heappush(self.heap, (t.timestamp(), p, code))
                        break

    def due_now(self) -> bool:
        """True when a check is due now (maybe a stale entry)."""
        now_ts = self.clock.now().timestamp()
        self.promote(now_ts)
        return bool(self.heap) and self.heap[0][0] <= now_ts

    def take_due(self, partitions: set[int], now_ts: float, limit: int) -> dict[str, int | None]:
        """Up to `limit` dossiers of these partitions due at `now_ts` (code -> partition), out of
        the heap; entries of other partitions stay."""
        picked: dict[str, int | None] = {}
        others: list[tuple[float, int | None, str]] = []
        self.promote(now_ts)
        while self.heap and self.heap[0][0] <= now_ts and len(picked) < limit:
            entry = heapq.heappop(self.heap)
            if entry[1] not in partitions:
                others.append(entry)    # not asked for now: keep it
                continue
            if entry[2] not in picked:
                picked[entry[2]] = entry[1]
        for entry in others:
            heapq.heappush(self.heap, entry)
        return picked

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the entries of revoked partitions (call after the held copy dropped them)."""
        gone = set(partitions)
        self.heap = [e for e in self.heap if e[1] not in gone]
        heapq.heapify(self.heap)
        held = list(self.cache.docs.values())
        self.far = {k: kept for k, codes in self.far.items()
                    if (kept := [c for c in codes if any(c in part for part in held)])}

    def size(self) -> int:
        """Entries (heap and far buckets; stale ones included)."""
        return len(self.heap) + sum(len(v) for v in self.far.values())
