#!/usr/bin/env python3
"""Timer server: the seed experiment's load-balancer probe, with every connection's fate logged.

On each accepted TCP connection it sends a banner, then a `Current time is ...` line every N
seconds, and nothing else: no TCP keepalive, no application pings. So the flow is idle for N
seconds between lines, and a load balancer that forgets idle flows after less than N seconds
breaks it. The server reports how each connection ended as JSON lines on stdout:

    {"ts": ..., "event": "listening", "listen": ADDR, "port": P, "interval": N}
    {"ts": ..., "event": "connected", "peer": "ip:port", "port": P, "idle": 0.0, "error": null,
     "keepalive": 0, "user_timeout_ms": 0}
    {"ts": ..., "event": "sent",   "peer": ..., "port": P, "idle": S, "error": null, "n": K}
    {"ts": ..., "event": "reset" | "timeout" | "closed" | "error", "peer": ..., "port": P,
     "idle": S, "error": "...", "op": "send" | "recv"}
    {"ts": ..., "event": "refused", "peer": ..., "port": P, "open": COUNT, "max": M}
    {"ts": ..., "event": "stopping", "open": COUNT}

`idle` is the number of seconds since the last successful send on that connection (or since
accept, before the banner). "sent" means the kernel accepted the bytes, not that the peer got
them: after a silent drop sends keep succeeding until the retransmission timeout. "reset" is
ECONNRESET/EPIPE/ECONNABORTED, "timeout" is ETIMEDOUT (retransmissions or --user-timeout ran out),
"closed" is the peer's FIN (a read of 0 bytes), "error" is any other socket error.
`keepalive` is SO_KEEPALIVE read back from the accepted socket, so the log itself proves that the
server sends no keepalive probes.

Stdlib only, one file, so it can be copied into a container image or run on a host as it is.
Runs one thread per listening port and one per connection; SIGTERM or SIGINT stops it with exit 0.
At most --max-connections connections are open at once (a thread each): one more is closed as
soon as it is accepted and logged as "refused", so a flood cannot exhaust threads or memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

DEFAULT_LISTEN = "127.0.0.1"
# The seed experiment's two ports: one that is never idle long enough to be cut, one that always is.
DEFAULT_PORTS: tuple[tuple[int, float], ...] = ((8005, 5.0), (8600, 600.0))
# A run opens a handful of connections to probe the LB; 64 leaves room and bounds the threads.
DEFAULT_MAX_CONNECTIONS = 64

RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}
TIMEOUT_ERRNOS = {errno.ETIMEDOUT}


@dataclass(frozen=True)
class PortSpec:
    port: int
    interval: float


def parse_port_spec(text: str) -> PortSpec:
    """Parse `PORT:INTERVAL` (interval in seconds, may be fractional, e.g. `9000:0.2`)."""
    port_text, sep, interval_text = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected PORT:INTERVAL, got {text!r}")
    try:
        port = int(port_text)
        interval = float(interval_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PORT:INTERVAL with numbers, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range in {text!r}")
    if not interval > 0:
        raise argparse.ArgumentTypeError(f"interval must be > 0 in {text!r}")
    return PortSpec(port, interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timer_server.py",
        description=(
            "Send a banner and then one line every INTERVAL seconds on each accepted TCP connection, "
            "with TCP keepalive off, and log each connection's fate as JSON lines on stdout."
        ),
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="ADDR",
        help=f"address to bind (default {DEFAULT_LISTEN}; inside a container pass 0.0.0.0 explicitly)",
    )
    parser.add_argument(
        "--port",
        dest="ports",
        action="append",
        type=parse_port_spec,
        metavar="PORT:INTERVAL",
        help="listen on PORT and send a line every INTERVAL seconds; repeatable; port 0 picks a free "
        "port (see the 'listening' line). Default: 8005:5 and 8600:600",
    )
    parser.add_argument(
        "--user-timeout",
        type=float,
        default=None,
        metavar="S",
        help="set TCP_USER_TIMEOUT to S seconds, so unacknowledged data on a silently dropped flow "
        "ends in a 'timeout' event after about S seconds instead of ~15 minutes of retransmissions",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=f"connections open at once, all ports together (default {DEFAULT_MAX_CONNECTIONS}); one more is "
        "closed at once and logged as 'refused'",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.ports is None:
        args.ports = [PortSpec(p, i) for p, i in DEFAULT_PORTS]
    if args.user_timeout is not None and args.user_timeout <= 0:
        build_parser().error("--user-timeout must be > 0")
    if args.max_connections < 1:
        build_parser().error("--max-connections must be >= 1")
    return args


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_interval(interval: float) -> str:
    return f"{interval:g}"


def banner(interval: float) -> bytes:
    # Same wording as the seed experiment (yangl900/knet), so its transcripts compare line by line.
    return (
        f"Hello! Current time is {iso_now()}. I'm going to send message every "
        f"{format_interval(interval)} seconds. No KeepAlive in this TCP connection.\n"
    ).encode()


def tick_line(n: int) -> bytes:
    return f"Current time is {iso_now()}. Message {n}.\n".encode()


def format_addr(addr: tuple[Any, ...]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EventLog:
    """JSON lines on stdout; one lock so lines from different threads never interleave."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        record = {"ts": round(time.time(), 6), "event": event, **fields}
        line = json.dumps(record, sort_keys=False)
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def classify_error(exc: OSError) -> str:
    if exc.errno in RESET_ERRNOS:
        return "reset"
    if exc.errno in TIMEOUT_ERRNOS:
        return "timeout"
    return "error"


