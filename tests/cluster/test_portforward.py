"""The port-forward wrapper against real processes: kubectl itself, and a kubectl stand-in that really
forwards TCP (kubectl port-forward needs a cluster to succeed)."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from k8s_support.portforward import PortForward, PortForwardError
from tests.support.httpserver import Reply, serve

#: Behaves like `kubectl port-forward TARGET :REMOTE --address 127.0.0.1` toward a local port given in
#: $FORWARD_TO: listens on a free port, prints kubectl's line, then relays connections.
FORWARDER = textwrap.dedent("""
    import os, socket, sys, threading
    target = int(os.environ["FORWARD_TO"])
    if os.environ.get("FAIL"):
        print('error: services "web" not found', file=sys.stderr)
        sys.exit(1)
    if os.environ.get("SILENT"):
        threading.Event().wait()
    remote = sys.argv[sys.argv.index("port-forward") + 2].split(":")[1]
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"Forwarding from 127.0.0.1:{listener.getsockname()[1]} -> {remote}", flush=True)
    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            b.close()
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", target))
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
""")


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> str:
    script = tmp_path / "kubectl"
    script.write_text(f"#!{sys.executable}\n{FORWARDER}")
    script.chmod(0o755)
    return str(script)


def test_command_line_is_kubectls() -> None:
    pf = PortForward("svc/rel-web", 8000, namespace="ns", context="kind-x")
    assert pf.command() == ["kubectl", "--context", "kind-x", "--namespace", "ns", "port-forward", "svc/rel-web",
                            ":8000", "--address", "127.0.0.1"]
    assert PortForward("pod/p", 9808, namespace="ns", local_port=19808).command()[-3] == "19808:9808"


def test_forwards_http_and_stops_the_process(fake_kubectl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(lambda request: Reply(200, {"path": request.path})) as server:
        monkeypatch.setenv("FORWARD_TO", server.url.rsplit(":", 1)[1])
        with PortForward("svc/web", 8000, namespace="ns", kubectl=fake_kubectl) as pf:
            assert pf.alive()
            assert pf.local_port and pf.url == f"http://127.0.0.1:{pf.local_port}"
            assert requests.get(f"{pf.url}/api/tasks/", timeout=5).json() == {"path": "/api/tasks/"}
            process = pf._process
        assert not pf.alive()
        assert process is not None and process.poll() is not None


def test_kubectl_exiting_early_raises_with_its_message(fake_kubectl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARD_TO", "1")
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(PortForwardError, match=r'exited with 1 before forwarding: error: services "web" not found'):
        PortForward("svc/web", 8000, namespace="ns", kubectl=fake_kubectl).start()


def test_no_ready_line_times_out_and_kills_it(fake_kubectl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARD_TO", "1")
    monkeypatch.setenv("SILENT", "1")
    pf = PortForward("svc/web", 8000, namespace="ns", kubectl=fake_kubectl, ready_timeout=1)
    started = time.monotonic()
    with pytest.raises(PortForwardError, match=r"printed no 'Forwarding from 127.0.0.1:…' within 1s"):
        pf.start()
    assert time.monotonic() - started < 15
    assert not pf.alive()


def test_missing_kubectl_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PortForwardError, match="not found: install kubectl"):
        PortForward("svc/web", 8000, namespace="ns", kubectl=str(tmp_path / "kubectl")).start()


def test_real_kubectl_without_a_cluster_fails_with_kubectls_reason(
    dead_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.tools import tool_path

    kubectl = str(tool_path("kubectl"))  # the pinned real kubectl, bootstrapped like helm
    monkeypatch.setenv("KUBECONFIG", str(dead_kubeconfig))
    with pytest.raises(PortForwardError, match=r"exited with 1 before forwarding: .*connection refused"):
        PortForward("svc/web", 8000, namespace="ns", kubectl=kubectl, ready_timeout=60).start()
