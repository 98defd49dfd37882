"""Host networking the cluster changes, and how `cluster-down` puts it back.

- sysctls: IP forwarding (pods reach Services and each other through the host), and the kernel tunables
  the kubelet sets at start. Their values before `cluster-up` are recorded once and restored.
- iptables: FORWARD must accept the pod network (a host whose FORWARD policy is DROP, as dockerd leaves
  it, would time out every pod -> Service packet). Our rules carry COMMENT; kube-proxy's and the CNI
  plugins' live in chains named KUBE-* and CNI-*. Down removes exactly those, in iptables and ip6tables.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

from localcluster.topology import Topology

COMMENT = "celery-stack-local-cluster"
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
#: chains created by kube-proxy, the kubelet and the CNI plugins (bridge ipMasq, portmap)
OWNED_CHAIN_PREFIXES = ("KUBE-", "CNI-")
TABLES = ("filter", "nat", "mangle")


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def record_sysctls(record: Path) -> None:
    """Write the current values once (a second `cluster-up` must not record the cluster's own values)."""
    if record.exists():
        return
    values = {name: value for name in SYSCTLS if (value := _read_sysctl(name)) is not None}
    record.write_text(json.dumps(values, indent=2))


def restore_sysctls(record: Path) -> list[str]:
    """Put back what record_sysctls saw; returns the names changed."""
    if not record.is_file():
        return []
    changed = []
    for name, value in json.loads(record.read_text()).items():
        if _read_sysctl(name) != value:
            try:
                Path("/proc/sys", name).write_text(value + "\n")
                changed.append(name)
            except OSError:
                pass
    return changed


def enable_forwarding() -> None:
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def _iptables(binary: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, "-w", "5", *args], capture_output=True, text=True, check=check)


def _save(binary: str, table: str) -> str:
    if shutil.which(f"{binary}-save") is None:  # not installed (a fresh machine): no rule of ours can exist
        return ""
    result = subprocess.run([f"{binary}-save", "-t", table], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


def _forward_rules(topology: Topology) -> list[list[str]]:
    return [
        ["-s", topology.pod_cidr, "-m", "comment", "--comment", COMMENT, "-j", "ACCEPT"],
        ["-d", topology.pod_cidr, "-m", "comment", "--comment", COMMENT, "-j", "ACCEPT"],
    ]


def accept_pod_forwarding(topology: Topology) -> None:
    """Insert (once) FORWARD rules accepting the pod network in both directions."""
    for rule in _forward_rules(topology):
        if _iptables("iptables", "-C", "FORWARD", *rule, check=False).returncode != 0:
            _iptables("iptables", "-I", "FORWARD", "1", *rule)


def _owned_chain(name: str) -> bool:
    return name.startswith(OWNED_CHAIN_PREFIXES)


def plan_cleanup(saved: str) -> tuple[list[list[str]], list[str]]:
    """From one table's iptables-save text: the rules to delete (as `-D` arguments) and the chains to drop.

    Our commented rules and every rule of a built-in or foreign chain that jumps to an owned chain are
    deleted one by one; the owned chains themselves are flushed and removed whole.
    """
    chains = [line[1:].split()[0] for line in saved.splitlines() if line.startswith(":")]
    deletes = []
    for line in saved.splitlines():
        if not line.startswith("-A "):
            continue
        words = shlex.split(line)
        chain = words[1]
        target = words[words.index("-j") + 1] if "-j" in words else ""
        if not _owned_chain(chain) and (COMMENT in words or _owned_chain(target)):
            deletes.append(["-D", *words[1:]])
    return deletes, [chain for chain in chains if _owned_chain(chain)]


def cleanup_rules(binary: str) -> int:
    """Remove what plan_cleanup finds in every table; returns the number of rules and chains removed."""
    removed = 0
    for table in TABLES:
        deletes, owned = plan_cleanup(_save(binary, table))
        for delete in deletes:
            removed += _iptables(binary, "-t", table, *delete, check=False).returncode == 0
        for chain in owned:  # flush all first: owned chains jump to each other
            _iptables(binary, "-t", table, "-F", chain, check=False)
        for chain in owned:
            removed += _iptables(binary, "-t", table, "-X", chain, check=False).returncode == 0
    return removed


def leftover_rules() -> list[str]:
    """Rules or chains of ours still present (what `cluster-down` checks it removed)."""
    left = []
    for binary in ("iptables", "ip6tables"):
        for table in TABLES:
            saved = _save(binary, table)
            left += [f"{binary} -t {table}: {line}" for line in saved.splitlines()
                     if COMMENT in line or any(f" {p}" in line or line.startswith((f":{p}", f"-A {p}"))
                                               for p in OWNED_CHAIN_PREFIXES)]
    return left


def delete_link(name: str) -> bool:
    if subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0:
        return False
    subprocess.run(["ip", "link", "delete", name], capture_output=True)
    return True


#: Prefixes of the ipsets kube-router makes (the NetworkPolicy agent): its pod and policy sets.
OWNED_IPSET_PREFIXES = ("KUBE-", "kube-router-")


def _owned_ipsets() -> list[str]:
    if shutil.which("ipset") is None:  # not installed: none of ours can exist
        return []
    result = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True)
    if result.returncode != 0:
        return []
    return [name for name in result.stdout.split() if name.startswith(OWNED_IPSET_PREFIXES)]


def cleanup_ipsets() -> int:
    """Destroy kube-router's ipsets (after the iptables rules that referred to them are gone)."""
    sets = _owned_ipsets()
    for name in sets:
        subprocess.run(["ipset", "destroy", name], capture_output=True)
    return len(sets)


def leftover_ipsets() -> list[str]:
    return [f"ipset {name}" for name in _owned_ipsets()]


#: Priority of the routing rule below (before the main table's 32766).
UNROUTED_SERVICE_RULE_PREF = 1000


def _unrouted_service_rule(topology: Topology) -> list[str]:
    return ["to", topology.service_cidr, "iif", topology.bridge, "pref", str(UNROUTED_SERVICE_RULE_PREF), "unreachable"]


def refuse_unrouted_service_traffic(topology: Topology) -> None:
    """A pod's packet still addressed to a Service IP when it is routed had no endpoint to be DNATed to (kube-proxy
    rewrites it before routing otherwise). kube-proxy's REJECT for such Services never runs: kube-router's FORWARD
    chain, always first, ACCEPTs pod traffic that passed its policies. Routed by the default route it would leave
    the machine (the VM's gateway answers it, with an HTTP 400); this rule answers "unreachable" at once instead.
    Traffic of the host itself is not routed through it (``iif`` the pods' bridge)."""
    rule = _unrouted_service_rule(topology)
    if not _ip_rule_present():
        subprocess.run(["ip", "rule", "add", *rule], capture_output=True, text=True, check=True)


def _ip_rule_present() -> bool:
    listed = subprocess.run(["ip", "rule", "list", "pref", str(UNROUTED_SERVICE_RULE_PREF)], capture_output=True,
                            text=True)
    return listed.returncode == 0 and bool(listed.stdout.strip())


def cleanup_ip_rules() -> int:
    """Delete the routing rule of ``refuse_unrouted_service_traffic``; returns how many were removed."""
    removed = 0
    while _ip_rule_present():
        if subprocess.run(["ip", "rule", "del", "pref", str(UNROUTED_SERVICE_RULE_PREF)],
                          capture_output=True).returncode != 0:
            break
        removed += 1
    return removed


def leftover_ip_rules() -> list[str]:
    return [f"ip rule pref {UNROUTED_SERVICE_RULE_PREF}"] if _ip_rule_present() else []