class TimerServer:
    def __init__(self, listen: str, ports: list[PortSpec], user_timeout: float | None, log: EventLog,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS):
        self.listen = listen
        self.max_connections = max_connections
        self.ports = ports
        self.user_timeout = user_timeout
        self.log = log
        # Closing a pipe's write end makes its read end readable in every select() at once: one
        # wake-up for all threads, no polling, and safe to do from a signal handler. Two pipes, so
        # the main thread can count the open connections before the others start closing them.
        self._signal_r, self._signal_w = os.pipe()
        self._stop_r, self._stop_w = os.pipe()
        self._stopping = False
        self._listeners: list[tuple[socket.socket, PortSpec]] = []
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._open = 0
        self._open_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------
    def bind(self) -> None:
        infos = socket.getaddrinfo(self.listen, None, type=socket.SOCK_STREAM)
        family = infos[0][0]
        for spec in self.ports:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.listen, spec.port))
            sock.listen(64)
            actual = PortSpec(sock.getsockname()[1], spec.interval)
            self._listeners.append((sock, actual))
            self.log.emit("listening", listen=self.listen, port=actual.port, interval=actual.interval)

    def start(self) -> None:
        for sock, spec in self._listeners:
            thread = threading.Thread(target=self._accept_loop, args=(sock, spec), daemon=True)
            thread.start()
            self._threads.append(thread)

    def request_stop(self) -> None:
        """Called from the signal handler: only wakes the main thread."""
        if not self._stopping:
            self._stopping = True
            os.close(self._signal_w)

    def wait(self) -> None:
        while True:
            readable, _, _ = select.select([self._signal_r], [], [])
            if readable:
                return

    def shutdown(self) -> None:
        with self._open_lock:
            still_open = self._open
        self.log.emit("stopping", open=still_open)
        os.close(self._stop_w)
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=2.0)
        for sock, _ in self._listeners:
            sock.close()

    # -- per port / per connection -------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket, spec: PortSpec) -> None:
        while True:
            readable, _, _ = select.select([listener, self._stop_r], [], [])
            if self._stop_r in readable:
                return
            try:
                conn, addr = listener.accept()
            except OSError:
                continue
            # Counted here, before the thread exists, so a burst cannot overshoot the cap.
            with self._open_lock:
                full = self._open >= self.max_connections
                if not full:
                    self._open += 1
                still_open = self._open
            if full:
                conn.close()
                self.log.emit("refused", peer=format_addr(addr), port=spec.port, open=still_open,
                              max=self.max_connections)
                continue
            thread = threading.Thread(target=self._serve, args=(conn, addr, spec), daemon=True)
            thread.start()
            with self._threads_lock:
                # Forget finished connection threads so a long-running server does not grow.
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)

    def _serve(self, conn: socket.socket, addr: tuple[Any, ...], spec: PortSpec) -> None:
        try:
            self._serve_conn(conn, format_addr(addr), spec)
        finally:
            conn.close()
            with self._open_lock:
                self._open -= 1

    def _serve_conn(self, conn: socket.socket, peer: str, spec: PortSpec) -> None:
        # Linux leaves keepalive off on accepted sockets, but say so explicitly: the whole point of
        # this probe is a flow that is idle on the wire between two lines.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        if self.user_timeout is not None:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.user_timeout * 1000))
        last_send = time.monotonic()

        def emit(event: str, error: str | None = None, **extra: Any) -> None:
            idle = round(time.monotonic() - last_send, 3)
            self.log.emit(event, peer=peer, port=spec.port, idle=idle, error=error, **extra)

        emit(
            "connected",
            keepalive=conn.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            user_timeout_ms=conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        )

        def send(payload: bytes, n: int) -> bool:
            nonlocal last_send
            try:
                conn.sendall(payload)
            except OSError as exc:
                emit(classify_error(exc), error=f"{type(exc).__name__}: {exc}", op="send")
                return False
            emit("sent", n=n)
            last_send = time.monotonic()
            return True

        if not send(banner(spec.interval), 0):
            return
        n = 0
        next_send = time.monotonic() + spec.interval
        while True:
            wait = max(0.0, next_send - time.monotonic())
            readable, _, _ = select.select([conn, self._stop_r], [], [], wait)
            if self._stop_r in readable:
                return
            if conn in readable:
                # Readable means data, the peer's FIN (b""), or a pending socket error such as the
                # RST of a reset or ETIMEDOUT of a dropped flow; whatever a client sends is ignored.
                try:
                    data = conn.recv(65536)
                except OSError as exc:
                    emit(classify_error(exc), error=f"{type(exc).__name__}: {exc}", op="recv")
                    return
                if not data:
                    emit("closed", op="recv")
                    return
                continue
            if time.monotonic() >= next_send:
                n += 1
                if not send(tick_line(n), n):
                    return
                next_send += spec.interval


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = EventLog()
    server = TimerServer(args.listen, args.ports, args.user_timeout, log, args.max_connections)
    try:
        server.bind()
    except OSError as exc:
        print(f"timer_server: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        server.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    server.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
