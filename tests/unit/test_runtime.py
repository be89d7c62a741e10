"""shared/platform/runtime.py: the lazy per-process value, the capped back-off of every retry loop, the
worker's run/stop wrapper."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from shared.platform.runtime import Backoff, Lazy, Worker, backoff_delay


def test_lazy_builds_once_on_first_call_even_from_many_threads():
    built = []
    gate = threading.Event()

    def build():
        gate.wait(1)
        built.append(1)
        return object()

    lazy = Lazy(build)
    assert built == []                                  # nothing at construction
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(lazy())) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(built) == 1 and len({id(v) for v in seen}) == 1


def test_backoff_doubles_from_half_a_second_up_to_thirty_and_resets():
    b = Backoff()
    assert b.delay == 0.5
    assert [b.failed() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    b.reset()
    assert b.delay == 0.5 and b.failed() == 0.5
    assert [backoff_delay(n, 60, 600) for n in (1, 2, 3, 4, 5)] == [60, 120, 240, 480, 600]
    assert backoff_delay(10_000) == 30.0                # no overflow after a long outage
    with pytest.raises(ValueError, match="at least 1"):
        backoff_delay(0)


def test_worker_closes_its_publisher_when_the_loop_ends_even_on_error():
    class Loop:
        def __init__(self, fail):
            self.fail, self.stopped = fail, False

        def run(self):
            if self.fail:
                raise RuntimeError("boom")

        def stop(self):
            self.stopped = True

    class Publisher:
        closed = False

        def close(self):
            self.closed = True

    @dataclass
    class W(Worker):
        loop: Loop
        publisher: Publisher

    w = W(Loop(fail=True), Publisher())
    with pytest.raises(RuntimeError):
        w.run()
    assert w.publisher.closed
    w.stop()
    assert w.loop.stopped
