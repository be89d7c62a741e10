"""The network guard of tests/unit (tests/helpers/netguard.py, switched on by tests/unit/
conftest.py) and the YAML memo beside it. No test here sends anything off this machine: each
remote case first checks, without the network, that the guard refuses it."""
from __future__ import annotations

import socket
import threading
from datetime import date
from pathlib import Path

import pytest
import yaml

from helpers.netguard import GUARD, NetworkBlocked, is_lookup_allowed, is_loopback


def test_a_loopback_listener_the_test_opened_answers():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def echo():
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(16))
        th = threading.Thread(target=echo, daemon=True)
        th.start()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"ping")
            assert client.recv(16) == b"ping"
        th.join(5)


def test_a_loopback_port_nobody_here_listens_on_is_refused_by_the_guard():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]          # bound, not listening: not a server of this test
    with socket.socket() as client, pytest.raises(NetworkBlocked, match="tests/integration"):
        client.connect(("127.0.0.1", port))
    with socket.socket() as client, pytest.raises(NetworkBlocked):
        client.connect_ex(("localhost", 27017))
    assert GUARD.take_remote_attempts() == []   # a dead local port is not a network attempt


def test_a_closed_listener_no_longer_counts():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    assert GUARD.owns(port)
    server.close()
    assert not GUARD.owns(port)
    with socket.socket() as client, pytest.raises(NetworkBlocked):
        client.connect(("127.0.0.1", port))


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True), ("", True),
    ("::ffff:127.0.0.1", True),
    ("192.0.2.1", False), ("10.0.0.1", False), ("172.17.0.1", False), ("::ffff:192.0.2.1", False),
    ("2001:db8::1", False), ("0.0.0.0", False), ("example.org", False), ("kafka", False), (None, False),
])
def test_only_loopback_counts_as_local(host, loopback):
    assert is_loopback(host) is loopback
    if isinstance(host, str):
        assert is_loopback(host.encode()) is loopback      # socket addresses may be bytes


def test_lookups_of_names_other_than_localhost_are_refused():
    assert is_lookup_allowed("localhost") and is_lookup_allowed("127.0.0.1") and is_lookup_allowed(None)
    assert is_lookup_allowed("192.0.2.1")          # numeric: no resolver; the connect is judged
    assert not is_lookup_allowed("example.org") and not is_lookup_allowed("mongo")
    assert socket.getaddrinfo is not GUARD._saved["getaddrinfo"]     # the wrapper is installed
    with pytest.raises(NetworkBlocked, match="name lookup"):
        socket.getaddrinfo("kafka.example.invalid", 9092)
    assert GUARD.take_remote_attempts() == ["name lookup of 'kafka.example.invalid'"]


def test_a_remote_address_is_refused_before_the_system_sees_it_and_recorded():
    with socket.socket() as sock:
        # the decision first (nothing sent if it were wrong), then through socket.connect itself
        with pytest.raises(NetworkBlocked, match="need no network"):
            GUARD.check(sock, ("192.0.2.1", 9))
        assert socket.socket.connect is not GUARD._saved["connect"]
        with pytest.raises(NetworkBlocked):
            sock.connect(("192.0.2.1", 9))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(NetworkBlocked):
            GUARD.check(udp, ("192.0.2.1", 53))
        with pytest.raises(NetworkBlocked):
            udp.sendto(b"x", ("192.0.2.1", 53))
    # recorded so that the test fails at teardown even when the code under test swallows the
    # error; taken here so that this test itself passes
    assert GUARD.take_remote_attempts() == ["192.0.2.1:9"] * 2 + ["192.0.2.1:53"] * 2


def test_unix_sockets_are_not_network(tmp_path):
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(path)
        server.listen(1)
        client.connect(path)


def test_the_yaml_memo_hands_out_copies_and_never_memoises_errors(_yaml_memo):
    text = "- {a: [1, 2], b: 2024-11-05}\n"
    first = yaml.safe_load(text)
    first[0]["a"].append(3)                        # a caller that mutates what it loaded
    hits = _yaml_memo.hits
    again = yaml.safe_load(text)
    assert _yaml_memo.hits == hits + 1
    assert again == [{"a": [1, 2], "b": date(2024, 11, 5)}]
    again[0]["a"].clear()
    assert yaml.safe_load(text)[0]["a"] == [1, 2]
    for _ in range(2):
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load("a: [1, 2\n")


def test_the_guard_is_on_for_the_tests_of_guarded_folders_only(request):
    assert GUARD.active and GUARD.guards(request.node)

    class Elsewhere:
        fspath = str(Path(__file__).resolve().parents[1] / "integration" / "test_x.py")
    assert not GUARD.guards(Elsewhere())
