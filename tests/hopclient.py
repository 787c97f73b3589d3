"""A TCP client for the hop tests (tests/test_hops.py), run inside a pod namespace.

argv[1] is a JSON plan: {"addr", "port", "flows": N, "steps": [[flow, kind, arg], ...]}. Kinds:
`echo TEXT` (send `echo TEXT`, wait up to 2 s for the answer: the flow's `mark` is when it came),
`late S` (ask the server to send `late` in S seconds), `at SECONDS` (sleep until the flow's mark plus
SECONDS), `send TEXT`, `recv TIMEOUT`. Prints one JSON object: each step's outcome with its time,
each flow's local port, mark and TCP state at the end (1 = ESTABLISHED).

A mark is the kernel's receive time of the answer (SO_TIMESTAMPNS), not when this process woke up
to read it: on a busy machine that can be milliseconds later. A send records the clock just before
and just after the call (`at`, `end`): the packet left between the two.
"""

import json
import socket
import struct
import sys
import time
from pathlib import Path

# This checkout's runner, not whichever one is installed (the script runs by path in a pod namespace).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runner.embedded.lbagent import wait_toward

#: Linux's SO_TIMESTAMPNS (asm-generic/socket.h; also its control message type), which Python 3.11 does not name.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)

plan = json.loads(sys.argv[1])
socks = [socket.create_connection((plan["addr"], plan["port"]), timeout=5) for _ in range(plan.get("flows", 1))]
for s in socks:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
marks = [None] * len(socks)
out = []


def recv_line(s, timeout):
    """(data, the kernel's receive time of it or None)."""
    s.settimeout(timeout)
    # QUICKACK: the answer's ACK leaves at once, so the hops' last packet is the answer's arrival.
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    data, anc, _, _ = s.recvmsg(4096, 64)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    stamp = None
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", raw[:16])
            stamp = sec + nsec / 1e9
    return data, stamp


for flow, kind, arg in plan["steps"]:
    s = socks[flow]
    rec = {"flow": flow, "step": kind, "arg": arg, "at": round(time.time(), 6)}
    try:
        if kind == "at":
            # Sleep in steps (runner.embedded.lbagent.wait_toward: one long sleep wakes milliseconds
            # late), then spin the last 200 ms: a process idle for seconds runs its first steps
            # slowly on this VM (tests/test_hops.py, WARM).
            target = marks[flow] + arg
            while (left := target - 0.2 - time.time()) > 0:
                time.sleep(wait_toward(left))
            while time.time() < target:
                pass
            rec["at"] = round(time.time(), 6)
            rec["ok"] = True
        elif kind in ("echo", "late", "send"):
            line = ((f"{kind} {arg}" if kind != "send" else arg) + "\n").encode()
            rec["at"] = round(time.time(), 6)
            s.sendall(line)
            rec["sent"] = round(time.time(), 6)
            if kind == "echo":
                data, stamp = recv_line(s, 2)
                marks[flow] = rec["mark"] = stamp or time.time()
                rec["data"] = data.decode()
            rec["ok"] = True
        elif kind == "recv":
            data, _ = recv_line(s, arg)
            rec["ok"] = bool(data)
            rec["data"] = data.decode()
    except TimeoutError:
        rec.update(ok=False, error="timeout")
    except OSError as exc:
        rec.update(ok=False, error=exc.__class__.__name__, errno=exc.errno)
    rec["end"] = round(time.time(), 6)
    out.append(rec)
flows = [{"port": s.getsockname()[1], "mark": marks[i],
          "tcp_state": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]} for i, s in enumerate(socks)]
print(json.dumps({"steps": out, "flows": flows}))
