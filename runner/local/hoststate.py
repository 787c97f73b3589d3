"""What the local cluster changes on the host, recorded before and put back after.

The kubelet, kube-proxy, containerd and the CNI plugins write outside any directory they are
given: kernel sysctls, /var/lib/kubelet, /run/containerd, /var/lib/cni, /var/log/containers,
iptables chains, cgroups, mounts. A `Ledger` notes what existed before the run touched anything,
and is written to /run/watchdrop/local-<runid>.json so that `python -m runner clean` can undo a
SIGKILLed run's changes from it too. `undo()` is that one piece of code for both paths.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runner.host.commands import CommandLog, query
from runner.host.netns import RUNS_DIR
from runner.host.procs import escalate, pid_alive, signal_pid
from runner.host.safefiles import write_nofollow

#: what the kubelet (setupKernelTunables) and the CNI bridge (isGateway) rewrite on every start
SYSCTLS = ("kernel.panic", "kernel.panic_on_oops", "vm.overcommit_memory", "vm.panic_on_oom",
           "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.ip_forward")

#: paths the components create whatever their own directories are; removed only if the run made them
HOST_PATHS = ("/var/lib/kubelet", "/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/log/pods",
              "/usr/libexec/kubernetes", "/etc/docker", "/run/docker", "/etc/cni", "/opt/cni",
              "/var/lib/containerd", "/etc/kubernetes", "/run/mount/utab")

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: the kubelet's pod cgroups (cgroupfs driver, cgroupsPerQOS) under every v1 hierarchy
KUBE_CGROUP = "kubepods"


def read_sysctls() -> dict[str, str]:
    out = {}
    for key in SYSCTLS:
        path = Path("/proc/sys") / key.replace(".", "/")
        try:
            out[key] = path.read_text().strip()
        except OSError:
            pass
    return out


def kube_cgroups() -> list[str]:
    return sorted(str(d / KUBE_CGROUP) for d in CGROUP_ROOT.iterdir() if (d / KUBE_CGROUP).is_dir())


def iptables_chains() -> dict[str, list[str]]:
    """`<binary> <table>` -> the chain names there (iptables and ip6tables, nft backend)."""
    out: dict[str, list[str]] = {}
    for binary in ("iptables", "ip6tables"):
        try:
            proc = query([f"{binary}-save"])
        except FileNotFoundError:
            continue
        table = ""
        for line in proc.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
                out.setdefault(f"{binary} {table}", [])
            elif line.startswith(":") and table:
                out[f"{binary} {table}"].append(line[1:].split()[0])
    return out


def nft_tables() -> list[str]:
    proc = query(["nft", "list", "tables"])
    return sorted(line.removeprefix("table ").strip() for line in proc.stdout.splitlines() if line.strip())


@dataclass
class Ledger:
    """The host as the run found it, plus what the run is about to create."""

    run_id: str
    workdir: str
    bridge: str = ""
    kube_proxy: str = ""          # binary, for `kube-proxy --cleanup`
    kube_proxy_config: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    existing_paths: list[str] = field(default_factory=list)
    existing_cgroups: list[str] = field(default_factory=list)
    iptables: dict[str, list[str]] = field(default_factory=dict)
    nft_tables: list[str] = field(default_factory=list)
    containers_logs: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)   # root-namespace routes the run claimed for the node

    @classmethod
    def record(cls, run_id: str, workdir: Path) -> Ledger:
        logs = Path("/var/log/containers")
        return cls(run_id=run_id, workdir=str(workdir), sysctls=read_sysctls(),
                   existing_paths=[p for p in HOST_PATHS if os.path.lexists(p)],
                   existing_cgroups=kube_cgroups(), iptables=iptables_chains(), nft_tables=nft_tables(),
                   containers_logs=sorted(os.listdir(logs)) if logs.is_dir() else [])

    @staticmethod
    def path_for(run_id: str) -> Path:
        return RUNS_DIR / f"local-{run_id}.json"

    def save(self) -> None:
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        write_nofollow(self.path_for(self.run_id), json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Ledger:
        return cls(**json.loads(path.read_text()))

    def forget(self) -> None:
        self.path_for(self.run_id).unlink(missing_ok=True)


# -- undo ----------------------------------------------------------------------------------------
def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names `text` (the run's directory: every daemon's argv does,
    containerd's shims included through `-address <run dir>/…/containerd.sock`)."""
    me = os.getpid()
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) != me and text in _cmdline(int(d))]


