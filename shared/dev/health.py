"""Health checks of a stack's parts: each asks the real protocol (a Kafka client, a MongoDB
ping, SMTP NOOP, HTTP), so "healthy" means a client would be served."""
from __future__ import annotations


def kafka_healthy(bootstrap: str, timeout: float = 3.0) -> bool:
    """A real client sees a broker and can list topics."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="motcua-health",
                             request_timeout_ms=int(timeout * 1000),
                             bootstrap_timeout_ms=int(timeout * 1000))
    try:
        admin.list_topics()
        return bool(admin.describe_cluster().get("brokers"))
    finally:
        admin.close()


def mongo_healthy(uri: str, timeout: float = 2.0) -> bool:
    from shared.platform.config import Settings
    from shared.platform.mongo import mongo_client

    client = mongo_client(Settings.from_env({}, mongo_uri=uri), timeout_ms=int(timeout * 1000))
    try:
        return client.admin.command("ping").get("ok") == 1
    finally:
        client.close()


def smtp_healthy(host: str, port: int, timeout: float = 2.0) -> bool:
    import smtplib

    with smtplib.SMTP(host, port, timeout=timeout) as smtp:
        return smtp.noop()[0] == 250


def http_healthy(url: str, timeout: float = 2.0, path: str = "/healthz") -> bool:
    """Any HTTP answer below 500 from `path` (even 404) proves the server is serving."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + path, timeout=timeout) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
