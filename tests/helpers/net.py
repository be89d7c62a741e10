"""Network helpers of the tests."""
import socket


def closed_port() -> int:
    """A local TCP port nothing listens on: a real refused connection."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]      # closed again when the socket is


def delete_topics(bootstrap: str, names) -> None:
    """Remove test topics, best effort: their names are unique per test, so a leftover harms
    nothing but the broker's tidiness."""
    names = list(names)
    if not names:
        return
    from kafka.admin import KafkaAdminClient
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="motcua-tests")
        try:
            admin.delete_topics(names)
        finally:
            admin.close()
    except Exception:   # noqa: BLE001 - clean-up only
        pass


class WsgiServer:
    """A WSGI app behind a real HTTP server on 127.0.0.1 (a free port), served by a thread."""

    def __init__(self, app):
        import threading

        from werkzeug.serving import make_server
        self.httpd = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.thread.join(10)
