"""Certificates made with openssl: each chains to its CA and names what the components check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from localcluster import pki
from localcluster.topology import Topology


class FixedTopology(Topology):
    @property
    def node_ip(self) -> str:  # type: ignore[override]
        return "192.0.2.7"

    @property
    def node_name(self) -> str:  # type: ignore[override]
        return "node-a"


TOPOLOGY = FixedTopology()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    pki.make_pki(directory, TOPOLOGY)
    return directory


def subject(cert: Path) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-subject", "-nameopt", "compat"],
                          capture_output=True, text=True, check=True).stdout.strip()


def text(cert: Path) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-text"], capture_output=True,
                          text=True, check=True).stdout


def verify(ca: Path, cert: Path) -> None:
    result = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(cert)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_certificate_chains_to_its_ca(made: Path) -> None:
    for name in ["apiserver", "kubelet-serving", *(c.name for c in pki.clients(TOPOLOGY))]:
        verify(made / "ca.crt", made / f"{name}.crt")
    verify(made / "front-proxy-ca.crt", made / "front-proxy-client.crt")


def test_apiserver_serves_every_name_pods_and_the_host_use(made: Path) -> None:
    body = text(made / "apiserver.crt")
    for san in ("DNS:kubernetes.default.svc.cluster.local", f"IP Address:{TOPOLOGY.api_service_ip}",
                f"IP Address:{TOPOLOGY.node_ip}", "IP Address:127.0.0.1"):
        assert san in body


def test_client_identities_are_what_rbac_and_the_node_authorizer_expect(made: Path) -> None:
    assert subject(made / "kubelet.crt") == "subject=/O=system:nodes/CN=system:node:node-a"
    assert subject(made / "admin.crt") == "subject=/O=system:masters/CN=kubernetes-admin"
    assert "TLS Web Client Authentication" in text(made / "scheduler.crt")


def test_a_second_run_keeps_the_existing_keys(made: Path) -> None:
    before = (made / "sa.key").read_bytes()
    pki.make_pki(made, TOPOLOGY)
    assert (made / "sa.key").read_bytes() == before
    assert oct((made / "admin.key").stat().st_mode & 0o777) == "0o600"


def test_kubeconfig_names_the_files_not_copies(made: Path, tmp_path: Path) -> None:
    written = pki.write_kubeconfigs(made, tmp_path, TOPOLOGY)
    config = written["admin"].read_text()
    assert f"client-key: {made / 'admin.key'}" in config
    assert "server: https://192.0.2.7:6443" in config
