"""The notify loop's timers on a machine up for only a few seconds (monotonic time counts from boot)."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("uptime", [5.0, None], ids=["just-booted", "host"])
def test_loop_runs_its_first_dispatch_and_schedule_at_once_whatever_the_uptime(monkeypatch, uptime):
    """time.monotonic() counts from boot: on a machine up for 5 s, the first loop turn still
    scans the queue and runs escalations, repeats and digests (no "last run at 0.0")."""
    import time as _t
    from services.notify.loop import NotifyLoop
    from services.notify.outbox import Outbox

    if uptime is not None:
        real = _t.monotonic
        shift = real() - uptime
        monkeypatch.setattr(_t, "monotonic", lambda: real() - shift)

    class Consumer:
        def poll(self, timeout_ms, max_records):
            return {}

    class Service:
        dispatched = scheduled = 0
        clock = None              # the dead-letter writer's clock: unused, nothing is dead-lettered
        outbox = Outbox()         # the background sender's: empty
        dispatcher = None

        def dispatch_queue(self, max_items):
            Service.dispatched += 1
            return 0

        def run_scheduled(self):
            Service.scheduled += 1

    loop = NotifyLoop(Consumer(), Service(), None, "dlq", schedule_interval=3600,
                      background_send=True, dispatch_interval=3600)
    loop.run_once()
    assert (Service.dispatched, Service.scheduled) == (1, 1)
    loop.run_once()                                   # both intervals not over yet
    assert (Service.dispatched, Service.scheduled) == (1, 1)
