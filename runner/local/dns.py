"""The local cluster's DNS: CoreDNS (built from its Go module) serving `cluster.local`, as kube-dns.

Every real cluster has one, and clients rely on it: kopf's in-cluster login connects to
`https://kubernetes.default.svc` by name, where client-go and friends read KUBERNETES_SERVICE_HOST.
Without it those clients fail before their first watch on this cluster only.

CoreDNS runs on the node (a host process, like kube-proxy) on the node's 198.18 address, with its
own client certificate and read-only rights on Services, EndpointSlices, Pods and Namespaces (those
kubeadm gives `system:coredns`). The `kube-dns` Service (the service range's .10, as kubeadm picks)
has no selector; its EndpointSlice names the node's address, so pod → ClusterIP → kube-proxy DNAT →
CoreDNS. It answers only for the cluster's own zones: no `forward`, so no pod's lookup ever leaves
the machine (names outside `cluster.local` are refused).
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.request
from pathlib import Path
from typing import Any

from runner.host.commands import CommandLog
from runner.host.procs import Child, wait_until

CLUSTER_DOMAIN = "cluster.local"
#: Who CoreDNS is to the API server (its client certificate's CN).
USER = "watchdrop:coredns"
NAME = "watchdrop:coredns"


def service_ip(service_cidr: str) -> str:
    """The kube-dns ClusterIP: the range's tenth address, as kubeadm picks it."""
    return str(ipaddress.ip_network(service_cidr, strict=False).network_address + 10)


def corefile(node_ip: str, kubeconfig: Path, ready_port: int) -> str:
    reverse = "in-addr.arpa ip6.arpa"
    return "\n".join([
        f"{CLUSTER_DOMAIN} {reverse} {{",
        f"    bind {node_ip}",
        "    errors",
        f"    ready 127.0.0.1:{ready_port}",
        f"    kubernetes {CLUSTER_DOMAIN} {reverse} {{",
        f"        kubeconfig {kubeconfig}",
        "        fallthrough in-addr.arpa ip6.arpa",
        "    }",
        "    cache 30",
        "}",
        "",
    ])


def objects(service_cidr: str, node_ip: str) -> list[dict[str, Any]]:
    """The kube-dns Service and its EndpointSlice, and CoreDNS's read-only rights."""
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": NAME},
         "rules": [
             {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": NAME},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}]},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
         "spec": {"clusterIP": service_ip(service_cidr), "ports": [{**p, "targetPort": 53} for p in ports]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "kube-dns-node", "namespace": "kube-system",
                      "labels": {"kubernetes.io/service-name": "kube-dns"}},
         "addressType": "IPv4", "ports": ports,
         "endpoints": [{"addresses": [node_ip], "conditions": {"ready": True}}]},
    ]


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(binary: Path, node_ip: str, kubeconfig: Path, workdir: Path, evidence: Path, log: CommandLog) -> Child:
    """CoreDNS, once its `ready` endpoint says the kubernetes plugin has synced with the API server."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_loopback_port()
    conf = workdir / "Corefile"
    conf.write_text(corefile(node_ip, kubeconfig, port))
    child = Child("coredns", [binary, "-conf", conf], stdout=evidence / "coredns.log", log=log)

    def ready() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
            return bool(r.status == 200)

    wait_until(ready, child, 30, "ready (synced with the API server)", fix="see coredns.log in the evidence")
    return child
