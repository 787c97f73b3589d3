"""The probe's objects: the backend's timer server with one port per rung, and an in-cluster client.

Both are the kubernetes backend's own timer-server pod (runner/kube/manifests.timer_objects: its
namespace, runner binding, ServiceAccount without a token, non-root, read-only, capture sidecar with
only NET_RAW and NET_ADMIN, requests and limits), so the probe asks for no right the backend does not.
The in-cluster client runs in the same image (its python, stdlib only), so nothing new is built.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence

from runner.kube import manifests as m
from runner.kube.manifests import Obj
from runner.probe.ladder import MARGIN, READY_PORT, Rung, server_ports

CLIENT_POD = "probe-client"
CLIENT_CONTAINER = "client"

#: The in-cluster client: one connection per rung, all at once; it waits for the server's first line
#: after the banner (`Message 1.`) until `idle + margin` seconds after connecting, and prints one JSON
#: line per connection: outcome survived | reset | silent | closed | unknown, seconds since connecting.
CLIENT_SCRIPT = r"""
import json, socket, sys, threading, time
host, rungs, margin, ready = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()

def wait_ready(limit=120):
    # The readiness port's banner: the Service forwards; only then is a rung's connection made.
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, ready), timeout=3) as s:
                s.settimeout(3)
                if s.recv(100).startswith(b"Hello"):
                    return
        except OSError:
            pass
        time.sleep(1)
    print(json.dumps({"event": "not-ready", "error": "port %d gave no banner within %d s" % (ready, limit)}),
          flush=True)

def out(rec):
    with lock:
        print(json.dumps(rec), flush=True)

def one(port, idle):
    t0 = time.monotonic()
    rec = {"port": port, "idle": idle}
    try:
        s = socket.create_connection((host, port), timeout=10)
    except OSError as e:
        out({**rec, "outcome": "unknown", "error": "connect: %s" % e, "elapsed": round(time.monotonic() - t0, 3)})
        return
    buf, outcome, err = b"", "survived", ""
    deadline = t0 + idle + margin
    try:
        while b"Message 1." not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line within %g s" % (idle + margin))
            s.settimeout(left)
            data = s.recv(4096)
            if not data:
                outcome = "closed"
                break
            buf += data
    except TimeoutError as e:
        outcome, err = "silent", str(e)
    except ConnectionResetError as e:
        outcome, err = "reset", "%s: %s" % (type(e).__name__, e)
    except OSError as e:
        outcome, err = "unknown", "%s: %s" % (type(e).__name__, e)
    out({**rec, "outcome": outcome, "error": err, "elapsed": round(time.monotonic() - t0, 3)})
    s.close()

wait_ready()
threads = [threading.Thread(target=one, args=(r["port"], r["idle"])) for r in rungs]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def _port_name(r: Rung) -> str:
    return f"{r.path[:3]}-{r.idle}"  # a port name is at most 15 characters


def probe_objects(ns: str, d: m.Deployment, *, image: str, rungs: Sequence[Rung], service_type: str,
                  source_ranges: Sequence[str] = (), internal: str | None = None) -> list[Obj]:
    """The backend's timer objects, its server speaking at every rung's interval on the rung's port."""
    objs = m.timer_objects(ns, d, image=image, service_type=service_type, source_ranges=source_ranges,
                           internal=internal)
    pod = next(o for o in objs if o["kind"] == "Pod")
    timer = next(c for c in pod["spec"]["containers"] if c["name"] == m.TIMER_CONTAINER)
    # TCP_USER_TIMEOUT: a line nobody acknowledges ends in a logged `timeout` before the clients give up.
    timer["args"] = ["--listen", "0.0.0.0", *(x for p in server_ports(rungs) for x in ("--port", p)),
                     "--user-timeout", str(MARGIN - 5)]
    timer["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in (READY_PORT, *(r.port for r in rungs))]
    capture = next(c for c in pod["spec"]["containers"] if c["name"] == m.CAPTURE_CONTAINER)
    _set_filter(capture, f"tcp portrange {min(r.port for r in rungs)}-{max(r.port for r in rungs)}")
    svc = next(o for o in objs if o["kind"] == "Service")
    svc["spec"]["ports"] = [{"name": "ready", "port": READY_PORT, "targetPort": READY_PORT, "protocol": "TCP"},
                            *({"name": _port_name(r), "port": r.port, "targetPort": r.port, "protocol": "TCP"}
                              for r in rungs)]
    return objs


def _set_filter(capture: Obj, expr: str) -> None:
    for env in capture["env"]:
        if env["name"] == "WATCHDROP_CAPTURE_FILTER":
            env["value"] = expr


def client_pod(timer_pod: Obj, *, address: str, rungs: Sequence[Rung]) -> Obj:
    """The in-cluster client: the timer pod's shape (same image, identity, limits), another command."""
    pod = copy.deepcopy(timer_pod)
    pod["metadata"]["name"] = CLIENT_POD
    pod["metadata"]["labels"][m.LABEL_COMPONENT] = "probe-client"
    containers = pod["spec"]["containers"]
    timer = next(c for c in containers if c["name"] == m.TIMER_CONTAINER)
    capture = next(c for c in containers if c["name"] == m.CAPTURE_CONTAINER)
    _set_filter(capture, "tcp")
    timer["name"] = CLIENT_CONTAINER
    timer.pop("ports", None)
    timer.pop("args", None)
    timer["command"] = ["python", "-c", CLIENT_SCRIPT, address,
                        json.dumps([{"port": r.port, "idle": r.idle} for r in rungs]), str(MARGIN),
                        str(READY_PORT)]
    return pod
