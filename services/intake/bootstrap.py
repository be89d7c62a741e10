"""The intake service's wiring: its configuration (`shared.platform.config.Settings`), and the MongoDB
client, Kafka producer, catalog and directory it builds on first use, in each gunicorn worker
after the fork (`Resources`). `app.create_app` builds the HTTP API on it."""
from __future__ import annotations

import logging
import threading

from shared.platform.config import Settings
from shared.platform.mongo import mongo_client

log = logging.getLogger("motcua.intake")


class Resources:
    """Connections built lazily (after fork) and closed on shutdown. Thread-safe."""

    def __init__(self, settings: Settings, *, publisher=None, db=None, catalog=None, directory=None,
                 rulesets=None):
        self.settings = settings
        self._publisher = publisher
        self._owns_publisher = publisher is None
        self._db = db
        self._client = None
        self._catalog = catalog
        self._directory = directory
        self._rulesets = rulesets
        self._engine_ctx = None
        self._lock = threading.Lock()

    def db(self):
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._client = mongo_client(self.settings, appname="motcua-intake", for_requests=True)
                    self._db = self._client[self.settings.mongo_db]
        return self._db

    def publisher(self):
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    from shared.platform.messaging import KafkaPublisher
                    ms = int(self.settings.intake_publish_timeout_s * 1000)
                    self._publisher = KafkaPublisher(
                        self.settings.kafka_bootstrap_servers, client_id="motcua-intake",
                        max_block_ms=ms, request_timeout_ms=ms, delivery_timeout_ms=ms + 1000,
                        bootstrap_timeout_ms=ms,
                        retry_backoff_ms=100, reconnect_backoff_max_ms=1000,
                        # kafka-python computes each record batch's CRC32C in pure Python: on
                        # gzip-compressed batches (zlib, in C) it has far fewer bytes to cover;
                        # consumers decompress transparently
                        compression_type="gzip",
                        metrics_enabled=False)     # kafka-python's own sensors: CPU per send, never read
        return self._publisher

    def discard_publisher(self, failed) -> None:
        """Drop a producer that failed to publish: the next request builds a fresh one.
        A kafka-python producer can stay stuck after the broker was killed and restarted (every
        send times out in its accumulator; seen in test_intake_broker_outage.py), so a failed
        one is not trusted again. Injected publishers (tests) are kept."""
        if not self._owns_publisher:
            return
        with self._lock:
            if self._publisher is not failed:      # another thread replaced it already
                return
            self._publisher = None
        threading.Thread(target=_close_quietly, args=(failed,), daemon=True,
                         name="intake-discard-producer").start()

    def catalog(self):
        """The catalog imported into MongoDB (`motcua catalog import`), else CATALOG_FILE; read
        once per worker. A MongoDB error propagates (a 503 for the request) and is retried."""
        if self._catalog is None:
            from shared.platform.refdata import CatalogStore
            self._catalog = CatalogStore.current_or_file(self.settings.catalog_file, self.db())
        return self._catalog

    def engine_ctx(self):
        """The legal engine's context over the same catalog and directory (and the shipped rule
        sets, or the injected ones): what the sla service judges with."""
        if self._engine_ctx is None:
            from shared.domain.engine import EngineContext, default_rulesets
            from shared.domain.workcal import calendar_for
            self._engine_ctx = EngineContext(catalog=self.catalog(), calendars=calendar_for,
                                             rulesets=self._rulesets or default_rulesets(),
                                             directory=self.directory())
        return self._engine_ctx

    def directory(self):
        """The directory imported into MongoDB (`motcua directory import`), else DIRECTORY_FILE."""
        if self._directory is None:
            from shared.platform.refdata import DirectoryStore
            self._directory = DirectoryStore.current_or_file(self.settings.directory_file, self.db())
        return self._directory

    def close(self) -> None:
        """Flush and close the producer (pending sends are delivered), close MongoDB."""
        with self._lock:
            if self._publisher is not None and self._owns_publisher:
                try:
                    self._publisher.close(timeout=self.settings.intake_publish_timeout_s)
                except Exception:  # noqa: BLE001
                    log.exception("closing the Kafka producer failed")
                self._publisher = None
            if self._client is not None:
                self._client.close()
                self._client, self._db = None, None


def _close_quietly(publisher) -> None:
    try:
        publisher.close(timeout=0)      # pending sends fail: their requests got (or get) a 503
    except Exception:  # noqa: BLE001
        log.warning("closing a failed Kafka producer raised", exc_info=True)
