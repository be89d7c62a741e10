"""The network guard of tests/unit: a unit test may talk only to a loopback listener that this
process opened (an in-process SMTP, HTTP or WSGI server); everything else is refused before the
operating system sees it.

- a connection (TCP or UDP `connect`, `sendto`) to an address outside the loopback range, or a
  name lookup of anything but `localhost` / a numeric address, raises `NetworkBlocked` and is
  recorded: the test then fails at teardown even if the code under test swallowed the error;
- a connection to a loopback port that no socket of this process listens on (a shared Kafka or
  FerretDB, a deliberately dead port) raises `NetworkBlocked`, a `ConnectionRefusedError`, which
  is what such a port answers anyway: "the store is down" tests keep working, and a test that
  needs a real server fails instead of quietly using one.

Unix sockets are not network and are left alone.
"""
from __future__ import annotations

import ipaddress
from collections import Counter
import socket
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


class NetworkBlocked(ConnectionRefusedError):
    """A unit test tried to reach the network (or a loopback port it did not open)."""


def _ip(host: str):
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def is_loopback(host) -> bool:
    """True for loopback addresses and the local names; any other name counts as remote (it is
    not looked up)."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOCAL_NAMES:
        return True
    ip = _ip(host)
    if ip is None:
        return False
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_lookup_allowed(host) -> bool:
    """Name lookups that stay on this machine: local names and numeric addresses of any kind (a
    numeric address is not sent to a resolver; connecting to it is judged separately)."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    return is_loopback(host) or _ip(str(host)) is not None


@dataclass
class Guard:
    """`install()` wraps the socket functions once; they check only while `active` (during a unit
    test), but record listeners always, so that a server started by a module- or session-scoped
    fixture counts as this process's own. `listening` maps a port to the socket of this process
    that listens on it (weakly: a closed or collected socket no longer counts)."""
    active: bool = False
    folders: set = field(default_factory=set)       # test folders under the guard
    listening: dict[int, weakref.ref] = field(default_factory=dict)
    remote_attempts: list[str] = field(default_factory=list)
    # loopback ports refused, with counts: a "store is down" test, or a test that wanted a server
    refused_local: Counter = field(default_factory=Counter)
    _saved: dict[str, object] = field(default_factory=dict)

    def owns(self, port: int) -> bool:
        ref = self.listening.get(port)
        sock = ref() if ref is not None else None
        return sock is not None and sock.fileno() != -1

    def check(self, sock, address) -> None:
        """Raise NetworkBlocked unless `address` is a loopback listener of this process."""
        if not self.active:
            return
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
            return
        host, port = address[0], address[1]
        if not is_loopback(host):
            what = f"{host}:{port}"
            self.remote_attempts.append(what)
            raise NetworkBlocked(f"tests/unit need no network: connection to {what} refused by the "
                                 f"network guard (tests/helpers/netguard.py); a test that needs a "
                                 f"server belongs in tests/integration")
        if not self.owns(port):
            self.refused_local[f"{host}:{port}"] += 1
            raise NetworkBlocked(f"tests/unit: connection to {host}:{port} refused by the network "
                                 f"guard: nothing this test process opened listens there (a test "
                                 f"that needs Kafka or MongoDB belongs in tests/integration)")

    def install(self) -> None:
        if self._saved:
            return
        guard, cls = self, socket.socket
        self._saved = {"connect": cls.connect, "connect_ex": cls.connect_ex, "sendto": cls.sendto,
                       "listen": cls.listen, "getaddrinfo": socket.getaddrinfo}
        real = self._saved

        def connect(sock, address):
            guard.check(sock, address)
            return real["connect"](sock, address)

        def connect_ex(sock, address):
            guard.check(sock, address)
            return real["connect_ex"](sock, address)

        def sendto(sock, data, *args):
            guard.check(sock, args[-1])
            return real["sendto"](sock, data, *args)

        def listen(sock, *args):
            result = real["listen"](sock, *args)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                guard.listening[sock.getsockname()[1]] = weakref.ref(sock)
            return result

        def getaddrinfo(host, *args, **kwargs):
            if guard.active and not is_lookup_allowed(host):
                guard.remote_attempts.append(f"name lookup of {host!r}")
                raise NetworkBlocked(f"tests/unit need no network: name lookup of {host!r} refused "
                                     f"by the network guard (tests/helpers/netguard.py)")
            return real["getaddrinfo"](host, *args, **kwargs)

        cls.connect, cls.connect_ex, cls.sendto, cls.listen = connect, connect_ex, sendto, listen
        socket.getaddrinfo = getaddrinfo

    def uninstall(self) -> None:
        if not self._saved:
            return
        cls = socket.socket
        cls.connect, cls.connect_ex = self._saved["connect"], self._saved["connect_ex"]
        cls.sendto, cls.listen = self._saved["sendto"], self._saved["listen"]
        socket.getaddrinfo = self._saved["getaddrinfo"]
        self._saved = {}

    def guards(self, item) -> bool:
        """True when `item` (a test) lies in a folder under the guard."""
        path = Path(str(item.fspath)).resolve()
        return any(folder == path or folder in path.parents for folder in self.folders)

    def take_remote_attempts(self) -> list[str]:
        attempts, self.remote_attempts = self.remote_attempts, []
        return attempts


# the one guard of the test process
GUARD = Guard()


def guard_folder(conftest_file: str) -> None:
    """Put the tests of the folder of `conftest_file` under the guard; that conftest.py also
    imports the two hooks below. The guard is on from the setup of a test there to the teardown of
    the last one of a row (fixtures and threads a test left behind included), and installed now, so
    that listeners opened by any fixture are known."""
    GUARD.folders.add(Path(conftest_file).resolve().parent)
    GUARD.install()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    GUARD.active = True
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        result = yield
    finally:
        # off only before a test outside the guarded folders (or at the end)
        GUARD.active = nextitem is not None and GUARD.guards(nextitem)
    attempts = GUARD.take_remote_attempts()
    if attempts:
        pytest.fail(f"{item.nodeid}: tests here need no network, but this test tried to reach: "
                    + ", ".join(sorted(set(attempts))) + " (a test that needs a server belongs "
                    "in tests/integration)", pytrace=False)
    return result
