"""Child processes the runner starts and must stop: by pid, SIGTERM then SIGKILL, bounded.

Every child is registered in `REGISTRY` while alive, so the signal path (Ctrl-C, SIGTERM) and the
CLI's exit can stop all of them even when they interrupt a half-built context manager.

The waits every caller needs are written once here: `wait_for` (poll a condition, bounded),
`wait_until` (a child's start: ready, or dead, or too slow) and `escalate` (SIGTERM, a grace that
a second Ctrl-C ends at once, SIGKILL), used for a Child, a build's process group and everything
left inside a network namespace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from runner.errors import ClusterError
from runner.host import sandbox, signals
from runner.host.commands import CommandLog
from runner.host.lifetime import concurrently_or_raise


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process from /proc/PID/stat (fields 14 and 15), in seconds."""
    try:
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Child:
    """One supervised process whose stdout/stderr go to files."""

    def __init__(self, name: str, argv: Sequence[str], *, stdout: Path, stderr: Path | None = None,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 log: CommandLog | None = None, inherit_env: bool = True):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.stderr_path = stderr or stdout
        stdout.parent.mkdir(parents=True, exist_ok=True)
        if log:
            log.note(f"start {name}: {sandbox.describe(self.argv)}")
        self._out: IO[bytes] = stdout.open("ab")
        self._err: IO[bytes] = self._out if self.stderr_path == stdout else self.stderr_path.open("ab")
        # inherit_env=False: `env` is the whole environment (code under test gets an allow-list).
        full_env = None if env is None else ({**os.environ, **env} if inherit_env else dict(env))
        # A new session: a Ctrl-C on the terminal reaches only the runner, which then stops
        # children in order (apiserver before etcd) instead of all at once.
        self.popen = subprocess.Popen(self.argv, stdout=self._out, stderr=self._err, env=full_env,
                                      cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.popen.pid
        REGISTRY.add(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def cpu_seconds(self) -> float | None:
        """User + system CPU the process (all its threads) has used so far; None once it is gone.
        Wrappers that exec (ip netns exec, prlimit, the sandbox) keep the pid, so this is the
        program they end in."""
        return cpu_seconds(self.pid) if self.alive() else None

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit code.

        A second Ctrl-C (signals.hurry) ends the grace at once, also in the middle of it."""
        if self.alive():
            escalate(lambda sig: signal_pid(self.pid, sig), lambda: not self.alive(), grace=grace, kill_wait=10.0)
        for f in {self._out, self._err}:
            f.close()
        REGISTRY.discard(self)
        return self.popen.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


def wait_for(done: Callable[[], bool], timeout: float, poll: float = 0.05, hurry: bool = False) -> bool:
    """Poll `done` until it is true (True) or `timeout` passes (False). With `hurry`, a second
    Ctrl-C (signals.hurry) ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        if done():
            return True
        if time.monotonic() >= deadline or (hurry and signals.hurry.is_set()):
            return False
        time.sleep(poll)


def wait_until(ready: Callable[[], bool], child: Child, timeout: float, what: str, *, poll: float = 0.05,
               fix: str | None = None, last: Callable[[], str] | None = None) -> None:
    """A child's start: return once `ready()` (a probe that raises counts as not ready yet); raise
    ClusterError naming `what` when the child exits first or `timeout` passes, with `last()` or the
    probe's last exception."""
    died: list[int | None] = []
    failure = [""]

    def probe() -> bool:
        try:
            return bool(ready())
        except Exception as exc:  # not up yet: connection refused, socket missing, ...
            failure[0] = f"{exc.__class__.__name__}: {exc}"
            return False

    def done() -> bool:
        if probe():
            return True
        if not child.alive():
            died.append(child.returncode)
            return True
        return False

    if wait_for(done, timeout, poll=poll) and not died:
        return
    if died:
        raise ClusterError(f"{child.name} exited with code {died[0]} while starting ({what})",
                           detail=child.tail(), fix=fix)
    seen = last() if last is not None else failure[0]
    raise ClusterError(f"{child.name}: not {what} within {timeout:g} s" + (f" ({seen})" if seen else ""),
                       detail=child.tail(), fix=fix)


def escalate(send: Callable[[signal.Signals], None], gone: Callable[[], bool], grace: float,
             kill_wait: float = 5.0, *, term: bool = True) -> bool:
    """SIGTERM, wait up to `grace` (a second Ctrl-C ends the grace at once), then SIGKILL and
    wait up to `kill_wait`. True when whatever `gone` watches is gone. `term=False` skips the
    SIGTERM and its grace: SIGKILL at once unless it is gone already."""
    if term:
        send(signal.SIGTERM)
        if wait_for(gone, grace, hurry=True):
            return True
    elif gone():
        return True
    send(signal.SIGKILL)
    return wait_for(gone, kill_wait)


def signal_pid(pid: int, sig: signal.Signals, *, group: bool = False) -> None:
    """Send `sig` to `pid` (with `group`, to its process group); one that is gone already is no error."""
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run_forwarding_interrupt(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    """`argv` as a child in its own session, waited for; one Ctrl-C here is forwarded to it as
    SIGINT and waited for again, then re-raised. For a whole run of the runner started by a bench:
    subprocess.run would SIGKILL it on KeyboardInterrupt (its namespaces, agents and captures left
    behind), and in the terminal's process group it would get every Ctrl-C twice."""
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)  # type: ignore[call-overload]
    try:
        out, err = proc.communicate()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def pid_alive(pid: int) -> bool:
    """True while `pid` runs: a zombie (exited, not yet reaped) is gone; a process of another user
    whose /proc entry cannot be read counts as alive."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state != "Z"


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: list[Child] = []

    def add(self, child: Child) -> None:
        with self._lock:
            self._children.append(child)

    def discard(self, child: Child) -> None:
        with self._lock:
            if child in self._children:
                self._children.remove(child)

    def alive(self) -> list[Child]:
        with self._lock:
            return [c for c in self._children if c.alive()]

    def stop_all(self, grace: float = 5.0) -> None:
        for child in reversed(self.alive()):
            child.stop(grace)


REGISTRY = _Registry()


def stop_together(children: Sequence[Child], grace: float = 5.0) -> None:
    """Stop independent children at once: their SIGTERM graces overlap instead of adding up.
    Raises after every child has stopped if any stop failed."""
    concurrently_or_raise((c.name, lambda c=c: c.stop(grace)) for c in children)
