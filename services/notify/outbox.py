"""Alerts leased when they were planned, handed from the planner to whoever sends them.

An alert due at once is inserted already leased (no queue scan, no claim round trips) and waits
here; the service's `send_leased()` or the loop's background sender (sender.py) takes it. The
latest handled revision of each finding with a leased level-0 alert is kept beside it, so that
the send sees a resolution handled since without re-reading the finding. Shared between the
loop's threads, hence its lock. docs/architecture.md, "Delivery".
"""
from __future__ import annotations

import threading
import time


class Outbox:
    def __init__(self):
        self.cv = threading.Condition()
        self.items: list[dict] = []        # leased alerts waiting to be sent
        self.inflight = 0                  # taken, being sent or waiting for their marks
        self.snapshots: dict[str, dict] = {}
        self._held: list[dict] | None = None

    def hold(self) -> None:
        """Keep what is added from now on until `release()` (one planned batch)."""
        with self.cv:
            self._held = []

    def release(self) -> None:
        """The held alerts become available: a finding resolved later in the same batch has had
        its snapshot updated by then, so its alert is not sent."""
        with self.cv:
            if self._held:
                self.items.extend(self._held)
            self._held = None
            self.cv.notify_all()

    def add(self, item: dict, finding: dict | None = None) -> None:
        """A leased alert; `finding`: its snapshot (level-0 alerts of a real finding)."""
        with self.cv:
            (self._held if self._held is not None else self.items).append(item)
            if finding is not None:
                self.snapshots[finding["_id"]] = finding
            self.cv.notify_all()

    def refresh(self, finding: dict) -> None:
        """A later revision of a finding handled: its snapshot follows, when there is one."""
        with self.cv:
            if finding["_id"] in self.snapshots:
                self.snapshots[finding["_id"]] = finding

    def snapshot(self, finding_id: str) -> dict | None:
        return self.snapshots.get(finding_id)

    def take(self) -> list[dict]:
        """Everything waiting, now in flight."""
        with self.cv:
            items, self.items = self.items, []
            self.inflight += len(items)
            return items

    def forget(self, finding_ids) -> None:
        """Their alerts were sent (or left to the queue): no snapshot is needed any more."""
        with self.cv:
            for fid in finding_ids:
                self.snapshots.pop(fid, None)

    def finished(self, n: int) -> None:
        """`n` alerts taken are done (marked, failed or left to the queue)."""
        with self.cv:
            self.inflight -= n
            self.cv.notify_all()

    def backlog(self) -> int:
        return len(self.items) + self.inflight

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Wait (at most `timeout` s) until at most `limit` alerts are waiting or in flight;
        False if there are still more."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while len(self.items) + self.inflight > limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
        return True
