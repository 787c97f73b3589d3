"""`python -m runner lb-probe`: the seed's curl experiment through one LB profile, told as a story.

The seed ran `curl --no-keepalive --http0.9` against a timer server that speaks every 600 s,
behind a 4-minute Azure LB, and saw `curl: (56) Recv failure: Connection reset by peer`. Here the
slow port speaks every `idle timeout + 10 s`, so in every mode the server has something to say
after the LB forgot the flow, and the story says what each end heard.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from runner.config.profiles import PROFILES, Profile, ProfileError, resolve_profile
from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer
from runner.embedded.timer import start_timer_server
from runner.errors import UsageError
from runner.evidence.jsonl import read_timed
from runner.host import sysdeps
from runner.host.capture import Capture
from runner.host.commands import in_netns
from runner.host.netns import new_run_id

SLOW_PORT = 8600
MARGIN = 10


@dataclass(frozen=True)
class ProbeOutcome:
    curl_rc: int
    curl_stderr: str
    elapsed: float
    server_fate: list[dict]
    lb_events: list[dict]


def story(profile: Profile, o: ProbeOutcome, slow_every: float) -> str:
    """One readable paragraph of what happened and when, from the evidence only."""
    t = profile.idle_timeout
    expired = [e for e in o.lb_events if e["event"] == "expired"]
    rst_sent = sorted({e["to"] for e in o.lb_events if e["event"] == "rst-sent"})
    after = [e for e in o.lb_events if e["event"] == "after-expiry"]
    server_after = sum(e["side"] == "server" for e in after)
    fate = next((f for f in o.server_fate if f["event"] in ("reset", "timeout", "closed")), None)
    parts: list[str] = []
    if o.curl_rc == 56:
        parts.append(f"{o.curl_stderr.strip() or 'curl: (56)'} after {o.elapsed:.1f} s idle")
    elif o.curl_rc == 28:
        parts.append(f"no data for {o.elapsed:.0f} s: curl gave up (exit 28, timeout) on a socket that never "
                     "heard of any trouble")
    else:
        parts.append(f"curl exited {o.curl_rc} after {o.elapsed:.1f} s ({o.curl_stderr.strip() or 'no error'})")
    if expired:
        parts.append(f"the LB forgot the flow after {t} s of idle")
    elif profile.mode != "none":
        parts.append("the LB never saw the flow go idle long enough to forget it")
    if rst_sent:
        parts.append("the LB sent an RST to the " + " and the ".join(rst_sent))
    if fate and fate["event"] == "reset":
        parts.append(f"the server's socket was reset too (after {fate.get('idle', 0):.1f} s without a "
                     "successful send)" if "server" in rst_sent else
                     f"the server's next line at {slow_every:g} s was answered with an RST")
    elif profile.mode == "silent-drop" and server_after:
        parts.append(f"the flow was silently dropped; the server's line at {slow_every:g} s was retransmitted "
                     f"{server_after} times into the void")
    elif fate is None and profile.mode != "none":
        parts.append("the server was not told")
    return "; ".join(parts) + "."


def main(args: argparse.Namespace) -> int:
    sysdeps.require_root("lb-probe")
    sysdeps.ensure_tools()
    try:
        overrides = {"idle_timeout": args.idle_timeout} if args.idle_timeout else {}
        if args.profile not in PROFILES:
            raise ProfileError(f"unknown LB profile {args.profile!r}", "use one of: " + ", ".join(PROFILES))
        profile = resolve_profile(args.profile, overrides)
    except ProfileError as exc:
        raise UsageError(f"lb-probe --profile/--idle-timeout: {exc.what}", fix=exc.fix) from None
    run_id = new_run_id()
    out = Path(args.out) / f"lb-probe-{run_id}"
    slow_every = profile.idle_timeout + MARGIN
    # Silent modes leave curl waiting: it gets until the server has spoken and been ignored.
    max_time = slow_every + 30 if profile.mode in ("silent-drop", "rst-on-next-packet") else slow_every + 5
    print(f"lb-probe: {profile.name}: {profile.describe()}; slow port speaks every {slow_every} s; "
          f"evidence in {out}", flush=True)
    with EmbeddedCluster(run_id=run_id, evidence_dir=out, churn_interval=0) as cluster:
        timer = start_timer_server(cluster, out, ports=((8005, 5), (SLOW_PORT, slow_every)))
        lb = LoadBalancer(cluster, 0, profile, out / "lb")
        cap: Capture | None = None
        try:
            lb.start()
            pod = lb.add_pod()
            cap = Capture(pod.netns, pod.iface, out / "pod.pcap", cluster.log).start()
            argv = ["curl", "-sS", "--no-keepalive", "--http0.9", "--max-time", str(max_time),
                    f"http://{lb.vip}:{SLOW_PORT}/"]
            cluster.log.note("$ " + " ".join(in_netns(pod.netns, argv)))
            t0 = time.monotonic()
            proc = subprocess.run(in_netns(pod.netns, argv), capture_output=True, text=True, timeout=max_time + 30)
            elapsed = time.monotonic() - t0
            time.sleep(0.5)  # let the server and the agent log the aftermath
        finally:
            if cap:
                cap.stop()
            lb.close()
            timer.stop()
        fate = [f for f in read_timed(out / "timer-server.jsonl") if f.get("port") == SLOW_PORT]
        outcome = ProbeOutcome(proc.returncode, proc.stderr, elapsed, fate, read_timed(lb.events_path))
    print(story(profile, outcome, slow_every))
    print(f"  pcaps: {out / 'pod.pcap'}, {out / 'lb' / 'lb-pod-leg.pcap'}, {out / 'lb' / 'lb-server-leg.pcap'}")
    print(f"  LB event log: {lb.events_path}")
    print(f"  timer server log: {out / 'timer-server.jsonl'}")
    return 0
