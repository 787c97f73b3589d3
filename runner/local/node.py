"""The node: its bridge and addresses, its identity, the kubelet and kube-proxy.

The node lives in the root namespace (the kubelet must see the host's mounts and cgroups). Its
address and its pods' /24 come from a /20 of 198.18.0.0/15 that the run claims like its main
block, so no other run is ever handed them. The bridge exists, with the node address, before the
kubelet starts (`--node-ip` must exist), and the CNI bridge plugin then uses it as the pods'
gateway.
"""

from __future__ import annotations

import ipaddress
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from runner.credentials import pki as pkimod
from runner.credentials.kubeconfig import admin_user, write_kubeconfig
from runner.host.commands import CommandLog
from runner.host.netns import add_bridge_argv
from runner.host.procs import Child
from runner.local import configs, dns


@dataclass(frozen=True)
class NodeNet:
    """The node's addresses, from the run's extra /20 block."""

    block: ipaddress.IPv4Network
    run_id: str

    @property
    def pod_cidr(self) -> str:
        return str(next(self.block.subnets(new_prefix=24)))

    @property
    def node_ip(self) -> str:
        return str(self.block.network_address + 1)

    @property
    def bridge(self) -> str:
        return f"wd{self.run_id}n"

    @property
    def name(self) -> str:
        return f"wd-{self.run_id}-node"


def make_bridge(net: NodeNet, log: CommandLog) -> None:
    log.run(add_bridge_argv(net.bridge, net.node_ip))
    log.run(["ip", "addr", "add", f"{net.node_ip}/24", "dev", net.bridge])
    log.run(["ip", "link", "set", net.bridge, "up"])


@dataclass(frozen=True)
class Identities:
    """Each component's own kubeconfig, signed by the cluster CA (never the admin's)."""

    kubelet: Path
    kube_proxy: Path
    controller_manager: Path
    scheduler: Path
    coredns: Path
    kubelet_serving: tuple[Path, Path]
    apiserver_kubelet_client: tuple[Path, Path]


def issue_identities(p: pkimod.Pki, net: NodeNet, server: str, kubeconfig_dir: Path) -> Identities:
    ca = p.ca_cert.read_bytes()

    def kubeconfig(name: str, cn: str, org: str | None = None) -> Path:
        cert, key = pkimod.issue(p, name, cn=cn, org=org)
        return write_kubeconfig(kubeconfig_dir / f"{name}.kubeconfig", server=server, ca_pem=ca,
                                user=admin_user(cert.read_bytes(), key.read_bytes()), name=name)

    return Identities(
        # Node authorization and NodeRestriction recognise the node by this name and group.
        kubelet=kubeconfig("kubelet", f"system:node:{net.name}", "system:nodes"),
        kube_proxy=kubeconfig("kube-proxy", "system:kube-proxy"),
        controller_manager=kubeconfig("kube-controller-manager", "system:kube-controller-manager"),
        scheduler=kubeconfig("kube-scheduler", "system:kube-scheduler"),
        coredns=kubeconfig("coredns", dns.USER),
        kubelet_serving=pkimod.issue(p, "kubelet-serving", cn=net.name, server_ips=[net.node_ip],
                                     client=False),
        # The API server's identity toward the kubelet (logs, exec); the kubelet asks the API server
        # (webhook) whether this user may, and system:masters may.
        apiserver_kubelet_client=pkimod.issue(p, "apiserver-kubelet-client", cn="kube-apiserver-kubelet-client",
                                              org="system:masters"),
    )


@dataclass(frozen=True)
class KubeletSetup:
    """What the kubelet starts with: its binary, the node's folders, network and identities."""

    binary: Path
    paths: configs.NodePaths
    net: NodeNet
    pki: pkimod.Pki
    ids: Identities
    cluster_dns: str
    extra_args: tuple[str, ...] = ()


def start_kubelet(k: KubeletSetup, evidence: Path, log: CommandLog) -> Child:
    paths, net, ids = k.paths, k.net, k.ids
    for d in (paths.kubelet_root, paths.state / "static-pods", paths.state / "pod-logs"):
        d.mkdir(parents=True, exist_ok=True)
    paths.resolv_conf.write_text("nameserver 127.0.0.1\n")
    paths.kubelet_config.write_text(configs.kubelet_config(paths, configs.KubeletSettings(
        node_ip=net.node_ip, ca_cert=k.pki.ca_cert, serving_cert=ids.kubelet_serving[0],
        serving_key=ids.kubelet_serving[1], cluster_dns=k.cluster_dns)))
    return Child("kubelet", [
        k.binary, f"--config={paths.kubelet_config}", f"--kubeconfig={ids.kubelet}",
        f"--root-dir={paths.kubelet_root}", f"--cert-dir={paths.state / 'kubelet-pki'}",
        f"--node-ip={net.node_ip}", f"--hostname-override={net.name}", "--v=1", *k.extra_args,
    ], stdout=evidence / "kubelet.log", log=log)


def start_kube_proxy(binary: Path, paths: configs.NodePaths, net: NodeNet, ids: Identities,
                     evidence: Path, log: CommandLog) -> Child:
    paths.kube_proxy_config.write_text(configs.kube_proxy_config(ids.kube_proxy, net.name, net.pod_cidr))
    return Child("kube-proxy", [binary, f"--config={paths.kube_proxy_config}", "--v=1"],
                 stdout=evidence / "kube-proxy.log", log=log)


def kube_proxy_healthy() -> bool:
    with urllib.request.urlopen("http://127.0.0.1:10256/healthz", timeout=1) as r:
        return bool(r.status == 200)
