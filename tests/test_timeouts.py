"""Subprocesses that can hang have a timeout: a hung `conntrack` cannot stall the LB agent's loop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runner.embedded import lbagent
from tests.test_lbagent_unit import _agent


class _NoRaw:
    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        pass


def test_a_hung_conntrack_does_not_hold_up_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "conntrack").write_text("#!/bin/sh\nexec sleep 120\n")
    (bin_dir / "conntrack").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(lbagent, "CONNTRACK_TIMEOUT", 1.0)
    a = _agent("rst-both-ways")
    a.raw = _NoRaw()
    flow = lbagent.Flow(pod="198.18.2.130", pod_port=40000, vport=6443, opened_at=0.0, last=0.0,
                        client_next=101, server_next=501)
    t0 = time.monotonic()
    a.reset_both(flow)
    assert time.monotonic() - t0 < 10
    (rec,) = [json.loads(x) for x in a.out.getvalue().splitlines() if '"conntrack-delete"' in x]
    assert rec["rc"] == -1 and "timed out" in rec["error"]


def test_the_admin_api_client_gives_up_on_a_server_that_never_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded and local clusters' admin client (harness writes, RBAC setup, churn, waits):
    an API server that accepts and then stalls must not hold up the run."""
    import socket

    import urllib3
    from kubernetes import client

    from runner.kube import api

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)                                   # accepts (the kernel does), never answers
    port = listener.getsockname()[1]
    kubeconfig = tmp_path / "admin.kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    monkeypatch.setattr(api, "REQUEST_TIMEOUT", (1.0, 1.0))
    admin = api.bounded_client_from_config(kubeconfig)
    t0 = time.monotonic()
    try:
        with pytest.raises(urllib3.exceptions.HTTPError, match="Read timed out"):
            client.CoreV1Api(admin).list_namespace()
        assert time.monotonic() - t0 < 10
    finally:
        admin.close()
        listener.close()
