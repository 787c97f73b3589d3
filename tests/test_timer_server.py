"""images/timer-server/timer_server.py: the LB probe, run for real on loopback with short intervals."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SERVER_PY = Path(__file__).resolve().parent.parent / "images" / "timer-server" / "timer_server.py"
BANNER = re.compile(
    r"^Hello! Current time is \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\. I'm going to send message every "
    r"(?P<interval>[0-9.]+) seconds\. No KeepAlive in this TCP connection\.\n$"
)
TICK = re.compile(r"^Current time is \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\. Message (?P<n>\d+)\.\n$")

Event = dict[str, Any]


def load_module() -> ModuleType:
    # The server is a standalone script (copied as-is into its image), not part of a package.
    spec = importlib.util.spec_from_file_location("timer_server", SERVER_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class body is being built.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


class RunningServer:
    """The server as a child process; its JSON lines are collected by a reader thread."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(SERVER_PY), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[Event] = []
        self._exited = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.events.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self._exited = True
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 10) -> Event:
        """The first event (already seen or still to come) that matches predicate."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                for event in self.events[checked:]:
                    if predicate(event):
                        return event
                checked = len(self.events)
                if self._exited:
                    raise AssertionError(f"server exited; events: {self.events}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching event within {timeout}s; events: {self.events}")
                self._cond.wait(timeout=left)

    def ports(self, count: int) -> list[tuple[int, float]]:
        """(port, interval) of the first `count` listening sockets."""
        found: list[tuple[int, float]] = []
        while len(found) < count:
            event = self.wait_for(lambda e: e["event"] == "listening" and (e["port"], e["interval"]) not in found)
            found.append((event["port"], event["interval"]))
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


@pytest.fixture
def server() -> Iterator[RunningServer]:
    running = RunningServer("--listen", "127.0.0.1", "--port", "0:0.2", "--port", "0:600")
    try:
        yield running
    finally:
        running.stop()


def connect(port: int, *, keepalive: bool = False) -> tuple[socket.socket, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if keepalive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock, sock.makefile("r", encoding="utf-8", newline="\n")


def peer_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"{host}:{port}"


def rst_close(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- command line ---------------------------------------------------------------------------------


def test_help_runs() -> None:
    result = subprocess.run([sys.executable, str(SERVER_PY), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "--listen" in result.stdout and "PORT:INTERVAL" in result.stdout


def test_defaults_are_loopback_and_the_seed_ports() -> None:
    module = load_module()
    args = module.parse_args([])
    assert args.listen == "127.0.0.1"
    assert [(p.port, p.interval) for p in args.ports] == [(8005, 5.0), (8600, 600.0)]
    assert args.user_timeout is None
    assert args.max_connections == 64
    args = module.parse_args(["--listen", "::1", "--port", "9000:0.5", "--port", "9001:2"])
    assert args.listen == "::1"
    assert [(p.port, p.interval) for p in args.ports] == [(9000, 0.5), (9001, 2.0)]
    for bad in (
        ["--port", "9000"],
        ["--port", "x:1"],
        ["--port", "9000:0"],
        ["--port", "70000:1"],
        ["--user-timeout", "0"],
        ["--max-connections", "0"],
    ):
        with pytest.raises(SystemExit):
            module.parse_args(bad)


def test_dockerfile_listens_on_all_addresses_explicitly() -> None:
    dockerfile = (SERVER_PY.parent / "Dockerfile").read_text()
    assert re.search(r"^USER 65532", dockerfile, re.M)
    assert re.search(r"^EXPOSE 8005 8600$", dockerfile, re.M)
    assert '"--listen", "0.0.0.0"' in dockerfile


# -- behaviour on loopback ------------------------------------------------------------------------


def test_banner_then_lines_then_closed(server: RunningServer) -> None:
    (fast, _), (slow, _) = server.ports(2)
    sock, reader = connect(fast)
    try:
        match = BANNER.match(reader.readline())
        assert match and match.group("interval") == "0.2"
        numbers = []
        for _ in range(3):
            tick = TICK.match(reader.readline())
            assert tick
            numbers.append(int(tick.group("n")))
        assert numbers == [1, 2, 3]
        peer = peer_of(sock)
        connected = server.wait_for(lambda e: e["event"] == "connected" and e["peer"] == peer)
        assert connected["port"] == fast and connected["keepalive"] == 0
        server.wait_for(lambda e: e["event"] == "sent" and e["peer"] == peer and e["n"] == 3)
    finally:
        reader.close()
        sock.close()  # a clean close: FIN
    closed = server.wait_for(lambda e: e["event"] in ("closed", "reset") and e["peer"] == peer)
    assert closed["event"] == "closed" and closed["port"] == fast and closed["error"] is None

    sock, reader = connect(slow)
    try:
        match = BANNER.match(reader.readline())
        assert match and match.group("interval") == "600"
    finally:
        reader.close()
        sock.close()


def test_client_rst_yields_reset(server: RunningServer) -> None:
    (fast, _), _ = server.ports(2)
    sock, reader = connect(fast)
    peer = peer_of(sock)
    assert BANNER.match(reader.readline())
    reader.close()
    rst_close(sock)
    event = server.wait_for(lambda e: e["event"] in ("closed", "reset", "error") and e["peer"] == peer)
    assert event["event"] == "reset", event
    assert event["op"] in ("send", "recv") and event["error"]
    assert isinstance(event["idle"], float) and event["idle"] >= 0


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_accepted_socket_has_no_keepalive_timer(server: RunningServer) -> None:
    (_, _), (slow, _) = server.ports(2)
    # The client turns keepalive on: it proves `ss` shows a keepalive timer when there is one.
    sock, reader = connect(slow, keepalive=True)
    try:
        assert BANNER.match(reader.readline())
        peer = peer_of(sock)
        server.wait_for(lambda e: e["event"] == "connected" and e["peer"] == peer)
        out = subprocess.run(
            ["ss", "-tnoH", "state", "established", f"( sport = :{slow} or dport = :{slow} )"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        server_line = [ln for ln in out.splitlines() if f"127.0.0.1:{slow} {peer}" in " ".join(ln.split())]
        client_line = [ln for ln in out.splitlines() if f"{peer} 127.0.0.1:{slow}" in " ".join(ln.split())]
        assert len(server_line) == 1 and len(client_line) == 1, out
        assert "timer:(keepalive" in client_line[0]
        assert "keepalive" not in server_line[0]
    finally:
        reader.close()
        sock.close()


def test_connections_beyond_the_cap_are_closed_at_once_and_logged() -> None:
    running = RunningServer("--port", "0:0.2", "--port", "0:600", "--max-connections", "2")
    held: list[tuple[socket.socket, Any]] = []
    try:
        (fast, _), (slow, _) = running.ports(2)
        for port in (fast, slow):  # the cap counts both ports together
            held.append(connect(port))
            assert BANNER.match(held[-1][1].readline())
        extra, reader = connect(fast)
        assert reader.readline() == ""  # closed without a banner
        refused = running.wait_for(lambda e: e["event"] == "refused")
        assert (refused["peer"], refused["port"], refused["open"], refused["max"]) == (peer_of(extra), fast, 2, 2)
        reader.close()
        extra.close()
        # a slot that frees up is usable again
        sock, r = held.pop()
        r.close()
        sock.close()
        running.wait_for(lambda e: e["event"] == "closed" and e["port"] == slow)
        # (the slot is released just after the "closed" line: retry until it is)
        deadline = time.monotonic() + 5
        while True:
            again, reader = connect(slow)
            held.append((again, reader))
            if BANNER.match(reader.readline()):
                break
            assert time.monotonic() < deadline, "the freed slot was never reused"
            time.sleep(0.05)
        assert all(e["open"] == 2 for e in running.events if e["event"] == "refused")
    finally:
        for sock, r in held:
            r.close()
            sock.close()
        assert running.stop() == 0


def test_sigterm_exits_zero_with_connections_open() -> None:
    running = RunningServer("--port", "0:0.2")
    try:
        ((port, _),) = running.ports(1)
        sock, reader = connect(port)
        assert BANNER.match(reader.readline())
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=10) == 0
        running.wait_for(lambda e: e["event"] == "stopping")
        reader.close()
        sock.close()
    finally:
        assert running.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="dropping a flow needs root and nft")
def test_silently_dropped_flow_yields_timeout() -> None:
    running = RunningServer("--port", "0:0.2", "--user-timeout", "1")
    table = f"wdtest-{os.urandom(4).hex()}"
    sock: socket.socket | None = None
    try:
        ((port, _),) = running.ports(1)
        sock, reader = connect(port)
        peer = peer_of(sock)
        assert BANNER.match(reader.readline())
        reader.close()
        connected = running.wait_for(lambda e: e["event"] == "connected" and e["peer"] == peer)
        assert connected["user_timeout_ms"] == 1000
        # Forget the flow the way GCP does: every packet of it vanishes, nobody is told.
        ruleset = (
            f"table inet {table} {{\n"
            "  chain out { type filter hook output priority 0; policy accept;\n"
            f"    tcp sport {port} drop\n"
            f"    tcp dport {port} drop\n"
            "  }\n"
            "}\n"
        )
        subprocess.run(["nft", "-f", "-"], input=ruleset, text=True, check=True, timeout=30)
        event = running.wait_for(
            lambda e: e["event"] in ("timeout", "reset", "closed", "error") and e["peer"] == peer,
            timeout=30,
        )
        assert event["event"] == "timeout", event
        assert "110" in event["error"] or "timed out" in event["error"]
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, timeout=30)
        if sock is not None:
            rst_close(sock)
        assert running.stop() == 0
