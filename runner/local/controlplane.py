"""kube-controller-manager and kube-scheduler, beside kube-apiserver in the run's api namespace.

Without the scheduler pods stay Pending; without the controller manager there is no `default`
ServiceAccount, no `kube-root-ca.crt` (which projected tokens carry), no EndpointSlices, no
namespace deletion, and the node keeps its not-ready taint. Both serve nothing (`--secure-port=0`)
and use their own client certificates.
"""

from __future__ import annotations

from pathlib import Path

from runner.credentials.pki import Pki
from runner.host.commands import CommandLog, in_netns
from runner.host.procs import Child


def start_controller_manager(binary: Path, api_ns: str, kubeconfig: Path, p: Pki, cluster_name: str,
                             evidence: Path, log: CommandLog) -> Child:
    return Child("kube-controller-manager", in_netns(api_ns, [
        binary, f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--secure-port=0",
        f"--root-ca-file={p.ca_cert}", f"--service-account-private-key-file={p.sa_key}",
        # Each controller acts under its own ServiceAccount, as in kubeadm clusters.
        "--use-service-account-credentials=true", f"--cluster-name={cluster_name}",
        # The node's pod range is fixed by the CNI config; no node IPAM, no cloud.
        "--allocate-node-cidrs=false", "--controllers=*,-nodeipam,-cloud-node-lifecycle",
        # Keeps it from creating /usr/libexec/kubernetes on the host.
        f"--flex-volume-plugin-dir={kubeconfig.parent / 'flexvolume'}",
        "--v=1",
    ]), stdout=evidence / "kube-controller-manager.log", log=log)


def start_scheduler(binary: Path, api_ns: str, kubeconfig: Path, evidence: Path, log: CommandLog) -> Child:
    return Child("kube-scheduler", in_netns(api_ns, [
        binary, f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--secure-port=0", "--v=1",
    ]), stdout=evidence / "kube-scheduler.log", log=log)
