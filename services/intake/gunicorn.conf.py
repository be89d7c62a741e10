"""gunicorn settings of intake:

    gunicorn -c services/intake/gunicorn.conf.py 'services.intake.app:create_app()'

- `workers` (INTAKE_WORKERS, default 2) processes × `threads` (INTAKE_THREADS, default 8) gthreads.
  A request spends most of its time waiting for Kafka's ack and MongoDB, so threads are cheap
  concurrency; one Kafka producer per worker is shared by its threads (thread-safe).
- The app is built in each worker after the fork (no preload): the producer and the MongoDB
  client are created lazily on first use there, never inherited across a fork.
- On shutdown (`worker_exit`) the worker flushes and closes its producer, so nothing sent is lost.
- Metrics across workers: set PROMETHEUS_MULTIPROC_DIR to an empty writable directory; this file
  wipes a dead worker's files (`child_exit`).
- `timeout` stays above INTAKE_PUBLISH_TIMEOUT_S × 2 (metadata wait + ack wait).
"""
import os

bind = os.environ.get("INTAKE_BIND", "127.0.0.1:8001")
workers = int(os.environ.get("INTAKE_WORKERS", "2"))
threads = int(os.environ.get("INTAKE_THREADS", "8"))
worker_class = "gthread"
preload_app = False
timeout = 60
graceful_timeout = 15
keepalive = 5
accesslog = None           # the app logs one JSON line per request itself
errorlog = "-"


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    ext = getattr(app, "extensions", {}).get("intake") if app is not None else None
    if ext:
        ext["resources"].close()


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)
