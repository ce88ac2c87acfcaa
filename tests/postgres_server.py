"""A throwaway PostgreSQL server for tests: `initdb` in a temporary data directory, `postgres`
listening on 127.0.0.1 at a free port, stopped and deleted afterwards.

Use the `postgres_server` fixture (import it into a test module: `from postgres_server import
postgres_server`) and ask it for a fresh database per test:

    def test_x(postgres_server):
        url = postgres_server.create_database("mystudy")  # postgresql+psycopg2://postgres@127.0.0.1:PORT/mystudy

The binaries (initdb, pg_ctl, postgres) are looked up on PATH, then under Debian's
/usr/lib/postgresql/<version>/bin (the `postgresql` package does not put them on PATH; `.ci/run`
installs it). Tests skip, saying why, only when PostgreSQL is not installed (or, as root, there
is no `postgres` user to run it as); any other failure to start the server fails the test.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import pytest

BINARIES = ("initdb", "pg_ctl", "postgres")
SKIP_REASON = (
    "PostgreSQL is not installed: no initdb/pg_ctl/postgres on PATH or under /usr/lib/postgresql/*/bin "
    "(install Debian's `postgresql` package: `apt-get install -y postgresql`; .ci/run does)"
)


def find_postgres_bin() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: PATH first, then the newest
    /usr/lib/postgresql/<version>/bin; None when PostgreSQL is not installed."""
    on_path = [shutil.which(name) for name in BINARIES]
    if all(on_path):
        return Path(on_path[0]).resolve().parent  # Debian links /usr/local/bin/initdb -> .../15/bin/initdb
    candidates = sorted(glob("/usr/lib/postgresql/*/bin"), key=lambda d: _version_key(Path(d).parent.name))
    for directory in reversed(candidates):
        if all((Path(directory) / name).exists() for name in BINARIES):
            return Path(directory)
    return None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server: superuser `postgres`, trust authentication, 127.0.0.1 only."""

    bin_dir: Path
    data_dir: Path  # the cluster; also holds the Unix socket and server.log
    port: int
    run_as: list[str]  # ["runuser", "-u", "postgres", "--"] as root (initdb refuses root), [] otherwise

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for `database` on this server. It names the psycopg2 driver: SQLAlchemy
        2.1 maps a bare postgresql:// to psycopg 3, which this project does not install."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its URL."""
        import psycopg2  # the driver Optuna's and MLflow's SQLAlchemy stores use for postgresql://

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args],
            capture_output=True, text=True, check=check, timeout=60,
        )

    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the server now (immediate shutdown: the data is thrown away anyway)."""
        self._pg_ctl("-m", "immediate", "-w", "stop", check=False)


def start_postgres(base_dir: Path) -> PostgresServer:
    """initdb a cluster under `base_dir` and start it on a free 127.0.0.1 port.

    Skips the calling test when PostgreSQL is not installed; raises with the server log when it
    is installed but does not start."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        pytest.skip(SKIP_REASON)
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root: run them as the postgres user
        try:
            import pwd

            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(f"PostgreSQL found in {bin_dir}, but running as root with no `postgres` user to run it as")
        os.chown(base_dir, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data_dir = base_dir / "data"
    user = "postgres" if run_as else getpass.getuser()
    init = subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
         "--no-sync", "-E", "UTF8", "--locale=C"],
        capture_output=True, text=True, timeout=120,
    )
    if init.returncode != 0:
        raise RuntimeError(f"initdb as {user} failed in {data_dir}:\n{init.stdout}\n{init.stderr}")
    last_error = ""
    for _ in range(5):  # another process may grab the free port between probing and binding
        server = PostgresServer(bin_dir=bin_dir, data_dir=data_dir, port=free_port(), run_as=run_as)
        options = (f"-h 127.0.0.1 -p {server.port} -k {data_dir} -c fsync=off -c full_page_writes=off "
                   f"-c max_connections=100")
        started = server._pg_ctl("-l", str(data_dir / "server.log"), "-o", options, "-w", "-t", "60", "start",
                                 check=False)
        if started.returncode == 0:
            return server
        last_error = f"{started.stdout}\n{started.stderr}\n{server.log()[-3000:]}"
        server.stop()
        time.sleep(0.5)
    raise RuntimeError(f"PostgreSQL in {bin_dir} did not start on 127.0.0.1:\n{last_error}")


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the whole test session (one `initdb` costs a few seconds); each
    test should `create_database` its own database."""
    base_dir = Path(tempfile.mkdtemp(prefix="ganaug-postgres-"))  # not under pytest's 0700 root-owned tmp
    server = None
    try:
        server = start_postgres(base_dir)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
