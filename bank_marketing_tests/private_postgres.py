"""A PostgreSQL server of a test's own, to stop and restart without touching the machine's.

Tests that take the database away (the service must keep answering while it is down) cannot stop
the machine's PostgreSQL: other tests run on it at the same time. This starts a throwaway cluster
from the machine's PostgreSQL binaries on a free port, as the ``postgres`` user when the tests
run as root (PostgreSQL refuses to run as root), and stops it by its own data directory's
postmaster PID.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from bank_marketing_tests.conftest import free_port

BINARIES = Path("/usr/lib/postgresql")


def binaries() -> Path | None:
    """The newest PostgreSQL server binaries on this machine, if any."""
    if not BINARIES.is_dir():
        return None
    versions = sorted(
        (p for p in BINARIES.iterdir() if (p / "bin" / "initdb").exists()),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
    )
    return versions[-1] / "bin" if versions else None


# Ports for private servers: below the kernel's ephemeral range (32768 up), where free_port()
# finds the ports the tests give Ray Serve, and above Ray's worker ports (10002-19999), so a
# private server never takes a port another test process has just been handed.
PORTS = range(20000, 30000)


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only (``port``)."""

    def __init__(self, port: int | None = None) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError(f"no PostgreSQL server binaries under {BINARIES}")
        self.bin_dir = bin_dir
        self.port = port or free_port(PORTS)
        self._chosen_port = port is None
        self.folder = Path(tempfile.mkdtemp(prefix="bank-marketing-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server; on a port of its own choosing, another one if that one was taken."""
        for attempt in range(5):
            options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                          "-w", "-t", str(int(timeout_s)), "start")  # fmt: skip
                break
            except RuntimeError as error:
                if not (self._chosen_port and "could not bind" in str(error) and attempt < 4):
                    raise
                self.port = free_port(PORTS)
        self.wait_until_ready(timeout_s)

    def stop(self) -> None:
        """Stop at once (fast shutdown: open connections are cut), as an outage would."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def wait_until_ready(self, timeout_s: float) -> None:
        engine = sa.create_engine(self.url)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    with engine.connect() as connection:
                        connection.execute(sa.text("select 1"))
                    return
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            engine.dispose()

    def remove(self) -> None:
        if self.running():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed (exit {done.returncode}): {done.stderr or done.stdout}\n{log}"
            )


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private cluster, stopped and removed afterwards whatever happened."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()
