"""The guard in tests/unit/conftest.py fails unit tests that leave the process."""

from __future__ import annotations

import socket
import subprocess
import sys

import psycopg
import pytest
import uvicorn

Refused = pytest.fail.Exception


def test_postgres_port_is_refused_even_on_loopback() -> None:
    with socket.socket() as sock, pytest.raises(Refused, match=r"PostgreSQL at 127\.0\.0\.1:5432"):
        sock.connect(("127.0.0.1", 5432))


def test_remote_hosts_are_refused() -> None:
    with (
        socket.socket() as sock,
        pytest.raises(Refused, match=r"10\.1\.2\.3:80, which is not loop"),
    ):
        sock.connect_ex(("10.1.2.3", 80))


def test_psycopg_is_refused() -> None:
    with pytest.raises(Refused, match="move this test to tests/integration/"):
        psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres")


def test_starting_a_server_is_refused() -> None:
    with pytest.raises(Refused, match="started a server"):
        subprocess.Popen([sys.executable, "-m", "zeroserve.cli.main", "up", "--port", "1"])
    with pytest.raises(Refused, match="uvicorn"):
        uvicorn.run("zeroserve.gateway.app:create_app")


def test_loopback_and_other_processes_are_allowed() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, socket.socket() as client:
        client.connect(server.getsockname())
    done = subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, check=True)
    assert done.stdout == b"ok\n"
