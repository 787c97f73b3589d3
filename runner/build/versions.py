"""Every pinned upstream version the runner builds, in one place.

Changing a pin here changes the cache key, so the next run rebuilds exactly what moved.
"""

from __future__ import annotations

#: kube-apiserver, built from the k8s.io/kubernetes Go module (see runner/build/gobuild.py).
KUBERNETES_VERSION = "v1.34.4"

#: etcd, built from go.etcd.io/etcd/server/v3. Debian's 3.4.23 is too old for 1.34's
#: watch-progress requests (docs/facts.md), so it is built too.
ETCD_VERSION = "v3.6.16"

#: crictl, built from sigs.k8s.io/cri-tools (its minor follows Kubernetes'). The local cluster asks
#: containerd's CRI service itself whether it is up: `ctr version` answers before the CRI plugin
#: has initialized, and a kubelet started then exits ("server is not initialized yet").
CRI_TOOLS_VERSION = "v1.34.0"

#: CoreDNS, built from github.com/coredns/coredns: the local cluster's DNS (kube-dns), at the version
#: kubeadm installs with Kubernetes 1.34. Clients that find the API server by name
#: (kopf: https://kubernetes.default.svc) need it, as on every real cluster.
COREDNS_VERSION = "v1.12.1"


def staging_version(kubernetes_version: str = KUBERNETES_VERSION) -> str:
    """k8s.io staging modules are tagged v0.<minor>.<patch> for kubernetes v1.<minor>.<patch>."""
    major, minor, patch = kubernetes_version.lstrip("v").split(".")
    if major != "1":
        raise ValueError(f"unexpected kubernetes version {kubernetes_version}")
    return f"v0.{minor}.{patch}"
