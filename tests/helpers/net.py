"""Network helpers of the tests."""
import socket


def closed_port() -> int:
    """A local TCP port nothing listens on: a real refused connection."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]      # closed again when the socket is
