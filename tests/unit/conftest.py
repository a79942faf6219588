"""Unit tests stay in-process: no PostgreSQL, no remote hosts, no server processes.

An autouse guard (after Ray Serve's, which makes ``ray.init`` raise in its unit tests)
fails a unit test at once, with where the test belongs instead, if it opens a TCP
connection to a host that is not loopback or to PostgreSQL's port, connects with psycopg,
spawns ``zeroserve up`` or runs uvicorn. Suites that need those live in
``tests/integration/``.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

POSTGRES_PORT = 5432
MOVE = "; unit tests run in-process: move this test to tests/integration/"


def _refuse(what: str) -> None:
    pytest.fail(f"a unit test {what}{MOVE}", pytrace=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that needs DNS: not in-process


def _check_address(address: Any) -> None:
    if isinstance(address, tuple) and len(address) >= 2:  # AF_INET / AF_INET6
        host, port = str(address[0]), int(address[1])
        if port == POSTGRES_PORT:
            _refuse(f"connected to PostgreSQL at {host}:{port}")
        if not _is_loopback(host):
            _refuse(f"connected to {host}:{port}, which is not loopback")


def _starts_a_server(args: Any) -> bool:
    argv = [str(a) for a in args] if isinstance(args, list | tuple) else str(args).split()
    names = {a.rsplit("/", 1)[-1] for a in argv}
    return "up" in argv and bool(names & {"zeroserve", "zeroserve.cli.main"})


@pytest.fixture(autouse=True)
def _in_process_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        _check_address(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check_address(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)

    real_popen_init = subprocess.Popen.__init__

    def popen_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        if _starts_a_server(args):
            _refuse(f"started a server ({args!r})")
        real_popen_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen_init)

    try:  # libpq opens its own sockets, out of the socket module's sight
        import psycopg

        def pg_connect(*args: Any, **kwargs: Any) -> Any:
            _refuse("connected to PostgreSQL (psycopg)")

        monkeypatch.setattr(psycopg, "connect", pg_connect)
        monkeypatch.setattr(psycopg.Connection, "connect", pg_connect)
        monkeypatch.setattr(psycopg.AsyncConnection, "connect", pg_connect)
    except ImportError:
        pass

    try:
        import uvicorn

        def serve(*args: Any, **kwargs: Any) -> Any:
            _refuse("started an HTTP server (uvicorn)")

        monkeypatch.setattr(uvicorn, "run", serve)
        monkeypatch.setattr(uvicorn.Server, "serve", serve)
    except ImportError:
        pass
    yield


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """Session fixtures run before the guard; this one is refused outright."""
    _refuse("asked for the PostgreSQL database (postgres_url)")
    raise AssertionError("unreachable")
