"""The run's own Docker engine (image builds) and registry (what containerd pulls from).

dockerd gets its own data root (in the cache, so base layers survive runs), exec root, socket and
pid file, and touches no network: no iptables rules, no bridge, no ip_forward. Builds then use
host networking. The registry listens on a free loopback port and stores blobs in the cache.
"""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import docker

from runner.host.commands import CommandLog
from runner.host.procs import Child, wait_until
from runner.local import configs


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_dockerd(paths: configs.NodePaths, evidence: Path, log: CommandLog) -> tuple[Child, docker.DockerClient]:
    paths.docker_data.mkdir(parents=True, exist_ok=True)
    paths.docker_exec.mkdir(parents=True, exist_ok=True)
    daemon_json = paths.state / "daemon.json"
    daemon_json.write_text("{}\n")  # never the machine's /etc/docker/daemon.json
    child = Child("dockerd", [
        "dockerd", "--config-file", daemon_json, "--data-root", paths.docker_data,
        "--exec-root", paths.docker_exec, "--pidfile", paths.state / "docker.pid",
        "-H", f"unix://{paths.docker_sock}",
        "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
        "--log-level=warn",
    ], stdout=evidence / "docker.log", log=log)
    # A pinned API version: the client then does not ask the (not yet listening) daemon at creation.
    client = docker.DockerClient(base_url=f"unix://{paths.docker_sock}", timeout=300, version="1.41")
    wait_until(lambda: bool(client.ping()), child, 60, "answering on its socket", fix="see docker.log in the evidence")
    return child, client


def start_registry(paths: configs.NodePaths, evidence: Path, log: CommandLog) -> tuple[Child, str]:
    address = f"127.0.0.1:{free_loopback_port()}"
    paths.registry_storage.mkdir(parents=True, exist_ok=True)
    paths.registry_config.write_text(configs.registry_config(paths.registry_storage, address))
    child = Child("docker-registry", ["docker-registry", "serve", paths.registry_config],
                  stdout=evidence / "registry.log", log=log)

    def ready() -> bool:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as r:
            return bool(r.status == 200)

    wait_until(ready, child, 30, f"answering on {address}", fix="see registry.log in the evidence")
    return child, address
