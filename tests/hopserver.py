"""An echo server for the hop tests (tests/test_hops.py), run inside the api namespace.

argv: ADDR PORT [PORT ...]. Each connection: a line `echo TEXT` is answered with `TEXT`; a line
`late SECONDS` makes the server send `late` that long after the command's arrival (as a server
speaking after a hop forgot the flow); `ping` is answered `pong` and not logged. Every event is one
JSON line on stdout with the time and the peer's port (a nat hop keeps the client's port): accepted,
data, sent, reset (ECONNRESET on a read or write), closed.
"""

import json
import socket
import sys
import threading
import time

lock = threading.Lock()


def emit(event, port, **fields):
    with lock:
        print(json.dumps({"ts": round(time.time(), 6), "event": event, "port": port, **fields}), flush=True)


def serve(conn, peer):
    port = peer[1]
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    emit("accepted", port, peer=f"{peer[0]}:{peer[1]}")
    buf = b""
    try:
        while True:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            data = conn.recv(4096)
            if not data:
                emit("closed", port)
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                cmd, _, arg = line.decode().partition(" ")
                if cmd == "ping":  # the warm flow's (tests/test_hops.py, WARM): answered, not logged
                    conn.sendall(b"pong\n")
                    continue
                emit("data", port, line=line.decode())
                if cmd == "echo":
                    conn.sendall(arg.encode() + b"\n")
                elif cmd == "late":
                    threading.Thread(target=late, args=(conn, port, float(arg)), daemon=True).start()
    except ConnectionResetError:
        emit("reset", port)
    except OSError as exc:
        emit("error", port, errno=exc.errno)


def late(conn, port, delay):
    time.sleep(delay)
    try:
        conn.sendall(b"late\n")
        emit("sent", port)
    except OSError as exc:
        emit("reset" if exc.errno == 104 else "error", port, errno=exc.errno, on="send")


def listen(addr, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    while True:
        conn, peer = s.accept()
        threading.Thread(target=serve, args=(conn, peer), daemon=True).start()


addr, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
for p in ports:
    threading.Thread(target=listen, args=(addr, p), daemon=True).start()
emit("listening", 0, ports=ports)
while True:
    time.sleep(3600)
