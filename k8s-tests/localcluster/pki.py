"""Certificates and kubeconfigs of the local cluster, made with openssl (what kubeadm would write).

Two CAs: the cluster CA (serving and client certificates of every component) and the front-proxy CA
(the apiserver's identity towards aggregated APIs: metrics-server, KEDA's external metrics). Existing
files are kept, so a second `cluster-up` reuses them; `cluster-down` removes the directory.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from localcluster.topology import Topology

DAYS = "3650"


@dataclass(frozen=True)
class Client:
    """A client certificate: the user (CN) and groups (O) RBAC sees."""

    name: str
    user: str
    groups: tuple[str, ...] = ()


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def _ca(pki: Path, name: str, subject: str) -> None:
    if (pki / f"{name}.crt").is_file():
        return
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pki / f"{name}.key"),
             "-out", str(pki / f"{name}.crt"), "-days", DAYS, "-subj", subject,
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _signed(pki: Path, name: str, subject: str, ca: str, *, sans: list[str] | None = None,
            server: bool = False) -> None:
    if (pki / f"{name}.crt").is_file():
        return
    usage = "serverAuth,clientAuth" if server else "clientAuth"
    extensions = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                  f"extendedKeyUsage={usage}"]
    if sans:
        extensions.append("subjectAltName=" + ",".join(sans))
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp, "req.csr"), Path(tmp, "ext.cnf")
        ext.write_text("\n".join(extensions) + "\n")
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pki / f"{name}.key"),
                 "-out", str(csr), "-subj", subject)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / f"{ca}.crt"), "-CAkey", str(pki / f"{ca}.key"),
                 "-CAcreateserial", "-out", str(pki / f"{name}.crt"), "-days", DAYS, "-extfile", str(ext))
    (pki / f"{name}.key").chmod(0o600)


def _subject(user: str, groups: tuple[str, ...] = ()) -> str:
    return "".join(f"/O={group}" for group in groups) + f"/CN={user}"


def clients(topology: Topology) -> list[Client]:
    """The client identities: the admin, each control-plane component, the node and the apiserver."""
    return [
        Client("admin", "kubernetes-admin", ("system:masters",)),
        Client("controller-manager", "system:kube-controller-manager"),
        Client("scheduler", "system:kube-scheduler"),
        Client("kubelet", f"system:node:{topology.node_name}", ("system:nodes",)),
        Client("proxy", "system:kube-proxy"),
        # the apiserver's identity towards kubelets (logs, exec, port-forward)
        Client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
    ]


def make_pki(pki: Path, topology: Topology) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    _ca(pki, "ca", "/CN=celery-stack-local-ca")
    _ca(pki, "front-proxy-ca", "/CN=celery-stack-local-front-proxy-ca")
    api_sans = ["DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                f"DNS:kubernetes.default.svc.{topology.cluster_domain}", "DNS:localhost",
                f"IP:{topology.api_service_ip}", "IP:127.0.0.1", f"IP:{topology.node_ip}"]
    _signed(pki, "apiserver", "/CN=kube-apiserver", "ca", sans=api_sans, server=True)
    _signed(pki, "kubelet-serving", f"/O=system:nodes/CN=system:node:{topology.node_name}", "ca", server=True,
            sans=[f"DNS:{topology.node_name}", "DNS:localhost", f"IP:{topology.node_ip}", "IP:127.0.0.1"])
    _signed(pki, "front-proxy-client", "/CN=front-proxy-client", "front-proxy-ca")
    for client in clients(topology):
        _signed(pki, client.name, _subject(client.user, client.groups), "ca")
    if not (pki / "sa.key").is_file():
        _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        (pki / "sa.key").chmod(0o600)


def kubeconfig(pki: Path, client: str, server: str, *, context: str = "celery-stack-local") -> str:
    """A kubeconfig naming certificate files (not embedded: one copy of each key on disk)."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: {context}
  cluster:
    certificate-authority: {pki / 'ca.crt'}
    server: {server}
users:
- name: {context}-{client}
  user:
    client-certificate: {pki / f'{client}.crt'}
    client-key: {pki / f'{client}.key'}
contexts:
- name: {context}
  context:
    cluster: {context}
    user: {context}-{client}
current-context: {context}
"""


def write_kubeconfigs(pki: Path, directory: Path, topology: Topology) -> dict[str, Path]:
    """One kubeconfig per client identity; components use the node address, as pods would."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for client in clients(topology):
        if client.name == "apiserver-kubelet-client":
            continue
        path = directory / f"{client.name}.kubeconfig"
        path.write_text(kubeconfig(pki, client.name, topology.api_url))
        path.chmod(0o600)
        written[client.name] = path
    return written
