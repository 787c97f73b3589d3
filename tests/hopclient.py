"""A TCP client for the hop tests (tests/test_hops.py), run inside a pod namespace.

argv[1] is a JSON plan: {"addr", "port", "flows": N, "steps": [[flow, kind, arg], ...]}. Kinds:
`echo TEXT` (send `echo TEXT`, wait up to 2 s for the answer: the flow's `mark` is when it came),
`late S` (ask the server to send `late` in S seconds), `at SECONDS` (sleep until the flow's mark plus
SECONDS), `send TEXT`, `recv TIMEOUT`. Prints one JSON object: each step's outcome with its time,
each flow's local port, mark and TCP state at the end (1 = ESTABLISHED).
"""

import json
import socket
import sys
import time

plan = json.loads(sys.argv[1])
socks = [socket.create_connection((plan["addr"], plan["port"]), timeout=5) for _ in range(plan.get("flows", 1))]
for s in socks:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
marks = [None] * len(socks)
out = []


def recv_line(s, timeout):
    s.settimeout(timeout)
    # QUICKACK: the answer's ACK leaves at once, so the hops' last packet is the client's mark.
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    data = s.recv(4096)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    return data


for flow, kind, arg in plan["steps"]:
    s = socks[flow]
    rec = {"flow": flow, "step": kind, "arg": arg, "at": round(time.time(), 6)}
    try:
        if kind == "at":
            time.sleep(max(0.0, marks[flow] + arg - time.time()))
            rec["at"] = round(time.time(), 6)
            rec["ok"] = True
        elif kind in ("echo", "late", "send"):
            s.sendall(((f"{kind} {arg}" if kind != "send" else arg) + "\n").encode())
            rec["at"] = round(time.time(), 6)
            if kind == "echo":
                data = recv_line(s, 2)
                marks[flow] = rec["mark"] = time.time()
                rec["data"] = data.decode()
            rec["ok"] = True
        elif kind == "recv":
            data = recv_line(s, arg)
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