def cgroup_pids(roots: list[str]) -> list[int]:
    pids: set[int] = set()
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            if "cgroup.procs" in files:
                try:
                    pids |= {int(p) for p in Path(dirpath, "cgroup.procs").read_text().split()}
                except OSError:
                    pass
    return sorted(pids)


def kill_pids(pids: list[int], log: CommandLog, what: str, grace: float = 0.0) -> None:
    """SIGTERM `pids`, SIGKILL what is left after `grace` (at once when `grace` is 0), bounded."""
    if not pids:
        return

    def send(sig: signal.Signals) -> None:
        now = pids if sig == signal.SIGTERM else [p for p in pids if pid_alive(p)]
        log.note(f"{sig.name} to {what}: {now}")
        for pid in now:
            signal_pid(pid, sig)

    escalate(send, lambda: not any(pid_alive(p) for p in pids), grace=grace, kill_wait=5.0, term=bool(grace))


def mounts_under(prefixes: list[str]) -> list[str]:
    """Mount points at or below any prefix, deepest first (unmount order)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def unmount_all(prefixes: list[str], log: CommandLog, problems: list[str]) -> None:
    for _ in range(3):  # bind mounts can be stacked: repeat until nothing is left
        points = mounts_under(prefixes)
        if not points:
            return
        for point in points:
            if log.run(["umount", point], check=False).returncode != 0:
                log.run(["umount", "-l", point], check=False)
    left = mounts_under(prefixes)
    if left:
        problems.append(f"still mounted: {left}")


def remove_cgroups(ledger: Ledger, log: CommandLog, problems: list[str]) -> None:
    """rmdir the kubelet's cgroups bottom-up, in hierarchies where the run created them."""
    for root in kube_cgroups():
        if root in ledger.existing_cgroups:
            continue
        dirs = [dp for dp, _d, _f in os.walk(root)]
        for d in sorted(dirs, key=lambda p: -p.count("/")):
            for _ in range(20):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)  # a killed task can take a moment to leave
        if os.path.isdir(root):
            problems.append(f"could not remove cgroup {root}")
    log.note("removed the kubelet's cgroups")


def restore_sysctls(ledger: Ledger, log: CommandLog, problems: list[str]) -> None:
    now = read_sysctls()
    for key, value in ledger.sysctls.items():
        if now.get(key) != value:
            log.run(["sysctl", "-q", "-w", f"{key}={value}"], check=False)
    after = read_sysctls()
    wrong = {k: after.get(k) for k, v in ledger.sysctls.items() if after.get(k) != v}
    if wrong:
        problems.append(f"sysctls not restored: {wrong}")


def _save(binary: str, table: str) -> list[str]:
    proc = query([f"{binary}-save", "-t", table])
    return proc.stdout.splitlines()


def remove_new_chains(ledger: Ledger, log: CommandLog) -> None:
    """The kubelet's chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT …): delete the
    rules that jump to them, then flush and delete every KUBE- chain that was not there before, in
    both families; then drop the iptables-nft tables that appeared for them and are empty again."""
    for key, chains in iptables_chains().items():
        binary, table = key.split()
        before = set(ledger.iptables.get(key, []))
        new = {c for c in chains if c.startswith("KUBE-") and c not in before}
        for line in _save(binary, table):
            if line.startswith("-A "):
                words = shlex.split(line)
                target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
                if target in new and words[1] not in new:
                    log.run([binary, "-w", "-t", table, "-D", *words[1:]], check=False)
        for chain in sorted(new):
            log.run([binary, "-w", "-t", table, "-F", chain], check=False)
        for chain in sorted(new):
            log.run([binary, "-w", "-t", table, "-X", chain], check=False)
        family = "ip" if binary == "iptables" else "ip6"
        if key not in ledger.iptables and f"{family} {table}" not in ledger.nft_tables:
            if not any(line.startswith("-A ") for line in _save(binary, table)):
                log.run(["nft", "delete", "table", family, table], check=False)


