"""The local cluster's configuration files, rendered by pure functions (unit-tested without root).

Every value that matters is here, with why: see docs/local-cluster.md for the same in prose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class NodePaths:
    """Where one run's node keeps its state: all under the run's directory, or the cache."""

    state: Path          # the run's directory for the node (sockets, configs, kubelet root)
    cache: Path          # survives runs: containerd's image store, Docker's, the registry's

    @property
    def containerd_root(self) -> Path:
        return self.cache / "containerd-root"

    @property
    def containerd_state(self) -> Path:
        return self.state / "containerd"

    @property
    def containerd_sock(self) -> Path:
        return self.state / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.state / "containerd.toml"

    @property
    def certs_d(self) -> Path:
        return self.state / "certs.d"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state / "cni" / "net.d"

    @property
    def kubelet_root(self) -> Path:
        return self.state / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.state / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.state / "kube-proxy.yaml"

    @property
    def resolv_conf(self) -> Path:
        return self.state / "resolv.conf"

    @property
    def docker_data(self) -> Path:
        return self.cache / "docker"

    @property
    def docker_exec(self) -> Path:
        return self.state / "docker-exec"

    @property
    def docker_sock(self) -> Path:
        return self.state / "docker.sock"

    @property
    def registry_storage(self) -> Path:
        return self.cache / "registry"

    @property
    def registry_config(self) -> Path:
        return self.state / "registry.yaml"


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def containerd_config(paths: NodePaths, sandbox_image: str) -> str:
    """containerd 1.6 (config version 2); whatever is not set keeps containerd's default."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "version = 2",
        f"root = {_toml_str(paths.containerd_root)}",
        f"state = {_toml_str(paths.containerd_state)}",
        "[grpc]",
        f"  address = {_toml_str(paths.containerd_sock)}",
        f"[{cri}]",
        # The pause image is built here and served by the run's registry: never pulled from outside.
        f"  sandbox_image = {_toml_str(sandbox_image)}",
        # Root lacks CAP_SYS_RESOURCE here: without this every pod sandbox fails to start
        # (the pause container's oom_score_adj -998 cannot be written).
        "  restrict_oom_score_adj = true",
        # Pod network namespaces are mounted under the state dir, not /run/netns.
        "  netns_mounts_under_state_dir = true",
        "  enable_selinux = false",
        # The streaming server (exec, logs) stays on loopback; the kubelet proxies to it.
        '  stream_server_address = "127.0.0.1"',
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        f"  Root = {_toml_str(paths.containerd_state / 'runc')}",
        # No systemd on this kind of machine: cgroupfs, like the kubelet.
        "  SystemdCgroup = false",
        f"[{cri}.cni]",
        '  bin_dir = "/usr/lib/cni"',
        f"  conf_dir = {_toml_str(paths.cni_conf_dir)}",
        "  max_conf_num = 1",
        f"[{cri}.registry]",
        # One hosts.toml per registry the cluster may pull from (the run's own, over plain HTTP).
        f"  config_path = {_toml_str(paths.certs_d)}",
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {_toml_str(paths.containerd_state / 'opt')}",
        "",
    ])


def registry_hosts_toml(address: str) -> str:
    """containerd's per-registry file: pull from the run's registry over plain HTTP, nowhere else."""
    return (f'server = "http://{address}"\n\n'
            f'[host."http://{address}"]\n  capabilities = ["pull", "resolve"]\n')


def cni_conflist(name: str, bridge: str, pod_cidr: str, gateway: str, ipam_dir: Path) -> str:
    """The bridge plugin, no masquerade, pods routed to 198.18.0.0/15 only (no default route).

    No portmap: nothing here uses hostPort, and portmap would add iptables chains to put back."""
    doc = {
        "cniVersion": "0.4.0",
        "name": name,
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            # isGateway puts the gateway address on the bridge (made beforehand with the same
            # address) and turns on the root namespace's ip_forward, restored at teardown.
            "isGateway": True,
            # No SNAT: nothing from a pod may leave the machine, and the API server must see pod IPs.
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": pod_cidr, "gateway": gateway}]],
                "routes": [{"dst": "198.18.0.0/15"}],
                "dataDir": str(ipam_dir),
            },
        }],
    }
    return json.dumps(doc, indent=1) + "\n"


@dataclass(frozen=True)
class KubeletSettings:
    node_ip: str
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    #: The kube-dns ClusterIP (runner/local/dns.py): pods' only nameserver.
    cluster_dns: str


def kubelet_config(paths: NodePaths, s: KubeletSettings) -> str:
    sock = f"unix://{paths.containerd_sock}"
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # cgroup v1 only and no systemd on this kind of machine.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "containerRuntimeEndpoint": sock,
        "imageServiceEndpoint": sock,
        "failSwapOn": False,
        "staticPodPath": str(paths.state / "static-pods"),
        "podLogsDir": str(paths.state / "pod-logs"),
        "volumePluginDir": str(paths.state / "volume-plugins"),
        # The API: only on the node's 198.18 address; TLS with a certificate from the cluster CA.
        "address": s.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "tlsCertFile": str(s.serving_cert),
        "tlsPrivateKeyFile": str(s.serving_key),
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 0,
        # A secured node: client certificates from the cluster CA or bearer tokens (checked by the
        # API server), every request authorized by the API server (SubjectAccessReview), never
        # anonymous. A pod's token has no nodes/proxy right, so it cannot exec through the kubelet.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(s.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "clusterDNS": [s.cluster_dns],
        # Not empty: an empty file makes containerd copy the host's resolv.conf into pods.
        "resolvConf": str(paths.resolv_conf),
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        # false: the kubelet then sets kernel.panic & co itself; teardown puts them back.
        "protectKernelDefaults": False,
        "serverTLSBootstrap": False,
        "rotateCertificates": False,
        # This is a shared machine: no evictions or image GC because of its disk, which is not ours.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "registerNode": True,
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kube_proxy_config(kubeconfig: Path, node_name: str, pod_cidr: str) -> str:
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        # No IPVS in this kernel; nftables keeps all its rules in its own `kube-proxy` tables.
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node_name,
        "bindAddress": "127.0.0.1",
        # Loopback: an empty value would default to 0.0.0.0.
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # NodePorts only on the node's own (198.18) address, never on the host's other interfaces.
        "nodePortAddresses": ["primary"],
        "clusterCIDR": pod_cidr,
        "detectLocalMode": "ClusterCIDR",
        # Zeros: hands off the host's conntrack sysctls (global, shared with every other run).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def registry_config(storage: Path, address: str) -> str:
    doc = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        # Loopback only: Docker pushes to it and containerd pulls from it, both on this machine.
        "http": {"addr": address},
    }
    return yaml.safe_dump(doc, sort_keys=False)
