"""containerd (Debian's 1.6, with runc and the CNI plugins): the node's CRI runtime.

Its image store lives in the cache (pulls are cheap on the next run); its state, socket, pod
network namespaces and runc state live under the run's directory.
"""

from __future__ import annotations

from pathlib import Path

from runner.host.commands import CommandLog
from runner.host.procs import Child, wait_until
from runner.local import configs


def start(paths: configs.NodePaths, crictl: Path, sandbox_image: str, registry: str, cni_conflist: str,
          evidence: Path, log: CommandLog) -> Child:
    for d in (paths.containerd_root, paths.containerd_state, paths.cni_conf_dir, paths.certs_d / registry):
        d.mkdir(parents=True, exist_ok=True)
    (paths.certs_d / registry / "hosts.toml").write_text(configs.registry_hosts_toml(registry))
    (paths.cni_conf_dir / "10-watchdrop.conflist").write_text(cni_conflist)
    paths.containerd_config.write_text(configs.containerd_config(paths, sandbox_image))
    child = Child("containerd", ["containerd", "--config", paths.containerd_config, "--log-level", "warn"],
                  stdout=evidence / "containerd.log", log=log)

    # Ready means the CRI service answers, as the kubelet will ask it: the socket (and `ctr version`)
    # answers earlier, while the CRI plugin is still initializing, and a kubelet started in that
    # window exits ("server is not initialized yet").
    def ready() -> bool:
        return paths.containerd_sock.exists() and log.run(
            [crictl, "--runtime-endpoint", f"unix://{paths.containerd_sock}", "--timeout", "5s", "info"],
            check=False, timeout=10).returncode == 0

    wait_until(ready, child, 30, "answering CRI status", fix="see containerd.log in the evidence")
    return child
