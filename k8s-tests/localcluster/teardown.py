"""`make cluster-down`: stop what cluster-up started and put the host back as it found it.

Order: the kubelet first (it would restart containers), then every container process (found by the
cgroups the kubelet made, and by the shims of our containerd), the container records (images stay in
the cache), the remaining host processes by PID file, mounts, network links, iptables rules and ipsets, sysctls,
host directories that did not exist before, and finally STATE. Safe to run twice, or after a failed up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from localcluster import configs, images, network, processes
from localcluster.cluster import HOST_PATHS_RECORD, SYSCTL_RECORD
from localcluster.components import COMPONENTS
from localcluster.paths import CACHE, STATE
from localcluster.progress import say, step
from localcluster.topology import Topology

CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"


def _kubepods_cgroups() -> list[Path]:
    """Every cgroup directory under kubepods, in every hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else ():
        top = hierarchy / KUBEPODS
        if top.is_dir():
            found += [Path(root) for root, _dirs, _files in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _pids_in(cgroups: list[Path]) -> set[int]:
    pids: set[int] = set()
    for cgroup in cgroups:
        try:
            pids |= {int(line) for line in (cgroup / "cgroup.procs").read_text().split()}
        except (OSError, ValueError):
            continue
    return pids


def _our_shims() -> set[int]:
    """containerd-shim processes serving our containerd (identified by its socket on their command line)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(configs.CONTAINERD_SOCKET).encode() in argv:
            pids.add(int(entry.name))
    return pids


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_containers() -> int:
    killed = 0
    for _ in range(50):
        pids = _pids_in(_kubepods_cgroups())
        if not pids:
            break
        killed += len(pids)
        _kill_all(pids)
        time.sleep(0.2)
    return killed


def remove_cgroups() -> int:
    removed = 0
    for cgroup in _kubepods_cgroups():
        try:
            cgroup.rmdir()
            removed += 1
        except OSError:
            pass
    return removed


def remove_containers() -> None:
    """Delete container records and their snapshots from the cached containerd root (images stay)."""
    ctr = ["ctr", "--address", str(configs.CONTAINERD_SOCKET), "-n", "k8s.io"]
    if subprocess.run([*ctr, "version"], capture_output=True).returncode != 0:
        return
    ids = subprocess.run([*ctr, "containers", "ls", "-q"], capture_output=True, text=True).stdout.split()
    for chunk in range(0, len(ids), 50):
        subprocess.run([*ctr, "containers", "rm", *ids[chunk:chunk + 50]], capture_output=True)
    snapshots = subprocess.run([*ctr, "snapshots", "ls"], capture_output=True, text=True).stdout.splitlines()[1:]
    active = [line.split()[0] for line in snapshots if line.split()[-1:] == ["Active"]]
    for key in active:
        subprocess.run([*ctr, "snapshots", "rm", key], capture_output=True)


def _mounts_under(prefixes: tuple[Path, ...]) -> list[str]:
    targets = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if any(target == str(p) or target.startswith(f"{p}/") for p in prefixes):
            targets.append(target)
    return sorted(set(targets), key=len, reverse=True)


def unmount_all() -> int:
    prefixes = (STATE, configs.CONTAINERD_ROOT, Path("/run/netns"), Path("/var/run/netns"))
    count = 0
    for _ in range(5):  # stacked mounts: repeat until nothing of ours is mounted
        targets = [t for t in _mounts_under(prefixes) if not t.startswith("/run/netns/") or "cni-" in t]
        if not targets:
            break
        for target in targets:
            if subprocess.run(["umount", "-l", target], capture_output=True).returncode == 0:
                count += 1
    return count


def remove_new_host_paths() -> list[str]:
    if not HOST_PATHS_RECORD.is_file():
        return []
    removed = []
    for path, existed in json.loads(HOST_PATHS_RECORD.read_text()).items():
        if not existed and os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def down() -> list[str]:
    """Tear everything down; returns what is still left (empty when the host is clean)."""
    topology = Topology()
    with step("stopping the kubelet and every container"):
        processes.stop_named("kubelet")
        killed = kill_containers()
        _kill_all(_our_shims())
        remove_containers()
        say(f"  {killed} container processes killed")
    with step("stopping the control plane, containerd and dockerd"):
        for component in reversed(COMPONENTS):
            processes.stop_named(component.name)
        images.stop_docker()
        for leftover in processes.all_tracked():
            processes.stop(leftover)
    with step("mounts, cgroups, links, iptables, sysctls"):
        say(f"  {unmount_all()} mounts, {remove_cgroups()} cgroups removed")
        network.delete_link(topology.bridge)
        removed = network.cleanup_rules("iptables") + network.cleanup_rules("ip6tables")
        say(f"  {removed} iptables rules and chains removed, {network.cleanup_ipsets()} ipsets destroyed, "
            f"{network.cleanup_ip_rules()} routing rules deleted")
        changed = network.restore_sysctls(SYSCTL_RECORD)
        if changed:
            say(f"  sysctls restored: {', '.join(changed)}")
        for path in remove_new_host_paths():
            say(f"  removed {path}")
    shutil.rmtree(STATE, ignore_errors=True)
    left = leftovers()
    if left:
        say("left behind:\n  " + "\n  ".join(left))
    else:
        say(f"host clean (kept the build and image cache in {CACHE})")
    return left


def leftovers() -> list[str]:
    left = [f"process {t.name} (pid {t.pid})" for t in processes.all_tracked()]
    left += [f"mount {m}" for m in _mounts_under((STATE, configs.CONTAINERD_ROOT))]
    left += [f"cgroup {c}" for c in _kubepods_cgroups()]
    left += [f"shim pid {p}" for p in sorted(_our_shims())]
    left += network.leftover_rules()
    left += network.leftover_ipsets()
    left += network.leftover_ip_rules()
    if STATE.exists():
        left.append(f"directory {STATE}")
    return left
