"""A tiny TCP client run inside a pod namespace by the LB tests.

argv[1] is a JSON plan: {"addr", "port", "keepalive": [idle, intvl, cnt] | null, "steps": [...]},
each step ["recv", timeout] | ["send", text] | ["sleep", seconds]. Prints one JSON object: the
outcome of each step and the socket's TCP state at the end (1 = ESTABLISHED).
"""

import json
import socket
import sys
import time

plan = json.loads(sys.argv[1])
s = socket.create_connection((plan["addr"], plan["port"]), timeout=5)
t0 = time.time()
if plan.get("keepalive"):
    idle, intvl, cnt = plan["keepalive"]
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, intvl)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, cnt)
out = []
for step in plan["steps"]:
    kind, arg = step
    at = round(time.time() - t0, 3)
    try:
        if kind == "sleep":
            time.sleep(arg)
            continue
        if kind == "send":
            s.sendall(arg.encode())
            out.append({"step": kind, "at": at, "ok": True})
        elif kind == "recv":
            s.settimeout(arg)
            data = s.recv(4096)
            out.append({"step": kind, "at": at, "ok": True, "data": data.decode(errors="replace"),
                        "after": round(time.time() - t0, 3)})
    except TimeoutError:
        out.append({"step": kind, "at": at, "ok": False, "error": "timeout", "after": round(time.time() - t0, 3)})
    except OSError as exc:
        out.append({"step": kind, "at": at, "ok": False, "error": exc.__class__.__name__,
                    "errno": exc.errno, "after": round(time.time() - t0, 3)})
state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
print(json.dumps({"steps": out, "tcp_state": state, "local": "{}:{}".format(*s.getsockname())}))
