"""Running external commands with argv lists, each one logged before it runs.

Every `ip`, `nft`, `sysctl`, `conntrack`, `tcpdump` or build command goes through `CommandLog.run`,
so the evidence of a run (or of a cell) records exactly what was done to the machine.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from runner.errors import CommandError


class CommandLog:
    """Runs commands and appends `time  argv  -> rc` lines to a log file (or keeps them in memory)."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.lines: list[str] = []
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def note(self, text: str) -> None:
        line = f"{time.time():.3f} {text}"
        with self._lock:
            self.lines.append(line)
            if self.path is not None:
                with self.path.open("a") as f:
                    f.write(line + "\n")

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        input_text: str | None = None,
        fix: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv, log it first, and raise CommandError (argv + output tail) when check fails."""
        argv = [str(a) for a in argv]
        self.note("$ " + shlex.join(argv))
        full_env = None if env is None else {**os.environ, **env}
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=full_env,
                cwd=cwd,
                input=input_text,
            )
        except FileNotFoundError as exc:
            self.note(f"  -> not found: {argv[0]}")
            raise CommandError(argv, 127, str(exc), fix=fix) from None
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            self.note(f"  -> timed out after {timeout}s")
            raise CommandError(argv, -1, f"timed out after {timeout}s\n{out!s}", fix=fix) from None
        self.note(f"  -> {proc.returncode}")
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, (proc.stdout or "") + (proc.stderr or ""), fix=fix)
        return proc


def query(argv: Sequence[str], *, timeout: float = 30, check: bool = False,
          env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command run for its output, unlogged: a look at the machine (`nft list tables`, `go env GOROOT`)
    or a tool's install. Raises what subprocess.run raises (FileNotFoundError, TimeoutExpired, and
    CalledProcessError with `check`): each caller says what that means for it."""
    full_env = None if env is None else {**os.environ, **env}
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=check,
                          env=full_env)


def run_into(argv: Sequence[str], out: IO[str], *, timeout: float) -> None:
    """A long command whose stdout and stderr go to `out` (a build log the caller has written the
    argv to); raises CalledProcessError when it fails, and what subprocess.run raises."""
    subprocess.run([str(a) for a in argv], check=True, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """Prefix argv so it runs inside a named network namespace."""
    return ["ip", "netns", "exec", netns, *argv]
