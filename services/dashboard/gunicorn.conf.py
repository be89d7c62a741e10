"""gunicorn settings of the dashboard:

    gunicorn -c services/dashboard/gunicorn.conf.py 'services.dashboard.app:create_app()'

One worker by default: each worker holds its own in-memory view of every dossier (and its own
Kafka feed), so more workers cost memory and store scans at start, not speed; threads serve
concurrent readers. `timeout` allows the first request of a worker to wait for the view's
initial load.
"""
import os

bind = os.environ.get("DASHBOARD_BIND", "127.0.0.1:8004")
workers = int(os.environ.get("DASHBOARD_WORKERS", "1"))
threads = int(os.environ.get("DASHBOARD_THREADS", "4"))
worker_class = "gthread"
timeout = 180
graceful_timeout = 10
