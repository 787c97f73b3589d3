"""How exactly each LB mode cuts an idle flow: the gap between the configured idle timeout and the cut.

Run as root: python bench/lb_precision.py [--idle 3] [--flows 5]
rst-both-ways: `--flows` real TCP flows go idle; the gap is the agent's RST time minus the
deadline (last packet + idle timeout), median and worst. Kernel modes (silent-drop,
rst-on-next-packet): one flow per offset speaks at deadline + offset; a flow the LB forgot shows
in the agent's log as a packet after expiry, so the cut lies between the last offset that passed
and the first that was cut. Target: within ±5 ms. Also prints the agent's CPU time per packet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.config.profiles import Profile
from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer
from runner.embedded.timer import start_timer_server

CLIENT = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 8600)); s.recv(4096)
print(s.getsockname()[1], flush=True)
t_idle = time.time(); deadline = t_idle + float(sys.argv[2])
mode, offset = sys.argv[3], float(sys.argv[4]) / 1000
if mode != "rst-both-ways":
    time.sleep(max(0.0, deadline + offset - time.time()))
    try:
        s.send(b"x"); s.settimeout(1); s.recv(10)
    except OSError:
        pass
else:
    s.settimeout(float(sys.argv[2]) + 3)
    try:
        s.recv(10)
    except OSError:
        pass
"""


OFFSETS_MS = [-20.0, -10.0, -5.0, 5.0, 10.0, 20.0]


def count_packets(pcap: Path) -> int:
    import logging

    from scapy.utils import PcapReader

    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    with PcapReader(str(pcap)) as r:
        return sum(1 for _ in r)


def agent_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=3)
    ap.add_argument("--flows", type=int, default=5)
    args = ap.parse_args()
    modes = ("rst-both-ways", "silent-drop", "rst-on-next-packet")
    with EmbeddedCluster(churn_interval=0) as cluster:
        timer = start_timer_server(cluster, cluster.workdir, ports=((8005, 5), (8600, 600)))
        try:
            for slot, mode in enumerate(modes):
                lb = LoadBalancer(cluster, slot, Profile(f"bench-{mode}", mode, args.idle, "none", "bench"),
                                  cluster.workdir / f"lb-{mode}").start()
                try:
                    pod = lb.add_pod()
                    cpu0 = agent_cpu_seconds(lb.agent.pid) if lb.agent else 0.0
                    offsets = [0.0] * args.flows if mode == "rst-both-ways" else OFFSETS_MS
                    procs = [subprocess.Popen(["ip", "netns", "exec", pod.netns, sys.executable, "-c", CLIENT,
                                               lb.vip, str(args.idle), mode, str(off)],
                                              stdout=subprocess.PIPE, text=True) for off in offsets]
                    port_offset = {}
                    for p, off in zip(procs, offsets, strict=True):
                        out, _ = p.communicate(timeout=args.idle + 20)
                        port_offset[int(out.split()[0])] = off
                    time.sleep(0.5)
                    cpu = (agent_cpu_seconds(lb.agent.pid) if lb.agent else 0.0) - cpu0
                    events = [json.loads(x) for x in lb.events_path.read_text().splitlines()]
                    packets = count_packets(lb.evidence_dir / "lb-pod-leg.pcap") + count_packets(
                        lb.evidence_dir / "lb-server-leg.pcap")
                    per_packet = f"agent CPU {cpu * 1e6 / max(packets, 1):.0f} µs per packet ({packets} packets)"
                    if mode == "rst-both-ways":
                        gaps = []
                        for ev in events:
                            if ev["event"] == "expired":
                                cut = min(e["ts"] for e in events
                                          if e["event"] == "rst-sent" and e["flow"] == ev["flow"])
                                gaps.append((cut - ev["ts"]) * 1000)
                        print(f"{mode:20s} flows={len(gaps)} median gap {statistics.median(gaps):+.2f} ms, "
                              f"worst {max(gaps, key=abs):+.2f} ms; {per_packet}")
                        continue
                    cut_flows = {e["flow"] for e in events if e["event"] == "after-expiry" and e["side"] == "client"}
                    opened = [e["flow"] for e in events if e["event"] == "flow-opened"]
                    outcome = sorted((port_offset[int(f.split(":")[1].split(">")[0])], f in cut_flows)
                                     for f in opened)
                    passed = [o for o, cut in outcome if not cut]
                    cut = [o for o, c in outcome if c]
                    lo = max(passed) if passed else None
                    hi = min(cut) if cut else None
                    consistent = lo is None or hi is None or lo < hi
                    print(f"{mode:20s} cut between {lo if lo is not None else '-inf'} and "
                          f"{hi if hi is not None else '+inf'} ms after the deadline"
                          f"{'' if consistent else ' (inconsistent: see the event log)'}; {per_packet}")
                finally:
                    lb.close()
        finally:
            timer.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
