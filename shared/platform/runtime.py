"""Process runtime shared by the services: values built once per process, the worker's run/stop
wrapper and its signal handling, and the capped back-off of every retry loop."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

# the back-off of every retry loop: 0.5 s after the first failure, doubled up to 30 s
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


class Lazy(Generic[T]):
    """A value built on first call, once per process: a gunicorn worker builds its clients after
    the fork, never at import. Thread-safe."""

    def __init__(self, build: Callable[[], T]):
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def __call__(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
        return self._value


def backoff_delay(failures: int, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_MAX_S) -> float:
    """The wait after `failures` (≥ 1) failures in a row: `first`, doubled each time, at most `cap`."""
    if failures < 1:
        raise ValueError(f"failures must be at least 1, got {failures}")
    return min(first * 2 ** min(failures - 1, 64), cap)


class Backoff:
    """A retry loop's back-off: `delay` is the wait after the next failure; `failed()` returns it
    and doubles the next one (up to `cap`); `reset()` after a success."""

    def __init__(self, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_MAX_S):
        self.first, self.cap = first, cap
        self._failures = 0

    @property
    def delay(self) -> float:
        return backoff_delay(self._failures + 1, self.first, self.cap)

    def failed(self) -> float:
        """Count a failure; the seconds to wait before trying again."""
        self._failures += 1
        return backoff_delay(self._failures, self.first, self.cap)

    def reset(self) -> None:
        self._failures = 0


class Worker:
    """A consumer loop and the publisher it sends with: `run()` until `stop()` (from another
    thread or a signal), then the publisher is flushed and closed. Services subclass it as
    dataclasses naming their parts (`loop` and `publisher` at least)."""

    loop: Any
    publisher: Any

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.publisher.close()

    def stop(self) -> None:
        self.loop.stop()


def serve_until_signalled(worker, *, name: str, fields: dict, metrics_port: int | None = None,
                          registry=None) -> int:
    """Run `worker` (with .run() and .stop()) until SIGTERM/SIGINT: the body of a
    `python -m services.<name> worker` command. With `metrics_port`, Prometheus metrics of
    `registry` are served on METRICS_BIND (127.0.0.1; a container sets 0.0.0.0):metrics_port."""
    import signal

    if metrics_port:
        from prometheus_client import start_http_server

        from shared.platform.config import env
        start_http_server(metrics_port, addr=env("METRICS_BIND"), registry=registry)
    worker_log = logging.getLogger(f"motcua.{name}.worker")

    def _stop(signum, frame):
        worker_log.info("stopping", extra={"fields": {"signal": signum}})
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker_log.info(f"{name} worker started", extra={"fields": fields})
    worker.run()
    return 0