def remove_new_nft_tables(ledger: Ledger, log: CommandLog) -> None:
    for table in nft_tables():
        if table not in ledger.nft_tables and table.split()[-1] == "kube-proxy":
            log.run(["nft", "delete", "table", *table.split()], check=False)


def undo(ledger: Ledger, log: CommandLog) -> list[str]:
    """Put the host back as the ledger found it. Safe to run twice; returns the problems met."""
    problems: list[str] = []
    work = ledger.workdir
    # 1. No process may keep anything busy: the pods' processes (found by the kubelet's cgroups),
    #    then every daemon of the run and containerd's shims (found by the run directory in argv).
    new_cgroups = [c for c in kube_cgroups() if c not in ledger.existing_cgroups]
    kill_pids(cgroup_pids(new_cgroups), log, "pod processes")
    kill_pids(pids_mentioning(work), log, "the run's daemons and shims", grace=3)
    # 2. kube-proxy's own cleanup of its nftables/iptables state.
    if ledger.kube_proxy and os.path.exists(ledger.kube_proxy) and os.path.exists(ledger.kube_proxy_config):
        log.run([ledger.kube_proxy, "--cleanup", f"--config={ledger.kube_proxy_config}"], check=False,
                timeout=60)
    remove_new_nft_tables(ledger, log)
    remove_new_chains(ledger, log)
    # 3. Mounts: pod volumes, network namespaces, rootfs overlays, the kubelet's bind mount.
    created = [p for p in HOST_PATHS if p not in ledger.existing_paths]
    unmount_all([work, *(p for p in created if not p.endswith("utab"))], log, problems)
    # 4. The bridge (pod veths die with their namespaces; delete any that is still enslaved).
    if ledger.bridge and Path(f"/sys/class/net/{ledger.bridge}").exists():
        for port in Path(f"/sys/class/net/{ledger.bridge}/brif").iterdir():
            log.run(["ip", "link", "delete", port.name], check=False)
        log.run(["ip", "link", "delete", ledger.bridge], check=False)
    for route in ledger.routes:
        log.run(["ip", "route", "del", route], check=False)
    # 5. cgroups, sysctls, files the run created outside its own directory.
    remove_cgroups(ledger, log, problems)
    restore_sysctls(ledger, log, problems)
    logs = Path("/var/log/containers")
    if "/var/log/containers" in ledger.existing_paths and logs.is_dir():
        for entry in os.listdir(logs):
            if entry not in ledger.containers_logs:
                (logs / entry).unlink(missing_ok=True)
    for path in created:
        remove_created(path, log)
    return problems


def _sockets_in_use() -> set[str]:
    """Paths of unix sockets a live process has bound (in this network namespace)."""
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    return {parts[7] for parts in (line.split() for line in lines) if len(parts) >= 8}


def remove_created(path: str, log: CommandLog) -> None:
    """Remove a path the run created, except what another program uses meanwhile: by now every
    process of the run is gone, so a socket still bound there (e.g. another Docker's containerd
    shim under /run/containerd/s) is someone else's, and it stays with its directories."""
    if not os.path.isdir(path) or os.path.islink(path):
        if os.path.lexists(path):
            os.unlink(path)
        return
    in_use = _sockets_in_use()
    for dirpath, dirs, files in os.walk(path, topdown=False):
        for name in files:
            full = os.path.join(dirpath, name)
            if full not in in_use:
                Path(full).unlink(missing_ok=True)
        for name in dirs:
            full = os.path.join(dirpath, name)
            try:
                os.unlink(full) if os.path.islink(full) else os.rmdir(full)
            except OSError:
                pass  # not empty: something of another program's is inside
    try:
        os.rmdir(path)
        log.note(f"removed {path}")
    except OSError:
        log.note(f"kept {path}: another program uses something inside it")
