"""An embedded PostgreSQL: a real server in a data directory, for a setup-free start and for tests.

It uses the PostgreSQL server binaries already on the machine (`initdb`, `pg_ctl`, `postgres`). It
listens on a Unix socket in its own directory only (no TCP port to collide with), with trust auth:
the socket directory is mode 0700, so only its owner can connect. PostgreSQL refuses to run as
root, so under root the server runs as the `postgres` system user (or `nobody`).
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

DATABASE_NAME = "strategy_executor"
PORT = 5432  # only names the socket file; nothing listens on TCP


class EmbeddedError(Exception):
    """The embedded server could not be set up or started; the message says what to do."""


def default_data_dir() -> Path:
    # Root's home is not traversable by the unprivileged server user, so root gets a system path.
    if os.geteuid() == 0:
        return Path("/var/lib/strategy-executor")
    return Path(platformdirs.user_data_dir("strategy-executor"))


def find_bindir() -> Path:
    candidates: list[Path] = []
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(Path(which).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    candidates.extend(Path(p) for p in versioned)
    for bindir in candidates:
        if all((bindir / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise EmbeddedError(
        "no PostgreSQL server binaries (initdb, pg_ctl) found: install PostgreSQL "
        "(Debian: apt-get install postgresql) or set DATABASE_URL to an existing server"
    )


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise EmbeddedError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run the server")


def _can_enter(path: Path, user: pwd.struct_passwd) -> bool:
    st = os.stat(path)
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == user.pw_gid:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    # Server settings for throwaway clusters (tests): durability traded for speed.
    fast_unsafe: bool = False
    bindir: Path = field(default_factory=find_bindir)
    started_here: bool = False

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "postgresql.log"

    def url(self, database: str = DATABASE_NAME) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={PORT}"

    def psql_command(self) -> str:
        return f"psql -h {self.socket_dir} -p {PORT} -U postgres {DATABASE_NAME}"

    def start(self) -> str:
        """Initialise (first time), start (unless already running) and create the database; return its URL."""
        self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        if self._running():
            log.info("embedded PostgreSQL already running in %s", self.pgdata)
        else:
            self._pg_ctl_start()
            self.started_here = True
        self._create_database()
        return self.url()

    def stop(self) -> None:
        if self._running():
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"])

    def _prepare_dirs(self) -> None:
        user = _server_user()
        for path in (self.data_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if user is not None:
            # The server user needs to reach its data directory through every ancestor.
            for path in (self.data_dir, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
            if self.pgdata.exists():
                os.chown(self.pgdata, user.pw_uid, user.pw_gid)
            self.logfile.touch(exist_ok=True)
            os.chown(self.logfile, user.pw_uid, user.pw_gid)
            for ancestor in self.data_dir.resolve().parents:
                if not _can_enter(ancestor, user):
                    raise EmbeddedError(
                        f"the server user {user.pw_name!r} cannot enter {ancestor}: choose another DATA_DIR"
                    )

    def _initdb(self) -> None:
        log.info("initialising embedded PostgreSQL in %s", self.pgdata)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ]
        )

    def _pg_ctl_start(self) -> None:
        options = [
            f"-p {PORT}",
            f"-k {self.socket_dir}",
            "-c listen_addresses=''",
            "-c max_connections=200",
            "-c shared_buffers=64MB",
        ]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        log.info("starting embedded PostgreSQL (log: %s)", self.logfile)
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(self.logfile),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                "60",
                "start",
            ],
            what="start",
        )

    def _running(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        result = subprocess.run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True,
            user=self._user_name(),
            check=False,
        )
        return result.returncode == 0

    def _create_database(self) -> None:
        import psycopg

        conninfo = f"host={self.socket_dir} port={PORT} user=postgres dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    def _user_name(self) -> str | None:
        user = _server_user()
        return user.pw_name if user else None

    def _run(self, argv: list[str], what: str = "") -> None:
        result = subprocess.run(argv, capture_output=True, text=True, user=self._user_name(), check=False)
        if result.returncode != 0:
            tail = ""
            if what == "start" and self.logfile.exists():
                tail = " | log: " + " ".join(self.logfile.read_text(errors="replace").splitlines()[-5:])
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EmbeddedError(f"{Path(argv[0]).name} failed: {detail[-1] if detail else result.returncode}{tail}")
